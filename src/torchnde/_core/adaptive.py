"""Adaptive joint steps with the step-size control on the host.

A joint adaptive solve learns on the host, every step, whether the step was accepted and where
the next one ends: the general loop (:meth:`Loop.body`) computes both with tensor operations
(the controller's ``adapt``: the factor, its bounds, ``torch.where`` selections of the time,
the state and the solver's carried state) and then transfers them. Here the error ratio alone
is transferred (the one synchronisation of a step, as in the general loop), and the decision,
the factor and the next step size are Python arithmetic (:meth:`host_adapt
<torchnde._core.controllers.AbstractStepSizeController.host_adapt>`); an accepted step takes
the new state, a rejected one keeps the old, by a Python branch. The tensor work of a step is
the solver's step and the error norm.

It runs when nothing it leaves out is asked for (:func:`host_control`): joint stepping, a
controller with host control and no ``step_ts`` / ``jump_ts``, no events, no progress meter, a
solver that declares a constant error order (``constant_error_order``, read once per solve),
and either autograd off (``torch.no_grad``: inference, and the passes of the adjoints that
solve under ``no_grad``) or step sizes chosen without gradients (``differentiate_steps=False``)
and times without them. Under autograd the step sizes are then constants, as in the general
loop's detached ones, and autograd records the accepted steps only: a rejected attempt is
dropped by the Python branch, where the general loop's ``torch.where`` keeps it in the graph
(its backward pass multiplies zeros through the whole vector field). With
``differentiate_steps=True`` (the default) or times with gradients the general loop runs: its
step sizes are tensors, differentiated.

The steps are those of the general loop up to the rounding of the control arithmetic (float64
on the host, the time dtype there): the same method, error estimates and decisions but for a
ratio within rounding of 1. An ulp of a step end changes the rounding of the next error
estimate (a small difference of stages) relatively by about eps over its size, so step ends
agree to about 1e-12 in float64, not bit for bit. Times are rounded to the time dtype as they
are made: the times the vector field sees, the saves and the host record are those of the
steps taken.

Anything abnormal (a step size below the floor, ``max_steps`` reached) hands the solve to
the general loop from the start, which then reports it with its statuses and causes: a
failure costs one more solve, never a different answer.
"""

from __future__ import annotations

import bisect
import math
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from .loop import Host, Loop, LoopResult

__all__ = ["host_control", "host_round", "run_adaptive"]


def host_round(x: float, dtype: torch.dtype) -> float:
    """``x`` rounded to ``dtype`` on the host, as a tensor of that dtype rounds it (float32:
    by NumPy, one rounding as torch's; other dtypes through a CPU tensor, since torch goes
    through float32 for half precision)."""
    if dtype == torch.float64:
        return x
    if dtype == torch.float32:
        return float(np.float32(x))
    return float(torch.tensor(x, dtype=dtype).item())


# Saves in one step up to which the interpolant's weights are computed on the host
# (`HostStepper.save_into`: Python arithmetic per save, against a fixed cost of about ten
# tensor operations for the tensor path's fractions, powers and weights).
_HOST_SAVES = 4


def _save_on_host(save_into, ts_host, start, stop, t_host, tnext_host, y1, dense_info, rows):
    """Writes the saves ``[start, stop)`` of the step ``(t_host, tnext_host]`` into ``rows``
    with the host stepper's ``save_into``; a save on the step's end takes the step's value,
    bit for bit (as :meth:`Loop._at_step_end`)."""
    if ts_host[stop - 1] == tnext_host:
        rows[stop - 1].copy_(y1.reshape(-1))
        stop -= 1
        if stop == start:
            return
    h = tnext_host - t_host
    thetas = [(ts_host[j] - t_host) / h for j in range(start, stop)]
    save_into(thetas, dense_info, rows[start:stop])


def host_control(loop: Loop) -> bool:
    """Whether ``loop``'s solve can take its adaptive steps with the control on the host."""
    controller = loop.controller
    if (
        loop.per_sample
        or not loop.adaptive
        or not controller.host_control
        or loop.has_jumps
        or controller.step_ts is not None
        or loop.events is not None
        or loop.progress is not None
    ):
        return False
    # The order is read once, here and in `run_adaptive`: a method declaring that it changes
    # from step to step (`constant_error_order = False`, e.g. Adams) takes the general loop.
    solver = loop.solver
    k = solver.error_order
    if not solver.constant_error_order or not isinstance(k, (int, float)) or isinstance(k, bool):
        return False
    if not torch.is_grad_enabled():
        return True
    # Under autograd: with step sizes that carry gradients (`differentiate_steps=True`) or
    # times that do, the general loop runs, whose step sizes are tensors. Steps chosen as
    # constants are the host's numbers: the steps taken, differentiated on their mesh.
    if controller.differentiate_steps:
        return False
    times = (loop.t0, loop.t1, loop.dt0, loop.ts)
    return not any(isinstance(v, torch.Tensor) and v.requires_grad for v in times)


def run_adaptive(loop: Loop, y0: torch.Tensor) -> tuple[LoopResult, list[Host]]:
    """:func:`torchnde._core.loop.run` for a joint adaptive solve (see the module doc)."""
    from .loop import Host, _Emit, run_general

    st, host0, emit0, nfe = loop.init(y0)
    if not host0.keep_going:  # a start that is not finite, or an empty interval
        return run_general(loop, y0)
    solver, controller, terms, args = loop.solver, loop.controller, loop.terms, loop.args
    tdt, dev = st.t.dtype, st.t.device
    out = loop.write(loop.new_output(y0), emit0.saves, inplace=True)
    t_host, t1_host, floor = host0.t_shown, loop.t1_host, loop.floor_host
    t1_snap = t1_host - floor
    ts_host, max_steps = loop.ts_host, loop.max_steps
    save_dense, save_steps = loop.save_dense, loop.save_steps
    step_fevals = solver.num_fevals_step
    k = float(solver.error_order or 0)  # constant, declared; a number (`host_control`)
    t, y, fstate = st.t, st.y, st.fstate
    tnext_host = float(st.tnext)
    tnext = st.tnext
    cstate = controller.host_state()
    saved, num_accepted, num_steps = host0.save_num, 0, 0
    tape = [host0]
    emits: list = []
    extra: dict[str, int] = {}
    y1 = y
    # The solver's own steps for this loop when nothing keeps a step's tensors past it (dense
    # or step output): buffers reused across steps without autograd, few recorded nodes
    # under it.
    keeps = save_dense or save_steps
    stepper = None if keeps else solver.host_stepper(terms, y0, args)
    save_into = None if stepper is None else stepper.save_into
    out_rows = None if out is None else out.view(out.shape[0], -1)
    compiled = None
    if loop.compiled:  # the step and its error ratio as one graph, where that is faster
        from .compiled import CompiledHostStep

        compiled = CompiledHostStep(loop)

    # The error ratio only decides the step (its gradient is not taken on this path).
    recording = torch.is_grad_enabled()
    with torch.no_grad():
        error_ratio = controller.error_ratio_of(y0, loop.norm)
    h_host = [0.0]  # the step size of the attempt, a host number (`HostStepper.step`)

    def eager_step(a: tuple) -> tuple:
        t, tnext, y, fstate = a
        if stepper is None:
            y1, y_error, dense_info, fnew = solver.step(terms, t, tnext, y, args, fstate)
        else:
            y1, y_error, dense_info, fnew = stepper.step(t, tnext, h_host[0], y, fstate)
        if not recording:
            return y1, y_error, dense_info, fnew, error_ratio(y, y1, y_error)
        with torch.no_grad():
            return y1, y_error, dense_info, fnew, error_ratio(y, y1, y_error)

    while t_host < t1_host:
        if num_steps >= max_steps:
            # Reported from here (`JointStepping.status`: t1 not reached), as the general
            # loop would, without solving again there: a failing solve costs one solve.
            break
        h_host[0] = tnext_host - t_host
        try:
            if compiled is None:
                y1, y_error, dense_info, fnew, ratio = eager_step((t, tnext, y, fstate))
            else:
                y1, y_error, dense_info, fnew, ratio = compiled(t, tnext, y, fstate, eager_step)
        except Exception as err:
            loop._explain(t, y, err)
            raise
        nfe += step_fevals
        more = solver.take_stats(dense_info)
        if more:
            for key, v in more.items():
                extra[key] = extra.get(key, 0) + v
        num_steps += 1
        if ratio is None:  # a solver that gives no error estimate: the general loop explains
            return run_general(loop, y0)
        r = ratio.item()  # (a number; no graph is recorded for it)
        accept, h_next, cstate = controller.host_adapt(
            r if r == r else math.inf, tnext_host - t_host, k, cstate
        )
        if accept:
            num = bisect.bisect_right(ts_host, tnext_host)
            if num > saved:
                if save_into is not None and num - saved <= _HOST_SAVES:
                    _save_on_host(save_into, ts_host, saved, num, t_host, tnext_host,
                                  y1, dense_info, out_rows)  # fmt: skip
                else:
                    values = loop._interp_saves(num - saved, saved, t, tnext, y1, dense_info)
                    out = loop.write(out, [(saved, num, values)], inplace=True)
            emit = None
            if save_dense or save_steps:
                emit = _Emit(saves=[])
                if save_dense:
                    emit.dense = (t, tnext, dense_info, tnext)
                if save_steps:
                    emit.step = (tnext, y1)
            t, t_host, y, fstate, saved = tnext, tnext_host, y1, fnew, num
            num_accepted += 1
        else:
            fstate = solver.rejected_state(fstate, fnew)
            emit = None
        # After the saves: a method whose dense output evaluates on demand counts it.
        nfe += solver.take_dense_fevals(dense_info)
        end = t_host + h_next
        if end > t1_snap:
            end = t1_host
        if not accept and end >= tnext_host:
            # The stretch to t1 would undo the shrink (`Loop._clip_end`): halfway instead.
            end = t_host + 0.5 * (t1_host - t_host)
        if not accept and end - t_host < floor:
            return run_general(loop, y0)  # a step-size underflow: the general loop says why
        if end == t1_host:
            tnext, tnext_host = loop.t1, t1_host
        else:
            # Rounded to the time dtype on the host (no transfer back from an accelerator).
            tnext_host = host_round(end, tdt)
            tnext = torch.scalar_tensor(tnext_host, dtype=tdt, device=dev)
        emits.append(emit)
        tape.append(
            Host(
                keep_going=t_host < t1_host, save_num=saved, accepted=accept, t_shown=t_host,
                num_accepted=num_accepted,
            )
        )  # fmt: skip
    loop.extra_stats.update({k_: loop.extra_stats.get(k_, 0) + v for k_, v in extra.items()})
    last = st.copy()
    last.t, last.y, last.fstate, last.y1, last.tnext = t, y, fstate, y1, tnext
    kept = [e for e in emits if e is not None]
    return loop.finish(last, tape[-1], num_steps, nfe, out, kept), tape
