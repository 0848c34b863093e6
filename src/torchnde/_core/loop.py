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

from .adaptive import host_control, run_adaptive
from .controllers import AbstractStepSizeController, Norm
from .events import Event, locate_event
from .fixed import fixed_grid, run_fixed
from .solution import Status
from .solver import AbstractSolver
from .terms import AbstractTerm, broadcast_time

__all__ = ["Cause", "Host", "Loop", "LoopResult", "run", "run_general", "time_floor"]


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


def _row_sums(x: torch.Tensor) -> torch.Tensor:
    """The sum of each sample (leading dimension) of ``x``, as one matrix-vector product with
    ones: a sum over a short inner dimension is ~4x slower on the CPU (1.7 against 0.4 ms
    for 10^5 samples of 3). A NaN or inf in a sample gives a non-finite sum, as ``sum``."""
    flat = x.reshape(x.shape[0], -1)
    return torch.mv(flat, flat.new_ones(flat.shape[1]))


def _and_not(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a & ~b`` of boolean tensors as one operation (``True > False`` only)."""
    return torch.gt(a, b)


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
    event_fired: list | None = None  # joint: per event, per function whether it fired
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

    def copy(self) -> _State:
        """A shallow copy, for the next iteration to replace fields of (fast: no __init__)."""
        new = object.__new__(_State)
        new.__dict__.update(self.__dict__)
        return new


@dataclass
class Host:
    """What the host learned in one iteration: the replay record. A live iteration fills it
    from one transfer; a replayed one (checkpointing) takes every decision from it, so the
    same computation runs with no host sync. Each field is named after the decision it
    drives."""

    keep_going: bool  # whether another iteration runs
    save_num: int = 0  # joint: save slots filled so far; per sample: most new ones in a sample
    accepted: bool = False  # joint: the step was accepted; per sample: any sample accepted
    jumped: bool = False  # the step ended on a `jump_ts` point (first-same-as-last restarts)
    event: bool = False  # some event function crossed zero in this step (it is located)
    fired: tuple = ()  # joint, at an event: per function, whether it fired
    num_events: int = 0  # joint only: non-terminal events so far (against `max_events`)
    status: Status = Status.SUCCESSFUL  # joint only: the solve's status after this step
    t_shown: float = 0.0  # joint: the time reached; per sample: the least (progress meter)
    num_accepted: int = 0  # joint only: accepted steps so far


@dataclass
class _Emit:
    """What one iteration produced for the outputs."""

    saves: list  # joint: [(start, stop, values)]; per sample: [(index, mask, values)]
    dense: tuple | None = None
    step: tuple | None = None
    # At an event: [(info, t_e)], info = (index of the function, whether each fired) joint,
    # or (fired mask, index) per sample; t_e carries the event time's gradient.
    events: list = field(default_factory=list)


@dataclass
class _Step:
    """One attempted step, as the interruption hooks and the stepping mode see it. A hook
    that cuts the step short moves ``t_after`` (and ``y1``) to the cut; the dense output
    still covers ``[t, t_step_end]``."""

    t: torch.Tensor
    tnext: torch.Tensor
    y1: torch.Tensor
    dense_info: Any
    accept: torch.Tensor
    finite: torch.Tensor | None
    made_jump: torch.Tensor | None
    t_after: torch.Tensor
    t_step_end: torch.Tensor


@dataclass
class _Cut:
    """What the event hook made of one step."""

    occurred: bool = False  # host: some event function crossed zero
    stop: torch.Tensor | None = None  # per sample: the samples that stop at their event
    status: Status = Status.SUCCESSFUL  # joint: the solve's status after this step
    bad: bool = False  # joint: an event value is NaN at the accepted point
    fired: tuple = ()  # joint: per function, whether it fired (host bools)
    which: list = field(default_factory=list)  # per function, whether it fired (tensors)
    resets: Any = None  # the samples to reset (mask), True (joint), or None
    record: list = field(default_factory=list)  # [(info, t_e)] for the event record
    scale: list = field(default_factory=list)  # the event values' size over the step


class EventHook:
    """Events as the loop's interruption: after each attempted step, find the crossings,
    locate the earliest on the dense output, cut the step there, and decide per sample (or
    for the joint batch) whether to stop (terminal, or past ``max_events``) or to reset the
    state and restart (``Loop.restart``)."""

    def __init__(self, event: Event, loop: Loop) -> None:
        self.event, self.loop = event, loop

    def check(self, st: _State, new: _State, prev: Host, replay: Host | None, step: _Step) -> _Cut:
        loop, event = self.loop, self.event
        per_sample, args = loop.per_sample, loop.args
        accept = step.accept
        g_prev = st.g_prev
        g_new = event.values(loop.to_user_time(step.tnext), step.y1, args, per_sample)
        crossed = torch.stack(event.crossed(g_prev, g_new, per_sample)).any(0) & accept
        # An event function that is NaN at an accepted point can never fire: a failure.
        bad = _nonfinite(g_new, per_sample) & accept & ~crossed  # type: ignore[operator]
        new.cause = torch.where(bad, int(Cause.EVENT), st.cause)
        cut = _Cut()
        if replay is not None:
            cut.occurred = replay.event
        elif per_sample:
            cut.occurred = bool(_host([crossed.any()])[0])
        else:
            cut.occurred, cut.bad = (bool(v) for v in _host([crossed.any(), bad]))
        if cut.occurred:
            t_ev, y_ev, which = locate_event(
                event, loop.solver, step.dense_info, step.t, step.tnext - step.t, g_prev, args,
                crossed, per_sample, loop.to_user_time,
            )  # fmt: skip
            # A crossing within rounding of the step end: y1 has crossed, the dense output
            # at θ = 1 not quite, and bisection found nothing; it fires there.
            none = crossed & ~torch.stack(which).any(0)
            ends = event.crossed(g_prev, g_new, per_sample)
            which = [w | (none & e) for w, e in zip(which, ends)]
            step.t_after = torch.where(crossed, t_ev, step.t_after)
            step.y1 = torch.where(broadcast_time(crossed, step.y1), y_ev, step.y1)
            cut.which = which
            cut.scale = [torch.maximum(a.abs(), b.abs()) for a, b in zip(g_prev, g_new)]
            if per_sample:
                self._decide_per_sample(st, new, cut, crossed, t_ev)
            else:
                self._decide_joint(new, prev, replay, cut, t_ev)
        new.g_prev = [
            torch.where(broadcast_time(accept, gn) if per_sample else accept, gn, gp)
            for gn, gp in zip(g_new, g_prev)
        ]
        return cut

    def _decide_per_sample(
        self, st: _State, new: _State, cut: _Cut, crossed: torch.Tensor, t_ev: torch.Tensor
    ) -> None:
        event, which = self.event, cut.which
        stops = crossed & torch.stack([w & term for w, term in zip(which, event.terminal)]).any(0)
        go_on = crossed & ~stops
        over = go_on & (st.num_events >= event.max_events)
        cut.resets = go_on & ~over
        cut.stop = stops | over
        new.event_mask = tuple(m | (w & stops) for m, w in zip(st.event_mask, which))  # type: ignore[arg-type]
        new.event_hit = st.event_hit | stops
        new.events_over = st.events_over | over
        new.num_events = st.num_events + cut.resets
        first = torch.stack(which).to(torch.int8).argmax(0)
        cut.record = [((crossed & ~over, first), t_ev)]

    def _decide_joint(
        self, new: _State, prev: Host, replay: Host | None, cut: _Cut, t_ev: torch.Tensor
    ) -> None:
        event = self.event
        fired = replay.fired if replay is not None else tuple(bool(w) for w in _host(cut.which))
        cut.fired = fired
        if any(f and term for f, term in zip(fired, event.terminal)):
            cut.status = Status.EVENT_OCCURRED
            new.event_mask = tuple(
                m | torch.tensor(f and term, device=m.device)
                for m, f, term in zip(new.event_mask, fired, event.terminal)  # type: ignore[arg-type]
            )
        elif prev.num_events >= event.max_events:
            cut.status = Status.MAX_EVENTS_REACHED
            return
        else:
            cut.resets = True
        cut.record = [((fired.index(True) if any(fired) else 0, fired), t_ev)]

    def restart(self, loop: Loop, st: _State, new: _State, cut: _Cut) -> int:
        """After a non-terminal event (``new.t`` the event time, ``new.y`` the state there):
        the state replaced by the resets of the functions that fired and the solve restarted
        from it (:meth:`Loop.restart`), then the event values read again. Those the reset
        leaves at zero within round-off (``sqrt(eps)`` of their size over the step) are set to
        exactly zero, from which no crossing counts: the crossing just handled does not fire
        again. Per sample, only the samples in ``cut.resets`` change."""
        event, per_sample, args = self.event, loop.per_sample, loop.args
        t_user = loop.to_user_time(new.t)
        if per_sample:
            masks: list = [w & cut.resets for w in cut.which]
        else:
            masks = list(cut.fired)
        y_new = event.apply_resets(t_user, new.y, args, masks, per_sample)
        nfe = loop.restart(new, y_new, cut.resets)
        with torch.no_grad():
            tol = math.sqrt(torch.finfo(new.t.dtype).eps)
            g = [
                torch.where(v.abs() <= tol * sc, torch.zeros_like(v), v)
                for v, sc in zip(event.values(t_user, y_new, args, per_sample), cut.scale)
            ]
        if per_sample:
            new.g_prev = [
                torch.where(broadcast_time(cut.resets, v), v, gp) for v, gp in zip(g, new.g_prev)
            ]
        else:
            new.g_prev = g
        return nfe

    def record(self, emits: list[_Emit]) -> tuple[torch.Tensor, torch.Tensor]:
        """Every event of the solve in order: times and the index of the function that fired
        (the first one, when several fired at once); joint ``(k,)``, per sample ``(batch, k)``
        padded with NaN and -1."""
        items = [item for e in emits for item in e.events]
        t0 = self.loop.t0
        if not self.loop.per_sample:
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


class JointStepping:
    """One step size for the whole batch: the host learns the time reached and decides the
    status; save slots are counted on the host."""

    def advance(
        self, loop: Loop, st: _State, new: _State, prev: Host, replay: Host | None,
        step: _Step, cut: _Cut | None,
    ) -> tuple[Host, _Emit]:  # fmt: skip
        emit = _Emit(saves=[])
        always, adaptive = loop.always_accept, loop.adaptive
        t_before = step.t
        if replay is None:
            host = Host(keep_going=False)
            req = [new.t, new.tnext]
            if not adaptive:
                req.append(step.finite)  # type: ignore[arg-type]
            if loop.has_jumps:
                req.append(step.made_jump)  # type: ignore[arg-type]
            vals = _host(req)
            t_host, tnext_host = float(vals[0]), float(vals[1])
            status = Status.SUCCESSFUL
            if cut is not None and cut.status != Status.SUCCESSFUL:
                status = cut.status
            elif (cut is not None and cut.bad) or (not adaptive and not vals[2]):
                status = Status.NONFINITE
                if always:
                    t_host = prev.t_shown  # the failed step is undone below
            accepted = t_host != prev.t_shown
            if adaptive and not accepted and tnext_host - t_host < loop.floor_host:
                status = Status.DT_UNDERFLOW
            host.status = status
            host.accepted = accepted
            host.jumped = bool(vals[-1]) if loop.has_jumps else False
            host.t_shown = t_host
            host.keep_going = t_host < loop.t1_host and status == Status.SUCCESSFUL
            host.save_num = bisect.bisect_right(loop.ts_host, t_host) if accepted else prev.save_num
            host.num_accepted = prev.num_accepted + int(accepted)
            host.num_events = prev.num_events
            if cut is not None:
                host.event, host.fired = cut.occurred, cut.fired
                host.num_events += int(cut.resets is True)
        else:
            host = replay
        if always and host.status == Status.NONFINITE:
            # Keep the last finite state, as a rejecting controller would.
            new.t, new.y, new.fstate = t_before, st.y, st.fstate
        if host.accepted:
            if host.save_num > prev.save_num:
                num_new = host.save_num - prev.save_num
                values = loop._interp_saves(
                    num_new, prev.save_num, t_before, step.t_step_end, new.y, step.dense_info
                )
                emit.saves = [(prev.save_num, host.save_num, values)]
            if loop.save_dense:
                emit.dense = (t_before, new.t, step.dense_info, step.t_step_end)
            if loop.save_steps:
                emit.step = (new.t, new.y)
        return host, emit

    def status(self, loop: Loop, st: _State, last: Host, num_steps: int) -> tuple:
        """The final status, counts, and the joint status code (for the failure diagnosis)."""
        t = st.t
        code = last.status
        if code == Status.SUCCESSFUL and last.t_shown < loop.t1_host:
            code = Status.MAX_STEPS_REACHED
        status = torch.tensor(int(code), device=t.device)
        num_accepted = torch.tensor(last.num_accepted, device=t.device)
        num_attempts = torch.tensor(num_steps, device=t.device)
        return status, num_accepted, num_attempts, code


class PerSampleStepping:
    """Each sample its own time, step, acceptance and status: every decision a
    ``torch.where``; the host learns only whether any sample runs and what the outputs
    need (the most save slots a sample passed, whether any step was accepted or jumped)."""

    def advance(
        self, loop: Loop, st: _State, new: _State, prev: Host, replay: Host | None,
        step: _Step, cut: _Cut | None,
    ) -> tuple[Host, _Emit]:  # fmt: skip
        emit = _Emit(saves=[])
        accept, finite, t, tnext = step.accept, step.finite, new.t, new.tnext
        new.num_accepted = st.num_accepted + accept
        new.num_attempts = st.num_attempts + st.running
        stop = accept & (t >= loop.t1)
        if loop.adaptive:
            # A rejected step whose successor is below the floor cannot make progress.
            stop = stop | _and_not(tnext - t < loop.floor, accept)
        else:
            stop = stop | ~finite  # type: ignore[operator]
        if cut is not None:
            if cut.stop is not None:
                stop = stop | cut.stop
            stop = stop | (new.cause != st.cause)
        new.finite_at_stop = torch.where(st.running, finite, st.finite_at_stop)  # type: ignore[arg-type]
        new.running = running = _and_not(st.running, stop)
        count = None
        if replay is None:
            host = Host(keep_going=False)
            if cut is not None:
                host.event = cut.occurred
            req = [running.any()]
            if loop.ts is not None:
                count = torch.searchsorted(loop.ts, t.detach()[:, None], right=True)[:, 0]
                req.append((count - st.save_index).max())  # type: ignore[operator]
            if loop.save_dense:
                req.append(accept.any())
            if loop.has_jumps:
                req.append(step.made_jump.any())  # type: ignore[union-attr]
            if loop.progress is not None:
                req.append(t.min())
            got = iter(_host(req))
            host.keep_going = bool(next(got))
            host.save_num = int(next(got)) if loop.ts is not None else 0
            host.accepted = bool(next(got)) if loop.save_dense else False
            host.jumped = bool(next(got)) if loop.has_jumps else False
            host.t_shown = float(next(got)) if loop.progress is not None else 0.0
        else:
            host = replay
            if loop.ts is not None:
                count = torch.searchsorted(loop.ts, t.detach()[:, None], right=True)[:, 0]
        if count is not None:
            emit.saves = loop._interp_saves_per_sample(
                host.save_num, count, st.save_index, step.t, step.t_step_end, new.y,
                step.dense_info,
            )  # fmt: skip
            new.save_index = count
        if loop.save_dense and host.accepted:
            emit.dense = (step.t, t, step.dense_info, step.t_step_end)
        if loop.save_steps:
            emit.step = (
                torch.where(accept, t, math.nan),
                torch.where(broadcast_time(accept, new.y), new.y, math.nan),
            )
        return host, emit

    def status(self, loop: Loop, st: _State, last: Host, num_steps: int) -> tuple:
        t = st.t
        status = torch.full_like(st.num_attempts, int(Status.SUCCESSFUL))
        fail = torch.where(st.finite_at_stop, int(Status.DT_UNDERFLOW), int(Status.NONFINITE))
        status = torch.where(t < loop.t1, fail, status)
        status = torch.where(st.running, int(Status.MAX_STEPS_REACHED), status)
        status = torch.where(st.event_hit, int(Status.EVENT_OCCURRED), status)
        status = torch.where(st.events_over, int(Status.MAX_EVENTS_REACHED), status)
        status = torch.where(st.cause != Cause.NONE, int(Status.NONFINITE), status)
        return status, st.num_accepted, st.num_attempts, None


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
        # The stepping mode (joint or per sample) and the interruption hook (events).
        self.mode: JointStepping | PerSampleStepping = (
            PerSampleStepping() if self.per_sample else JointStepping()
        )
        self.events = EventHook(event, self) if event is not None else None
        self.compiled = compile_step
        self.attempt = self._attempt
        if compile_step:  # compiled once per problem signature, kept where faster
            from .compiled import CompiledAttempt

            self.attempt = CompiledAttempt(self)

    # -- pieces -----------------------------------------------------------------------------

    def _clip_end(
        self, tn: torch.Tensor, t: torch.Tensor | None = None, tried: torch.Tensor | None = None,
        accept: torch.Tensor | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """The next step's end ``tn``, stretched to ``t1`` where it is within the floor of it.

        Given the attempt (from ``t`` to ``tried``, ``accept``): a rejected step's successor
        that the stretch would make no shorter than the rejected step (which ended at ``t1``,
        the controller shrinking it by less than the floor) ends halfway from ``t`` to ``t1``
        instead. Without this, a float32 solve at a tolerance its round-off cannot meet near
        ``t1`` retried the same step until ``max_steps`` (65,536 rejections, 41 s)."""
        end = torch.where(tn > self.t1_snap, self.t1, tn)
        if accept is None:
            return end
        # Rejected and no shorter; halfway `t + (t1 - t) / 2`, rounded once, by `lerp`.
        stuck = _and_not(end >= tried, accept)  # type: ignore[arg-type, operator]
        return torch.where(stuck, torch.lerp(t, self.t1, 0.5), end)  # type: ignore[arg-type]

    def _attempt(self, t, tnext, y, fstate, cstate, running):
        """One attempted step and the controller's verdict: all tensor work, no host sync,
        so it can be compiled as one graph."""
        y1, y_error, dense_info, fnew = self.solver.step(self.terms, t, tnext, y, self.args, fstate)
        accept, _, next_t1, made_jump, cstate = self.controller.adapt(
            t, tnext, y, y1, y_error, self.solver.error_order_of(fstate), cstate, self.norm
        )
        if self.per_sample:
            # Finished samples are carried along but never change.
            finite = torch.isfinite(_row_sums(y1.detach()))
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
        """One iteration: attempt a step, let the interruption hooks (events) cut it, advance
        the accepted samples, and let the stepping mode decide what happens next. ``prev`` is
        the previous iteration's host record; with ``replay`` the host decisions are taken
        from it instead of synchronising."""
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
        step = _Step(
            t=t, tnext=tnext, y1=y1, dense_info=dense_info, accept=accept, finite=finite,
            made_jump=made_jump, t_after=t_after, t_step_end=t_after,
        )  # fmt: skip
        new = st.copy()
        new.cstate, new.y1 = cstate, y1
        cut = None
        if self.events is not None:
            cut = self.events.check(st, new, prev, replay, step)
        # Advance accepted samples.
        if always:
            new.y, new.fstate = step.y1, fnew
        else:
            new.y = torch.where(broadcast_time(accept, step.y1), step.y1, y)
            new.fstate = tree_where(accept, fnew, self.solver.rejected_state(st.fstate, fnew))
        new.t = step.t_after
        # (Only an adaptive solve rejects steps to retry them: a fixed-step one stops.)
        new.tnext = self._clip_end(next_t1, t, tnext, accept if self.adaptive else None)
        new.y1 = step.y1
        host, emit = self.mode.advance(self, st, new, prev, replay, step, cut)
        if cut is not None:
            emit.events = cut.record
            if cut.resets is not None:
                nfe += self.events.restart(self, st, new, cut)  # type: ignore[union-attr]
        if host.jumped:
            # Restart first-same-as-last just after the discontinuity.
            t_right = torch.nextafter(new.t, torch.full_like(new.t, math.inf))
            init = self.solver.init(self.terms, t_right, new.y, self.args)
            new.fstate = tree_where(made_jump, init, new.fstate)
            nfe += self.solver.num_fevals_init
        nfe += self.solver.take_dense_fevals(dense_info)
        extra = self.solver.take_stats(dense_info)
        if extra and replay is None:
            for k, v in extra.items():
                self.extra_stats[k] = self.extra_stats.get(k, 0) + v
        return new, host, emit, nfe

    def restart(self, new: _State, y_new: torch.Tensor, where: Any) -> int:
        """Start the solve afresh from ``(new.t, y_new)``, as at ``t0``: the solver's carried
        state (first-same-as-last) and the controller's (a fresh first step, or ``dt0``), for
        the samples in ``where`` (``True``: all). The shared restart of every interruption
        that changes the state (non-terminal events; jumps of a jump diffusion). Returns the
        vector-field evaluations used."""
        solver, terms, args = self.solver, self.terms, self.args
        t = new.t
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
        if where is True:
            new.y, new.fstate, new.cstate, new.tnext = y_new, fstate, cstate, tnext
        else:
            new.y = torch.where(broadcast_time(where, y_new), y_new, new.y)
            new.fstate = tree_where(where, fstate, new.fstate)
            new.cstate = tree_where(where, cstate, new.cstate)
            new.tnext = torch.where(where, tnext, new.tnext)
        return nfe

    def finish(
        self, st: _State, last: Host, num_steps: int, nfe: int, out: Any, emits: list[_Emit]
    ) -> LoopResult:
        """Statuses, stats and the saved outputs."""
        t, per_sample = st.t, self.per_sample
        status, num_accepted, num_attempts, code = self.mode.status(self, st, last, num_steps)
        status, cause = self._explain_failures(st, status, code)
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
        event_ts = event_ids = None
        event_fired = None
        if self.events is not None:
            event_ts, event_ids = self.events.record(emits)
            if not per_sample:
                event_fired = [info[1] for e in emits for info, _ in e.events]
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
            event_fired=event_fired,
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
    """Run a solve to the end, live; returns the result and the host record of each iteration.
    A plain fixed-step solve takes its steps on a grid decided in advance (``_core/fixed.py``:
    the same steps, without the per-step host decisions), a plain joint adaptive one with the
    step-size control on the host (``_core/adaptive.py``)."""
    grid = fixed_grid(loop)
    if grid is not None:
        return run_fixed(loop, y0, grid)
    if host_control(loop):
        return run_adaptive(loop, y0)
    return run_general(loop, y0)


def run_general(loop: Loop, y0: torch.Tensor) -> tuple[LoopResult, list[Host]]:
    """:func:`run` with the general loop: one :meth:`Loop.body` per iteration."""
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
