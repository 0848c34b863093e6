"""Terminal events: stop the solve where an event function crosses zero."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["Event"]

EventFn = Callable[[torch.Tensor, Any, Any], torch.Tensor]


class Event:
    r"""Stop the solve at the first zero crossing of any of the event functions.

    ``fn(t, y, args)`` returns a floating-point tensor, continuous along the solution, whose
    sign change is the event (``y[..., 0] - 0.5``, not the comparison ``y[..., 0] < 0.5``,
    which is refused with a ``TypeError``, as are Python numbers, which carry no gradient for
    the event time). In joint stepping the solve stops when any element crosses zero; in
    per-sample stepping ``fn`` returns ``(batch,)`` (or ``(batch, ...)``) and each sample
    stops at its own crossing. An event value that is NaN at the start or at an accepted
    step can never cross: the (sample's) solve fails with ``Status.NONFINITE``. The crossing
    is located on the dense output by bisection to the resolution of the time dtype;
    ``SaveAt(t1=True)`` then saves the event time and state, and ``Solution.event_mask`` says
    which function fired.

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

    def first_values(
        self, t: torch.Tensor, y: Any, args: Any, per_sample: bool, like: torch.Tensor
    ) -> list[torch.Tensor]:
        """:meth:`values` at the start of the solve, each function's output validated once
        (``like`` is the state: its batch size and device)."""
        out = []
        for i, f in enumerate(self.fns):
            v = f(t, y, args)
            _check_value(v, f"`fn[{i}]`" if len(self.fns) > 1 else "`fn`", per_sample, like)
            if per_sample and v.ndim > 1:
                v = v.reshape(v.shape[0], -1)
            out.append(v)
        return out

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


def _check_value(v: Any, name: str, per_sample: bool, like: torch.Tensor) -> None:
    """An event function's value: a real floating tensor; per sample, one row per sample."""
    what = (
        f"a tensor of shape {tuple(v.shape)} and dtype {v.dtype}"
        if isinstance(v, torch.Tensor)
        else f"{type(v).__name__} {v!r}"
    )
    if isinstance(v, bool) or (isinstance(v, torch.Tensor) and v.dtype == torch.bool):
        raise TypeError(
            f"Event: {name} returned a bool ({what}). An event fires where a continuous function "
            "crosses zero, so return that function rather than a comparison: e.g. "
            "`y[0, 0] - 0.5` instead of `y[0, 0] < 0.5` (with direction=-1 for downward "
            "crossings only)."
        )
    if not isinstance(v, torch.Tensor):
        why = (
            " (a missing `return`?)"
            if v is None
            else ". A number carries no gradient for the event time and costs a host sync per call"
        )
        raise TypeError(
            f"Event: {name} must return a tensor, got {what}{why}: return the tensor expression "
            "itself, e.g. `y[..., 0] - 0.5`, not `float(...)` or `.item()`."
        )
    if not torch.is_floating_point(v):
        raise TypeError(
            f"Event: {name} must return a real floating-point tensor whose sign change is the "
            f"event, got {what}; e.g. `y[..., 0] - 0.5`."
        )
    if v.numel() == 0:
        raise ValueError(f"Event: {name} returned an empty tensor ({what}).")
    if v.device != like.device:
        raise ValueError(
            f"Event: {name} returned a tensor on {v.device} but the state is on {like.device}; "
            "compute it from `t` and `y` (or move it with `.to(y.device)`)."
        )
    if per_sample and (v.ndim == 0 or v.shape[0] != like.shape[0]):
        batch = like.shape[0]
        raise ValueError(
            f"Event: with per-sample stepping {name} must return one value per sample, shape "
            f"({batch},) or ({batch}, ...), got {what}; e.g. `y[:, 0] - 0.5` rather than "
            "`y[0, 0] - 0.5`."
        )
