"""The adjoint contract."""

from __future__ import annotations

import abc

from .._core.loop import LoopResult
from .._core.problem import Problem

__all__ = ["AbstractAdjoint"]


class AbstractAdjoint(abc.ABC):
    """Base class of the ways to differentiate through a solve.

    ``solve`` validates and normalises its inputs into a :class:`Problem` (internal time,
    packed state) and hands it to the adjoint, which runs the forward loop
    (``problem.run()``) and decides what autograd records: everything (``DirectAdjoint``),
    checkpoints, or nothing plus a backward solve. It returns the loop's result, whose
    tensors carry the gradient.
    """

    @abc.abstractmethod
    def apply(self, problem: Problem) -> LoopResult: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
