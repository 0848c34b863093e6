"""The integration loop: the only place that owns mutable solve state.

Time here is the loop's internal time, which always increases (``solve`` maps a reverse-time
problem to ``τ = -t``). Times, step sizes and statuses have the batch shape of the solve:
``()`` when the batch steps jointly, ``(batch,)`` when each sample steps on its own. Every
per-sample decision is a ``torch.where``; the host learns only what it must to drive the
Python loop (whether anything is still running, how many save points a step crossed), in one
transfer per step.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Any

import torch

from .controllers import AbstractStepSizeController, Norm
from .events import Event
from .solution import Status
from .solver import AbstractSolver
from .terms import AbstractTerm, broadcast_time

__all__ = ["LoopResult", "run_loop"]


@dataclass
class LoopResult:
    t: torch.Tensor  # time reached (batch shape)
    y: torch.Tensor  # state reached
    status: torch.Tensor
    num_steps: int
    num_accepted: torch.Tensor
    num_rejected: torch.Tensor
    num_fevals: int
    ys_ts: torch.Tensor | None  # (n, *y.shape) joint; (batch, n, *state) per sample
    steps_t: torch.Tensor | None
    steps_y: torch.Tensor | None
    dense: list | None
    event_mask: tuple[torch.Tensor, ...] | None


def _host(values: list[torch.Tensor]) -> list:
    """Bring a few scalars to the host in one transfer (one sync on an accelerator)."""
    if values[0].device.type == "cpu":
        return [(v.detach() if v.requires_grad else v).item() for v in values]
    return torch.stack([v.to(torch.float64) for v in values]).tolist()


def tree_where(mask: torch.Tensor, a: Any, b: Any) -> Any:
    if isinstance(a, tuple):
        return tuple(tree_where(mask, x, y) for x, y in zip(a, b))
    if a is None:
        return None
    return torch.where(broadcast_time(mask, a), a, b)


def _locate_event(
    event: Event,
    solver: AbstractSolver,
    dense: Any,
    t0: torch.Tensor,
    h: torch.Tensor,
    g0: list[torch.Tensor],
    args: Any,
    hit: torch.Tensor,
    per_sample: bool,
    to_user_time: Any,
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Bisection for the earliest crossing within the step, on the dense output.

    Bisects on "some function has crossed in [0, θ]", which finds the first crossing of any
    function even when several cross within one step. Runs to the resolution of the time dtype.
    """
    lo = torch.zeros_like(t0)
    hi = torch.ones_like(t0)
    iters = int(-math.log2(torch.finfo(t0.dtype).eps)) + 2

    def state_at(theta: torch.Tensor) -> torch.Tensor:
        if per_sample:
            return solver.interpolate(dense, theta, True)
        return solver.interpolate(dense, theta.reshape(1), False)[0]

    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        tm = t0 + mid * h
        g = event.values(to_user_time(tm), state_at(mid), args, per_sample)
        crossed = torch.stack(event.crossed(g0, g, per_sample)).any(0)
        hi = torch.where(crossed, mid, hi)
        lo = torch.where(crossed, lo, mid)
    hi = torch.where(hit, hi, torch.ones_like(hi))
    t_ev = t0 + hi * h
    y_ev = state_at(hi)
    g = event.values(to_user_time(t_ev), y_ev, args, per_sample)
    which = [w & hit for w in event.crossed(g0, g, per_sample)]
    return t_ev.detach() if not t0.requires_grad else t_ev, y_ev, which


class _SavePoints:
    """Writes the dense output at the requested save times as the loop passes them."""

    def __init__(self, ts: torch.Tensor, y0: torch.Tensor, per_sample: bool) -> None:
        self.ts = ts
        self.per_sample = per_sample
        n = ts.shape[-1]
        if per_sample:
            self.out = y0.new_full((y0.shape[0], n) + y0.shape[1:], math.nan)
            self.index = torch.zeros(y0.shape[0], dtype=torch.int64, device=y0.device)
            self.arange = torch.arange(y0.shape[0], device=y0.device)
        else:
            self.out = y0.new_full((n,) + y0.shape, math.nan)
            self.done = 0

    def count(self, t_reached: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """How many save times are <= t_reached, and the most new ones in any sample."""
        if self.per_sample:
            c = torch.searchsorted(self.ts, t_reached.detach()[:, None], right=True)[:, 0]
            return c, (c - self.index).max()
        c = torch.searchsorted(self.ts, t_reached.detach().reshape(1), right=True)[0]
        return c, c

    def write(
        self,
        num: int,
        solver: AbstractSolver,
        tb: torch.Tensor,
        ta: torch.Tensor,
        y: torch.Tensor,
        dense_info: Any,
    ) -> None:
        """Joint stepping: save the times up to index ``num`` (all in (tb, ta]) from the step's
        dense output (``y`` when ``dense_info`` is None)."""
        ts, out = self.ts, self.out
        if num <= self.done:
            return
        if dense_info is None:
            out[self.done : num] = y
        else:
            theta = (ts[self.done : num] - tb) / (ta - tb)
            yq = solver.interpolate(dense_info, theta, False)
            # A save time on the step's end takes the step's own value, bit for bit.
            out[self.done : num] = torch.where(broadcast_time(theta == 1, yq), y, yq)
        self.done = num

    def write_per_sample(
        self,
        num: int,
        count: torch.Tensor,
        solver: AbstractSolver,
        tb: torch.Tensor,
        ta: torch.Tensor,
        y: torch.Tensor,
        dense_info: Any,
    ) -> None:
        """Per-sample stepping: each sample saves its times up to ``count`` (at most ``num``
        new ones in any sample)."""
        ts, out = self.ts, self.out
        new = count - self.index
        h = ta - tb
        safe_h = torch.where(h > 0, h, 1)
        for j in range(num):
            idx = (self.index + j).clamp(max=ts.shape[-1] - 1)
            tq = ts.gather(1, idx[:, None])[:, 0]
            theta = torch.where(h > 0, (tq - tb) / safe_h, 0.0)
            if dense_info is not None:
                yq = solver.interpolate(dense_info, theta, True)
                yq = torch.where(broadcast_time(theta == 1, yq), y, yq)
            else:
                yq = y
            cur = out[self.arange, idx]
            out[self.arange, idx] = torch.where(broadcast_time(new > j, yq), yq, cur)
        self.index = count


def run_loop(
    terms: AbstractTerm,
    solver: AbstractSolver,
    controller: AbstractStepSizeController,
    t0: torch.Tensor,
    t1: torch.Tensor,
    y0: torch.Tensor,
    args: Any,
    dt0: torch.Tensor | None,
    norm: Norm,
    *,
    ts: torch.Tensor | None,
    save_steps: bool,
    save_dense: bool,
    event: Event | None,
    max_steps: int,
    progress: Any,
    to_user_time: Any,
    check_vf: Any = None,
    compile_step: bool = False,
) -> LoopResult:
    per_sample = controller.per_sample
    adaptive = solver.is_adaptive
    error_order = solver.error_order
    has_jumps = controller.jump_ts is not None
    eps = torch.finfo(t0.dtype).eps
    # Smallest meaningful step: below the time resolution of the interval, or dtmin.
    floor = 16 * eps * torch.maximum(torch.maximum(t0.abs(), t1.abs()), (t1 - t0).abs())
    floor = floor.detach()
    if controller.dtmin is not None:
        floor = floor.clamp_min(controller.dtmin)
    # A step ending within `floor` of t1 is stretched to end exactly at t1.
    t1_snap = (t1 - floor).detach()

    def clip_end(tn: torch.Tensor) -> torch.Tensor:
        return torch.where(tn > t1_snap, t1, tn)

    t, y = t0, y0
    fstate = solver.init(terms, t, y, args)
    if check_vf is not None:
        check_vf(fstate)
    nfe = solver.num_fevals_init
    tnext, cstate, extra = controller.init(terms, t0, t1, y0, dt0, args, solver, fstate, norm)
    nfe += extra
    tnext = clip_end(tnext)
    running = t < t1
    num_attempts = torch.zeros_like(t, dtype=torch.int64)
    num_accepted = torch.zeros_like(num_attempts)
    finite_at_stop = torch.ones_like(running)
    event_hit = torch.zeros_like(running)

    saver = None
    if ts is not None:
        saver = _SavePoints(ts, y0, per_sample)
        c, cmax = saver.count(t0)
        if per_sample:
            saver.write_per_sample(int(_host([cmax])[0]), c, solver, t0, t0, y0, None)
        else:
            saver.write(int(_host([cmax])[0]), solver, t0, t0, y0, None)

    steps_t: list[torch.Tensor] = []
    steps_y: list[torch.Tensor] = []
    dense: list | None = [] if save_dense else None
    event_mask = None
    g_prev: list[torch.Tensor] = []
    if event is not None:
        g_prev = event.values(to_user_time(t0), y0, args, per_sample)
        event_mask = tuple(torch.zeros_like(running) for _ in event.fns)

    def attempt(t, tnext, y, fstate, cstate, running):
        """One attempted step and the controller's verdict: all tensor work, no host sync,
        so it can be compiled as one graph."""
        y1, y_error, dense_info, fnew = solver.step(terms, t, tnext, y, args, fstate)
        accept, _, next_t1, made_jump, cstate = controller.adapt(
            t, tnext, y, y1, y_error, error_order, cstate, norm
        )
        if per_sample:
            # Finished samples are carried along but never change.
            finite = torch.isfinite(y1.reshape(y1.shape[0], -1).sum(1))
            accept = accept & finite & running
        elif not adaptive:
            finite = torch.isfinite(y1.sum())
            accept = accept & finite
        else:
            # A non-finite step has a non-finite error estimate, which the controller
            # rejects; whether the state blew up is only looked at if the solve fails.
            finite = None
        return y1, dense_info, fnew, accept, finite, next_t1, made_jump, cstate

    if compile_step:
        attempt = torch.compile(attempt, dynamic=False)

    num_steps = 0
    # Joint stepping drives the loop from two host floats per step (the time reached and the
    # next step's end); per-sample stepping keeps every decision on the device and brings
    # back only "is anything running" and "how many save points were passed".
    if not per_sample:
        t_host, tnext_host = (float(v) for v in _host([t, tnext]))
        t1_host, floor_host = float(t1.detach()), float(floor)
        ts_host = [] if ts is None else ts.detach().tolist()
        joint_status = Status.SUCCESSFUL
        keep_going = t_host < t1_host
    else:
        keep_going = bool(_host([running.any()])[0])
    while keep_going:
        y1, dense_info, fnew, accept, finite, next_t1, made_jump, cstate = attempt(
            t, tnext, y, fstate, cstate, running
        )
        nfe += solver.num_fevals_step
        t_after = torch.where(accept, tnext, t)
        t_step_end = t_after  # the dense output of this step covers [t, t_step_end]
        ev_hit = None
        if event is not None and event_mask is not None:
            g_new = event.values(to_user_time(tnext), y1, args, per_sample)
            crossed = torch.stack(event.crossed(g_prev, g_new, per_sample)).any(0) & accept
            if _host([crossed.any()])[0]:
                t_ev, y_ev, which = _locate_event(
                    event,
                    solver,
                    dense_info,
                    t,
                    tnext - t,
                    g_prev,
                    args,
                    crossed,
                    per_sample,
                    to_user_time,
                )
                t_after = torch.where(crossed, t_ev, t_after)
                y1 = torch.where(broadcast_time(crossed, y1), y_ev, y1)
                event_mask = tuple(m | w for m, w in zip(event_mask, which))
                ev_hit = crossed
                event_hit = event_hit | crossed
            g_prev = [
                torch.where(broadcast_time(accept, gn) if per_sample else accept, gn, gp)
                for gn, gp in zip(g_new, g_prev)
            ]

        # Advance accepted samples.
        t_before = t
        y = torch.where(broadcast_time(accept, y1), y1, y)
        fstate = tree_where(accept, fnew, fstate)
        t = t_after
        tnext = clip_end(next_t1)
        num_steps += 1

        if per_sample:
            num_accepted = num_accepted + accept
            num_attempts = num_attempts + running
            stop = accept & (t >= t1)
            if adaptive:
                # A rejected step whose successor is below the floor cannot make progress.
                stop = stop | (~accept & (tnext - t < floor))
            else:
                stop = stop | ~finite
            if ev_hit is not None:
                stop = stop | ev_hit
            finite_at_stop = torch.where(running, finite, finite_at_stop)
            running = running & ~stop
            host_req = [running.any()]
            if saver is not None:
                c, cmax = saver.count(t)
                host_req.append(cmax)
            if save_dense:
                host_req.append(accept.any())
            if has_jumps:
                host_req.append(made_jump.any())
            if progress is not None:
                host_req.append(t.min())
            vals = _host(host_req)
            keep_going = bool(vals[0]) and num_steps < max_steps
            k = 1
            if saver is not None:
                saver.write_per_sample(int(vals[k]), c, solver, t_before, t_step_end, y, dense_info)
                k += 1
            if save_dense:
                if vals[k] and dense is not None:
                    dense.append((t_before, t, dense_info, t_step_end))
                k += 1
            if save_steps:
                steps_t.append(torch.where(accept, t, math.nan))
                steps_y.append(torch.where(broadcast_time(accept, y), y, math.nan))
            jumped = bool(vals[k]) if has_jumps else False
            t_shown = vals[-1]
        else:
            host_req = [t, tnext]
            if not adaptive:
                host_req.append(finite)
            if has_jumps:
                host_req.append(made_jump)
            vals = _host(host_req)
            t_prev_host = t_host
            t_host, tnext_host = float(vals[0]), float(vals[1])
            accepted = t_host != t_prev_host
            num_accepted = num_accepted + int(accepted)
            if ev_hit is not None:
                joint_status = Status.EVENT_OCCURRED
            elif not adaptive and not vals[2]:
                joint_status = Status.NONFINITE
            elif adaptive and not accepted and tnext_host - t_host < floor_host:
                joint_status = Status.DT_UNDERFLOW
            keep_going = (
                t_host < t1_host and joint_status == Status.SUCCESSFUL and num_steps < max_steps
            )
            if accepted:
                if saver is not None:
                    count = bisect.bisect_right(ts_host, t_host)
                    saver.write(count, solver, t_before, t_step_end, y, dense_info)
                if dense is not None:
                    dense.append((t_before, t, dense_info, t_step_end))
                if save_steps:
                    steps_t.append(t)
                    steps_y.append(y)
            jumped = bool(vals[-1]) if has_jumps else False
            t_shown = t_host
        nfe += solver.take_dense_fevals(dense_info)
        if jumped:
            # Restart first-same-as-last just after the discontinuity.
            t_right = torch.nextafter(t, torch.full_like(t, math.inf))
            fstate = tree_where(made_jump, solver.init(terms, t_right, y, args), fstate)
            nfe += solver.num_fevals_init
        if progress is not None:
            progress.update(t_shown, num_steps, num_steps - int(num_accepted.sum()))

    # Why each sample stopped.
    if per_sample:
        status = torch.full_like(num_attempts, int(Status.SUCCESSFUL))
        fail = torch.where(finite_at_stop, int(Status.DT_UNDERFLOW), int(Status.NONFINITE))
        status = torch.where(t < t1, fail, status)
        status = torch.where(running, int(Status.MAX_STEPS_REACHED), status)
        status = torch.where(event_hit, int(Status.EVENT_OCCURRED), status)
    else:
        num_attempts = torch.full_like(num_accepted, num_steps)
        if joint_status == Status.SUCCESSFUL and t_host < t1_host:
            joint_status = Status.MAX_STEPS_REACHED
        if joint_status == Status.DT_UNDERFLOW and not bool(torch.isfinite(y1.sum())):
            joint_status = Status.NONFINITE
        status = torch.tensor(int(joint_status), device=t.device)

    st = sy = None
    if save_steps and steps_t:
        st = torch.stack(steps_t)
        sy = torch.stack(steps_y)
        if per_sample:
            # Move each sample's accepted steps to the front, NaN padding after.
            order = torch.argsort(torch.isnan(st).to(torch.int8), dim=0, stable=True)
            st = st.gather(0, order)
            sy = sy.gather(0, order.reshape(order.shape + (1,) * (sy.ndim - 2)).expand_as(sy))
            keep = int((~torch.isnan(st)).sum(0).max())
            st, sy = st[:keep], sy[:keep]
    return LoopResult(
        t=t,
        y=y,
        status=status,
        num_steps=num_steps,
        num_accepted=num_accepted,
        num_rejected=num_attempts - num_accepted,
        num_fevals=nfe,
        ys_ts=None if saver is None else saver.out,
        steps_t=st,
        steps_y=sy,
        dense=dense,
        event_mask=event_mask,
    )
