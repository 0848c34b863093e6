r"""``VirtualBrownianTree``: Brownian motion as a pure function of (seed, t), by bisection.

The dyadic tree over $[t_0, t_1]$ is fixed to depth $D = \lceil \log_2((t_1 - t_0)/\mathrm{tol})
\rceil$. Node $(d, i)$ is cut at its midpoint by the Brownian bridge with noise seeded by
$(d, i)$, so the value at every dyadic time is a function of the seed alone. A time $t$ inside
a leaf $[a, b]$ gets the bridge sample $W(t) = W(a) + \mathrm{split}(W_{ab}, t)$ with one noise
per leaf: every single $W(t)$ has exactly the Brownian law, $t \mapsto W(t)$ is continuous, and
two times closer than ``tol`` (in one leaf) share the leaf's noise, which is where the
approximation lies (their increment is right in mean, not in variance).

Reference: the virtual Brownian tree of Li, Wong, Chen, Duvenaud (2020), "Scalable Gradients
for Stochastic Differential Equations", AISTATS, and diffrax's ``VirtualBrownianTree``
(Kidger 2021, thesis, §5.5). A small LRU cache of node values speeds up queries without
changing any sample.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch

from .base import AbstractBrownianPath, Time
from .bridge import join, mix, split

__all__ = ["VirtualBrownianTree"]

_Values = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]  # W, H, W(a) - W(t0)


class VirtualBrownianTree(AbstractBrownianPath):
    r"""Brownian motion on $[t_0, t_1]$ resolved to ``tol`` by a fixed-depth bisection tree:
    stateless (each sample is a function of the seed and the time), any query order.

    Samples at dyadic times of the tree are exact; a time inside a leaf of width $\le$ ``tol``
    is interpolated with a Brownian bridge, so each $W(t)$ has the exact law and increments
    over intervals shorter than ``tol`` are approximate. Each query descends
    $\log_2((t_1 - t_0)/\mathrm{tol})$ levels (one Gaussian draw per level not in the cache),
    so it is slower than :class:`BrownianInterval`, which is exact and adapts its depth to the
    queries; use this one when a sample must not depend on anything but ``(seed, t)``.

    Args:
        t0, t1: the interval, ``t0 < t1``.
        shape: ``(batch, *noise)``.
        tol: the time resolution (leaf width bound); default ``(t1 - t0) * 2**-20``.
        dtype, device, seed, levy_area: as for :class:`BrownianInterval`.
        cache_size: how many tree nodes keep their tensors (LRU).
    """

    _name = "VirtualBrownianTree"

    def __init__(
        self,
        t0: Time,
        t1: Time,
        shape: Sequence[int] | torch.Size | int,
        *,
        tol: float | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        seed: int | None = None,
        levy_area: str | None = None,
        cache_size: int = 64,
    ) -> None:
        super().__init__(t0, t1, shape, dtype=dtype, device=device, seed=seed, levy_area=levy_area)
        if tol is None:
            tol = self._span * 2.0**-20
        if isinstance(tol, bool) or not isinstance(tol, int | float) or not tol > 0:
            raise ValueError(
                f"VirtualBrownianTree: `tol` must be a positive number (time resolution), got "
                f"{tol!r}."
            )
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 1:
            raise ValueError(
                "VirtualBrownianTree: `cache_size` must be a positive int (nodes kept in "
                f"memory), got {cache_size!r}."
            )
        self.tol = float(tol)
        self.depth = min(60, max(0, math.ceil(math.log2(self._span / self.tol))))
        self.cache_size = cache_size
        self._base = mix(self.seed, 2)
        z = self._randn(mix(self.seed, 0), lead=(2,))
        W = z[0].mul(math.sqrt(self._span))
        H = None if self.levy_area is None else z[1].mul(math.sqrt(self._span / 12.0))
        self._root: _Values = (W, H, torch.zeros_like(W))
        self._cache: OrderedDict[tuple[int, int], _Values] = OrderedDict()

    def _key(self, d: int, i: int) -> int:
        return mix(self._base, (d << 58) ^ i)

    def _leaf(self, t: float) -> tuple[int, float, float]:
        """Index and end points of the leaf holding ``t`` (midpoints as the tree computes
        them)."""
        a, b, i = self.t0, self.t1, 0
        for _ in range(self.depth):
            m = 0.5 * (a + b)
            if t < m:
                a, b, i = a, m, 2 * i
            else:
                a, b, i = m, b, 2 * i + 1
        return i, a, b

    def _node(self, d: int, i: int, a: float, b: float) -> _Values:
        """Values of dyadic node ``(d, i)`` = ``[a, b]``: recomputed top-down from the nearest
        cached ancestor (same seeds, same bits)."""
        if d == 0:
            return self._root
        got = self._cache.get((d, i))
        if got is not None:
            self._cache.move_to_end((d, i))
            return got
        path = []  # (depth, index) from the node up to the nearest cached ancestor
        dd, ii = d, i
        vals: _Values | None = None
        while dd > 0:
            vals = self._cache.get((dd, ii))
            if vals is not None:
                break
            path.append((dd, ii))
            dd, ii = dd - 1, ii // 2
        if dd == 0:
            vals = self._root
        assert vals is not None
        # end points of the ancestor (dd, ii)
        lo, hi = self.t0, self.t1
        for level in range(dd):
            m = 0.5 * (lo + hi)
            if (ii >> (dd - 1 - level)) & 1:
                lo = m
            else:
                hi = m
        lead = () if self.levy_area is None else (2,)
        for cd, ci in reversed(path):
            W, H, cum = vals
            m = 0.5 * (lo + hi)
            z = self._randn(self._key(cd - 1, ci // 2), lead)
            W1, H1, W2, H2 = split(W, H, z, m - lo, hi - m)
            left: _Values = (W1, H1, cum)
            right: _Values = (W2, H2, cum + W1)
            self._store((cd, ci - (ci & 1)), left)
            self._store((cd, ci | 1), right)
            if ci & 1:
                vals, lo = right, m
            else:
                vals, hi = left, m
        return vals

    def _store(self, key: tuple[int, int], vals: _Values) -> None:
        self._cache[key] = vals
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _inside(self, i: int, a: float, b: float, t: float) -> tuple:
        """Bridge split of leaf ``i`` at an interior ``t``: ``(W1, H1, W2, H2, cum)``."""
        W, H, cum = self._node(self.depth, i, a, b)
        lead = () if self.levy_area is None else (2,)
        z = self._randn(self._key(self.depth + 1, i), lead)
        W1, H1, W2, H2 = split(W, H, z, t - a, b - t)
        return W1, H1, W2, H2, cum

    def _point(self, t: float) -> torch.Tensor:
        """``W(t) - W(t0)``."""
        if t == self.t0:
            return torch.zeros_like(self._root[0])
        if t == self.t1:
            return self._root[0]
        i, a, b = self._leaf(t)
        if t == a:
            return self._node(self.depth, i, a, b)[2]
        W1, _, _, _, cum = self._inside(i, a, b, t)
        return cum + W1

    def _forward_increment(self, ta: float, tb: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        W = self._point(tb) - self._point(ta)
        if self.levy_area is None:
            return W, None
        return W, self._area(ta, tb)

    def _area(self, ta: float, tb: float) -> torch.Tensor:
        """Space-time Lévy area over ``[ta, tb]``: joins of the dyadic nodes inside it and of
        the bridge pieces of the (at most two) partly covered leaves."""
        pieces: list[tuple[torch.Tensor, torch.Tensor | None, float]] = []
        stack = [(0, 0, self.t0, self.t1)]
        while stack:
            d, i, a, b = stack.pop()
            if b <= ta or tb <= a:
                continue
            if ta <= a and b <= tb:
                W, H, _ = self._node(d, i, a, b)
                pieces.append((W, H, b - a))
                continue
            if d == self.depth:  # a leaf partly covered
                if a < ta and tb < b:  # both ends in one leaf: cut the right piece at tb
                    _, _, W2, H2, _ = self._inside(i, a, b, ta)
                    z = self._randn(mix(self._key(self.depth + 2, i), 1), (2,))
                    W3, H3, _, _ = split(W2, H2, z, tb - ta, b - tb)
                    pieces.append((W3, H3, tb - ta))
                elif a < ta:
                    _, _, W2, H2, _ = self._inside(i, a, b, ta)
                    pieces.append((W2, H2, b - ta))
                else:
                    W1, H1, _, _, _ = self._inside(i, a, b, tb)
                    pieces.append((W1, H1, tb - a))
                continue
            m = 0.5 * (a + b)
            stack.append((d + 1, 2 * i + 1, m, b))
            stack.append((d + 1, 2 * i, a, m))
        W, H, h = pieces[0]
        if len(pieces) == 1:
            assert H is not None
            return H.clone()  # may be a cached tensor: the caller gets its own
        for W2, H2, h2 in pieces[1:]:
            W, H = join(W, H, h, W2, H2, h2)
            h += h2
        assert H is not None
        return H
