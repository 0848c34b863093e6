r"""Fixed-order Adams–Bashforth–Moulton predictor-corrector, started by a Runge–Kutta method."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..loop import tree_where
from ..multistep import (
    advance,
    coefficients,
    contract,
    initial_history,
    interpolate_history,
    slope,
)
from ..runge_kutta import AbstractRungeKutta
from ..solver import AbstractSolver
from ..terms import AbstractTerm
from .dopri8 import Dopri8
from .rk4 import RK4

__all__ = ["FixedAdams"]


class FixedAdams(AbstractSolver):
    r"""The Adams–Bashforth–Moulton method of a fixed order $p$, for fixed steps.

    Predictor: the $p$-step Adams–Bashforth formula; then ``corrector_iterations`` times
    the Adams–Moulton formula of order $p$, $y_{n+1} = y_n + h\sum_j \beta^*_j f_{n+1-j}$,
    with the newest slope (P(EC)$^m$E; $m = 0$ is the explicit Adams–Bashforth method,
    $m = 1$ the classical PECE scheme, larger $m$ iterates towards the implicit
    Adams–Moulton solution). The coefficients are those of the actual step sequence
    (divided-difference form, :mod:`torchnde._core.multistep`), so steps shortened to
    ``step_ts``, ``jump_ts`` or the end of the interval keep the order. The first $p-1$ steps
    (and the first after a jump) are taken by a one-step method of order at least $p-1$
    (RK4 for $p \le 5$, Dopri8 otherwise), so the global error is $O(h^p)$.

    Order $p$. No error estimate (fixed steps). $m+1$ vector-field evaluations per step
    ($\max(m, 1)$ with ``corrector_iterations=m``; 1 for Adams–Bashforth). Dense output:
    the Adams polynomial of the step, order $p$ (the starting method's cubic Hermite
    during start-up). Explicit (predictor-corrector). ODE terms only.

    Use it where a vector-field evaluation is expensive and a fixed step is wanted: order 4
    costs 2 evaluations per step against RK4's 4. Its stability region is smaller than a
    Runge–Kutta method's of the same order, so the step must be smaller on oscillatory or
    mildly stiff problems.

    Deviation: deciding whether a sample is still starting up reads one flag on the host per
    step (the rest of the step is sync-free).

    Args:
        order: the order $p$ (1 to 8).
        corrector_iterations: $m \ge 0$.

    Reference:
        E. Hairer, S. P. Nørsett and G. Wanner, *Solving Ordinary Differential Equations I*,
        2nd ed., Springer, 1993, Sec. III.1 and III.5.
    """

    order: ClassVar[int] = 4
    error_order: ClassVar[int | None] = None
    dense_order: ClassVar[int] = 4
    num_fevals_init: ClassVar[int] = 1
    num_fevals_step: ClassVar[int] = 2

    def __init__(self, order: int = 4, corrector_iterations: int = 1) -> None:
        for name, v in (("order", order), ("corrector_iterations", corrector_iterations)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"FixedAdams: `{name}` must be an int, got {v!r}.")
        if not 1 <= order <= 8:
            raise ValueError(f"FixedAdams: `order` must be between 1 and 8, got {order}.")
        if corrector_iterations < 0:
            raise ValueError(
                f"FixedAdams: `corrector_iterations` must be >= 0, got {corrector_iterations}."
            )
        self.order = order  # type: ignore[misc]
        self.dense_order = order  # type: ignore[misc]
        self.corrector_iterations = corrector_iterations
        self.num_fevals_step = corrector_iterations + 1  # type: ignore[misc]
        self._starter: AbstractRungeKutta = RK4() if order <= 5 else Dopri8()

    def init(self, terms: AbstractTerm, t0: torch.Tensor, y0: torch.Tensor, args: Any) -> Any:
        return initial_history(terms, t0, y0, args, self.order)

    def vector_field_of(self, state: Any) -> Any:
        return state[0]

    def _adams(self, terms, t1, y0, args, h, c, beta, phi, dim):
        p, iters = self.order, self.corrector_iterations
        j = torch.arange(p, device=c.device, dtype=c.dtype)
        older = (j < p - 1).to(c.dtype)
        rows = [c[..., :p], c[..., :p] * older, older.expand_as(c[..., :p])]
        # Φ*_j = β_j Φ_j folded into the weights: one product with the history.
        weights = torch.stack(rows, dim=-2) * beta.unsqueeze(-2)
        pred, base, known = contract(weights, phi, dim).unbind(dim)
        hy = h.to(y0.dtype)
        hy = hy if dim == 0 else hy.reshape(hy.shape + (1,) * (y0.ndim - 1))
        y1 = y0 + hy * pred
        c_last = c[..., p - 1].to(y0.dtype)
        c_last = c_last if dim == 0 else c_last.reshape(hy.shape)
        last = None
        for _ in range(iters):
            f = slope(terms, t1, terms.vf(t1, y1, args))
            last = f - known
            y1 = y0 + hy * (base + c_last * last)
        # Dense output: Φ*_j, with Φ_{p-1}(n+1) from the last corrector slope.
        if last is None:
            dense = (y0, h, beta, phi, None, None)
        else:
            k = torch.full_like(h, float(p - 1))
            dense = (y0, h, beta * older, phi, k, last)
        return y1, dense

    def step(self, terms, t0, t1, y0, args, state):  # type: ignore[override]
        vf0, phi, d, num = state
        p, dim = self.order, t0.ndim
        h = t1 - t0
        ready = num >= p
        all_ready, any_ready = (bool(x) for x in torch.stack([ready.all(), ready.any()]).tolist())
        alpha, c, beta, psi = coefficients(h, d, num, p)
        adams = start = None
        if any_ready:
            y_a, dense = self._adams(terms, t1, y0, args, h, c, beta, phi, dim)
            adams = (*dense, alpha)
        if not all_ready:
            y_s, _, start, vf_s = self._starter.step(terms, t0, t1, y0, args, vf0)
        if adams is None:
            y1, vf1 = y_s, vf_s
        else:
            vf_a = terms.vf(t1, y_a, args)
            if start is None:
                y1, vf1 = y_a, vf_a
            else:
                y1 = torch.where(ready.reshape(ready.shape + (1,) * (y0.ndim - dim)), y_a, y_s)
                vf1 = tree_where(ready, vf_a, vf_s)
        phi1, d1, num1 = advance(beta, phi, slope(terms, t1, vf1), psi, num, dim)
        extra = (self._starter.num_fevals_step if start is not None else 0) + (
            self.num_fevals_step if adams is not None else 0
        )
        dense_info = (adams, start, ready, extra - self.num_fevals_step)
        return y1, None, dense_info, (vf1, phi1, d1, num1)

    def take_dense_fevals(self, dense_info: Any) -> int:
        return dense_info[3]

    def interpolate(self, dense_info: Any, theta: torch.Tensor, per_sample: bool) -> torch.Tensor:
        adams, start, ready, _ = dense_info
        if start is None:
            return interpolate_history(adams, theta, per_sample)
        ys = self._starter.interpolate(start, theta, per_sample)
        if adams is None:
            return ys
        ya = interpolate_history(adams, theta, per_sample)
        mask = ready if per_sample else ready.expand(())
        return torch.where(mask.reshape(mask.shape + (1,) * (ys.ndim - mask.ndim)), ya, ys)

    def __repr__(self) -> str:
        return f"FixedAdams(order={self.order}, corrector_iterations={self.corrector_iterations})"
