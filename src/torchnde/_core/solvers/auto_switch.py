r"""Automatic switching between an explicit and a stiff solver."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import torch

from ..implicit import AbstractESDIRK, AbstractImplicitSolver
from ..loop import tree_where
from ..newton import Counts
from ..runge_kutta import AbstractRungeKutta
from ..solver import AbstractSolver
from ..terms import AbstractTerm, broadcast_time
from .rodas5 import Rodas5
from .tsit5 import Tsit5

__all__ = ["AutoSwitch"]


def _stability_boundary(a: np.ndarray, b: np.ndarray) -> float:
    """Where the stability region of an explicit method ends on the negative real axis:
    the largest ``r`` with ``|R(-x)| <= 1`` on ``[0, r]``, ``R(z) = 1 + z b^T (I - zA)^{-1} 1``."""
    s = len(b)
    eye, ones = np.eye(s), np.ones(s)
    xs = np.arange(1, 20001) * 1e-3
    for x in xs:
        r = 1 - x * b @ np.linalg.solve(eye + x * a, ones)
        if abs(r) > 1 + 1e-12:
            return float(x - 1e-3)
    return float(xs[-1])


def _rows_norm(x: torch.Tensor, per_sample: bool) -> torch.Tensor:
    if per_sample:
        return torch.linalg.vector_norm(x.reshape(x.shape[0], -1), dim=1)
    return torch.linalg.vector_norm(x)


def _spectral_radius(J: torch.Tensor) -> torch.Tensor:
    """``(B,)`` largest eigenvalue modulus of each ``(n, n)`` block (eigenvalues for small
    blocks, 30 power iterations for large ones)."""
    J = J.detach()
    n = J.shape[-1]
    if n <= 64:
        return torch.linalg.eigvals(J).abs().amax(-1).to(J.dtype)
    v = torch.ones(J.shape[:-1], dtype=J.dtype, device=J.device)
    rho = torch.zeros(J.shape[0], dtype=J.dtype, device=J.device)
    for _ in range(30):
        w = (J @ v.unsqueeze(-1)).squeeze(-1)
        rho = torch.linalg.vector_norm(w, dim=-1) / torch.linalg.vector_norm(v, dim=-1)
        v = w / torch.linalg.vector_norm(w, dim=-1, keepdim=True).clamp_min(1e-300)
    return rho


class AutoSwitch(AbstractSolver):
    r"""An explicit solver while the problem is non-stiff, a stiff one while it is stiff.

    Stiffness is detected as in Hairer's DOPRI5 code (Hairer & Wanner, *Solving ODEs II*,
    Sec. IV.2): the last two stages of the explicit method are both at $t_1$, so
    $h\rho \approx h \|f(y_s) - f(y_{s-1})\| / \|y_s - y_{s-1}\|$ estimates the step size
    times the dominant eigenvalue for free. When it stays above ``stiff_threshold`` times the
    method's stability boundary on the negative real axis (about 3.3 for Dopri5, 3.5 for
    Tsit5) for ``switch_after`` accepted steps, the step size is limited by stability, not
    accuracy, and the solve switches to the stiff method. In the stiff method, the spectral
    radius of its Jacobian is checked after every step; when ``h ρ(J)`` stays below
    ``nonstiff_threshold`` times the boundary for ``switch_after`` steps, the explicit
    method could take the same step and the solve switches back. The counts give hysteresis
    (no switching back and forth on every step). With per-sample stepping each sample
    switches on its own; a step runs each method only if some sample uses it.

    Order, error order and dense output are those of the method in use. Like the Julia
    stack's ``AutoTsit5(Rodas5())`` (Rackauckas & Nie, *J. Open Res. Softw.* 5 (2017)).

    Args:
        nonstiff: an explicit Runge–Kutta method whose last two stages are at ``t1``
            (``Tsit5()``, ``Dopri5()``); default ``Tsit5()``.
        stiff: an implicit or Rosenbrock method; default ``Rodas5()``.
        switch_after: consecutive accepted steps a verdict must hold before switching.
        stiff_threshold, nonstiff_threshold: fractions of the stability boundary, see above.
        start_stiff: start with the stiff method.

    Example:
        >>> solver = AutoSwitch(Tsit5(), Rodas5())
    """

    def __init__(
        self,
        nonstiff: AbstractSolver | None = None,
        stiff: AbstractSolver | None = None,
        *,
        switch_after: int = 5,
        stiff_threshold: float = 0.9,
        nonstiff_threshold: float = 0.5,
        start_stiff: bool = False,
    ) -> None:
        nonstiff = Tsit5() if nonstiff is None else nonstiff
        stiff = Rodas5() if stiff is None else stiff
        if not isinstance(nonstiff, AbstractRungeKutta) or not nonstiff.is_adaptive:
            raise TypeError(
                f"AutoSwitch: `nonstiff` must be an adaptive explicit Runge–Kutta method such as "
                f"Tsit5() or Dopri5(), got {nonstiff!r}."
            )
        tab = nonstiff._tab()
        if not (tab.fsal and tab.c[-1] == 1.0 and tab.c[-2] == 1.0):
            raise ValueError(
                f"AutoSwitch: `nonstiff` must have its last two stages at t1 (first same as "
                f"last), as Tsit5() and Dopri5() do, to estimate stiffness; got {nonstiff!r}."
            )
        if not isinstance(stiff, AbstractImplicitSolver) or not stiff.is_adaptive:
            raise TypeError(
                f"AutoSwitch: `stiff` must be an adaptive implicit or Rosenbrock method such as "
                f"Rodas5() or Kvaerno5(), got {stiff!r}."
            )
        if isinstance(switch_after, bool) or not isinstance(switch_after, int) or switch_after < 1:
            raise ValueError(
                f"AutoSwitch: `switch_after` must be an int >= 1, got {switch_after!r}."
            )
        for k, v in (
            ("stiff_threshold", stiff_threshold),
            ("nonstiff_threshold", nonstiff_threshold),
        ):
            if not isinstance(v, (int, float)) or not 0 < v:
                raise ValueError(f"AutoSwitch: `{k}` must be a positive number, got {v!r}.")
        self.nonstiff: AbstractRungeKutta = nonstiff
        self.stiff: AbstractSolver = stiff
        self.switch_after = switch_after
        self.start_stiff = bool(start_stiff)
        s = tab.num_stages
        a = np.zeros((s, s))
        for i, row in enumerate(tab.a):
            a[i + 1, : i + 1] = row
        self.boundary = _stability_boundary(a, np.array(tab.b))
        self.stiff_level = stiff_threshold * self.boundary
        self.nonstiff_level = nonstiff_threshold * self.boundary
        self.order = nonstiff.order  # type: ignore[misc]
        self.error_order = min(nonstiff.error_order, stiff.error_order)  # type: ignore
        self.dense_order = min(nonstiff.dense_order, stiff.dense_order)  # type: ignore[misc]
        self.num_fevals_init = nonstiff.num_fevals_init + stiff.num_fevals_init  # type: ignore
        self.num_fevals_step = 0  # type: ignore[misc]

    def with_tolerances(self, rtol: Any, atol: Any) -> AbstractSolver:
        new = object.__new__(AutoSwitch)
        new.__dict__.update(self.__dict__)
        new.stiff = self.stiff.with_tolerances(rtol, atol)
        return new

    # state: (stiff_mode, count, nonstiff_state, stiff_state)
    def init(self, terms: AbstractTerm, t0: torch.Tensor, y0: torch.Tensor, args: Any) -> Any:
        mode = torch.full_like(t0, self.start_stiff, dtype=torch.bool)
        count = torch.zeros_like(t0, dtype=torch.int64)
        return (
            mode,
            count,
            self.nonstiff.init(terms, t0, y0, args),
            self.stiff.init(terms, t0, y0, args),
        )

    def vector_field_of(self, state: Any) -> Any:
        return self.nonstiff.vector_field_of(state[2])

    def rejected_state(self, state: Any, new_state: Any) -> Any:
        return state[:3] + (self.stiff.rejected_state(state[3], new_state[3]),)

    def _explicit_stiffness(self, y0: torch.Tensor, dense: Any, per_sample: bool) -> torch.Tensor:
        """``h ρ`` from the explicit step's last two stages (both at ``t1``)."""
        tab = self.nonstiff._tab()
        K = dense.K  # PolynomialDense or HermiteDense
        s = tab.num_stages
        co = tab.cast(y0.dtype, y0.device)
        Kf = K.reshape(s, -1)
        y0f = y0.reshape(1, -1)
        y_last = torch.addmm(y0f, co["a_pad"][s - 1], Kf).view_as(y0)
        y_prev = torch.addmm(y0f, co["a_pad"][s - 2], Kf).view_as(y0)
        num = _rows_norm(K[s - 1] - K[s - 2], per_sample)
        den = _rows_norm(y_last - y_prev, per_sample)
        return torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(num))

    def step(
        self,
        terms: AbstractTerm,
        t0: torch.Tensor,
        t1: torch.Tensor,
        y0: torch.Tensor,
        args: Any,
        state: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None, Any, Any]:
        mode, count, ns_state, s_state = state
        per_sample = t0.ndim == 1
        counts = Counts()
        h = (t1 - t0).to(y0.dtype)
        if per_sample:
            run_s, run_ns = bool(mode.any()), bool((~mode).any())
        else:
            run_s = bool(mode)
            run_ns = not run_s
        out_ns = out_s = None
        if run_ns:
            out_ns = self.nonstiff.step(terms, t0, t1, y0, args, ns_state)
            counts.num_fevals += self.nonstiff.num_fevals_step
            counts.num_fevals += self.nonstiff.take_dense_fevals(out_ns[2])
        if run_s:
            if per_sample and isinstance(self.stiff, AbstractESDIRK):
                out_s = self.stiff._step(terms, t0, t1, y0, args, s_state, mode)
            else:
                out_s = self.stiff.step(terms, t0, t1, y0, args, s_state)
            counts.num_fevals += self.stiff.take_dense_fevals(out_s[2])
            for k, v in (self.stiff.take_stats(out_s[2]) or {}).items():
                counts.extra[k] = counts.extra.get(k, 0) + v
        # Stiffness verdicts for the next step.
        zero = torch.zeros_like(h)
        hrho_ns = self._explicit_stiffness(y0, out_ns[2], per_sample) if out_ns else zero
        hrho_s = zero
        if out_s is not None:
            rho = _spectral_radius(out_s[3][1])
            hrho_s = (rho if per_sample else rho.amax()) * h.abs()
        vote = torch.where(mode, hrho_s < self.nonstiff_level, hrho_ns > self.stiff_level)
        count = torch.where(vote, count + 1, torch.zeros_like(count))
        switch = count >= self.switch_after
        new_mode = mode ^ switch
        count = torch.where(switch, torch.zeros_like(count), count)
        if out_ns is not None and out_s is not None:
            e_s, e_ns = cast(torch.Tensor, out_s[1]), cast(torch.Tensor, out_ns[1])
            y1 = torch.where(broadcast_time(mode, out_s[0]), out_s[0], out_ns[0])
            err: torch.Tensor | None = torch.where(broadcast_time(mode, e_s), e_s, e_ns)
            ns_new = tree_where(mode, ns_state, out_ns[3])
            s_new = tree_where(mode, out_s[3], s_state)
        elif out_ns is not None:
            y1, err, ns_new, s_new = out_ns[0], out_ns[1], out_ns[3], s_state
        else:
            assert out_s is not None
            y1, err, ns_new, s_new = out_s[0], out_s[1], ns_state, out_s[3]
        # A switch restarts the method switched to at the end of the step.
        to_s, to_ns = switch & ~mode, switch & mode
        if bool(to_s.any()):
            fresh = self.stiff.init(terms, t1, y1, args)
            counts.num_fevals += self.stiff.num_fevals_init
            s_new = tree_where(to_s, fresh, s_new)
        if bool(to_ns.any()):
            fresh = self.nonstiff.init(terms, t1, y1, args)
            counts.num_fevals += self.nonstiff.num_fevals_init
            ns_new = tree_where(to_ns, fresh, ns_new)
        counts.extra["num_stiff_switches"] = int(to_s.sum())
        counts.extra["num_nonstiff_switches"] = int(to_ns.sum())
        dense = (mode, out_ns[2] if out_ns else None, out_s[2] if out_s else None, counts)
        return y1, err, dense, (new_mode, count, ns_new, s_new)

    def interpolate(self, dense_info: Any, theta: torch.Tensor, per_sample: bool) -> torch.Tensor:
        mode, d_ns, d_s, _ = dense_info
        if d_s is None:
            return self.nonstiff.interpolate(d_ns, theta, per_sample)
        if d_ns is None:
            return self.stiff.interpolate(d_s, theta, per_sample)
        a = self.nonstiff.interpolate(d_ns, theta, per_sample)
        b = self.stiff.interpolate(d_s, theta, per_sample)
        return torch.where(broadcast_time(mode, b), b, a)

    def take_dense_fevals(self, dense_info: Any) -> int:
        return dense_info[-1].take_fevals()

    def take_stats(self, dense_info: Any) -> dict[str, int] | None:
        c = dense_info[-1]
        out = dict(c.extra)
        c.extra = {}
        return out

    def __repr__(self) -> str:
        return f"AutoSwitch({self.nonstiff!r}, {self.stiff!r})"
