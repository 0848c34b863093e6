r"""Online neural CDEs: advance the hidden state as observations arrive.

With an interpolation in which a segment depends only on observations up to its end
(linear, or Hermite cubic with backward differences; Morrill et al. 2021, *Neural
Controlled Differential Equations for Online Prediction Tasks*), the solution up to the
latest observation never changes when a new one arrives. :class:`CDEStream` therefore solves
only the new segment, from the last observation time to the new one, starting from the
state it holds: constant work per observation instead of a solve from the start.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .._adjoint import AbstractAdjoint
from .._core.controllers import ConstantStepSize, PIDController
from .._core.solution import SaveAt
from .._core.solver import AbstractSolver
from .._solve import solve
from ._checks import describe
from .cdeint import resolve_solver
from .cubic import CubicSpline
from .hermite import hermite_segment
from .linear import LinearInterpolation
from .term import CDETerm

__all__ = ["CDEStream"]


class CDEStream:
    r"""The state of a neural CDE, advanced one observation at a time.

    ``stream.update(t_new, x_new)`` extends the path by one segment and solves
    $dz = f(t, z)\,dX(t)$ across it; the result agrees with :func:`cdeint` on the whole
    series interpolated the same way (to round-off for fixed steps, to the tolerance for
    adaptive ones, whose step sizes restart at each observation).

    Args:
        func: ``func(t, z)`` returning ``(..., hidden, channels)``.
        z0: the state at the first observation, ``(..., hidden)``.
        t0: the time of the first observation.
        x0: the first observation, ``(..., channels)`` (no NaN; fill missing values
            causally first, e.g. with the last observation).
        interpolation: ``"linear"`` or ``"hermite"`` (Hermite cubic with backward
            differences, as :func:`hermite_cubic_coeffs`).
        solver, method, rtol, atol, adjoint: as for :func:`cdeint`.
        dt0: the step of fixed-step solvers (default: one step per segment).

    Example:
        >>> stream = CDEStream(func, z0, t0=0.0, x0=x[:, 0])
        >>> for i in range(1, length):
        ...     z = stream.update(t[i], x[:, i])   # (batch, hidden) at t[i]
    """

    def __init__(
        self,
        func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        z0: torch.Tensor,
        t0: float | torch.Tensor,
        x0: torch.Tensor,
        *,
        interpolation: str = "linear",
        solver: AbstractSolver | str | None = None,
        method: str | None = None,
        rtol: float = 1e-5,
        atol: float = 1e-6,
        dt0: float | None = None,
        adjoint: AbstractAdjoint | None = None,
        max_steps: int = 65536,
    ) -> None:
        who = "CDEStream"
        if not callable(func):
            raise TypeError(f"{who}: `func` must be callable as func(t, z), got {describe(func)}.")
        if interpolation not in ("linear", "hermite"):
            raise ValueError(
                f"{who}: `interpolation` must be 'linear' or 'hermite' (the interpolations whose "
                f"past does not change when data arrive), got {interpolation!r}."
            )
        if not isinstance(z0, torch.Tensor) or not torch.is_floating_point(z0):
            raise TypeError(f"{who}: `z0` must be a floating-point tensor, got {describe(z0)}.")
        self._x_check(who, x0)
        self.func = func
        self.interpolation = interpolation
        self.solver = resolve_solver(who, solver, method)
        self.rtol, self.atol, self.dt0 = rtol, atol, dt0
        self.adjoint, self.max_steps = adjoint, max_steps
        self.z = z0
        self.t = torch.as_tensor(t0, dtype=x0.dtype, device=x0.device)
        self.x = x0
        self._slope: torch.Tensor | None = None  # the last segment's slope (Hermite)
        self.num_updates = 0

    @staticmethod
    def _x_check(who: str, x: Any) -> None:
        if not isinstance(x, torch.Tensor) or not torch.is_floating_point(x) or x.ndim < 1:
            raise TypeError(
                f"{who}: an observation must be a floating-point tensor of shape (..., "
                f"channels), got {describe(x)}."
            )
        if bool(torch.isnan(x).any()):
            raise ValueError(
                f"{who}: the observation has NaN values; fill them causally first (e.g. with "
                "the previous observation, as fill_forward does)."
            )

    def update(self, t_new: float | torch.Tensor, x_new: torch.Tensor) -> torch.Tensor:
        """Add the observation ``x_new`` at time ``t_new`` (after the last one) and return the
        state there, shape ``z0.shape``."""
        who = "CDEStream.update"
        self._x_check(who, x_new)
        if x_new.shape[-1] != self.x.shape[-1]:
            raise ValueError(
                f"{who}: `x_new` has {x_new.shape[-1]} channels but the stream has "
                f"{self.x.shape[-1]}; got shape {tuple(x_new.shape)}."
            )
        t_new = torch.as_tensor(t_new, dtype=self.t.dtype, device=self.t.device)
        if t_new.ndim != 0 or not bool(t_new > self.t):
            raise ValueError(
                f"{who}: `t_new` must be one time after the last observation time "
                f"{float(self.t):.6g}, got {describe(t_new)}."
            )
        x0, x1 = torch.broadcast_tensors(self.x, x_new)
        knots = torch.stack([self.t, t_new])
        h = t_new - self.t
        if self.interpolation == "linear":
            path: Any = LinearInterpolation(torch.stack([x0, x1], dim=-2), knots)
            side = "left"
        else:
            slope = (x1 - x0) / h
            m0 = slope if self._slope is None else self._slope.expand_as(slope)
            path = CubicSpline(hermite_segment(x0, x1, h, m0).unsqueeze(-2), knots)
            self._slope = slope
            side = "left"
        term = CDETerm(lambda tt, z, args: self.func(tt, z), path, side=side)
        start = self.t
        if self.interpolation == "linear":
            start = torch.nextafter(self.t, t_new)  # the segment's own slope from the start
        if self.solver.is_adaptive:
            controller: Any = PIDController(rtol=self.rtol, atol=self.atol)
            dt0 = self.dt0
        else:
            controller = ConstantStepSize()
            dt0 = self.dt0 if self.dt0 is not None else float(h)
        sol = solve(
            term,
            self.solver,
            start,
            t_new,
            self.z,
            dt0=dt0,
            saveat=SaveAt(t1=True),
            controller=controller,
            adjoint=self.adjoint,
            max_steps=self.max_steps,
        )
        self.z = sol.ys[-1]
        self.t = t_new
        self.x = x_new
        self.num_updates += 1
        return self.z
