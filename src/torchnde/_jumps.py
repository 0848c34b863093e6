"""Solving jump diffusions: the augmented equation of :mod:`torchnde._core.jumps`, whose jumps
are non-terminal events (reset: the jump map and a fresh clock). ``solve`` hands a problem
with a :class:`JumpTerm` here."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ._core.events import Event
from ._core.jumps import JumpSystem, augment_jumps
from ._core.solution import Solution

__all__ = ["solve_jumps"]


def _start_time(t0: Any, y0: Any) -> torch.Tensor:
    like = y0 if isinstance(y0, torch.Tensor) else torch.zeros(())
    if isinstance(t0, torch.Tensor):
        return t0.to(like.device)
    return torch.as_tensor(t0, dtype=like.dtype, device=like.device)


def _on_state(system: JumpSystem, fn: Any) -> Any:
    """A user's event function, called on the user's state."""

    def wrapped(t: torch.Tensor, z: torch.Tensor, args: Any) -> Any:
        return fn(t, system.unpack(z), args)

    return wrapped


def _reset_on_state(system: JumpSystem, reset: Any) -> Any:
    """A user's reset, applied to the user's state (clock and jump count kept)."""
    if reset is None:
        return None

    def wrapped(t: torch.Tensor, z: torch.Tensor, args: Any) -> torch.Tensor:
        y = reset(t, system.unpack(z), args)
        if not isinstance(y, torch.Tensor) or y.shape[1:] != system.state_shape:
            raise ValueError(
                "Event: `reset` must return the new state, shaped like the state "
                f"({(z.shape[0],) + system.state_shape}), got "
                + (f"shape {tuple(y.shape)}" if isinstance(y, torch.Tensor) else repr(y))
                + "."
            )
        return torch.cat([y.reshape(z.shape[0], system.n).to(z.dtype), z[:, system.n :]], 1)

    return wrapped


def solve_jumps(
    solve: Any, terms: Any, solver: Any, t0: Any, t1: Any, y0: Any, args: Any, **kw: Any
) -> Solution:
    """``solve`` for terms with a :class:`JumpTerm` (``solve`` is the plain solve, passed in
    to keep this module below it). The jumps are event function 0; a user's ``event`` is
    solved with them, its functions numbered from 1 in ``Solution.event_ids``."""
    if kw.get("integral") is not None:
        raise NotImplementedError(
            "`integral` together with a JumpTerm is not supported; add the running cost as a "
            "state component of the drift."
        )
    controller = kw.get("controller")
    per_sample = controller is not None and controller.per_sample
    system = augment_jumps(terms, y0, _start_time(t0, y0), args, per_sample)
    user: Event | None = kw.pop("event", None)
    if user is not None and not isinstance(user, Event):
        raise TypeError(f"`event` must be an Event(fn, direction=...), got {user!r}.")
    fns: list[Any] = [system.clock]
    dirs: list[int] = [-1]
    terminal: list[bool] = [False]
    resets: list[Any] = [system.reset]
    if user is not None:
        fns += [_on_state(system, f) for f in user.fns]
        dirs += list(user.directions)
        terminal += list(user.terminal)
        resets += [_reset_on_state(system, r) for r in user.resets]
    event = Event(fns, dirs, terminal=terminal, reset=resets, max_events=system.term.max_jumps)
    sol = solve(system.terms, solver, t0, t1, system.z0, args, event=event, **kw)
    return _user_solution(system, sol)


def _user_solution(system: JumpSystem, sol: Solution) -> Solution:
    """The solution of the augmented solve in the user's terms: the state without the clock
    and the count (``stats['num_jumps']`` per sample), user event masks."""
    ys = sol.ys
    stats = dict(sol.stats)
    if ys is not None:
        stats["num_jumps"] = system.num_jumps(ys[-1])
        ys = system.unpack(ys)
    interp = sol._interpolate
    if interp is not None:
        inner = interp

        def interp(t: torch.Tensor) -> Any:
            return system.unpack(inner(t))

    mask = sol.event_mask
    return dataclasses.replace(
        sol,
        ys=ys,
        stats=stats,
        event_mask=None if mask is None or len(mask) == 1 else tuple(mask[1:]),
        _interpolate=interp,
    )
