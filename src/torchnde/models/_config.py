"""How the models of the zoo configure a solve (shared validation, one place)."""

from __future__ import annotations

from typing import Any

import torch

import torchnde as tn

__all__ = ["SolveConfig", "check_vector_field", "describe"]


def describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)}, dtype {x.dtype}"
    return f"{type(x).__name__} {x!r}"


def check_vector_field(owner: str, vector_field: Any) -> None:
    """Vector fields are called as ``f(t, x)``; a bare ``nn.Sequential`` takes ``x`` only."""
    if isinstance(vector_field, torch.nn.Sequential):
        raise TypeError(
            f"{owner}: `vector_field` is an nn.Sequential, which takes x only, but vector fields "
            "are called as f(t, x); wrap it: Autonomous(net) for f(t, x) = net(x), or "
            "DepthCat(net) for f(t, x) = net([x, t])."
        )
    if not callable(vector_field):
        raise TypeError(
            f"{owner}: `vector_field` must be a module or callable f(t, x), got "
            f"{describe(vector_field)}."
        )


class SolveConfig:
    """The solver, controller, step, adjoint and step budget of a model's solves.

    ``rtol``/``atol`` build a :class:`torchnde.PIDController`; pass ``controller=`` instead for
    anything else (not both). A fixed-step solver needs ``dt0``.
    """

    def __init__(
        self,
        owner: str,
        solver: Any,
        adjoint: Any,
        rtol: float | None,
        atol: float | None,
        controller: Any,
        dt0: float | None,
        max_steps: int,
    ) -> None:
        if solver is None:
            solver = tn.Tsit5()
        if isinstance(solver, type):
            raise TypeError(
                f"{owner}: `solver` must be a solver instance, e.g. {solver.__name__}()."
            )
        if not isinstance(solver, tn.AbstractSolver):
            raise TypeError(
                f"{owner}: `solver` must be a torchnde solver such as torchnde.Tsit5(), got "
                f"{describe(solver)}."
            )
        if adjoint is None:
            adjoint = tn.DirectAdjoint()
        if not isinstance(adjoint, tn.AbstractAdjoint):
            raise TypeError(
                f"{owner}: `adjoint` must be an adjoint such as torchnde.DirectAdjoint(), got "
                f"{describe(adjoint)}."
            )
        if controller is not None and (rtol is not None or atol is not None):
            raise ValueError(
                f"{owner}: pass either `rtol`/`atol` or `controller`, not both (got "
                f"rtol={rtol!r}, atol={atol!r}, controller={controller!r}); put the tolerances "
                "into the controller."
            )
        if controller is None:
            if solver.is_adaptive:
                controller = tn.PIDController(
                    rtol=1e-4 if rtol is None else rtol, atol=1e-6 if atol is None else atol
                )
            else:
                if rtol is not None or atol is not None:
                    raise ValueError(
                        f"{owner}: {solver!r} is a fixed-step solver and ignores tolerances; "
                        "drop `rtol`/`atol` and pass `dt0=`."
                    )
                controller = tn.ConstantStepSize()
        if not isinstance(controller, tn.AbstractStepSizeController):
            raise TypeError(
                f"{owner}: `controller` must be a step-size controller, got {describe(controller)}."
            )
        if not solver.is_adaptive and dt0 is None:
            raise ValueError(
                f"{owner}: {solver!r} is a fixed-step solver: pass the step size `dt0=` "
                "(e.g. dt0=0.05)."
            )
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"{owner}: `max_steps` must be a positive int, got {max_steps!r}.")
        self.solver, self.adjoint, self.controller = solver, adjoint, controller
        self.dt0, self.max_steps = dt0, max_steps

    def solve(
        self,
        f: Any,
        t0: Any,
        t1: Any,
        y0: Any,
        saveat: tn.SaveAt,
        args: Any = None,
    ) -> tn.Solution:
        return tn.solve(
            tn.ODETerm(f),
            self.solver,
            t0,
            t1,
            y0,
            args,
            dt0=self.dt0,
            saveat=saveat,
            controller=self.controller,
            adjoint=self.adjoint,
            max_steps=self.max_steps,
        )

    def __repr__(self) -> str:
        return f"solver={self.solver!r}, controller={self.controller!r}, adjoint={self.adjoint!r}"
