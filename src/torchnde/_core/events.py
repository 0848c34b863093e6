"""Events: zero crossings of event functions that stop the solve (terminal) or reset the
state and let it go on (non-terminal, for hybrid systems)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["Event", "locate_event"]

EventFn = Callable[[torch.Tensor, Any, Any], torch.Tensor]
ResetFn = Callable[[torch.Tensor, Any, Any], Any]


class Event:
    r"""Zero crossings of event functions: each stops the solve (terminal) or replaces the
    state and lets the solve go on (non-terminal: hybrid systems, bouncing balls).

    ``fn(t, y, args)`` returns a floating-point tensor, continuous along the solution, whose
    sign change is the event (``y[..., 0] - 0.5``, not the comparison ``y[..., 0] < 0.5``,
    which is refused with a ``TypeError``, as are Python numbers, which carry no gradient for
    the event time). In joint stepping an event fires when any element crosses zero; in
    per-sample stepping ``fn`` returns ``(batch,)`` (or ``(batch, ...)``) and each sample has
    its own events. An event value that is NaN at the start or at an accepted step can never
    cross: the (sample's) solve fails with ``Status.NONFINITE``. The crossing is located on
    the dense output by bisection to the resolution of the time dtype; the event time is a
    differentiable function of the inputs (implicit function theorem).

    A terminal event stops the solve: ``SaveAt(t1=True)`` then saves the event time and
    state, and ``Solution.event_mask`` says which function stopped it. At a non-terminal
    event the state becomes ``reset(t_e, y(t_e), args)`` (same shape and dtype; ``None``
    leaves it unchanged) and the solve continues from there, the solver restarted as at
    ``t0``. ``Solution.event_ts`` and ``Solution.event_ids`` record every event, terminal or
    not, in order. When several functions fire at the same time, the resets of those that
    fired are applied in the order of the functions, each to the previous one's result (and a
    terminal one among them stops the solve without any reset). Save times after an event see
    the reset state; a save time exactly at an event time gets the state just before it. In
    joint stepping the reset receives and returns the whole batch (for a batch of independent
    systems, step per sample, where each sample is reset on its own).

    Args:
        fn: an event function or a sequence of them.
        direction: ``0`` (any crossing), ``+1`` (from negative to positive along the solve) or
            ``-1``; one for all functions or one per function.
        terminal: whether an event stops the solve; one for all functions or one per function.
        reset: for non-terminal events, ``reset(t, y, args)`` returning the state just after
            the event (``None``: unchanged); one for all functions or one per function.
        max_events: the most non-terminal events a solve (per sample: each sample) may have,
            protection against Zeno behaviour (infinitely many events in finite time). The
            next crossing stops the solve there, before its reset, with
            ``Status.MAX_EVENTS_REACHED``.

    Example:
        >>> hit_ground = Event(lambda t, y, args: y[..., 0], direction=-1)
        >>> bounce = Event(
        ...     lambda t, y, args: y[..., 0], direction=-1, terminal=False,
        ...     reset=lambda t, y, args: y * torch.tensor([1.0, -0.9]),
        ... )
    """

    def __init__(
        self,
        fn: EventFn | Sequence[EventFn],
        direction: int | Sequence[int] = 0,
        *,
        terminal: bool | Sequence[bool] = True,
        reset: ResetFn | None | Sequence[ResetFn | None] = None,
        max_events: int = 1000,
    ):
        fns = tuple(fn) if isinstance(fn, (list, tuple)) else (fn,)
        if not fns or not all(callable(f) for f in fns):
            raise TypeError(
                f"Event: `fn` must be a callable fn(t, y, args) or a sequence of them, got {fn!r}."
            )
        n = len(fns)
        if isinstance(direction, (list, tuple)):
            dirs: tuple[int, ...] = tuple(direction)
        else:
            dirs = (direction,) * n  # type: ignore[assignment]
        if len(dirs) != n or any(d not in (-1, 0, 1) for d in dirs):
            raise ValueError(
                f"Event: `direction` must be -1, 0 or +1, once or once per function "
                f"({n}), got {direction!r}."
            )
        terms_ = tuple(terminal) if isinstance(terminal, (list, tuple)) else (terminal,) * n
        if len(terms_) != n or not all(isinstance(x, bool) for x in terms_):
            raise TypeError(
                f"Event: `terminal` must be a bool, once or once per function ({n}), got "
                f"{terminal!r}."
            )
        resets = tuple(reset) if isinstance(reset, (list, tuple)) else (reset,) * n
        if len(resets) != n or not all(r is None or callable(r) for r in resets):
            raise TypeError(
                f"Event: `reset` must be None or a callable reset(t, y, args), once or once per "
                f"function ({n}), got {reset!r}."
            )
        for i, (r, term) in enumerate(zip(resets, terms_)):
            if r is not None and term:
                where = f"`reset[{i}]`" if isinstance(reset, (list, tuple)) else "`reset`"
                raise ValueError(
                    f"Event: {where} is given for a terminal event, where the solve stops and "
                    "the state is never reset; pass terminal=False to reset and continue."
                )
        if isinstance(max_events, bool) or not isinstance(max_events, int) or max_events < 0:
            raise ValueError(f"Event: `max_events` must be an int >= 0, got {max_events!r}.")
        self.fns = fns
        self.directions = dirs
        self.terminal: tuple[bool, ...] = tuple(terms_)  # type: ignore[arg-type]
        self.resets: tuple[ResetFn | None, ...] = tuple(resets)  # type: ignore[arg-type]
        self.max_events = max_events
        # Whether any event lets the solve continue (a hybrid system).
        self.continues = not all(terms_)

    def replace_fns(self, fns: Sequence[EventFn], resets: Sequence[ResetFn | None]) -> Event:
        """The same event with other functions (e.g. wrapped to unpack a tuple state)."""
        new = object.__new__(Event)
        new.__dict__.update(self.__dict__)
        new.fns, new.resets = tuple(fns), tuple(resets)
        return new

    def apply_resets(
        self, t: torch.Tensor, y: torch.Tensor, args: Any, which: Sequence[Any], per_sample: bool
    ) -> torch.Tensor:
        """The state after the resets of the functions that fired (``which``: per function, a
        bool (joint, known on the host) or a ``(batch,)`` mask (per sample))."""
        for i, (r, w) in enumerate(zip(self.resets, which)):
            if r is None or (not per_sample and not w):
                continue
            y_new = r(t, y, args)
            if (
                not isinstance(y_new, torch.Tensor)
                or y_new.shape != y.shape
                or (y_new.dtype != y.dtype)
            ):
                name = f"`reset[{i}]`" if len(self.resets) > 1 else "`reset`"
                got = (
                    f"a tensor of shape {tuple(y_new.shape)}, dtype {y_new.dtype}"
                    if isinstance(y_new, torch.Tensor)
                    else f"{type(y_new).__name__} {y_new!r}"
                )
                raise ValueError(
                    f"Event: {name} must return the new state, shaped like the state "
                    f"({tuple(y.shape)}, {y.dtype}), got {got}."
                )
            if per_sample:
                mask = w.reshape(w.shape + (1,) * (y.ndim - w.ndim))
                y = torch.where(mask, y_new, y)
            else:
                y = y_new
        return y

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


def locate_event(
    event: Event,
    solver: Any,
    dense: Any,
    t0: torch.Tensor,
    h: torch.Tensor,
    g0: list[torch.Tensor],
    args: Any,
    hit: torch.Tensor,
    per_sample: bool,
    to_user_time: Any,
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Bisection for the earliest crossing within the step, on the dense output, then one
    Newton correction that gives the event time its gradient.

    Bisects on "some function has crossed in [0, θ]", which finds the first crossing of any
    function even when several cross within one step, to the resolution of the time dtype.
    The event time is then written as ``t* - g(t*, y(t*)) / stopgrad(dg/dt)``: its value is
    ``t*`` (``g`` vanishes there) and its derivative is the implicit-function-theorem one,
    ``dt*/dp = -(∂g/∂p) / (dg/dt)``, so the gradient flows to everything ``g`` and the
    solution depend on (torchdiffeq's ``odeint_event`` does the same).
    """
    # Bisection to sqrt(eps) of the step, then the Newton step below takes the error to
    # O(eps) (quadratic convergence); only where that step is impossible (zero or non-finite
    # slope) does bisection go on to full precision.
    full_iters = int(-math.log2(torch.finfo(t0.dtype).eps)) + 2
    iters = full_iters // 2 + 2

    def state_at(theta: torch.Tensor) -> torch.Tensor:
        if per_sample:
            return solver.interpolate(dense, theta, True)
        return solver.interpolate(dense, theta.reshape(1), False)[0]

    def values(theta: torch.Tensor) -> torch.Tensor:
        vals = event.values(to_user_time(t0 + theta * h), state_at(theta), args, per_sample)
        if per_sample:
            return torch.cat([v.reshape(v.shape[0], -1) for v in vals], dim=1)
        return torch.cat([v.reshape(-1) for v in vals])

    def bisect(lo: torch.Tensor, hi: torch.Tensor, n: int) -> tuple[torch.Tensor, ...]:
        with torch.no_grad():
            for _ in range(n):
                mid = 0.5 * (lo + hi)
                g = event.values(to_user_time(t0 + mid * h), state_at(mid), args, per_sample)
                crossed = torch.stack(event.crossed(g0, g, per_sample)).any(0)
                hi = torch.where(crossed, mid, hi)
                lo = torch.where(crossed, lo, mid)
            hi = torch.where(hit, hi, torch.ones_like(hi))
            # The component that crossed: the first one whose sign differs between lo and hi
            # (or that reached zero at hi; one that is zero at both, e.g. a function that is
            # identically zero in this mode, did not cross and has no slope to correct with).
            g_lo, g_hi = values(lo), values(hi)
            changed = (torch.sign(g_lo) != torch.sign(g_hi)) | ((g_hi == 0) & (g_lo != 0))
            return lo, hi, changed.to(torch.int8).argmax(dim=-1)

    lo, hi, idx = bisect(torch.zeros_like(t0), torch.ones_like(t0), iters)

    def crossing(theta: torch.Tensor) -> torch.Tensor:
        g = values(theta)
        return g.gather(1, idx[:, None])[:, 0] if per_sample else g[idx]

    def slope_at(hi: torch.Tensor) -> torch.Tensor | None:
        with torch.enable_grad():
            theta = hi.detach().requires_grad_(True)
            g_theta = crossing(theta).sum()
            # An event function may not depend on the state or time at all there
            # (torchdiffeq's learn_physics returns zeros_like(t) after a terminal time).
            if not g_theta.requires_grad:
                return None
            return torch.autograd.grad(g_theta, theta, allow_unused=True)[0]

    dg_dtheta = slope_at(hi)
    flat = hit if dg_dtheta is None else hit & ~((dg_dtheta != 0) & torch.isfinite(dg_dtheta))
    if bool(flat.any()):
        _, hi_full, idx_full = bisect(lo, hi, full_iters - iters)
        hi = torch.where(flat, hi_full, hi)
        idx = torch.where(flat, idx_full, idx)
        dg_dtheta = slope_at(hi)
    if dg_dtheta is None:
        dg_dtheta = torch.zeros_like(hi)
    slope = dg_dtheta.detach() / h.detach()
    ok = hit & (slope != 0) & torch.isfinite(slope)
    slope = torch.where(ok, slope, torch.ones_like(slope))
    t_star = t0 + hi * h
    t_ev = t_star - torch.where(ok, crossing(hi), torch.zeros_like(hi)) / slope
    # A sample that did not cross may have stopped (a zero-length step): its θ stays finite,
    # so no NaN reaches the gradient through the branch `where` discards.
    safe_h = torch.where(hit & (h != 0), h, torch.ones_like(h))
    theta_ev = torch.where(hit, (t_ev - t0) / safe_h, hi.detach())
    y_ev = state_at(theta_ev)
    with torch.no_grad():
        g = event.values(to_user_time(t_star), state_at(hi), args, per_sample)
        which = [w & hit for w in event.crossed(g0, g, per_sample)]
    return t_ev, y_ev, which
