"""What a solve returns: SaveAt, Solution, Status, SolveError."""

from __future__ import annotations

import enum
import reprlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["SaveAt", "Solution", "Status", "SolveError"]


class Status(enum.IntEnum):
    """Per-sample result of a solve. Each member carries its message."""

    SUCCESSFUL = 0
    EVENT_OCCURRED = 1
    MAX_STEPS_REACHED = 2
    DT_UNDERFLOW = 3
    NONFINITE = 4
    MAX_EVENTS_REACHED = 5

    @property
    def message(self) -> str:
        return _MESSAGES[self]

    @property
    def is_success(self) -> bool:
        return self in (Status.SUCCESSFUL, Status.EVENT_OCCURRED)


_MESSAGES = {
    Status.SUCCESSFUL: "the solve reached t1",
    Status.EVENT_OCCURRED: "a terminal event occurred",
    Status.MAX_STEPS_REACHED: (
        "the maximum number of steps was reached; raise `max_steps`, loosen the tolerances, "
        "or check the vector field for stiffness or a blow-up"
    ),
    Status.DT_UNDERFLOW: (
        "the step size fell below `dtmin` or below the resolution of the time dtype: "
        "tolerances tighter than the dtype resolves, a stiff problem (use an implicit solver "
        "such as Kvaerno5 or Rodas5), a singularity, or, for implicit solvers, Newton's "
        "method failing even for tiny steps"
    ),
    Status.NONFINITE: (
        "NaN or inf in the initial state, the vector field, the error norm or an event "
        "function, which shrinking the step cannot cure"
    ),
    Status.MAX_EVENTS_REACHED: (
        "more non-terminal events than the Event's `max_events`: Zeno behaviour (events "
        "accumulating in finite time, e.g. a bouncing ball coming to rest) or a reset that "
        "leaves the state on the event surface; raise `max_events`, or end the solve with a "
        "terminal event before the events accumulate"
    ),
}


class SolveError(RuntimeError):
    """A solve failed. ``status``, ``t`` and ``num_steps`` say how and where; ``detail``, when
    the solve could tell, why (it then replaces the status's generic message)."""

    def __init__(
        self, status: Status, t: float, num_steps: int, num_failed: int = 1, detail: str = ""
    ) -> None:
        self.status = status
        self.t = t
        self.num_steps = num_steps
        self.detail = detail
        who = "" if num_failed <= 1 else f" ({num_failed} samples failed; first shown)"
        super().__init__(
            f"Solve failed at t={t:.6g} after {num_steps} steps: {status.name}: "
            f"{detail or status.message}{who}. Pass throw=False to get the partial solution "
            "and per-sample `status` instead."
        )


@dataclass(frozen=True)
class SaveAt:
    """What to save from a solve.

    The saved times are, in this order: ``t0`` (if ``t0=True``), ``ts``, every accepted step
    (if ``steps=True``), and the end time reached (if ``t1=True``; the event time when a
    terminal event stopped the solve).

    Args:
        t0: save the initial state.
        t1: save the final state.
        ts: times to save at, 1-D increasing in the direction of integration, within
            ``[t0, t1]``; per-sample ``(batch, n)`` when stepping per sample.
        steps: save after every accepted step.
        dense: keep the dense solution so ``Solution.evaluate(t)`` works anywhere.
    """

    t0: bool = False
    t1: bool = False
    ts: Sequence[float] | torch.Tensor | None = None
    steps: bool = False
    dense: bool = False

    def __post_init__(self) -> None:
        for name in ("t0", "t1", "steps", "dense"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"SaveAt: `{name}` must be a bool, got {getattr(self, name)!r}.")
        if self.ts is not None and not isinstance(self.ts, torch.Tensor):
            _check_times(self.ts)
        if not (self.t0 or self.t1 or self.ts is not None or self.steps or self.dense):
            raise ValueError(
                "SaveAt: nothing to save; set at least one of t0=True, t1=True, ts=..., "
                "steps=True or dense=True."
            )


def _check_times(ts: Any) -> None:
    """``SaveAt(ts=...)`` given as a sequence: real numbers (nested once for per-sample times)."""
    try:
        as_tensor = torch.as_tensor(ts)
    except (TypeError, ValueError, RuntimeError):
        as_tensor = None
    if as_tensor is None or not (
        torch.is_floating_point(as_tensor) or as_tensor.dtype in (torch.int32, torch.int64)
    ):
        raise TypeError(
            f"SaveAt: `ts` must be a tensor or a sequence of real numbers (the times to save "
            f"at), got {type(ts).__name__} {reprlib.repr(ts)}; e.g. SaveAt(ts=[0.5, 1.0]) or "
            "SaveAt(ts=torch.linspace(0, 1, 11))."
        )


@dataclass
class Solution:
    """The result of a solve.

    Attributes:
        ts: the saved times: ``(n,)``, or ``(batch, n)`` when stepping per sample.
        ys: the saved states, time first: ``(n, *y0.shape)`` (a tuple of such tensors for a
            tuple state). Entries a sample never reached (after a failure or a terminal
            event) are NaN.
        stats: ``num_steps`` (attempted), ``num_accepted_steps`` and ``num_rejected_steps``
            (per sample when stepping per sample), ``num_fevals``; implicit and Rosenbrock
            solvers add ``num_jacobians`` and ``num_lu_factorisations`` (batched calls).
        status: a :class:`Status` code per sample (a 0-d tensor for joint stepping).
        event_mask: for a solve with events, a tuple with, per event function, a bool tensor
            saying whether it stopped the solve (a terminal event).
        event_ts: for a solve with events, the time of every event that fired (terminal or
            not), in order: ``(k,)``, or ``(batch, k)`` when stepping per sample (NaN after a
            sample's last event). Differentiable, like the saved states.
        event_ids: the index of the event function that fired at each of ``event_ts``
            (the lowest one when several fired at once): int64, ``(k,)`` or ``(batch, k)``
            (-1 padding).
        integral: with ``solve(..., integral=l)``, the running cost integrated from ``t0`` to
            each saved time, time first.
    """

    ts: torch.Tensor | None
    ys: Any
    stats: dict[str, Any]
    status: torch.Tensor
    event_mask: tuple[torch.Tensor, ...] | None = None
    event_ts: torch.Tensor | None = None
    event_ids: torch.Tensor | None = None
    integral: Any = None
    _interpolate: Callable[[torch.Tensor], Any] | None = field(default=None, repr=False)

    @property
    def success(self) -> bool:
        """Whether every sample succeeded (reached t1 or stopped at a terminal event)."""
        return bool((self.status <= Status.EVENT_OCCURRED).all())

    def evaluate(self, t: float | torch.Tensor) -> Any:
        """The dense solution at ``t``: a scalar or 1-D tensor of times (joint stepping; the
        result has shape ``(*t.shape, *y0.shape)``), or ``(batch,)`` per sample (the result has
        the shape of ``y0``). Needs ``SaveAt(dense=True)``.
        """
        if self._interpolate is None:
            raise ValueError(
                "Solution.evaluate needs the dense solution: pass saveat=SaveAt(dense=True, ...) "
                "to solve."
            )
        return self._interpolate(torch.as_tensor(t))
