"""Terminal events: stop the solve where an event function crosses zero."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["Event"]

EventFn = Callable[[torch.Tensor, Any, Any], torch.Tensor]


class Event:
    r"""Stop the solve at the first zero crossing of any of the event functions.

    ``fn(t, y, args)`` returns a tensor; in joint stepping the solve stops when any element
    crosses zero, in per-sample stepping ``fn`` returns ``(batch,)`` (or ``(batch, ...)``) and
    each sample stops at its own crossing. The crossing is located on the dense output by
    bisection to the resolution of the time dtype; ``SaveAt(t1=True)`` then saves the event
    time and state, and ``Solution.event_mask`` says which function fired.

    Args:
        fn: an event function or a sequence of them.
        direction: ``0`` (any crossing), ``+1`` (from negative to positive along the solve) or
            ``-1``; one for all functions or one per function.

    Example:
        >>> hit_ground = Event(lambda t, y, args: y[..., 0], direction=-1)
    """

    def __init__(self, fn: EventFn | Sequence[EventFn], direction: int | Sequence[int] = 0):
        fns = tuple(fn) if isinstance(fn, (list, tuple)) else (fn,)
        if not fns or not all(callable(f) for f in fns):
            raise TypeError(
                f"Event: `fn` must be a callable fn(t, y, args) or a sequence of them, got {fn!r}."
            )
        if isinstance(direction, (list, tuple)):
            dirs: tuple[int, ...] = tuple(direction)
        else:
            dirs = (direction,) * len(fns)  # type: ignore[assignment]
        if len(dirs) != len(fns) or any(d not in (-1, 0, 1) for d in dirs):
            raise ValueError(
                f"Event: `direction` must be -1, 0 or +1, once or once per function "
                f"({len(fns)}), got {direction!r}."
            )
        self.fns = fns
        self.directions = dirs

    def values(self, t: torch.Tensor, y: Any, args: Any, per_sample: bool) -> list[torch.Tensor]:
        out = []
        for f in self.fns:
            v = torch.as_tensor(f(t, y, args))
            if per_sample and v.ndim > 1:
                v = v.reshape(v.shape[0], -1)
            out.append(v)
        return out

    def crossed(
        self, before: list[torch.Tensor], after: list[torch.Tensor], per_sample: bool
    ) -> list[torch.Tensor]:
        """Per function: whether a crossing in the right direction happened (batch shape)."""
        out = []
        for g0, g1, d in zip(before, after, self.directions):
            up = (g0 < 0) & (g1 >= 0)
            down = (g0 > 0) & (g1 <= 0)
            hit = up if d > 0 else down if d < 0 else up | down
            if per_sample:
                out.append(hit.reshape(hit.shape[0], -1).any(dim=1) if hit.ndim > 1 else hit)
            else:
                out.append(hit.any())
        return out
