"""Terminal events for adjoints that differentiate a fixed time interval."""

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
        raise NotImplementedError(
            f"{who} does not support non-terminal events (Event(..., terminal=False)) yet: the "
            "adjoint would need its jump conditions at each event. Use DirectAdjoint() or "
            "CheckpointAdjoint(), which differentiate through the resets."
        )
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
