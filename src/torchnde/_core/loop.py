"""The integration loop: the only place that owns mutable solve state.

Time here is the loop's internal time, which always increases (``solve`` maps a reverse-time
problem to ``τ = -t``). Times, step sizes and statuses have the batch shape of the solve:
``()`` when the batch steps jointly, ``(batch,)`` when each sample steps on its own. Every
per-sample decision is a ``torch.where``; the host learns only what it must to drive the
Python loop (whether anything is still running, how many save points a step crossed), in one
transfer per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from .controllers import AbstractStepSizeController, Norm
from .events import Event
from .solution import RUNNING, Status
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
        return [v.item() for v in values]
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
) -> LoopResult:
    per_sample = controller.per_sample
    adaptive = solver.is_adaptive
    error_order = solver.error_order
    eps = torch.finfo(t0.dtype).eps
    # Smallest meaningful step: below the time resolution of the interval, or dtmin.
    floor = 16 * eps * torch.maximum(torch.maximum(t0.abs(), t1.abs()), (t1 - t0).abs())
    floor = floor.detach()
    if controller.dtmin is not None:
        floor = floor.clamp_min(controller.dtmin)

    def clip_end(tn: torch.Tensor) -> torch.Tensor:
        tn = torch.minimum(tn, t1)
        return torch.where(t1 - tn < floor, t1, tn)

    t, y = t0, y0
    fstate = solver.init(terms, t, y, args)
    if check_vf is not None:
        check_vf(fstate)
    nfe = solver.num_fevals_init
    tnext, cstate, extra = controller.init(terms, t0, t1, y0, dt0, args, solver, fstate, norm)
    nfe += extra
    tnext = clip_end(tnext)
    running = t < t1
    status = torch.where(
        running, torch.full_like(t, RUNNING, dtype=torch.int64), int(Status.SUCCESSFUL)
    )
    num_accepted = torch.zeros_like(status)
    num_rejected = torch.zeros_like(status)
    arange = torch.arange(t0.numel(), device=t0.device) if per_sample else None

    # Save points.
    out = save_i = None
    if ts is not None:
        n = ts.shape[-1]
        if per_sample:
            out = y0.new_full((y0.shape[0], n) + y0.shape[1:], math.nan)
            save_i = torch.zeros_like(status)
        else:
            out = y0.new_full((n,) + y0.shape, math.nan)
            save_i = 0

    def save_crossings(count_host: int, count: torch.Tensor, tb, ta, dense_info) -> None:
        """Write the dense output at every save time in (tb, ta] (or at tb itself)."""
        nonlocal save_i
        assert out is not None and ts is not None
        if per_sample:
            assert isinstance(save_i, torch.Tensor)
            new = count - save_i
            h = ta - tb
            for j in range(int(count_host)):
                idx = (save_i + j).clamp(max=ts.shape[-1] - 1)
                tq = ts.gather(1, idx[:, None])[:, 0]
                theta = torch.where(h > 0, (tq - tb) / torch.where(h > 0, h, 1), 0.0)
                yq = y if dense_info is None else solver.interpolate(dense_info, theta, True)
                cur = out[arange, idx]
                out[arange, idx] = torch.where(broadcast_time(new > j, yq), yq, cur)
            save_i = count
        else:
            c = int(count_host)
            if c > save_i:
                if dense_info is None:
                    out[save_i:c] = y
                else:
                    theta = (ts[save_i:c] - tb) / (ta - tb)
                    out[save_i:c] = solver.interpolate(dense_info, theta, False)
                save_i = c

    def count_saved(ta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert ts is not None
        if per_sample:
            c = torch.searchsorted(ts, ta.detach()[:, None], right=True)[:, 0]
            assert isinstance(save_i, torch.Tensor)
            return c, (c - save_i).max()
        c = torch.searchsorted(ts, ta.detach().reshape(1), right=True)[0]
        return c, c

    if ts is not None:
        c, cmax = count_saved(t0)
        save_crossings(_host([cmax])[0], c, t0, t0, None)

    steps_t: list[torch.Tensor] = []
    steps_y: list[torch.Tensor] = []
    dense: list | None = [] if save_dense else None
    event_mask = None
    g_prev = None
    if event is not None:
        g_prev = event.values(to_user_time(t0), y0, args, per_sample)
        event_mask = tuple(torch.zeros_like(t0, dtype=torch.bool) for _ in event.fns)

    num_steps = 0
    keep_going = bool(_host([running.any()])[0])
    while keep_going:
        y1, y_error, dense_info, fnew = solver.step(terms, t, tnext, y, args, fstate)
        nfe += solver.num_fevals_step
        accept, _, next_t1, made_jump, cstate = controller.adapt(
            t, tnext, y, y1, y_error, error_order, cstate, norm
        )
        bad = ~torch.isfinite(y1.reshape(y1.shape[0], -1).sum(1) if per_sample else y1.sum())
        accept = accept & running & ~bad
        t_after = torch.where(accept, tnext, t)
        ev_hit = None
        if event is not None:
            assert g_prev is not None and event_mask is not None
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
            g_prev = [
                torch.where(broadcast_time(accept, gn) if per_sample else accept, gn, gp)
                for gn, gp in zip(g_new, g_prev)
            ]

        host_req = [running.any()]  # placeholder slot 0, replaced below
        if ts is not None:
            c, cmax = count_saved(t_after)
            host_req.append(cmax)
        if save_dense or (save_steps and not per_sample):
            host_req.append(accept.any())
        if made_jump is not None and controller.jump_ts is not None:
            host_req.append(made_jump.any())

        # Advance accepted samples.
        y_prev_t = t
        y = torch.where(broadcast_time(accept, y1), y1, y)
        fstate = tree_where(accept, fnew, fstate)
        t = t_after
        tnext = torch.where(running, clip_end(next_t1), tnext)
        num_steps += 1
        num_accepted = num_accepted + accept
        num_rejected = num_rejected + (running & ~accept)

        done = accept & (t >= t1)
        new_status = torch.where(done, int(Status.SUCCESSFUL), status)
        if ev_hit is not None:
            new_status = torch.where(ev_hit, int(Status.EVENT_OCCURRED), new_status)
        if adaptive:
            stuck = running & ~accept & ((tnext - t) < floor)
            fail = torch.where(bad, int(Status.NONFINITE), int(Status.DT_UNDERFLOW))
            new_status = torch.where(stuck, fail, new_status)
        else:
            new_status = torch.where(running & bad, int(Status.NONFINITE), new_status)
        if num_steps >= max_steps:
            new_status = torch.where(
                new_status == RUNNING, int(Status.MAX_STEPS_REACHED), new_status
            )
        status = new_status
        running = status == RUNNING
        host_req[0] = running.any()
        if progress is not None:
            host_req.append(t.min())
        vals = _host(host_req)
        keep_going = bool(vals[0])
        k = 1
        if ts is not None:
            save_crossings(vals[k], c, y_prev_t, t, dense_info)
            k += 1
        if save_dense or (save_steps and not per_sample):
            any_accepted = bool(vals[k])
            k += 1
            if dense is not None and (per_sample or any_accepted):
                dense.append((y_prev_t, t, dense_info))
            if save_steps and not per_sample and any_accepted:
                steps_t.append(t)
                steps_y.append(y)
        if save_steps and per_sample:
            steps_t.append(torch.where(accept, t, math.nan))
            steps_y.append(torch.where(broadcast_time(accept, y), y, math.nan))
        if made_jump is not None and controller.jump_ts is not None:
            if vals[k]:
                # Restart first-same-as-last just after the discontinuity.
                t_right = torch.nextafter(t, torch.full_like(t, math.inf))
                fstate = tree_where(made_jump, solver.init(terms, t_right, y, args), fstate)
                nfe += solver.num_fevals_init
            k += 1
        if progress is not None:
            progress.update(vals[k], num_steps, int(num_rejected.sum()))

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
        num_rejected=num_rejected,
        num_fevals=nfe,
        ys_ts=out,
        steps_t=st,
        steps_y=sy,
        dense=dense,
        event_mask=event_mask,
    )
