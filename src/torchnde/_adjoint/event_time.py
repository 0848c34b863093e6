"""Events for adjoints that differentiate a fixed time interval: terminal events (the
interval ends at the event time) and non-terminal ones (one interval per segment between
events, joined by the resets)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .._core.loop import LoopResult
from .._core.problem import Problem
from .._core.solution import Status
from .._core.terms import broadcast_time

__all__ = ["with_event_time"]


def with_event_time(
    problem: Problem, fixed: Callable[[Problem], LoopResult], who: str
) -> LoopResult:
    r"""Differentiate a solve stopped by a terminal event with an adjoint that only knows
    fixed intervals.

    The event time $t_e$ is found without gradient; the adjoint then differentiates the
    solve on $[t_0, t_e]$ (``fixed``), and the dependence of $t_e$ on everything is restored by
    the implicit function theorem: with $g(t_e, y(t_e)) = 0$,

    $$t_e \leftarrow t_e - g(t_e, y_e) / \mathrm{stopgrad}(\dot g),\qquad
    y_e \leftarrow y_e + f(t_e, y_e)\,(t_e - \mathrm{stopgrad}(t_e)),$$

    whose values are unchanged and whose derivatives are $dt_e/dp = -(\partial g/\partial p)
    /\dot g$ and $dy_e/dp = \partial y/\partial p + f\,dt_e/dp$ (as torchdiffeq's
    ``odeint_event``).
    """
    event = problem.event
    if event is None:
        return fixed(problem)
    if event.continues:
        return _through_resets(problem, fixed, who)
    with torch.no_grad():
        first = problem.run()
    hit = first.status == Status.EVENT_OCCURRED
    if not bool(hit.any()):
        return fixed(problem.replace(event=None))
    if problem.per_sample and not bool((first.t == first.t.reshape(-1)[:1]).all()):
        raise NotImplementedError(
            f"{who} with events in per-sample stepping needs one event time for the whole "
            "batch; use CheckpointAdjoint() or DirectAdjoint()."
        )
    t_e = first.t.detach()
    res = fixed(problem.replace(event=None, t1=t_e))
    y_e = res.y
    per_sample = problem.per_sample
    terms, args = problem.terms, problem.args
    with torch.enable_grad():
        # dg/dt along the solution, by a directional derivative (value only).
        s = torch.zeros_like(t_e, requires_grad=True)
        y_d = y_e.detach()
        f_d = terms.vf(t_e, y_d, args).detach()
        vals = event.values(
            problem.to_user_time(t_e + s), y_d + broadcast_time(s, y_d) * f_d, args, per_sample
        )
        g_s = _crossing_component(vals, first.event_mask, per_sample).sum()
        # An event function that does not depend on time or state there has no graph: its
        # slope is 0 (and then the event time gets no implicit-function correction).
        slope = torch.autograd.grad(g_s, s, allow_unused=True)[0] if g_s.requires_grad else None
    if slope is None:
        slope = torch.zeros_like(t_e)
    slope = torch.where(slope != 0, slope, torch.ones_like(slope)).detach()
    g = _crossing_component(
        event.values(problem.to_user_time(t_e), y_e, args, per_sample), first.event_mask, per_sample
    )
    t_new = t_e - g / slope
    f_e = terms.vf(t_e, y_e, args)
    y_new = y_e + broadcast_time(t_new - t_e, f_e) * f_e
    res.t, res.y = t_new, y_new
    res.status, res.event_mask = first.status, first.event_mask
    if res.ys_ts is not None and first.ys_ts is not None:
        # Save times after the event were not reached.
        res.ys_ts = torch.where(torch.isnan(first.ys_ts), first.ys_ts, res.ys_ts)
    return res


def _crossing_component(vals: list, mask: Any, per_sample: bool) -> torch.Tensor:
    """The value of the event function that fired (its first element that sits at zero)."""
    fired = [i for i, m in enumerate(mask) if bool(m.any())]
    v = vals[fired[0]] if fired else vals[0]
    if per_sample:
        v = v.reshape(v.shape[0], -1)
        idx = v.detach().abs().argmin(dim=1)
        return v.gather(1, idx[:, None])[:, 0]
    v = v.reshape(-1)
    return v[v.detach().abs().argmin()]


def _event_time(
    problem: Problem, t_e: torch.Tensor, y_e: torch.Tensor, fired: tuple
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The event time and the state there with their implicit-function derivatives: values
    unchanged, $dt_e/dp = -(\partial g/\partial p)/\dot g$ and $dy_e/dp = \partial y/\partial p
    + f\,dt_e/dp$ (joint stepping; ``t_e`` detached, ``y_e`` the differentiable state)."""
    event, terms, args = problem.event, problem.terms, problem.args
    assert event is not None
    mask = tuple(torch.tensor(f) for f in fired)
    with torch.enable_grad():
        s = torch.zeros_like(t_e, requires_grad=True)
        y_d = y_e.detach()
        f_d = terms.vf(t_e, y_d, args).detach()
        vals = event.values(problem.to_user_time(t_e + s), y_d + s * f_d, args, False)
        g_s = _crossing_component(vals, mask, False)
        slope = torch.autograd.grad(g_s, s, allow_unused=True)[0] if g_s.requires_grad else None
    if slope is None:
        slope = torch.zeros_like(t_e)
    slope = torch.where(slope != 0, slope, torch.ones_like(slope)).detach()
    g = _crossing_component(event.values(problem.to_user_time(t_e), y_e, args, False), mask, False)
    t_new = t_e - g / slope
    return t_new, y_e + (t_new - t_e) * terms.vf(t_e, y_e, args)


def _through_resets(
    problem: Problem, fixed: Callable[[Problem], LoopResult], who: str
) -> LoopResult:
    r"""Differentiate a solve with non-terminal events by an adjoint of fixed intervals.

    The events are found without gradient; then each segment between events is solved by
    ``fixed`` (the continuous adjoint, with no event), and the segments are joined by autograd
    through the event time (implicit function theorem, :func:`_event_time`) and the reset.
    A segment starting at a differentiable time $t_a$ from $y_a$ starts from
    $y_a - f(t_a, y_a)\,(t_a - \mathrm{stopgrad}(t_a))$, whose value is $y_a$ and whose
    derivative in $t_a$ is that of the flow in its initial time. The chain rule across an
    event then gives the adjoint's jump condition of hybrid systems (the reset's Jacobian,
    the event-time sensitivity and the jump of the vector field), as in Chen et al. 2021,
    "Learning neural event functions for ordinary differential equations".
    """
    event = problem.event
    assert event is not None
    if problem.per_sample:
        raise NotImplementedError(
            f"{who} with non-terminal events needs joint stepping (per-sample stepping gives each "
            "sample its own event times); use CheckpointAdjoint() or DirectAdjoint(), or step "
            "jointly."
        )
    with torch.no_grad():
        first = problem.run()
    if int(first.status) not in (Status.SUCCESSFUL, Status.EVENT_OCCURRED):
        return first  # a failed solve: no gradient (solve raises unless throw=False)
    assert first.event_ts is not None and first.event_fired is not None
    terminal_end = int(first.status) == Status.EVENT_OCCURRED
    ts = problem.ts
    t_a, y_a = problem.t0, problem.y0
    ys: list[torch.Tensor] = []
    starts_at_t0 = True
    times = [t.detach() for t in first.event_ts] + ([] if terminal_end else [None])
    event_ts = []
    for i, t_b in enumerate(times):
        t_b_value = problem.t1 if t_b is None else t_b
        sub = None
        if ts is not None:
            lo = ts.detach() >= t_a.detach() if starts_at_t0 else ts.detach() > t_a.detach()
            keep = lo & (ts.detach() <= t_b_value.detach())
            sub = ts[keep] if bool(keep.any()) else None
        t_start = t_a.detach()
        y_start = y_a - (t_a - t_start) * problem.terms.vf(t_start, y_a, problem.args)
        res = fixed(problem.replace(event=None, t0=t_start, t1=t_b_value, y0=y_start, ts=sub))
        if sub is not None and res.ys_ts is not None:
            ys.append(res.ys_ts)
        if t_b is None:
            t_a, y_a = res.t, res.y
            break
        t_new, y_minus = _event_time(problem, t_b, res.y, first.event_fired[i])
        event_ts.append(t_new)
        if terminal_end and i == len(times) - 1:
            t_a, y_a = t_new, y_minus
            break
        y_a = event.apply_resets(
            problem.to_user_time(t_new), y_minus, problem.args, first.event_fired[i], False
        )
        t_a, starts_at_t0 = t_new, False
    first.t, first.y = t_a, y_a
    first.event_ts = torch.stack(event_ts) if event_ts else first.event_ts
    if first.ys_ts is not None and ys:
        got = torch.cat(ys)
        n = got.shape[0]
        first.ys_ts = torch.cat([got, first.ys_ts[n:]]) if n < first.ys_ts.shape[0] else got
    return first
