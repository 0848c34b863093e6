"""Fixed steps on a grid decided on the host in advance.

A joint solve with constant steps (``ConstantStepSize`` without ``step_ts`` / ``jump_ts``), no
events, no progress meter and no dense or per-step output takes the same steps as
:meth:`Loop.body` would, with the same values bit for bit, but without what the general loop
does per step to find out where it is: the controller's ``adapt``, the loop state's copy, the
stepping mode's host record and one host synchronisation per step. What the loop learns on
the host per step is here known before the first step:

- the step ends ``t0 + k dt0`` (clipped to ``t1`` as the loop clips them) come from
  :meth:`AbstractStepSizeController.fixed_grid` as one tensor, and the number of steps and
  the save slots each step fills from one transfer of it;
- whether a step blew up (a non-finite state ends a fixed-step solve with ``NONFINITE`` at
  the last finite state) is read every ``CHECK_EVERY`` steps, not every step: a running sum
  of the states' sums (no host sync) is non-finite when any of them was. When it is, the
  steps since the last check are taken again from there, checked one by one, so the status,
  the state returned, the saves and the counts are those of the general loop. (An overflow
  of the running sum alone, all states finite, only costs that re-check.)

The host record (:class:`Host` per step) is rebuilt afterwards from the grid, for the
adjoints that read it (the stochastic adjoint's step grid).
"""

from __future__ import annotations

import bisect
import math
from typing import TYPE_CHECKING, Any

import torch

from .solution import Status
from .solver import AbstractSolver

if TYPE_CHECKING:
    from .loop import Host, Loop, LoopResult

__all__ = ["CHECK_EVERY", "fixed_grid", "run_fixed"]

# Steps between two looks at the running finiteness sum (one host transfer each).
CHECK_EVERY = 32


def fixed_grid(loop: Loop) -> tuple[torch.Tensor, list[float]] | None:
    """The step ends of ``loop``'s solve (tensor, and as host floats), or ``None`` when the
    solve is not a plain fixed-step one (then the general loop runs)."""
    if (
        loop.per_sample
        or loop.adaptive
        or not loop.always_accept
        or loop.has_jumps
        or loop.events is not None
        or loop.progress is not None
        or loop.save_dense
        or loop.save_steps
        or loop.dt0 is None
    ):
        return None
    try:
        span = float(loop.t1.detach()) - float(loop.t0.detach())
        h = float(loop.dt0.detach())
    except (TypeError, ValueError, RuntimeError):
        return None
    if not (h > 0 and math.isfinite(h) and math.isfinite(span)) or span <= 0:
        return None
    estimate = math.ceil(span / h)
    if estimate + 2 > loop.max_steps:
        return None  # the general loop reaches max_steps and says so
    # Each step_ts point can add one (shortened) step.
    step_ts = loop.controller.step_ts
    num = estimate + 2 + (0 if step_ts is None else int(step_ts.numel()))
    ends = loop.controller.fixed_grid(loop.t0, loop.dt0, num)
    if ends is None:
        return None
    ends = loop._clip_end(ends)
    host = ends.detach().tolist()
    t1 = loop.t1_host
    for n, t in enumerate(host):
        if t >= t1:
            return (ends[: n + 1], host[: n + 1]) if n < loop.max_steps else None
    return None


def run_fixed(
    loop: Loop, y0: torch.Tensor, grid: tuple[torch.Tensor, list[float]]
) -> tuple[LoopResult, list[Host]]:
    """:func:`torchnde._core.loop.run` for a plain fixed-step solve (see the module doc)."""
    from .loop import Host, run_general

    st, host0, emit0, nfe0 = loop.init(y0)
    if not host0.keep_going:  # a start that is not finite, or an empty interval
        return run_general(loop, y0)
    ends, ends_host = grid
    out = loop.write(loop.new_output(y0), emit0.saves, inplace=True)
    solver, terms, args = loop.solver, loop.terms, loop.args
    ts_host = loop.ts_host
    times = ends.unbind(0)
    n = len(ends_host)
    # Save slots filled so far after each step: a step fills (before, after] in time.
    counts = [bisect.bisect_right(ts_host, t) for t in ends_host] if ts_host else [0] * n
    step_fevals = solver.num_fevals_step
    # Step sizes on the host unless a time carries a gradient (which they then must carry).
    timed = torch.is_grad_enabled() and any(
        isinstance(v, torch.Tensor) and v.requires_grad
        for v in (loop.t0, loop.t1, loop.dt0, loop.ts)
    )
    # Steps whose end is a save time (when no time has a gradient, whose interpolant slope
    # the save would carry).
    ts_set = set() if timed else set(ts_host)
    on_end = [t in ts_set for t in ends_host]
    prev = [host0.t_shown] + ends_host[:-1]
    steps_h: list = [None] * n if timed else [b - a for a, b in zip(prev, ends_host)]
    # Each state's sum is written into a slot of `sums` (one op, no sync); a block of steps
    # is looked at with one transfer.
    sums = y0.new_empty(CHECK_EVERY)
    dims = tuple(range(y0.ndim))
    extra: dict[str, int] = {}
    # A solver whose step is ``y1 = y0 + g`` keeps a non-finite component non-finite (NaN
    # stays NaN, inf stays inf or becomes NaN), so the block's last state alone tells whether
    # any state of the block was: one sum per block instead of one per step. Declared by the
    # solver class (``nonfinite_persists``); others are summed step by step.
    persists = solver.nonfinite_persists
    # (Where only the first slot is written, one view instead of CHECK_EVERY.)
    slots = (sums[0],) if persists else sums.unbind(0)
    fixed_step, take_stats, take_dense = solver.fixed_step, solver.take_stats, None
    if solver.take_dense_fevals.__func__ is not AbstractSolver.take_dense_fevals:  # type: ignore[attr-defined]
        take_dense = solver.take_dense_fevals

    blocks, block_ok = _compiled_blocks(loop, steps_h, counts, on_end, host0.save_num)
    size = 0 if blocks is None else blocks.size
    # The step sizes as a tensor of the time dtype, sliced per block (a graph input).
    hs = ends.new_tensor(steps_h) if size else None

    # The solver's steps prepared for this grid, if it prepares them (`fixed_stepper`).
    prepared = solver.fixed_stepper(terms, st.t, ends, times, steps_h, st.y, args, st.fstate)
    # Prepared steps that save nothing count nothing but their evaluations: where the block's
    # last state alone is checked, such a run of them is taken back to back (`take`).
    quiet: list[int] = []
    run_steps = None if prepared is None else prepared.run
    if prepared is not None and run_steps is None:
        prepared_step = prepared.step

        def run_steps(i: int, j: int, t: Any, y: Any, fstate: Any) -> tuple:
            try:
                while i < j:
                    y, _, _, fstate = prepared_step(i, t, y, fstate)
                    t = times[i]
                    i += 1
            except Exception as err:
                return i, t, y, fstate, err
            return i, t, y, fstate, None

    if run_steps is not None and persists and not size:
        # quiet[i]: the first step from i on that fills a save slot.
        quiet = [n] * (n + 1)
        for k in reversed(range(n)):
            before = counts[k - 1] if k else host0.save_num
            quiet[k] = k if counts[k] > before else quiet[k + 1]

    def step(i: int, t: Any, y: Any, fstate: Any) -> tuple:
        """Step ``i`` from ``(t, y)``; an exception is explained first (``Loop._explain``)."""
        try:
            if prepared is not None:
                return prepared.step(i, t, y, fstate)
            return fixed_step(terms, t, times[i], steps_h[i], y, args, fstate)
        except Exception as err:
            loop._explain(t, y, err)
            raise

    def eager_block(i: int, t: Any, y: Any, fstate: Any) -> tuple:
        """Steps ``i .. i+size-1`` eagerly, as :func:`torchnde._core.compiled._call_block`
        returns them (the eager side of the compiled blocks)."""
        ys = []
        for k in range(i, i + size):
            y, _, _, fstate = step(k, t, y, fstate)
            ys.append(y)
            t = times[k]
        if persists:
            return tuple(ys), fstate, y.detach().sum()
        return tuple(ys), fstate, torch.stack([v.detach().sum() for v in ys]).sum()

    def take(i0: int, t: Any, y: Any, fstate: Any, saved: int, stop: int, exact: bool) -> tuple:
        """Steps ``i0 .. stop-1``; with ``exact``, check each state and stop at the first that
        is not finite. Returns (last step index + 1, t, y, fstate, saved, saves, dense
        fevals, failed)."""
        saves: list = []
        dense_fevals = 0
        i = i0
        while i < stop:
            if size and not exact and i + size <= stop and block_ok[i] and not blocks.eager:  # type: ignore[union-attr]
                ys, fstate, check = blocks(  # type: ignore[misc]
                    (t,) + times[i : i + size], hs[i : i + size], y, fstate,  # type: ignore[index]
                    lambda y, fstate, i=i, t=t: eager_block(i, t, y, fstate),
                )  # fmt: skip
                if not persists:
                    sums[i - i0 : i - i0 + size].fill_(check.detach())
                elif i + size == stop:
                    slots[0].copy_(check.detach())
                for j in range(size):  # the saves of a block fall on step ends
                    if counts[i + j] > saved:
                        saves.append((saved, counts[i + j], ys[j].unsqueeze(0)))
                        saved = counts[i + j]
                i += size
                t, y = times[i - 1], ys[-1]
                continue
            if quiet and not exact and quiet[i] > i:
                i, t, y, fstate, err = run_steps(i, min(quiet[i], stop), t, y, fstate)  # type: ignore[misc]
                if err is not None:
                    loop._explain(t, y, err)
                    raise err
                if i == stop:
                    torch.sum(y.detach(), dims, out=slots[0])
                continue
            tb = times[i]
            y1, _, dense_info, fnew = step(i, t, y, fstate)
            more = take_stats(dense_info)
            if more:
                for k, v in more.items():
                    extra[k] = extra.get(k, 0) + v
            if exact:
                if not bool(torch.isfinite(y1.detach().sum())):
                    return i, t, y, fstate, saved, saves, dense_fevals, True
            elif not persists or i == stop - 1:
                torch.sum(y1.detach(), dims, out=slots[0 if persists else i - i0])
            num = counts[i]
            if num > saved:
                if on_end[i] and num - saved == 1:
                    # One save time on the step's end: the step's own value (what
                    # `_interp_saves` returns there, bit for bit, without interpolating).
                    values = y1.unsqueeze(0)
                else:
                    values = loop._interp_saves(num - saved, saved, t, tb, y1, dense_info)
                saves.append((saved, num, values))
                saved = num
            if take_dense is not None:
                dense_fevals += take_dense(dense_info)
            t, y, fstate = tb, y1, fnew
            i += 1
        return stop, t, y, fstate, saved, saves, dense_fevals, False

    t, y, fstate, saved = st.t, st.y, st.fstate, host0.save_num
    nfe, i, failed = nfe0, 0, False
    one_sum = persists and not sums.is_complex()
    while i < n and not failed:
        stop = min(i + CHECK_EVERY, n)
        extra_before = dict(extra)
        j, t1, y1, f1, saved1, saves, dfe, _ = take(i, t, y, fstate, saved, stop, False)
        if one_sum:
            finite = math.isfinite(slots[0].item())  # (one transfer, no slice and test ops)
        else:
            finite = bool(torch.isfinite(sums[: 1 if persists else stop - i]).all())
        if not finite:
            extra.clear()
            extra.update(extra_before)
            j, t1, y1, f1, saved1, saves, dfe, failed = take(i, t, y, fstate, saved, stop, True)
        out = loop.write(out, saves, inplace=True)
        # The failed step's evaluations count, as in the general loop.
        nfe += (j - i + int(failed)) * step_fevals + dfe
        i, t, y, fstate, saved = j, t1, y1, f1, saved1
    loop.extra_stats.update({k: loop.extra_stats.get(k, 0) + v for k, v in extra.items()})
    num_steps = i + int(failed)
    tape = [host0]
    for k in range(i):
        tape.append(
            Host(
                keep_going=k + 1 < n, save_num=counts[k], accepted=True, t_shown=ends_host[k],
                num_accepted=k + 1,
            )
        )  # fmt: skip
    if failed:
        t_shown = ends_host[i - 1] if i > 0 else host0.t_shown
        tape.append(
            Host(
                keep_going=False, save_num=saved, accepted=False, t_shown=t_shown,
                num_accepted=i, status=Status.NONFINITE,
            )
        )  # fmt: skip
    last = st.copy()
    last.t, last.y, last.fstate, last.y1 = t, y, fstate, y
    return loop.finish(last, tape[-1], num_steps, nfe, out, []), tape


def _compiled_blocks(
    loop: Loop, steps_h: list, counts: list, on_end: list, saved0: int
) -> tuple[Any, list[bool]]:
    """For ``compile_step=True``: the :class:`~torchnde._core.compiled.CompiledBlocks` of the
    solve and, per step, whether a block may start there; ``(None, [])`` when no block can be
    formed. A block's saves fall on step ends (no interpolation, which reads a step's dense
    output); its steps are those of the grid, of any size. Only ODEs on a constant grid
    (``control_scale``) and solvers whose fixed steps may be traced: a Brownian or control
    path is read on the host."""
    if (
        not loop.compiled
        or not steps_h
        or steps_h[0] is None
        or loop.terms.control_scale() is None
        or not loop.solver.traceable_fixed_step
    ):
        return None, []
    from .compiled import CompiledBlocks

    blocks = CompiledBlocks(loop)
    run, ok = 0, [False] * len(steps_h)
    for i in reversed(range(len(steps_h))):
        new = counts[i] - (counts[i - 1] if i else saved0)
        run = run + 1 if new == 0 or (new == 1 and on_end[i]) else 0
        ok[i] = run >= blocks.size
    return blocks, ok
