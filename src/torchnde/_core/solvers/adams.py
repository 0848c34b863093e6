r"""Variable-step, variable-order Adams–Bashforth–Moulton (Shampine & Gordon's DE/STEP)."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from ..controllers import AbstractAdaptiveController
from ..multistep import (
    advance,
    coefficients,
    contract,
    initial_history,
    interpolate_history,
    slope,
)
from ..solver import AbstractSolver
from ..terms import AbstractTerm

__all__ = ["Adams"]


class Adams(AbstractSolver):
    r"""Adaptive Adams–Bashforth–Moulton in divided-difference form, with variable step size
    and variable order $1 \le k \le$ ``max_order``.

    Each step is P(EC)E: the Adams–Bashforth predictor of order $k$, one evaluation, the
    Adams–Moulton corrector of order $k+1$ (local extrapolation), one evaluation at the
    corrected point for the history. The coefficients are those of the actual (variable) step
    sequence (see :mod:`torchnde._core.multistep`), so step-size changes cost nothing. The
    error estimate is $\mathrm{AM}_{k+1} - \mathrm{AM}_k = h (c_k - c_{k-1}) \Phi_k(n+1)$, of
    order $k+1$; after an accepted step the order is lowered when the estimates of the
    lower orders are no larger, and raised when the estimate of order $k+1$ is smaller
    (Shampine & Gordon's rules, measured in the controller's error norm). The solve starts at
    order 1 and gains at most one order per step; after a ``jump_ts`` discontinuity it
    restarts at order 1.

    Order $k+1$ (variable, up to ``max_order + 1``). Error estimate of order $k+1$. Two
    vector-field evaluations per step. Dense output: the corrector polynomial, of the order of
    the step. Explicit. ODE terms only (the history holds $dy/dt$).

    Use it for smooth non-stiff problems with expensive vector fields at tight tolerances,
    where it needs far fewer evaluations than a Runge–Kutta method (two per step at high
    order). Not for problems with frequent discontinuities or for stiff problems; memory is
    ``max_order + 1`` copies of the state for the history.

    Args:
        max_order: the highest order of the predictor (1 to 12).

    Reference:
        L. F. Shampine and M. K. Gordon, *Computer Solution of Ordinary Differential
        Equations: the Initial Value Problem*, Freeman, 1975. E. Hairer, S. P. Nørsett and
        G. Wanner, *Solving Ordinary Differential Equations I*, 2nd ed., Springer, 1993,
        Sec. III.5 and III.7.
    """

    # The order it starts at (used for the initial step size); it rises with the solve.
    order: ClassVar[int] = 1
    # The order changes from step to step (`error_order_of`).
    constant_error_order: ClassVar[bool] = False
    error_order: ClassVar[int | None] = 2
    dense_order: ClassVar[int] = 2
    num_fevals_init: ClassVar[int] = 1
    num_fevals_step: ClassVar[int] = 2

    def __init__(self, max_order: int = 12) -> None:
        if isinstance(max_order, bool) or not isinstance(max_order, int):
            raise TypeError(f"Adams: `max_order` must be an int, got {max_order!r}.")
        if not 1 <= max_order <= 12:
            raise ValueError(f"Adams: `max_order` must be between 1 and 12, got {max_order}.")
        self.max_order = max_order
        self._ratio: Any = None
        self._tolerances: tuple[Any, Any] = (1.0, 1.0)
        self._shifts = torch.tensor([-2, -1, 0, 1])

    def with_controller(self, controller: Any, norm: Any) -> Adams:
        new = Adams(self.max_order)
        if isinstance(controller, AbstractAdaptiveController) and norm is None:
            new._tolerances = (controller.rtol, controller.atol)
        elif isinstance(controller, AbstractAdaptiveController):

            def ratio(e: torch.Tensor, y0: torch.Tensor, y1: torch.Tensor) -> torch.Tensor:
                return controller.scaled_norm(e, y0, y1, norm)

            new._ratio = ratio
        return new

    def _measure(
        self, errors: list[torch.Tensor], y0: torch.Tensor, y1: torch.Tensor, dim: int
    ) -> list[torch.Tensor]:
        """The error norms of the candidate estimates (batch shape each)."""
        if self._ratio is not None:
            return [self._ratio(e, y0, y1) for e in errors]
        # The default RMS norm (or no tolerances at all, with constant steps: a
        # relative/absolute mix of 1), for all candidates in one reduction.
        rtol, atol = self._tolerances
        scale = torch.maximum(y0.abs(), y1.abs()) * rtol + atol
        x = torch.stack(errors, dim=dim) / scale.unsqueeze(dim)
        if dim == 0:
            return list((x.reshape(len(errors), -1).square().mean(1)).sqrt().unbind(0))
        return list(x.reshape(x.shape[0], len(errors), -1).square().mean(2).sqrt().unbind(1))

    def init(self, terms: AbstractTerm, t0: torch.Tensor, y0: torch.Tensor, args: Any) -> Any:
        vf, phi, d, num = initial_history(terms, t0, y0, args, self.max_order + 1)
        return (vf, phi, d, num, torch.ones_like(t0))

    def vector_field_of(self, state: Any) -> Any:
        return state[0]

    def error_order_of(self, state: Any) -> Any:
        return state[4] + 1

    def step(self, terms, t0, t1, y0, args, state):  # type: ignore[override]
        _, phi, d, num, order = state
        kmax = self.max_order
        m = kmax + 1
        dim = t0.ndim
        h = t1 - t0
        alpha, c, beta, psi = coefficients(h, d, num, m + 1)  # c_j, j = 0..m
        j = torch.arange(m, device=d.device, dtype=d.dtype)
        k = order[..., None]
        below = (j < k).to(d.dtype)
        # Rows: predictor weights, then Σ_{i<k'} Φ*_i for k' = k-2, k-1, k, k+1.
        rows = [c[..., :m] * below] + [(j < k + s).to(d.dtype) for s in (-2, -1, 0, 1)]
        # Φ*_j = β_j Φ_j folded into the weights: one product with the history.
        sums = contract(torch.stack(rows, dim=-2) * beta.unsqueeze(-2), phi, dim).unbind(dim)
        hy = (h if dim == 0 else h.reshape(h.shape + (1,) * (y0.ndim - 1))).to(y0.dtype)
        y_pred = y0 + hy * sums[0]
        fp = slope(terms, t1, terms.vf(t1, y_pred, args))

        def col(x: torch.Tensor) -> torch.Tensor:
            x = x.to(y0.dtype)
            return x if dim == 0 else x.reshape(x.shape + (1,) * (y0.ndim - 1))

        # c_k and the differences c_k' - c_{k'-1} for k' = k-2 .. k+1, in one gather each
        # (0 for k' < 0; c_{-1} = 0).
        kk = order
        dc = c - torch.cat([torch.zeros_like(c[..., :1]), c[..., :-1]], dim=-1)
        idx = k + self._shifts.to(device=k.device, dtype=k.dtype)  # (*batch, 4)
        dcs = dc.gather(-1, idx.clamp(min=0).to(torch.int64))
        dcs = torch.where(idx >= 0, dcs, torch.zeros_like(dcs))
        c_k = c.gather(-1, k.to(torch.int64))[..., 0]
        # Φ_k'(n+1) with the predicted slope, for k' = k-2 .. k+1.
        phi_p = [fp - x for x in sums[1:]]
        y1 = y_pred + hy * col(c_k) * phi_p[2]
        y_error = hy * col(dcs[..., 2]) * phi_p[2]
        vf1 = terms.vf(t1, y1, args)
        f1 = slope(terms, t1, vf1)

        # The order of the next step (Shampine & Gordon's tests on the estimates of orders
        # k-2 .. k+1, measured like the error itself).
        with torch.no_grad():
            r = self._measure(
                [hy * col(dcs[..., i]) * phi_p[i] for i in (0, 1, 3)] + [y_error], y0, y1, dim
            )
            r_m2, r_m1, r_p1, r_k = (x.nan_to_num(nan=math.inf) for x in r)
            lower = (kk > 1) & torch.where(
                kk > 2, torch.maximum(r_m1, r_m2) <= r_k, r_m1 <= 0.5 * r_k
            )
            # Raise only on a clear gain and with one spare history point (a more reliable
            # estimate of order k+1); at most one order per step.
            higher = ~lower & (kk < kmax) & (num >= kk + 2) & (r_p1 < 0.5 * r_k)
            new_order = kk - lower.to(kk.dtype) + higher.to(kk.dtype)

        # The history at the new point: Φ_j(n+1) = f_{n+1} - Σ_{i<j} Φ*_i.
        phi_new, d_new, num_new = advance(beta, phi, f1, psi, num, dim)
        # Dense output: the corrector polynomial, Φ*_j for j < k and Φ_k(n+1) at j = k.
        dense_info = (y0, h, below * beta, phi, kk, phi_p[2], alpha)
        return y1, y_error, dense_info, (vf1, phi_new, d_new, num_new, new_order)

    def interpolate(self, dense_info: Any, theta: torch.Tensor, per_sample: bool) -> torch.Tensor:
        return interpolate_history(dense_info, theta, per_sample)

    def __repr__(self) -> str:
        return f"Adams(max_order={self.max_order})"
