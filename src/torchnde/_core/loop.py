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
import enum
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from .controllers import AbstractStepSizeController, Norm
from .events import Event
from .solution import Status
from .solver import AbstractSolver
from .terms import AbstractTerm, broadcast_time

__all__ = ["Cause", "Host", "Loop", "LoopResult", "run", "time_floor"]


class Cause(enum.IntEnum):
    """Why a sample failed, beyond its :class:`Status`; each member carries its message."""

    NONE = 0
    Y0 = 1  # NONFINITE at the start
    VF_T0 = 2
    NORM_T0 = 3
    EVENT = 4  # NONFINITE, at the start or at an accepted step
    VF = 5  # NONFINITE during the solve
    STEP = 6
    FIXED_STEP = 7
    NORM = 8
    DTMIN = 9  # DT_UNDERFLOW
    RESOLUTION = 10

    @property
    def message(self) -> str:
        return _CAUSES[self]


_CAUSES = {
    Cause.NONE: "",
    Cause.Y0: "`y0` contains NaN or inf",
    Cause.VF_T0: "the vector field returned NaN or inf at t0 (for a finite `y0`)",
    Cause.NORM_T0: "the error `norm` returned NaN or inf at t0 for a finite argument",
    Cause.EVENT: "an event function returned NaN or inf",
    Cause.VF: (
        "the vector field returned NaN or inf at the state the solve reached (an accepted "
        "point), so no step from there can succeed"
    ),
    Cause.STEP: (
        "every step from the point reached, however small, gave a NaN or inf state or error "
        "estimate (a blow-up, or a vector field that is NaN just past this time)"
    ),
    Cause.FIXED_STEP: (
        "the step from the point reached gave a NaN or inf state; a fixed-step solve cannot "
        "retry with a smaller step: reduce `dt0`, use an adaptive solver, or check the vector "
        "field"
    ),
    Cause.NORM: "the error `norm` returned NaN or inf for a finite error estimate",
    Cause.DTMIN: "the step size fell below `dtmin`",
    Cause.RESOLUTION: "the step size fell below the resolution of the time dtype",
}


def time_floor(t0: torch.Tensor, t1: torch.Tensor) -> torch.Tensor:
    """The smallest meaningful step: below it, ``t + dt`` rounds to ``t`` within 16 ulps of
    the interval's largest time (batch shape)."""
    eps = torch.finfo(t0.dtype).eps
    return (16 * eps * torch.maximum(torch.maximum(t0.abs(), t1.abs()), (t1 - t0).abs())).detach()


def _nonfinite(x: Any, per_sample: bool) -> torch.Tensor | None:
    """Whether ``x`` (a tensor or a tuple of them) holds a NaN or inf: per sample (leading
    dimension) or for the whole tensor; ``None`` when ``x`` holds no tensor."""
    parts = [
        p for p in (x if isinstance(x, (tuple, list)) else (x,)) if isinstance(p, torch.Tensor)
    ]
    out = None
    for p in parts:
        p = p.detach()
        if per_sample and p.ndim > 0:
            bad = ~torch.isfinite(p.reshape(p.shape[0], -1)).all(1)
        else:
            bad = ~torch.isfinite(p).all()
        out = bad if out is None else out | bad
    return out


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
    # Every event that fired, in order (internal time): joint (k,), per sample (batch, k),
    # NaN / -1 padded; ``None`` without events.
    event_ts: torch.Tensor | None = None
    event_ids: torch.Tensor | None = None
    extra_stats: dict = field(default_factory=dict)  # solver counts (Jacobians, LUs, ...)
    cause: torch.Tensor | None = None  # a Cause per sample (batch shape), NONE if successful


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
            # The component that crossed: the first one whose sign differs between lo and hi.
            g_lo, g_hi = values(lo), values(hi)
            changed = (torch.sign(g_lo) != torch.sign(g_hi)) | (g_hi == 0)
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


@dataclass
class _State:
    """The loop's tensors between iterations (replaced, never mutated)."""

    t: torch.Tensor
    tnext: torch.Tensor
    y: torch.Tensor
    fstate: Any
    cstate: Any
    running: torch.Tensor
    num_accepted: torch.Tensor
    num_attempts: torch.Tensor
    finite_at_stop: torch.Tensor
    event_hit: torch.Tensor
    g_prev: list
    event_mask: tuple | None
    num_events: torch.Tensor  # non-terminal events so far (batch shape)
    events_over: torch.Tensor  # a crossing beyond `max_events` stopped the sample
    save_index: torch.Tensor | None  # per sample: how many save times each sample has passed
    y1: torch.Tensor  # the last attempted state (joint failure diagnosis)
    cause: torch.Tensor  # a Cause found while stepping (at the start, or an event's NaN)


@dataclass
class Host:
    """What the host learned in one iteration, recorded so it can be replayed without a sync."""

    keep_going: bool
    save_num: int = 0  # joint: save slots filled so far; per sample: most new ones in a sample
    accepted: bool = False  # joint: the step was accepted; per sample: any sample accepted
    jumped: bool = False
    event: bool = False  # some event function crossed zero in this step
    fired: tuple = ()  # joint, at an event: per function, whether it fired
    num_events: int = 0  # joint only: non-terminal events so far
    status: Status = Status.SUCCESSFUL  # joint only
    t_shown: float = 0.0
    num_accepted: int = 0  # joint only


@dataclass
class _Emit:
    """What one iteration produced for the outputs."""

    saves: list  # joint: [(start, stop, values)]; per sample: [(index, mask, values)]
    dense: tuple | None = None
    step: tuple | None = None
    # At an event: [(info, t_e)], info = (index of the function,) joint, or (fired mask,
    # index) per sample; t_e carries the event time's gradient.
    events: list = field(default_factory=list)


class Loop:
    """One solve's loop: constants in ``__init__``, one iteration in :meth:`body`.

    ``body`` runs live (synchronising with the host to decide what happens next) or replays
    a recorded :class:`Host`, which makes the same computation with no host sync; the
    checkpointing adjoint relies on that to recompute segments of the solve.
    """

    def __init__(
        self,
        terms: AbstractTerm,
        solver: AbstractSolver,
        controller: AbstractStepSizeController,
        t0: torch.Tensor,
        t1: torch.Tensor,
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
    ) -> None:
        solver = solver.with_controller(controller, norm)
        self.terms, self.solver, self.controller = terms, solver, controller
        self.t0, self.t1, self.args, self.dt0, self.norm = t0, t1, args, dt0, norm
        self.ts, self.save_steps, self.save_dense = ts, save_steps, save_dense
        self.event, self.max_steps, self.progress = event, max_steps, progress
        self.to_user_time, self.check_vf = to_user_time, check_vf
        self.per_sample = controller.per_sample
        # Adaptive stepping: an error estimate and a controller that uses it (an adaptive
        # solver on constant steps can neither reject nor shrink, so a non-finite state ends
        # the solve as it does for fixed-step solvers).
        self.adaptive = solver.is_adaptive and not controller.never_rejects
        # Joint steps of a controller that never rejects (a non-finite step ends the solve)
        # need no selection between the old and the new state: it would only copy.
        self.always_accept = not (self.per_sample or self.adaptive) and controller.never_rejects
        self.has_jumps = controller.jump_ts is not None
        floor = time_floor(t0, t1)
        if controller.dtmin is not None:
            floor = floor.clamp_min(controller.dtmin)
        self.floor = floor
        # A step ending within `floor` of t1 is stretched to end exactly at t1.
        self.t1_snap = (t1 - floor).detach()
        self.t1_host = float(t1.detach()) if not self.per_sample else 0.0
        self.floor_host = float(floor) if not self.per_sample else 0.0
        self.ts_host = [] if ts is None or self.per_sample else ts.detach().tolist()
        if ts is not None and self.per_sample:
            self.arange = torch.arange(t0.shape[0], device=t0.device)
        self.extra_stats: dict[str, int] = {}
        self.attempt = (
            torch.compile(self._attempt, dynamic=False) if compile_step else self._attempt
        )

    # -- pieces -----------------------------------------------------------------------------

    def _clip_end(self, tn: torch.Tensor) -> torch.Tensor:
        return torch.where(tn > self.t1_snap, self.t1, tn)

    def _attempt(self, t, tnext, y, fstate, cstate, running):
        """One attempted step and the controller's verdict: all tensor work, no host sync,
        so it can be compiled as one graph."""
        y1, y_error, dense_info, fnew = self.solver.step(self.terms, t, tnext, y, self.args, fstate)
        accept, _, next_t1, made_jump, cstate = self.controller.adapt(
            t, tnext, y, y1, y_error, self.solver.error_order_of(fstate), cstate, self.norm
        )
        if self.per_sample:
            # Finished samples are carried along but never change.
            finite = torch.isfinite(y1.reshape(y1.shape[0], -1).sum(1))
            accept = accept & finite & running
        elif not self.adaptive:
            finite = torch.isfinite(y1.sum())
            accept = accept & finite
        else:
            # A non-finite step has a non-finite error estimate, which the controller
            # rejects; whether the state blew up is only looked at if the solve fails.
            finite = None
        return y1, dense_info, fnew, accept, finite, next_t1, made_jump, cstate

    def _interp_saves(self, num_new: int, start: int, tb, ta, y, dense_info) -> torch.Tensor:
        """Joint stepping: the states at save slots [start, start + num_new) in (tb, ta]."""
        ts = self.ts
        if dense_info is None or ts is None:
            return y.expand((num_new,) + y.shape)
        theta = (ts[start : start + num_new] - tb) / (ta - tb)
        yq = self.solver.interpolate(dense_info, theta, False)
        return self._at_step_end(theta, yq, y, dense_info, False)

    def _at_step_end(self, theta, yq, y, dense_info, per_sample: bool) -> torch.Tensor:
        """The saved values ``yq`` of the interpolant at ``theta``, where a save time on the
        step's end (``theta == 1``) takes the step's own value, bit for bit.

        Its derivative is still the interpolant's: the computed solution at a save time ``s``
        near the step's end is ``p(θ(s))``, so ``d/ds`` is ``p'(1) dθ/ds`` (the left
        derivative, that of the step ending there). Writing the value as
        ``y + (p(θ) - p(stopgrad θ))`` keeps ``y``'s value and its derivatives with respect
        to everything else, and adds the interpolant's slope in θ; the two interpolations
        cancel exactly in the forward pass. Without it a save time on a step end (fixed
        steps, ``step_ts``, ``jump_ts``) had no derivative with respect to itself.
        """
        if theta.requires_grad:
            frozen = self.solver.interpolate(dense_info, theta.detach(), per_sample)
            y = y + (yq - frozen)
        return torch.where(broadcast_time(theta == 1, yq), y, yq)

    def _interp_saves_per_sample(self, num, count, index, tb, ta, y, dense_info) -> list:
        """Per-sample stepping: each sample's save times passed in this step."""
        ts = self.ts
        if ts is None:
            return []
        new = count - index
        h = ta - tb
        safe_h = torch.where(h > 0, h, 1)
        out = []
        for j in range(num):
            idx = (index + j).clamp(max=ts.shape[-1] - 1)
            tq = ts.gather(1, idx[:, None])[:, 0]
            theta = torch.where(h > 0, (tq - tb) / safe_h, 0.0)
            if dense_info is not None:
                yq = self.solver.interpolate(dense_info, theta, True)
                yq = self._at_step_end(theta, yq, y, dense_info, True)
            else:
                yq = y
            out.append((idx, new > j, yq))
        return out

    # -- the loop ---------------------------------------------------------------------------

    def init(self, y0: torch.Tensor) -> tuple[_State, Host, _Emit, int]:
        terms, solver, t0, t1, args = self.terms, self.solver, self.t0, self.t1, self.args
        try:
            fstate = solver.init(terms, t0, y0, args)
        except Exception as err:
            self._explain(t0, y0, err)
            raise
        vf0 = solver.vector_field_of(fstate)
        if self.check_vf is not None and vf0 is not None:
            self.check_vf(vf0)
        nfe = solver.num_fevals_init
        if vf0 is None and self.dt0 is None:
            vf0 = terms.vf(t0, y0, args)  # for the initial step size
            nfe += 1
            if self.check_vf is not None:
                self.check_vf(vf0)
        try:
            tnext, cstate, extra = self.controller.init(
                terms, t0, t1, y0, self.dt0, args, solver, vf0, self.norm
            )
        except Exception as err:
            self._explain(t0, y0, err)
            raise
        nfe += extra
        tnext = self._clip_end(tnext)
        g_prev: list = []
        event_mask = None
        if self.event is not None:
            g_prev = self.event.first_values(self.to_user_time(t0), y0, args, self.per_sample, y0)
        if self.per_sample:
            cause = self._start_cause(y0, vf0, tnext, g_prev)
            ok = cause == Cause.NONE
            # A sample that cannot start stays at t0; a zero-length step keeps NaN times out.
            tnext = torch.where(ok, tnext, t0)
            running = (t0 < t1) & ok
        else:
            # One fused sum tells whether anything is non-finite (an overflowing sum of
            # finite values is caught by the exact check); only then is the cause looked for.
            parts = [y0, tnext, *g_prev]
            parts += [
                v
                for v in (vf0 if isinstance(vf0, tuple) else (vf0,))
                if isinstance(v, torch.Tensor)
            ]
            probe = sum(p.detach().sum() for p in parts)
            t_host, ok_host = _host([t0, torch.isfinite(probe)])  # type: ignore[arg-type]
            cause = torch.zeros_like(t0, dtype=torch.int8)
            if not ok_host:
                cause = self._start_cause(y0, vf0, tnext, g_prev)
                ok_host = int(cause) == Cause.NONE
            ok = torch.ones_like(t0, dtype=torch.bool)
            running = t0 < t1
        zeros = torch.zeros_like(t0, dtype=torch.int64)
        if self.event is not None:
            event_mask = tuple(torch.zeros_like(running) for _ in self.event.fns)
        st = _State(
            t=t0, tnext=tnext, y=y0, fstate=fstate, cstate=cstate, running=running,
            num_accepted=zeros, num_attempts=zeros, finite_at_stop=ok,
            event_hit=torch.zeros_like(running), g_prev=g_prev, event_mask=event_mask,
            num_events=zeros, events_over=torch.zeros_like(running), save_index=None, y1=y0,
            cause=cause,
        )  # fmt: skip
        saves: list = []
        host = Host(keep_going=True)
        ts = self.ts
        if self.per_sample:
            if ts is not None:
                count = torch.searchsorted(ts, t0.detach()[:, None], right=True)[:, 0]
                num = int(_host([count.max()])[0])
                index = torch.zeros_like(count)
                saves = self._interp_saves_per_sample(num, count, index, t0, t0, y0, None)
                st.save_index = count
            host.keep_going = bool(_host([running.any()])[0])
        else:
            if ts is not None:
                host.save_num = bisect.bisect_right(self.ts_host, t_host)
                if host.save_num:
                    saves = [
                        (0, host.save_num, self._interp_saves(host.save_num, 0, t0, t0, y0, None))
                    ]
            host.keep_going = t_host < self.t1_host and bool(ok_host)
            host.t_shown = t_host
            if not ok_host:
                host.status = Status.NONFINITE
        return st, host, _Emit(saves), nfe

    def _start_cause(
        self, y0: torch.Tensor, vf0: Any, tnext: torch.Tensor, g0: list
    ) -> torch.Tensor:
        """Per sample, why the solve cannot start (``Cause.NONE`` when it can): checked once,
        on what initialisation computed anyway, so a NaN start ends at once instead of
        spinning on NaN step sizes."""
        per_sample = self.per_sample
        cause = torch.zeros_like(self.t0, dtype=torch.int8)
        # Lowest priority first: the first bad thing along the computation is named.
        for code, bad in (
            (Cause.NORM_T0, ~torch.isfinite(tnext.detach())),
            (Cause.EVENT, _nonfinite(g0, per_sample) if g0 else None),
            (Cause.VF_T0, _nonfinite(vf0, per_sample)),
            (Cause.Y0, _nonfinite(y0, per_sample)),
        ):
            if bad is not None and bad.shape == cause.shape:
                cause = torch.where(bad, int(code), cause)
            elif bad is not None:
                cause = torch.where(bad.any(), int(code), cause)
        return cause

    def body(
        self, st: _State, prev: Host, replay: Host | None = None
    ) -> tuple[_State, Host, _Emit, int]:
        """One iteration. ``prev`` is the previous iteration's host record; with ``replay``
        the host decisions are taken from it instead of synchronising."""
        per_sample, adaptive, event, args = self.per_sample, self.adaptive, self.event, self.args
        t, tnext, y = st.t, st.tnext, st.y
        try:
            y1, dense_info, fnew, accept, finite, next_t1, made_jump, cstate = self.attempt(
                t, tnext, y, st.fstate, st.cstate, st.running
            )
        except Exception as err:
            self._explain(t, y, err)
            raise
        nfe = self.solver.num_fevals_step
        always = self.always_accept
        t_after = tnext if always else torch.where(accept, tnext, t)
        t_step_end = t_after  # the dense output of this step covers [t, t_step_end]
        ev_hit = None
        event_hit, event_mask, g_prev = st.event_hit, st.event_mask, st.g_prev
        num_events, events_over = st.num_events, st.events_over
        ev_now = ev_bad = False
        ev_status = Status.SUCCESSFUL  # joint: what the event of this step does
        fired: tuple = ()
        resets: Any = None  # the samples (per sample) or whether (joint) to reset
        which: list = []
        ev_record: list = []
        cause = st.cause
        if event is not None and event_mask is not None:
            g_new = event.values(self.to_user_time(tnext), y1, args, per_sample)
            crossed = torch.stack(event.crossed(g_prev, g_new, per_sample)).any(0) & accept
            # An event function that is NaN at an accepted point can never fire: a failure.
            bad = _nonfinite(g_new, per_sample) & accept & ~crossed  # type: ignore[operator]
            cause = torch.where(bad, int(Cause.EVENT), cause)
            if replay is not None:
                ev_now = replay.event
            elif per_sample:
                ev_now = bool(_host([crossed.any()])[0])
            else:
                ev_now, ev_bad = (bool(v) for v in _host([crossed.any(), bad]))
            if ev_now:
                t_ev, y_ev, which = _locate_event(
                    event, self.solver, dense_info, t, tnext - t, g_prev, args, crossed,
                    per_sample, self.to_user_time,
                )  # fmt: skip
                t_after = torch.where(crossed, t_ev, t_after)
                y1 = torch.where(broadcast_time(crossed, y1), y_ev, y1)
                if per_sample:
                    stops = crossed & torch.stack(
                        [w & term for w, term in zip(which, event.terminal)]
                    ).any(0)
                    go_on = crossed & ~stops
                    over = go_on & (num_events >= event.max_events)
                    resets = go_on & ~over
                    event_mask = tuple(m | (w & stops) for m, w in zip(event_mask, which))
                    ev_hit = stops | over
                    event_hit = event_hit | stops
                    events_over = events_over | over
                    num_events = num_events + resets
                    first = torch.stack(which).to(torch.int8).argmax(0)
                    ev_record = [((crossed & ~over, first), t_ev)]
                else:
                    fired = (
                        replay.fired if replay is not None else tuple(bool(w) for w in _host(which))
                    )
                    if any(f and term for f, term in zip(fired, event.terminal)):
                        ev_status = Status.EVENT_OCCURRED
                        event_mask = tuple(
                            m | torch.tensor(f and term, device=m.device)
                            for m, f, term in zip(event_mask, fired, event.terminal)
                        )
                    elif prev.num_events >= event.max_events:
                        ev_status = Status.MAX_EVENTS_REACHED
                    else:
                        resets = True
                    if ev_status != Status.MAX_EVENTS_REACHED:
                        ev_record = [((fired.index(True) if any(fired) else 0,), t_ev)]
            g_prev = [
                torch.where(broadcast_time(accept, gn) if per_sample else accept, gn, gp)
                for gn, gp in zip(g_new, g_prev)
            ]

        # Advance accepted samples.
        t_before = t
        if always:
            y, fstate = y1, fnew
        else:
            y = torch.where(broadcast_time(accept, y1), y1, y)
            fstate = tree_where(accept, fnew, self.solver.rejected_state(st.fstate, fnew))
        t = t_after
        tnext = self._clip_end(next_t1)
        new = _State(
            t=t, tnext=tnext, y=y, fstate=fstate, cstate=cstate, running=st.running,
            num_accepted=st.num_accepted, num_attempts=st.num_attempts,
            finite_at_stop=st.finite_at_stop, event_hit=event_hit, g_prev=g_prev,
            event_mask=event_mask, num_events=num_events, events_over=events_over,
            save_index=st.save_index, y1=y1, cause=cause,
        )  # fmt: skip
        emit = _Emit(saves=[], events=ev_record)
        host = Host(keep_going=False, event=ev_now, fired=fired)

        if per_sample:
            new.num_accepted = st.num_accepted + accept
            new.num_attempts = st.num_attempts + st.running
            stop = accept & (t >= self.t1)
            if adaptive:
                # A rejected step whose successor is below the floor cannot make progress.
                stop = stop | (~accept & (tnext - t < self.floor))
            else:
                stop = stop | ~finite
            if ev_hit is not None:
                stop = stop | ev_hit
            if event is not None:
                stop = stop | (cause != st.cause)
            new.finite_at_stop = torch.where(st.running, finite, st.finite_at_stop)
            new.running = running = st.running & ~stop
            count = None
            if replay is None:
                req = [running.any()]
                if self.ts is not None:
                    count = torch.searchsorted(self.ts, t.detach()[:, None], right=True)[:, 0]
                    req.append((count - st.save_index).max())  # type: ignore[operator]
                if self.save_dense:
                    req.append(accept.any())
                if self.has_jumps:
                    req.append(made_jump.any())
                if self.progress is not None:
                    req.append(t.min())
                got = iter(_host(req))
                host.keep_going = bool(next(got))
                host.save_num = int(next(got)) if self.ts is not None else 0
                host.accepted = bool(next(got)) if self.save_dense else False
                host.jumped = bool(next(got)) if self.has_jumps else False
                host.t_shown = float(next(got)) if self.progress is not None else 0.0
            else:
                host = replay
                if self.ts is not None:
                    count = torch.searchsorted(self.ts, t.detach()[:, None], right=True)[:, 0]
            if count is not None:
                emit.saves = self._interp_saves_per_sample(
                    host.save_num, count, st.save_index, t_before, t_step_end, y, dense_info
                )
                new.save_index = count
            if self.save_dense and host.accepted:
                emit.dense = (t_before, t, dense_info, t_step_end)
            if self.save_steps:
                emit.step = (
                    torch.where(accept, t, math.nan),
                    torch.where(broadcast_time(accept, y), y, math.nan),
                )
        else:
            if replay is None:
                req = [t, tnext]
                if not adaptive:
                    req.append(finite)
                if self.has_jumps:
                    req.append(made_jump)
                vals = _host(req)
                t_host, tnext_host = float(vals[0]), float(vals[1])
                status = Status.SUCCESSFUL
                if ev_status != Status.SUCCESSFUL:
                    status = ev_status
                elif ev_bad or (not adaptive and not vals[2]):
                    status = Status.NONFINITE
                    if always:
                        t_host = prev.t_shown  # the failed step is undone below
                accepted = t_host != prev.t_shown
                if adaptive and not accepted and tnext_host - t_host < self.floor_host:
                    status = Status.DT_UNDERFLOW
                host.status = status
                host.accepted = accepted
                host.jumped = bool(vals[-1]) if self.has_jumps else False
                host.t_shown = t_host
                host.keep_going = t_host < self.t1_host and status == Status.SUCCESSFUL
                host.save_num = (
                    bisect.bisect_right(self.ts_host, t_host) if accepted else prev.save_num
                )
                host.num_accepted = prev.num_accepted + int(accepted)
                host.num_events = prev.num_events + int(resets is True)
            else:
                host = replay
            if always and host.status == Status.NONFINITE:
                # Keep the last finite state, as a rejecting controller would.
                t, y = t_before, st.y
                new.t, new.y, new.fstate = t, y, st.fstate
            if host.accepted:
                if host.save_num > prev.save_num:
                    num_new = host.save_num - prev.save_num
                    values = self._interp_saves(
                        num_new, prev.save_num, t_before, t_step_end, y, dense_info
                    )
                    emit.saves = [(prev.save_num, host.save_num, values)]
                if self.save_dense:
                    emit.dense = (t_before, t, dense_info, t_step_end)
                if self.save_steps:
                    emit.step = (t, y)
        if resets is not None:
            scale = [torch.maximum(a.abs(), b.abs()) for a, b in zip(st.g_prev, g_new)]
            nfe += self._reset(new, fired if not per_sample else which, resets, scale)
        if host.jumped:
            # Restart first-same-as-last just after the discontinuity.
            t_right = torch.nextafter(t, torch.full_like(t, math.inf))
            init = self.solver.init(self.terms, t_right, y, args)
            new.fstate = tree_where(made_jump, init, new.fstate)
            nfe += self.solver.num_fevals_init
        nfe += self.solver.take_dense_fevals(dense_info)
        extra = self.solver.take_stats(dense_info)
        if extra and replay is None:
            for k, v in extra.items():
                self.extra_stats[k] = self.extra_stats.get(k, 0) + v
        return new, host, emit, nfe

    def _reset(self, new: _State, which: Any, resets: Any, scale: list) -> int:
        """After a non-terminal event (``new.t`` the event time, ``new.y`` the state there):
        the state replaced by the resets of the functions that fired, the solver and the
        controller restarted from it as at ``t0`` (first-same-as-last and the step-size
        history do not survive a jump of the state), and the event values read again. Those
        the reset leaves at zero within round-off (``sqrt(eps)`` of their size over the
        step) are set to exactly zero, from which no crossing counts: the crossing just
        handled does not fire again. Per sample, only the samples in ``resets`` change.
        Returns the vector-field evaluations used."""
        event, solver, terms, args = self.event, self.solver, self.terms, self.args
        assert event is not None
        per_sample = self.per_sample
        t, y = new.t, new.y
        t_user = self.to_user_time(t)
        masks = [w & resets for w in which] if per_sample else list(which)
        y_new = event.apply_resets(t_user, y, args, masks, per_sample)
        fstate = solver.init(terms, t, y_new, args)
        nfe = solver.num_fevals_init
        vf = solver.vector_field_of(fstate)
        if vf is None and self.dt0 is None:
            vf = terms.vf(t, y_new, args)
            nfe += 1
        tnext, cstate, extra = self.controller.init(
            terms, t, self.t1, y_new, self.dt0, args, solver, vf, self.norm
        )
        nfe += extra
        tnext = self._clip_end(tnext)
        with torch.no_grad():
            tol = math.sqrt(torch.finfo(t.dtype).eps)
            g = [
                torch.where(v.abs() <= tol * sc, torch.zeros_like(v), v)
                for v, sc in zip(event.values(t_user, y_new, args, per_sample), scale)
            ]
        if per_sample:
            new.y = y_new
            new.fstate = tree_where(resets, fstate, new.fstate)
            new.cstate = tree_where(resets, cstate, new.cstate)
            new.tnext = torch.where(resets, tnext, new.tnext)
            new.g_prev = [
                torch.where(broadcast_time(resets, v), v, gp) for v, gp in zip(g, new.g_prev)
            ]
        else:
            new.y, new.fstate, new.cstate, new.tnext, new.g_prev = y_new, fstate, cstate, tnext, g
        return nfe

    def _event_record(self, emits: list[_Emit]) -> tuple[Any, Any]:
        """Every event of the solve in order: times and the index of the function that fired
        (the first one, when several fired at once); joint ``(k,)``, per sample ``(batch, k)``
        padded with NaN and -1."""
        if self.event is None:
            return None, None
        items = [item for e in emits for item in e.events]
        t0 = self.t0
        if not self.per_sample:
            if not items:
                return t0.new_zeros((0,)), torch.zeros(0, dtype=torch.int64, device=t0.device)
            ts = torch.stack([t_e for _, t_e in items])
            ids = torch.tensor([info[0] for info, _ in items], device=t0.device)
            return ts, ids
        batch = t0.shape[0]
        if not items:
            return (
                t0.new_zeros((batch, 0)),
                torch.zeros(batch, 0, dtype=torch.int64, device=t0.device),
            )
        fired = torch.stack([info[0] for info, _ in items])  # (k, batch)
        ts = torch.where(fired, torch.stack([t_e for _, t_e in items]), math.nan)
        ids = torch.where(fired, torch.stack([info[1] for info, _ in items]).long(), -1)
        order = torch.argsort((~fired).to(torch.int8), dim=0, stable=True)
        ts, ids = ts.gather(0, order), ids.gather(0, order)
        keep = int(fired.sum(0).max())
        return ts[:keep].T, ids[:keep].T

    def finish(
        self, st: _State, last: Host, num_steps: int, nfe: int, out: Any, emits: list[_Emit]
    ) -> LoopResult:
        """Statuses, stats and the saved outputs."""
        t, per_sample = st.t, self.per_sample
        if per_sample:
            status = torch.full_like(st.num_attempts, int(Status.SUCCESSFUL))
            fail = torch.where(st.finite_at_stop, int(Status.DT_UNDERFLOW), int(Status.NONFINITE))
            status = torch.where(t < self.t1, fail, status)
            status = torch.where(st.running, int(Status.MAX_STEPS_REACHED), status)
            status = torch.where(st.event_hit, int(Status.EVENT_OCCURRED), status)
            status = torch.where(st.events_over, int(Status.MAX_EVENTS_REACHED), status)
            status = torch.where(st.cause != Cause.NONE, int(Status.NONFINITE), status)
            num_accepted, num_attempts = st.num_accepted, st.num_attempts
        else:
            code = last.status
            if code == Status.SUCCESSFUL and last.t_shown < self.t1_host:
                code = Status.MAX_STEPS_REACHED
            status = torch.tensor(int(code), device=t.device)
            num_accepted = torch.tensor(last.num_accepted, device=t.device)
            num_attempts = torch.tensor(num_steps, device=t.device)
        status, cause = self._explain_failures(st, status, None if per_sample else code)
        dense = [e.dense for e in emits if e.dense is not None] if self.save_dense else None
        st_t = st_y = None
        steps = [e.step for e in emits if e.step is not None]
        if self.save_steps and steps:
            st_t = torch.stack([s[0] for s in steps])
            st_y = torch.stack([s[1] for s in steps])
            if per_sample:
                # Move each sample's accepted steps to the front, NaN padding after.
                order = torch.argsort(torch.isnan(st_t).to(torch.int8), dim=0, stable=True)
                st_t = st_t.gather(0, order)
                expand = order.reshape(order.shape + (1,) * (st_y.ndim - 2)).expand_as(st_y)
                st_y = st_y.gather(0, expand)
                keep = int((~torch.isnan(st_t)).sum(0).max())
                st_t, st_y = st_t[:keep], st_y[:keep]
        event_ts, event_ids = self._event_record(emits)
        return LoopResult(
            t=t,
            y=st.y,
            status=status,
            num_steps=num_steps,
            num_accepted=num_accepted,
            num_rejected=num_attempts - num_accepted,
            num_fevals=nfe,
            ys_ts=out,
            steps_t=st_t,
            steps_y=st_y,
            dense=dense,
            event_mask=st.event_mask,
            event_ts=event_ts,
            event_ids=event_ids,
            extra_stats=dict(self.extra_stats),
            cause=cause,
        )

    def _explain_failures(
        self, st: _State, status: torch.Tensor, code: Status | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The cause of each failed sample, once, at the end. A step-size underflow whose
        steps were NaN, or whose error norm was, is a NONFINITE failure: shrinking the step
        cannot help. Costs nothing unless a sample underflowed or blew up."""
        cause = st.cause.to(torch.int64)
        if code is not None and code not in (Status.NONFINITE, Status.DT_UNDERFLOW):
            return status, cause  # joint: the host knows; nothing to explain
        nonfinite = (status == Status.NONFINITE) & (cause == Cause.NONE)
        underflow = status == Status.DT_UNDERFLOW
        if code is None:
            blew_up, under = (bool(v) for v in _host([nonfinite.any(), underflow.any()]))
        else:
            blew_up, under = code == Status.NONFINITE, code == Status.DT_UNDERFLOW
        if blew_up:
            late = Cause.STEP if self.adaptive else Cause.FIXED_STEP
            cause = torch.where(nonfinite, int(late), cause)
        if under:
            found = self._diagnose_underflow(st)
            named = underflow & (found != Cause.NONE)
            status = torch.where(named, int(Status.NONFINITE), status)
            limit = Cause.RESOLUTION
            if self.controller.dtmin is not None:
                limit = Cause.DTMIN if bool((self.floor <= self.controller.dtmin).all()) else limit
            cause = torch.where(named, found, torch.where(underflow, int(limit), cause))
        return status, cause

    def _diagnose_underflow(self, st: _State) -> torch.Tensor:
        """Per sample, whether NaN/inf explain an underflow: the vector field at the point
        reached, the last attempted state, then one more step of the smallest size
        (diagnostic: not counted, made only for a failed solve), whose state, error estimate
        and error norm are looked at."""
        per_sample = self.per_sample
        t, y = st.t, st.y
        cause = torch.zeros_like(t, dtype=torch.int64)

        def mark(code: Cause, bad: torch.Tensor | None) -> None:
            nonlocal cause
            if bad is not None:
                bad = bad if bad.shape == cause.shape else bad.any()
                cause = torch.where((cause == Cause.NONE) & bad, int(code), cause)

        mark(Cause.VF, _nonfinite(self.solver.vector_field_of(st.fstate), per_sample))
        if not per_sample:
            # Joint: the last attempt is the one that underflowed. (A sample that stopped
            # early keeps being attempted with whatever step the controller proposes, so its
            # last attempt says nothing.)
            mark(Cause.STEP, _nonfinite(st.y1, per_sample))
        try:
            with torch.no_grad():
                t_end = torch.minimum(t + self.floor, self.t1)
                y1, y_error, _, _ = self.solver.step(self.terms, t, t_end, y, self.args, st.fstate)
                mark(Cause.STEP, _nonfinite(y1, per_sample))
                mark(Cause.STEP, _nonfinite(y_error, per_sample))
                ratio = self.controller.error_ratio(y, y1, y_error, self.norm)
                if ratio is not None:
                    mark(Cause.NORM, ~torch.isfinite(ratio))
        except Exception:  # a diagnosis must not mask the failure itself
            pass
        return cause

    def _explain(self, t: torch.Tensor, y: torch.Tensor, err: Exception) -> None:
        """After an exception inside a step: when the vector field's output is at fault
        (``None``, a wrong shape, dtype or device), raise that clear error instead of the raw
        one from deep inside the solver; otherwise return (the caller re-raises)."""
        if self.check_vf is None:
            return
        try:
            with torch.no_grad():
                vf = self.terms.vf(t, y, self.args)
        except Exception:  # the vector field's own error is then the clearest
            return
        try:
            self.check_vf(vf)
        except (TypeError, ValueError) as clear:
            raise clear from err

    def new_output(self, y0: torch.Tensor) -> torch.Tensor | None:
        """The NaN-filled tensor the save times are written into."""
        if self.ts is None:
            return None
        n = self.ts.shape[-1]
        if self.per_sample:
            return y0.new_full((y0.shape[0], n) + y0.shape[1:], math.nan)
        return y0.new_full((n,) + y0.shape, math.nan)

    def write(self, out: torch.Tensor | None, saves: list, inplace: bool) -> Any:
        """Write one iteration's saves into ``out`` (in place, or out of place for replays
        whose results autograd must see through checkpoints)."""
        if out is None or not saves:
            return out
        for item in saves:
            if self.per_sample:
                idx, mask, yq = item
                cur = out[self.arange, idx]
                val = torch.where(broadcast_time(mask, yq), yq, cur)
                if inplace:
                    out[self.arange, idx] = val
                else:
                    out = out.index_put((self.arange, idx), val)
            else:
                start, stop, values = item
                if inplace:
                    out[start:stop] = values
                else:
                    out = out.slice_scatter(values, dim=0, start=start, end=stop)
        return out


def run(loop: Loop, y0: torch.Tensor) -> tuple[LoopResult, list[Host]]:
    """Run a solve to the end, live; returns the result and the host record of each iteration."""
    st, host, emit, nfe = loop.init(y0)
    out = loop.write(loop.new_output(y0), emit.saves, inplace=True)
    tape = [host]
    emits: list[_Emit] = []
    num_steps = 0
    while host.keep_going and num_steps < loop.max_steps:
        st, host, emit, n = loop.body(st, host)
        nfe += n
        num_steps += 1
        out = loop.write(out, emit.saves, inplace=True)
        emit.saves = []
        emits.append(emit)
        tape.append(host)
        if loop.progress is not None:
            rejected = num_steps - (
                int(st.num_accepted.sum()) if loop.per_sample else host.num_accepted
            )
            loop.progress.update(host.t_shown, num_steps, rejected)
    return loop.finish(st, host, num_steps, nfe, out, emits), tape
