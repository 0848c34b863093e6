r"""``BrownianGrid``: Brownian motion on a fixed step grid, drawn a block of steps at a time.

A fixed-step SDE solve (Euler–Maruyama, reversible Heun, ... on ``t0 + k dt``, the last step
cut at ``t1``) only ever asks for the increments $\Delta W_k = W(t_{k+1}) - W(t_k)$ of its
own grid. These are independent $\mathcal N(0, h_k)$, so they can be drawn many at once: the
steps are grouped in blocks of ``block`` consecutive steps, and block $b$ is one
``torch.randn((block, *shape))`` from a generator seeded by ``(seed, b)``. A forward solve
draws one block per ``block`` steps (against about two bridge samples per step for
:class:`BrownianInterval`); any query order (a backward pass, a replay) gets the same
increments, since a block is a function of the seed and its index alone. The few most
recent blocks are cached.

Queries must lie on the grid (within ``max(1e-3 dt, 4e-6 max(|t0|, |t1|))``, for times
rounded in the solver's time dtype): ``bm(t_i, t_j)`` is the sum of the steps' increments,
exact. A time off the grid raises ``ValueError`` (this motion keeps no state between grid
points to fill in a bridge consistently); use :class:`BrownianInterval` for solvers that
evaluate inside a step.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch

from .base import AbstractBrownianPath, Time, is_real
from .bridge import mix

__all__ = ["BrownianGrid"]

# Blocks kept in the cache (a backward pass walks the blocks in reverse, one at a time).
_CACHED_BLOCKS = 4


class BrownianGrid(AbstractBrownianPath):
    r"""Brownian motion on $[t_0, t_1]$ queried only on the grid $t_0 + k\,dt$ (the last
    point $t_1$): exact increments, drawn ``block`` steps per ``torch.randn``.

    Args:
        t0, t1: the interval, ``t0 < t1``.
        dt: the grid step, ``0 < dt``.
        shape: ``(batch, *noise)``.
        dtype, device, seed: as for :class:`BrownianInterval`.
        block: steps drawn per random call (default 64).

    Raises:
        ValueError: for a query time off the grid (more than ``max(1e-3 dt, 4e-6 |t|)``
            away from it).

    Reference: the increments of a Brownian motion over disjoint intervals are independent
    $\mathcal N(0, t_b - t_a)$ (Karatzas & Shreve 1991, Brownian Motion and Stochastic
    Calculus, 2.1).
    """

    _name = "BrownianGrid"

    def __init__(
        self,
        t0: Time,
        t1: Time,
        dt: float,
        shape: Sequence[int] | torch.Size | int,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        seed: int | None = None,
        block: int = 64,
    ) -> None:
        super().__init__(t0, t1, shape, dtype=dtype, device=device, seed=seed, levy_area=None)
        if isinstance(dt, torch.Tensor) and dt.numel() == 1:
            dt = float(dt)
        if not is_real(dt) or not (math.isfinite(float(dt)) and float(dt) > 0):
            raise ValueError(f"BrownianGrid: `dt` must be a positive finite number, got {dt!r}.")
        if isinstance(block, bool) or not isinstance(block, int) or block < 1:
            raise ValueError(f"BrownianGrid: `block` must be a positive int, got {block!r}.")
        self.dt = float(dt)
        span = self.t1 - self.t0
        # Steps of the grid: as the fixed-step loop counts them (t0 + k dt up to t1).
        n = max(1, math.ceil(span / self.dt - 1e-9))
        self.num_steps = n
        self._last_h = span - (n - 1) * self.dt
        # Times rounded in float32 (t0 + k dt in the solver's time dtype) land within about
        # 1e-7 |t| of the grid: tolerate 1e-3 dt or the base class's slack (1e-6 |t|).
        self._tol = min(max(1e-3 * self.dt, 4 * self._slack), 0.25 * self.dt)
        self._block = min(block, n)
        self._cache: OrderedDict[int, tuple[torch.Tensor, ...]] = OrderedDict()

    def _node(self, t: float, arg: str) -> int:
        k = min(max(round((t - self.t0) / self.dt), 0), self.num_steps)
        g = self.t1 if k == self.num_steps else self.t0 + k * self.dt
        if abs(t - g) > self._tol:
            if k == self.num_steps - 1 and abs(t - self.t1) <= self._tol:
                return self.num_steps
            raise ValueError(
                f"BrownianGrid: query time `{arg}`={t} is not on the grid t0 + k dt "
                f"(t0={self.t0}, dt={self.dt}, last point t1={self.t1}); this Brownian motion "
                "only answers increments between grid points. Use BrownianInterval for a "
                "solver that evaluates inside a step, or a solve on this grid."
            )
        return k

    def _steps(self, b: int) -> tuple[torch.Tensor, ...]:
        """The increments of block ``b``'s steps (views of one draw)."""
        hit = self._cache.get(b)
        if hit is not None:
            self._cache.move_to_end(b)
            return hit
        K = self._block
        z = self._randn(mix(self.seed, 11, b), lead=(K,))
        z.mul_(math.sqrt(self.dt))
        last = self.num_steps - 1 - b * K
        if 0 <= last < K and self._last_h != self.dt:
            z[last].mul_(math.sqrt(max(self._last_h, 0.0) / self.dt))
        views = z.unbind(0)
        self._cache[b] = views
        if len(self._cache) > _CACHED_BLOCKS:
            self._cache.popitem(last=False)
        return views

    def _forward_increment(self, ta: float, tb: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        i, j = self._node(ta, "ta"), self._node(tb, "tb")
        K = self._block
        if j == i + 1:
            return self._steps(i // K)[i % K], None
        W = torch.zeros(self.shape, dtype=self.dtype, device=self.device)
        for k in range(i, j):
            W.add_(self._steps(k // K)[k % K])
        return W, None
