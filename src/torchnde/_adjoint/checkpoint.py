"""Exact discrete gradients with bounded memory: recompute the solve from checkpoints."""

from __future__ import annotations

from typing import Any

from .._core.loop import LoopResult
from .._core.problem import Problem
from .base import AbstractAdjoint
from .replay import Checkpoints, replay_solve

__all__ = ["CheckpointAdjoint"]


class CheckpointAdjoint(AbstractAdjoint):
    r"""The gradient of :class:`DirectAdjoint`, to round-off, with memory that does not grow
    with the number of steps.

    The forward pass runs the solve without recording anything for autograd and keeps a few
    loop states as checkpoints, with a record of every decision the loop made (accepted and
    rejected steps, save points, events). The backward pass recomputes the iterations between
    checkpoints with autograd, replaying those decisions without host synchronisation, and
    backpropagates through them. Every operation of the direct solve is recomputed, the
    step-size controller included, so the gradients equal :class:`DirectAdjoint`'s.

    Args:
        checkpoints: ``None`` bisects the steps recursively in the backward pass:
            $O(\log n)$ stored states and $O(n \log n)$ recomputed steps for $n$ steps, so
            memory stays flat as $n$ grows. An int ``k`` keeps between ``k`` and ``2k``
            evenly spaced states and recomputes each segment once with its whole graph: one
            extra forward pass, the memory of ``n/k`` steps.
        params: the tensors the vector field closes over that need gradients; by default
            the parameters of an ``nn.Module`` vector field and the tensors requiring grad
            found in a function's closure. Tensors in ``args`` are always included; a tensor
            that is read but not found gets no gradient and a warning.

    Dense output (``SaveAt(dense=True)``) and ``SaveAt(steps=True)`` are returned without
    gradient; the states at ``ts`` and at the end (the event time for a terminal event) are
    differentiable with respect to ``y0``, ``args``, the parameters, ``t0``, ``t1`` and ``ts``.
    Double backward is :class:`DirectAdjoint`'s.
    """

    def __init__(self, checkpoints: int | None = None, *, params: Any = None) -> None:
        if checkpoints is not None and (
            isinstance(checkpoints, bool) or not isinstance(checkpoints, int) or checkpoints < 1
        ):
            raise ValueError(
                "CheckpointAdjoint: `checkpoints` must be None (recursive bisection) or a "
                f"positive int (number of stored states), got {checkpoints!r}."
            )
        self.checkpoints = checkpoints
        self.params = params

    def apply(self, problem: Problem) -> LoopResult:
        return replay_solve(
            problem, Checkpoints(self.checkpoints), "CheckpointAdjoint", self.params
        )

    def __repr__(self) -> str:
        return f"CheckpointAdjoint(checkpoints={self.checkpoints!r})"
