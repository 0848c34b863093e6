r"""``solve`` for a :class:`DelayTerm`: the method of steps on the dense output.

$[t_0, t_1]$ is cut at $t_0 + kL$ with $L$ the smallest delay (or ``min_delay``). On a segment
$[a, b]$ with $b - a \le L$ every delayed time $t - \tau_i \le b - L \le a$ lies where the
solution is known, so the segment is an ODE $y' = f(t, y, (H(t - \tau_i))_i)$ with $H$ the
history: ``phi`` before $t_0$, the dense output of the earlier segments after. Each segment is
an ordinary ``solve`` (any solver and controller, joint or per-sample stepping), started from
the previous segment's end state, and its dense output is appended to $H$. The solver restarts
at every segment boundary, and the discontinuities of the solution's derivatives,
$t_0 + \sum_i n_i\tau_i$, are added to the controller's ``jump_ts`` (stepped to exactly, the
vector field re-evaluated just after each, so that delayed reads there take the right side).

Gradients: under ``DirectAdjoint`` every history value keeps its autograd graph, so the
derivative reaches ``y0``, the vector field's parameters, ``phi``'s parameters and learnable
delays (through the time derivative of the dense output at $t - \tau$). ``CheckpointAdjoint``
gives the same gradient with each segment a checkpoint (``torch.utils.checkpoint``,
non-reentrant): the segment runs as a direct solve whose saved activations are dropped after
the forward pass and recomputed, one segment at a time, in the backward pass; what survives
between segments is the dense output the later ones read (their inputs). The continuous
adjoints do not differentiate the dense output; they are refused.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.utils.checkpoint

from ._adjoint import AbstractAdjoint, CheckpointAdjoint, DirectAdjoint
from ._core.controllers import AbstractStepSizeController, ConstantStepSize, PIDController
from ._core.delay import DelayTerm, History
from ._core.solution import SaveAt, Solution, Status
from ._core.solver import AbstractSolver
from ._core.terms import ODETerm

__all__ = ["solve_delay"]


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)}, dtype {x.dtype}"
    return f"{type(x).__name__} {x!r}"


def _scalar_time(name: str, value: Any) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise NotImplementedError(
                f"`{name}` must be a scalar for a DelayTerm (one time axis shared by the batch, "
                f"the method of steps' segments), got {_describe(value)}."
            )
        value = value.detach().reshape(())
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"`{name}` must be a number or a 0-d tensor, got {_describe(value)}."
        ) from None


def _with_jump_ts(
    controller: AbstractStepSizeController, points: list[float]
) -> AbstractStepSizeController:
    """A copy of ``controller`` that also steps exactly to ``points`` and re-evaluates the
    vector field just after each (so that its delayed reads take the right-hand side)."""
    if not points:
        return controller
    new = object.__new__(type(controller))
    new.__dict__.update(controller.__dict__)
    grid = torch.tensor(points, dtype=torch.float64)
    if controller.jump_ts is not None:
        grid = torch.cat([controller.jump_ts.to(torch.float64), grid])
    new.jump_ts = torch.unique(grid)
    return new


def _check_history(history: Any, y0: torch.Tensor, t0: float, per_sample: bool) -> Any:
    if history is None:
        return lambda t: y0
    if not callable(history):
        raise TypeError(
            f"`history` must be callable as phi(t), the state for t <= t0, got "
            f"{_describe(history)}."
        )
    t = torch.tensor(t0, dtype=y0.dtype, device=y0.device)
    if per_sample:
        t = t.expand(y0.shape[:1])
    with torch.no_grad():
        out = history(t)
    if not isinstance(out, torch.Tensor):
        raise TypeError(
            f"`history` must return a tensor of the shape of `y0` {tuple(y0.shape)}, got "
            f"{_describe(out)} at t0."
        )
    try:
        ok = torch.broadcast_shapes(out.shape, y0.shape) == y0.shape
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(
            f"`history` must return the shape of `y0` {tuple(y0.shape)} (or one that "
            f"broadcasts to it), got shape {tuple(out.shape)} at t0={t0:g}."
        )
    return history


class _SegmentField:
    """The vector field of one segment: ``f(t, y, (H(t - tau_i))_i, args)``."""

    def __init__(self, term: DelayTerm, history: History, per_sample: bool):
        self.term = term
        self.history = history
        self.per_sample = per_sample
        self.bound = term.min_delay if term.min_delay is not None else 0.0
        self.start = 0.0  # the current segment's start: its first evaluation reads rightwards

    def __call__(self, t: torch.Tensor, y: torch.Tensor, args: Any) -> torch.Tensor:
        yd = []
        on_start = t.detach() == self.start
        right: torch.Tensor | bool = bool(on_start) if on_start.ndim == 0 else on_start
        for d in self.term.delays:
            if isinstance(d, torch.Tensor):
                tau = d.reshape(()).to(t.dtype)
            elif callable(d):
                tau = d(t, y, args)
                if not isinstance(tau, torch.Tensor):
                    tau = torch.as_tensor(tau, dtype=t.dtype, device=t.device)
                if bool((tau.detach() < self.bound).any()):
                    raise ValueError(
                        f"a state-dependent delay fell below `min_delay`={self.bound:g} at "
                        f"t={float(t.detach().min()):g} (min value "
                        f"{float(tau.detach().min()):g}): the method of steps would read the "
                        "solution where it is not yet known. Pass a smaller `min_delay` (a "
                        "true lower bound of the delays)."
                    )
                tau = tau.to(t.dtype)
            else:
                tau = torch.as_tensor(d, dtype=t.dtype, device=t.device)
            yd.append(self.history(t - tau, right))
        return self.term.vector_field(t, y, tuple(yd), args)


def solve_delay(
    term: DelayTerm,
    solver: AbstractSolver,
    t0: Any,
    t1: Any,
    y0: Any,
    args: Any,
    *,
    history: Any,
    dt0: Any,
    saveat: SaveAt,
    controller: AbstractStepSizeController | None,
    adjoint: AbstractAdjoint | None,
    event: Any,
    max_steps: int,
    throw: bool,
    solve: Any,
) -> Solution:
    """Solve ``term`` by the method of steps; ``solve`` is the ODE solve each segment uses."""
    if adjoint is not None and not isinstance(adjoint, (DirectAdjoint, CheckpointAdjoint)):
        raise NotImplementedError(
            f"`adjoint`={type(adjoint).__name__}() is not supported for a DelayTerm: the later "
            "segments read the dense output of the earlier ones, which only DirectAdjoint() "
            "and CheckpointAdjoint() differentiate. Use adjoint=DirectAdjoint() (the default) "
            "or CheckpointAdjoint() (each segment a checkpoint)."
        )
    checkpointed = isinstance(adjoint, CheckpointAdjoint)
    if event is not None:
        raise NotImplementedError("`event` is not supported for a DelayTerm yet.")
    if not isinstance(y0, torch.Tensor):
        raise TypeError(f"`y0` of a DelayTerm must be a tensor, got {_describe(y0)}.")
    if saveat.steps:
        raise NotImplementedError(
            "SaveAt(steps=True) is not supported for a DelayTerm; save at times (SaveAt(ts=...)) "
            "or keep the dense solution (SaveAt(dense=True))."
        )
    a, b = _scalar_time("t0", t0), _scalar_time("t1", t1)
    if not b > a:
        raise NotImplementedError(
            f"a DelayTerm is solved forwards in time (t1 > t0), got t0={a:g}, t1={b:g}."
        )
    if controller is None:
        controller = PIDController() if solver.is_adaptive else ConstantStepSize()
    per_sample = bool(controller.per_sample)
    phi = _check_history(history, y0, a, per_sample)
    ts = None
    if saveat.ts is not None:
        ts = torch.as_tensor(saveat.ts, dtype=torch.float64)
        if ts.ndim != 1:
            raise NotImplementedError(
                f"SaveAt(ts=...) of a DelayTerm must be 1-D (shared by the batch), got shape "
                f"{tuple(ts.shape)}."
            )
        if ts.numel() and (float(ts.min()) < a or float(ts.max()) > b):
            raise ValueError(
                f"SaveAt(ts=...) must lie within [t0, t1] = [{a:g}, {b:g}], got "
                f"[{float(ts.min()):g}, {float(ts.max()):g}]."
            )

    length = term.segment_length()
    order = int(getattr(solver, "order", 1))
    jumps = term.discontinuities(a, b, order)
    hist = History(phi, a, y0)

    # Segment ends t0 + kL (the last one t1); nudged so that rounding cannot leave a sliver.
    bounds = [a]
    k = 1
    while bounds[-1] < b:
        nxt = a + k * length
        bounds.append(b if nxt >= b - 1e-12 * max(1.0, abs(b)) else nxt)
        k += 1

    saved: list[torch.Tensor] = []
    saved_ts: list[torch.Tensor] = []
    if saveat.t0:
        saved.append(y0[None])
        saved_ts.append(torch.tensor([a], dtype=torch.float64))
    stats: dict[str, Any] = {}
    status: torch.Tensor | None = None
    y = y0
    failed = False
    dt = dt0
    for j in range(len(bounds) - 1):
        lo, hi = bounds[j], bounds[j + 1]
        local_ts = None
        if ts is not None:
            sel = (ts >= lo) & (ts <= hi) if j == 0 else (ts > lo) & (ts <= hi)
            local_ts = ts[sel]
            if local_ts.numel() == 0:
                local_ts = None
        inner = [p for p in jumps if lo < p < hi]
        ctrl = _with_jump_ts(controller, inner)
        # Each segment reads a snapshot of the history: a checkpointed segment is recomputed
        # in the backward pass, when the history holds the later segments too.
        field = _SegmentField(term, hist.snapshot(), per_sample)
        field.start = lo
        seg_saveat = SaveAt(ts=local_ts, t1=True, dense=True)
        if failed:
            if local_ts is not None:
                saved.append(torch.full((local_ts.numel(), *y0.shape), float("nan")).to(y0))
                saved_ts.append(local_ts)
            continue

        def segment(y_start: torch.Tensor, field: Any = field, ctrl: Any = ctrl, lo: float = lo,
                    hi: float = hi, seg_saveat: SaveAt = seg_saveat) -> Solution:  # fmt: skip
            # A fresh term per call: a recomputed segment must run exactly the forward's
            # operations (no per-term cache hit on the second run).
            sol = solve(
                ODETerm(lambda t, y_, args_: field(t, y_, args_)),
                solver,
                torch.tensor(lo, dtype=torch.float64),
                torch.tensor(hi, dtype=torch.float64),
                y_start,
                args,
                dt0=dt,
                saveat=seg_saveat,
                controller=ctrl,
                adjoint=DirectAdjoint(),
                max_steps=max_steps,
                throw=throw,
            )
            if checkpointed:
                # Dense output may defer work to its first use (an RK step's end slope); do
                # it here, in this segment's checkpoint, not in a later one's, whose
                # recomputation would find it done and save fewer tensors than its forward.
                for rec in getattr(sol._interpolate, "records", ()):
                    sol.evaluate((rec[0] + rec[1]) / 2)
            return sol

        if checkpointed and torch.is_grad_enabled():
            sol = torch.utils.checkpoint.checkpoint(segment, y, use_reentrant=False)
        else:
            sol = segment(y)
        for key, value in sol.stats.items():
            stats[key] = stats[key] + value if key in stats else value
        status = sol.status if status is None else torch.maximum(status, sol.status)
        if local_ts is not None:
            saved.append(sol.ys[:-1])
            saved_ts.append(local_ts)
        y = sol.ys[-1]
        hist.add(lo, hi, sol.evaluate)
        if not bool((sol.status <= Status.EVENT_OCCURRED).all()):
            failed = True

    if saveat.t1:
        saved.append(y[None])
        saved_ts.append(torch.tensor([b], dtype=torch.float64))
    ys = torch.cat(saved) if saved else None
    out_ts = torch.cat(saved_ts).to(y0.dtype) if saved_ts else None
    if status is None:
        status = torch.zeros((), dtype=torch.int64)
    return Solution(
        ts=out_ts,
        ys=ys,
        stats=stats,
        status=status,
        _interpolate=_dense(hist, a, b, per_sample) if saveat.dense else None,
    )


def _dense(hist: History, a: float, b: float, per_sample: bool) -> Any:
    def evaluate(t: torch.Tensor) -> torch.Tensor:
        t = t.to(hist.y0.dtype)
        if float(t.detach().max()) > b + 1e-12 * max(1.0, abs(b)):
            raise ValueError(
                f"Solution.evaluate: `t` lies after the solved interval (t1={b:g}); times <= t0 "
                "give the history."
            )
        if t.ndim == 0 or per_sample:
            return hist(t)
        return torch.stack([hist(s) for s in t])

    return evaluate
