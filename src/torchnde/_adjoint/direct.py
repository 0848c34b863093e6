"""Autograd through every step (discretise-then-optimise)."""

from __future__ import annotations

from .._core.loop import LoopResult
from .._core.problem import Problem
from .base import AbstractAdjoint

__all__ = ["DirectAdjoint"]


class DirectAdjoint(AbstractAdjoint):
    """Backpropagate through every operation of the solve.

    Gives the exact gradient of the computed solution with respect to everything that
    requires grad (``y0``, parameters, ``args``, ``t0``, ``t1``, ``ts``); supports double
    backward. Memory grows linearly with the number of steps. Under ``torch.no_grad()`` it
    costs nothing extra.
    """

    def apply(self, problem: Problem) -> LoopResult:
        return problem.run()
