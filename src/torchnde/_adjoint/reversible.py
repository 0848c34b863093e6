"""Exact gradients in O(1) memory for algebraically reversible solvers."""

from __future__ import annotations

from typing import Any

from .._core.loop import LoopResult
from .._core.problem import Problem
from .._core.solver import AbstractReversibleSolver
from .base import AbstractAdjoint
from .replay import Reversal, replay_solve

__all__ = ["ReversibleAdjoint"]


class ReversibleAdjoint(AbstractAdjoint):
    """Exact gradients of the computed solution without storing the trajectory, for
    algebraically reversible solvers such as :class:`ReversibleHeun`.

    The forward pass keeps only the final state and, per step, the few scalars the loop
    decides with (times, the controller's state, counters). The backward pass runs the
    solver backwards step by step, rebuilding each step's input state exactly (up to
    floating-point rounding, which does not accumulate into the gradient the way a backward
    re-solve's truncation error does), recomputes the step with autograd and backpropagates
    through it. Memory does not grow with the number of steps in the state's size; the
    gradient equals :class:`DirectAdjoint`'s to round-off.

    Args:
        params: as for :class:`CheckpointAdjoint`.

    Needs a solver with a ``reverse`` step (:class:`ReversibleHeun`). Terminal events and
    ``jump_ts`` (which restart the solver's carried state and so cannot be undone) are not
    supported; use :class:`CheckpointAdjoint` there.

    Reference:
        P. Kidger, J. Foster, X. Li and T. Lyons, "Efficient and Accurate Gradients for Neural
        SDEs", NeurIPS 2021.
    """

    def __init__(self, *, params: Any = None) -> None:
        self.params = params

    def apply(self, problem: Problem) -> LoopResult:
        if not isinstance(problem.solver, AbstractReversibleSolver):
            raise ValueError(
                f"ReversibleAdjoint needs an algebraically reversible solver such as "
                f"ReversibleHeun(), got {problem.solver!r}. Use CheckpointAdjoint for other "
                "solvers."
            )
        if problem.event is not None:
            raise NotImplementedError(
                "ReversibleAdjoint does not support terminal events (the step cut at the event "
                "cannot be run backwards); use CheckpointAdjoint."
            )
        if problem.controller.jump_ts is not None:
            raise NotImplementedError(
                "ReversibleAdjoint does not support `jump_ts` (the solver's carried state is "
                "restarted there and cannot be undone); use CheckpointAdjoint."
            )
        return replay_solve(problem, Reversal(), "ReversibleAdjoint", self.params)
