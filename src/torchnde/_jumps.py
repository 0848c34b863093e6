"""Solving jump diffusions: the augmented equation of :mod:`torchnde._core.jumps`, its jumps as
events. ``solve`` hands a problem with a :class:`JumpTerm` here."""

from __future__ import annotations

from typing import Any

import torch

from ._core.events import Event
from ._core.jumps import JumpSystem, augment_jumps
from ._core.solution import SaveAt, Solution, Status

__all__ = ["solve_jumps"]


def _start_time(t0: Any, y0: Any) -> torch.Tensor:
    like = y0 if isinstance(y0, torch.Tensor) else torch.zeros(())
    return torch.as_tensor(t0, dtype=like.dtype, device=like.device)


def solve_jumps(
    solve: Any, terms: Any, solver: Any, t0: Any, t1: Any, y0: Any, args: Any, **kw: Any
) -> Solution:
    """``solve`` for terms with a :class:`JumpTerm` (``solve`` is the plain solve, passed in
    to keep this module below it)."""
    if kw.get("event") is not None:
        raise NotImplementedError(
            "`event` together with a JumpTerm is not supported yet: the jumps are the solve's "
            "events. Add the condition to the jump map, or stop the solve at t1 yourself."
        )
    if kw.get("integral") is not None:
        raise NotImplementedError(
            "`integral` together with a JumpTerm is not supported; add the running cost as a "
            "state component."
        )
    saveat = kw.pop("saveat", SaveAt(t1=True))
    if saveat.ts is not None or saveat.steps or saveat.dense or saveat.t0:
        raise NotImplementedError(
            "with a JumpTerm, `saveat` supports SaveAt(t1=True) only for now; solve to each "
            "time you need (the same seed gives the same jumps)."
        )
    system = augment_jumps(terms, y0, _start_time(t0, y0), args)
    controller = kw.get("controller")
    per_sample = controller is not None and controller.per_sample
    max_jumps = kw.pop("max_jumps", 100_000)
    event = Event(system.clock, direction=-1)
    t_now: Any = t0
    z = system.z0
    num_steps = 0
    num_fevals = 0
    for _ in range(max_jumps + 1):
        sol = solve(
            system.terms,
            solver,
            t_now,
            t1,
            z,
            args,
            saveat=SaveAt(t1=True),
            event=event,
            **{k: v for k, v in kw.items() if k != "event"},
        )
        num_steps += int(sol.stats["num_steps"])
        num_fevals += (
            int(sol.stats["num_fevals"])
            if not isinstance(sol.stats["num_fevals"], torch.Tensor)
            else int(sol.stats["num_fevals"].sum())
        )
        z = sol.ys[-1]
        t_reached = sol.ts[..., -1]
        hit = sol.status == int(Status.EVENT_OCCURRED)
        if not bool(hit.any()):
            break
        fired = hit if per_sample else hit & (z[:, system.n] <= z[:, system.n].min())
        z = system.reset(t_reached, z, args, fired)
        t_now = t_reached
    else:
        raise ValueError(
            f"the solve made more than `max_jumps`={max_jumps} jump rounds; the intensity may "
            "be too large (explosive) for this interval."
        )
    return _user_solution(system, sol, z, per_sample, num_steps, num_fevals)


def _user_solution(
    system: JumpSystem,
    sol: Solution,
    z: torch.Tensor,
    per_sample: bool,
    num_steps: int,
    num_fevals: int,
) -> Solution:
    stats = dict(sol.stats)
    stats["num_steps"] = num_steps
    stats["num_fevals"] = num_fevals
    stats["num_jumps"] = system.num_jumps(z)
    status = torch.where(
        sol.status == int(Status.EVENT_OCCURRED), int(Status.SUCCESSFUL), sol.status
    )
    return Solution(
        ts=sol.ts,
        ys=system.unpack(z)[None],
        stats=stats,
        status=status,
        event_mask=None,
        _interpolate=None,
    )
