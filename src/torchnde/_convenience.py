"""String method names and torchdiffeq-style calling: thin shims over ``solve``, all here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ._adjoint import AbstractAdjoint
from ._core import solvers
from ._core.controllers import ConstantStepSize, PIDController
from ._core.solution import SaveAt
from ._core.solver import AbstractSolver
from ._core.terms import ODETerm
from ._solve import solve

__all__ = ["METHODS", "odeint", "solver_from_name"]


def _explicit_adams() -> AbstractSolver:
    return solvers.FixedAdams(order=4, corrector_iterations=0)


def _implicit_adams() -> AbstractSolver:
    return solvers.FixedAdams(order=4, corrector_iterations=4)


#: torchdiffeq's method names (and a few aliases) mapped to solvers (classes, or factories
#: for names that configure one: "explicit_adams" is Adams–Bashforth, "implicit_adams"
#: iterates the Adams–Moulton corrector, as in torchdiffeq).
METHODS: dict[str, Callable[[], AbstractSolver]] = {
    "dopri8": solvers.Dopri8,
    "dopri5": solvers.Dopri5,
    "tsit5": solvers.Tsit5,
    "bosh3": solvers.Bosh3,
    "fehlberg2": solvers.Fehlberg2,
    "adaptive_heun": solvers.Heun,
    "heun2": solvers.Heun,
    "euler": solvers.Euler,
    "midpoint": solvers.Midpoint,
    "ralston": solvers.Ralston,
    "rk4": solvers.RK4,
    "rk38": solvers.RK38,
    "reversible_heun": solvers.ReversibleHeun,
    "semi_implicit_euler": solvers.SemiImplicitEuler,
    "leapfrog": solvers.Leapfrog,
    "yoshida4": solvers.Yoshida4,
    "alf": solvers.ALF,
    "adams": solvers.Adams,
    "fixed_adams": solvers.FixedAdams,
    "explicit_adams": _explicit_adams,
    "implicit_adams": _implicit_adams,
    "implicit_euler": solvers.ImplicitEuler,
    "trapezoid": solvers.Trapezoid,
    "kvaerno3": solvers.Kvaerno3,
    "kvaerno4": solvers.Kvaerno4,
    "kvaerno5": solvers.Kvaerno5,
    "ros3p": solvers.Ros3p,
    "rodas4": solvers.Rodas4,
    "rodas5": solvers.Rodas5,
    "radau5": solvers.Radau5,
    "auto_switch": solvers.AutoSwitch,
}

_ODEINT_OPTIONS = {"step_size", "first_step", "max_num_steps", "step_t", "jump_t", "norm"}


def solver_from_name(method: str) -> AbstractSolver:
    """The solver for a method name such as ``"dopri5"``; ``ValueError`` lists the valid ones."""
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"`method` must be one of {sorted(METHODS)}, got {method!r}.")
    return METHODS[method]()


def odeint(
    func: Callable[[torch.Tensor, Any], Any],
    y0: torch.Tensor | tuple[torch.Tensor, ...],
    t: torch.Tensor,
    *,
    method: str = "dopri5",
    rtol: float | torch.Tensor = 1e-7,
    atol: float | torch.Tensor = 1e-9,
    options: dict[str, Any] | None = None,
    adjoint: AbstractAdjoint | None = None,
    throw: bool = True,
    progress: bool = False,
) -> Any:
    """Solve ``dy/dt = func(t, y)`` and return the states at the times ``t`` (torchdiffeq's
    convention).

    Args:
        func: ``func(t, y)`` returning dy/dt (a tensor, or a tuple for a tuple state).
        y0: the initial state at ``t[0]``.
        t: 1-D increasing or decreasing times; the first is the initial time.
        method: a name from :data:`METHODS` (torchdiffeq's names).
        rtol, atol: tolerances of adaptive methods.
        options: torchdiffeq options: ``step_size`` (fixed-step methods; without it they step
            from one time of ``t`` to the next), ``first_step``, ``max_num_steps``,
            ``step_t``, ``jump_t``, ``norm``.
        adjoint: how to differentiate (``DirectAdjoint()`` by default).

    Returns:
        The states, time first: shape ``(len(t), *y0.shape)`` (a tuple for a tuple state).
    """
    solver = solver_from_name(method)
    options = dict(options or {})
    unknown = set(options) - _ODEINT_OPTIONS
    if unknown:
        raise ValueError(
            f"odeint: unknown `options` {sorted(unknown)}; supported: {sorted(_ODEINT_OPTIONS)}."
        )
    t = t if isinstance(t, torch.Tensor) else torch.as_tensor(t, dtype=torch.float64)
    if t.ndim != 1 or t.numel() < 1:
        raise ValueError(f"odeint: `t` must be a 1-D tensor of times, got shape {tuple(t.shape)}.")
    grid: dict[str, Any] = dict(step_ts=options.get("step_t"), jump_ts=options.get("jump_t"))
    dt0 = None
    if solver.is_adaptive and "step_size" in options:
        raise ValueError(
            f"odeint: option `step_size` is for fixed-step methods, but {method!r} is adaptive; "
            "use `first_step` for its initial step, or a fixed-step method such as 'rk4'."
        )
    if solver.is_adaptive:
        controller: Any = PIDController(rtol=rtol, atol=atol, norm=options.get("norm"), **grid)
        dt0 = options.get("first_step")
    else:
        dt0 = options.get("step_size")
        if dt0 is None:
            # torchdiffeq steps from one output time to the next.
            grid["step_ts"] = t
            dt0 = float((t[-1] - t[0]).detach().abs()) or 1.0
        controller = ConstantStepSize(**grid)
    term = ODETerm(lambda tt, y, args: func(tt, y))
    sol = solve(
        term,
        solver,
        t[0],
        t[-1],
        y0,
        dt0=dt0,
        saveat=SaveAt(ts=t),
        controller=controller,
        adjoint=adjoint,
        max_steps=int(options.get("max_num_steps", 2**31 - 1)),
        throw=throw,
        progress=progress,
    )
    return sol.ys
