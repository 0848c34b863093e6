r"""Delay differential equations: the term and the history the vector field reads.

A delay differential equation

$$\frac{dy}{dt} = f\bigl(t, y(t), (y(t - \tau_1), \dots, y(t - \tau_m)), \mathrm{args}\bigr),
\qquad y(t) = \varphi(t) \text{ for } t \le t_0,$$

is solved by the method of steps (``torchnde._delay``): ``[t0, t1]`` is cut into segments no
longer than the smallest delay, so that every delayed time of a segment lies before its
start, where the solution is already known (the history ``phi`` or the dense output of
earlier segments). Each segment is then an ordinary ODE solve. This module holds the pieces
that need no solve: the term and the history store.
"""

from __future__ import annotations

import bisect
import itertools
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["DelayTerm", "History"]

Delay = float | torch.Tensor | Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]

# Discontinuity points t0 + sum of delays: at most this many are tracked (many delays and a
# high order would otherwise give combinatorially many jump_ts).
_MAX_DISCONTINUITIES = 4096


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)}, dtype {x.dtype}"
    return f"{type(x).__name__} {x!r}"


class DelayTerm:
    r"""A delay differential equation $dy/dt = f(t, y(t), (y(t-\tau_1), \dots), \mathrm{args})$.

    Solved with :func:`torchnde.solve` like any term; the history $y(t)$ for $t \le t_0$ is
    ``solve(..., history=phi)`` (the constant ``y0`` by default).

    Args:
        vector_field: ``f(t, y, yd, args)`` returning a tensor of the shape of ``y``; ``yd`` is
            the tuple of delayed states $y(t - \tau_i)$, in the order of ``delays``. ``t`` is a
            0-d tensor, or of shape ``(batch,)`` when stepping per sample.
        delays: a sequence of delays, each a positive number, a positive 0-d tensor (which may
            require grad: a learnable delay) or a callable ``tau(t, y, args)`` (a
            state-dependent delay) returning a 0-d tensor or one delay per sample,
            ``(batch,)``.
        min_delay: a positive lower bound of the state-dependent delays (required when there
            are any): the segments of the method of steps are no longer than the smallest
            delay. A state-dependent delay found below it fails the solve with ``ValueError``.
        track_discontinuities: step exactly to $t_0 + \sum_i n_i \tau_i$ ($1 \le \sum_i n_i
            \le$ the solver's order), where the solution's derivatives jump (the history
            generally does not continue the solution smoothly at $t_0$). Constant delays only;
            switching it off lowers the convergence order of solves that straddle these
            points.

    Example:
        >>> term = DelayTerm(lambda t, y, yd, args: -yd[0], delays=[1.0])
    """

    def __init__(
        self,
        vector_field: Callable[..., torch.Tensor],
        delays: Sequence[Delay],
        *,
        min_delay: float | None = None,
        track_discontinuities: bool = True,
    ) -> None:
        if not callable(vector_field):
            raise TypeError(
                "DelayTerm: `vector_field` must be callable as f(t, y, yd, args), got "
                f"{_describe(vector_field)}."
            )
        if isinstance(delays, (numbers.Real, torch.Tensor)) or callable(delays):
            raise TypeError(
                f"DelayTerm: `delays` must be a sequence of delays, got {_describe(delays)}; "
                "write delays=[tau] for one delay."
            )
        delays = list(delays)
        if not delays:
            raise ValueError(
                "DelayTerm: `delays` is empty; an equation without delays is an ODETerm."
            )
        for i, d in enumerate(delays):
            if isinstance(d, bool):
                raise TypeError(f"DelayTerm: `delays[{i}]` must be a number, got {d!r}.")
            if isinstance(d, numbers.Real):
                if not (float(d) > 0 and float(d) < float("inf")):
                    raise ValueError(
                        f"DelayTerm: `delays[{i}]` must be a positive finite number, got {d!r}; "
                        "a delay reads the past, y(t - tau) with tau > 0."
                    )
            elif isinstance(d, torch.Tensor):
                if d.numel() != 1 or not torch.is_floating_point(d):
                    raise ValueError(
                        f"DelayTerm: `delays[{i}]` must be a 0-d floating-point tensor, got "
                        f"{_describe(d)}."
                    )
                if not bool(d.detach() > 0):
                    raise ValueError(
                        f"DelayTerm: `delays[{i}]` must be positive, got {float(d):g}; a "
                        "delay reads the past, y(t - tau) with tau > 0."
                    )
            elif not callable(d):
                raise TypeError(
                    f"DelayTerm: `delays[{i}]` must be a number, a 0-d tensor or a callable "
                    f"tau(t, y, args), got {_describe(d)}."
                )
        state_dependent = any(callable(d) and not isinstance(d, torch.Tensor) for d in delays)
        if min_delay is not None:
            if isinstance(min_delay, bool) or not isinstance(min_delay, numbers.Real):
                raise TypeError(
                    f"DelayTerm: `min_delay` must be a positive number, got {_describe(min_delay)}."
                )
            if not float(min_delay) > 0:
                raise ValueError(
                    f"DelayTerm: `min_delay` must be positive, got {min_delay!r}; the method of "
                    "steps needs a positive lower bound of the delays."
                )
        elif state_dependent:
            raise ValueError(
                "DelayTerm: a state-dependent delay (a callable in `delays`) needs "
                "`min_delay`, a positive lower bound of its values, e.g. "
                "DelayTerm(f, [tau], min_delay=0.1): the method of steps solves segments no "
                "longer than the smallest delay."
            )
        if not isinstance(track_discontinuities, bool):
            raise TypeError(
                "DelayTerm: `track_discontinuities` must be a bool, got "
                f"{_describe(track_discontinuities)}."
            )
        self.vector_field = vector_field
        self.delays = tuple(delays)
        self.min_delay = None if min_delay is None else float(min_delay)
        self.track_discontinuities = track_discontinuities

    def constant_delays(self) -> list[float]:
        """The values of the delays that do not depend on the state (detached)."""
        return [
            float(d.detach()) if isinstance(d, torch.Tensor) else float(d)
            for d in self.delays
            if not (callable(d) and not isinstance(d, torch.Tensor))
        ]

    def segment_length(self) -> float:
        """The longest segment of the method of steps: the smallest delay (or bound)."""
        bounds = self.constant_delays()
        if self.min_delay is not None:
            bounds.append(self.min_delay)
        return min(bounds)

    def discontinuities(self, t0: float, t1: float, order: int) -> list[float]:
        r"""$t_0 + \sum_i n_i \tau_i$ in $(t_0, t_1)$ for $1 \le \sum_i n_i \le$ ``order``."""
        if not self.track_discontinuities:
            return []
        taus = sorted(set(self.constant_delays()))
        points: set[float] = set()
        for level in range(1, max(order, 1) + 1):
            for combo in itertools.combinations_with_replacement(taus, level):
                s = t0 + sum(combo)
                if s < t1:
                    points.add(s)
            if len(points) > _MAX_DISCONTINUITIES:
                break
        return sorted(points)[:_MAX_DISCONTINUITIES]

    def __repr__(self) -> str:
        name = getattr(self.vector_field, "__name__", self.vector_field)
        return f"DelayTerm({name!r}, delays={list(self.delays)!r})"


class History:
    r"""The solution known so far: ``phi`` for $t \le t_0$, then the dense output of each
    solved segment. Evaluated at a delayed time ``s`` of shape ``()`` or ``(batch,)``
    (one time per sample, row ``i`` of the result read at ``s[i]``).

    Every value keeps its autograd graph: the gradients of a solve reach ``y0``, the
    parameters of the vector field and of ``phi``, and the delays (through $\partial_t$ of
    the dense output at ``s``).
    """

    def __init__(self, phi: Callable[[torch.Tensor], torch.Tensor], t0: float, y0: torch.Tensor):
        self.phi = phi
        self.t0 = t0
        self.y0 = y0
        self.ends: list[float] = []  # segment ends, increasing
        self.starts: list[float] = []
        self.segments: list[Callable[[torch.Tensor], torch.Tensor]] = []

    def add(self, start: float, end: float, evaluate: Callable[[torch.Tensor], Any]) -> None:
        self.starts.append(start)
        self.ends.append(end)
        self.segments.append(evaluate)

    def snapshot(self) -> History:
        """The history known now: later :meth:`add` calls do not change the copy."""
        new = History(self.phi, self.t0, self.y0)
        new.starts, new.ends, new.segments = list(self.starts), list(self.ends), list(self.segments)
        return new

    def phi_at(self, s: torch.Tensor) -> torch.Tensor:
        out = self.phi(s)
        if not isinstance(out, torch.Tensor):
            raise TypeError(
                f"`history` must return a tensor of the shape of `y0` {tuple(self.y0.shape)}, "
                f"got {_describe(out)}."
            )
        out = out.to(self.y0.dtype)
        return out.expand(self.y0.shape) if out.shape != self.y0.shape else out

    def __call__(self, s: torch.Tensor, right: torch.Tensor | bool = False) -> torch.Tensor:
        """The solution at ``s``. Piece j covers ``[starts[j], ends[j]]``, phi
        ``(-inf, t0]``; a time on a boundary reads the piece to its left, or to its right where
        ``right`` is true (a bool, or a mask of the shape of ``s``).

        The side matters for the derivative: the slopes of phi and of the solution generally
        differ at t0 (and higher derivatives at later boundaries), and a gradient with respect
        to a delay reads that slope. A stage at the end of a step (which lies to the left of
        its time) needs the left piece; the first evaluation of a segment and the evaluation
        just after a tracked discontinuity need the right one.
        """
        y0 = self.y0
        sd = s.detach()
        lo, hi = float(sd.min()), float(sd.max())
        end = self.ends[-1] if self.ends else self.t0
        if hi > end + 1e-12 * max(1.0, abs(end)):
            raise RuntimeError(
                f"internal error: delayed time {hi:.6g} lies after the solved history "
                f"(up to {end:.6g}); please report this."
            )
        if hi > end:
            # Rounding: t - tau at a segment's end lands ulps past the previous segment's end
            # (0.4 * 3 - 0.4 > 0.4 * 2). Shift those times back by a detached amount, so the
            # derivative in s (a learnable delay's) stays one.
            s = s - (sd - end).clamp(min=0)
            sd = s.detach()
            lo, hi = min(lo, end), end
        # Candidate pieces: every piece whose closed interval meets [lo, hi]; -1 is phi.
        first = bisect.bisect_left(self.ends, lo) if lo > self.t0 else -1
        last = bisect.bisect_right(self.starts, hi) - 1
        if first == last or (first == -1 and last == -1):
            return self.phi_at(s) if first < 0 else self.segments[first](s)
        right_t = torch.as_tensor(right, device=s.device)
        out: torch.Tensor | None = None
        rows = torch.arange(s.shape[0], device=s.device) if s.ndim else None
        final = len(self.starts) - 1
        for j in range(first, last + 1):
            if j < 0:
                val = self.phi_at(torch.clamp(s, max=self.t0))
                inside = (sd < self.t0) | ((sd == self.t0) & ~right_t)
            else:
                a, b = self.starts[j], self.ends[j]
                val = self.segments[j](s.clamp(a, b))
                if rows is not None and val.shape != y0.shape:  # joint: (n, *y0.shape)
                    val = val[rows, rows]
                after_a = (sd > a) | ((sd == a) & right_t)
                before_b = (sd < b) | ((sd == b) & ~right_t) | (j == final and b == end)
                inside = after_a & before_b
            if out is None:
                out = val
                continue
            mask = inside.reshape(inside.shape + (1,) * (y0.ndim - inside.ndim))
            out = torch.where(mask, val, out)
        if out is None:
            raise RuntimeError("internal error: empty delayed lookup; please report this.")
        return out
