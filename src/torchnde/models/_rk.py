"""One explicit Runge–Kutta step for the zoo's fixed-step models (hypersolvers, parareal's
coarse propagator), taken by the core's Runge–Kutta engine through the solver interface:
exactly ``s`` evaluations per step (a constant-step solver defers its end-of-step
evaluation, which these one-off steps would waste)."""

from __future__ import annotations

from typing import Any

import torch

import torchnde as tn

from ._config import describe

__all__ = ["rk_solver", "rk_step"]


def rk_solver(owner: str, name: str, solver: Any) -> tn.AbstractRungeKutta:
    """An explicit Runge–Kutta solver set up for constant steps, from a solver instance or a
    :class:`~torchnde.ButcherTableau`."""
    if isinstance(solver, tn.ButcherTableau):
        solver = tn.ExplicitRungeKutta(solver)
    if not isinstance(solver, tn.AbstractRungeKutta):
        raise TypeError(
            f"{owner}: `{name}` must be an explicit Runge-Kutta solver such as torchnde.Euler() "
            f"/ RK4() / ExplicitRungeKutta(tab), or a ButcherTableau, got {describe(solver)}."
        )
    return solver.with_controller(tn.ConstantStepSize(), None)  # type: ignore[return-value]


def rk_step(
    f: Any, solver: tn.AbstractRungeKutta, t: torch.Tensor, h: torch.Tensor, x: torch.Tensor
) -> torch.Tensor:
    """The state after one step of size ``h`` from ``(t, x)`` of ``dx/dt = f(t, x)``; ``t``,
    ``h`` scalar or per sample ``(batch,)``."""
    term = tn.ODETerm(lambda s, y, args: f(s, y))
    state = solver.init(term, t, x, None)
    return solver.step(term, t, t + h, x, None, state)[0]
