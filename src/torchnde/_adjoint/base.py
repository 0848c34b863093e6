"""The adjoint contract."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

__all__ = ["AbstractAdjoint"]


class AbstractAdjoint(abc.ABC):
    """Base class of the ways to differentiate through a solve.

    ``solve`` normalises its inputs, then hands the adjoint a ``run`` callable that performs
    the forward loop (``run(y0, args) -> LoopResult``). The adjoint decides what autograd
    records: everything (``DirectAdjoint``), checkpoints, or nothing plus a backward solve.
    """

    @abc.abstractmethod
    def apply(self, run: Callable[..., Any], y0: Any, args: Any) -> Any: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
