r"""``BrownianInterval``: exact Brownian motion on a binary tree of intervals, values in an LRU
cache, any query order, bit-identical reconstruction.

The tree. The root is $[t_0, t_1]$, its increment (and space-time Lévy area) drawn from a seed.
A node is cut once, at a point $m$, into two children whose values are drawn from the
Brownian bridge given the node's values (:func:`bridge.split`), with noise seeded by the
node. Nodes near the top are cut at their *dyadic midpoints* and seeded by their position
(depth, index), so a dyadic node has the same value whenever it exists, whatever was queried
before. A query time $t$ walks down from the root: while the current leaf is a dyadic node
wider than the target width $w$ it is cut at its midpoint; once narrower, it is cut at $t$
itself and $t$ becomes a node boundary. The increment over $[t_a, t_b]$ is then the join of
the $O(\text{depth})$ maximal nodes inside it.

The target width is adapted from the query pattern, so that no ``dt`` hint is needed and the
tree stays balanced: $w$ is the smallest of the query's length and the distances from its end
points to the previous query's end points. For a fixed-step solve (or any set of queries of
one length $\Delta t$ on a grid) every query gets $w = \Delta t$: each grid time cuts its own
dyadic leaf of width $< \Delta t$, which holds no other grid time, so the samples are the
same *whatever the order of the queries* (forward, backward, shuffled). A sequential sweep
touches about two new tree levels per step (about two draws), and so does the backward
sweep of an adjoint as long as the cache holds a root-to-leaf path and its siblings (the
default 64 nodes does for steps down to about 2^-25 of the interval).

Exactness. Every value is a draw from the exact conditional law given the values already
fixed, so all increments are exactly jointly Gaussian with the Brownian covariance (no
discretisation). Once a time has been queried its value never changes: evicted values are
recomputed from the ancestors with the same seeds, bit for bit. Points that fall into the
same leaf after it was cut at a query point (e.g. the step-halving of an adaptive solver) are
sampled conditionally on the points already there, as in torchsde; only then do the samples
depend on the order in which such close points were first queried.

Memory. Tensors: at most ``cache_size`` nodes (plus the root). Bookkeeping: a small Python
object per tree node, which must stay to reproduce the cuts: about 0.7 KB per distinct query
time of a fixed-step sweep (torchsde's interval with its dt hint: about 0.4 KB).

Reference: the interval/bridge construction follows Kidger, Foster, Li, Lyons (2021),
"Efficient and Accurate Gradients for Neural SDEs", NeurIPS, §4 (the Brownian Interval).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch

from .base import AbstractBrownianPath, Time
from .bridge import join, mix, split

__all__ = ["BrownianInterval"]

_MAX_DYADIC_DEPTH = 50


class _Node:
    __slots__ = ("a", "b", "depth", "index", "parent", "left", "right", "W", "H")

    def __init__(self, a: float, b: float, depth: int, index: int, parent: _Node | None) -> None:
        self.a = a
        self.b = b
        self.depth = depth  # dyadic depth, or -1 below a cut at a query point
        self.index = index
        self.parent = parent
        self.left: _Node | None = None
        self.right: _Node | None = None
        self.W: torch.Tensor | None = None
        self.H: torch.Tensor | None = None


class BrownianInterval(AbstractBrownianPath):
    r"""Brownian motion on $[t_0, t_1]$ sampled exactly at any query times, in any order, in
    bounded memory, with bit-identical answers to repeated queries (the backward pass of an
    adjoint sees exactly the forward increments).

    Values of shape ``(batch, *noise)``; ``bm(ta, tb)`` is $W(t_b) - W(t_a)$, ``bm(t)`` is
    $W(t) - W(t_0)$, and ``bm.increment(ta, tb)`` also returns the space-time Lévy area $H$
    (and an approximation of the full area $A$) when ``levy_area`` is set. Per-sample times
    of shape ``(batch,)`` are supported. No ``dt`` hint is needed: the tree adapts its
    resolution to the queries (see the module documentation for the algorithm and for when
    the samples are independent of the query order).

    Args:
        t0, t1: the interval, ``t0 < t1``.
        shape: ``(batch, *noise)``.
        dtype: of the samples (default: torch's default dtype).
        device: of the samples (default CPU); the generator lives there too.
        seed: an int; ``None`` draws one from torch's global generator.
        levy_area: ``None``, ``"space-time"`` (sample $H$ jointly with $W$), or ``"davie"`` /
            ``"foster"`` (also approximate the full area $A$ from $(W, H)$).
        cache_size: how many tree nodes keep their tensors (LRU); memory is
            ``cache_size * prod(shape)`` numbers (twice that with Lévy area).

    Example:
        >>> bm = BrownianInterval(0.0, 1.0, (256, 32), seed=0)
        >>> dW = bm(0.25, 0.5)  # shape (256, 32), variance 0.25
        >>> ControlTerm(g, bm, noise="diagonal")  # doctest: +SKIP
    """

    _name = "BrownianInterval"

    def __init__(
        self,
        t0: Time,
        t1: Time,
        shape: Sequence[int] | torch.Size | int,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        seed: int | None = None,
        levy_area: str | None = None,
        cache_size: int = 64,
    ) -> None:
        super().__init__(t0, t1, shape, dtype=dtype, device=device, seed=seed, levy_area=levy_area)
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 1:
            raise ValueError(
                f"BrownianInterval: `cache_size` must be a positive int (nodes kept in memory), "
                f"got {cache_size!r}."
            )
        self.cache_size = cache_size
        self._base = mix(self.seed, 1)
        self._root = _Node(self.t0, self.t1, 0, 0, None)
        z = self._randn(mix(self.seed, 0), lead=(2,))
        self._root.W = z[0].mul(math.sqrt(self._span))
        if self.levy_area is not None:
            self._root.H = z[1].mul(math.sqrt(self._span / 12.0))
        self._cache: OrderedDict[_Node, None] = OrderedDict()
        self._last: tuple[float, float] | None = None

    # ------------------------------------------------------------------------- tree shape
    def _target_width(self, ta: float, tb: float) -> float:
        w = tb - ta
        if self._last is not None:
            for t in (ta, tb):
                for s in self._last:
                    d = abs(t - s)
                    if 0.0 < d < w:
                        w = d
        self._last = (ta, tb)
        return w

    def _cut(self, node: _Node, m: float) -> None:
        if node.depth >= 0 and m == 0.5 * (node.a + node.b):
            d, i = node.depth + 1, 2 * node.index
            node.left = _Node(node.a, m, d, i, node)
            node.right = _Node(m, node.b, d, i + 1, node)
        else:
            node.left = _Node(node.a, m, -1, 0, node)
            node.right = _Node(m, node.b, -1, 0, node)

    def _seed(self, node: _Node) -> int:
        """The seed of a node's cut: from its position for a dyadic node, else from its
        parent's seed and its side (computed, not stored, to keep nodes small)."""
        if node.depth >= 0:
            return mix(self._base, (node.depth << 56) ^ node.index)
        parent = node.parent
        assert parent is not None
        return mix(self._seed(parent), 1 if node is parent.left else 2)

    def _insert(self, t: float, w: float) -> None:
        """Make ``t`` a node boundary, cutting dyadically down to width ``< w`` first."""
        node = self._root
        while True:
            if t == node.a or t == node.b:
                return
            left = node.left
            if left is None:
                if 0 <= node.depth < _MAX_DYADIC_DEPTH and node.b - node.a >= w:
                    mid = 0.5 * (node.a + node.b)
                    if node.a < mid < node.b:
                        self._cut(node, mid)
                        left = node.left
                if left is None:
                    self._cut(node, t)
                    return
            assert left is not None and node.right is not None
            m = left.b
            if t == m:
                return
            node = left if t < m else node.right

    def _cover(self, ta: float, tb: float) -> list[_Node]:
        """The maximal nodes inside ``[ta, tb]`` (both node boundaries), left to right: down
        to the lowest node holding both, then along the two paths to ``ta`` and ``tb``."""
        node = self._root
        while True:
            if node.a == ta and node.b == tb:
                return [node]
            left, right = node.left, node.right
            assert left is not None and right is not None
            m = left.b
            if tb <= m:
                node = left
            elif ta >= m:
                node = right
            else:
                break
        # [ta, m] inside `left`: walk to ta, keeping the right siblings passed on the way
        rights: list[_Node] = []
        n = left
        while n.a != ta:
            lo, hi = n.left, n.right
            assert lo is not None and hi is not None
            if ta < lo.b:
                rights.append(hi)
                n = lo
            else:
                n = hi
        out = [n, *reversed(rights)]
        # [m, tb] inside `right`: walk to tb, keeping the left siblings
        n = right
        while n.b != tb:
            lo, hi = n.left, n.right
            assert lo is not None and hi is not None
            if tb > lo.b:
                out.append(lo)
                n = hi
            else:
                n = lo
        out.append(n)
        return out

    # ------------------------------------------------------------------------------ values
    def _store(self, node: _Node, W: torch.Tensor, H: torch.Tensor | None) -> None:
        node.W, node.H = W, H
        cache = self._cache
        cache[node] = None
        if len(cache) > self.cache_size:
            old, _ = cache.popitem(last=False)
            old.W = old.H = None

    def _touch_ancestors(self, node: _Node) -> None:
        """Mark the cached ancestors as recent: a sweep keeps its root-to-leaf path in the
        cache instead of evicting it and recomputing it at the next subtree it enters."""
        cache = self._cache
        p = node.parent
        while p is not None and p.parent is not None:
            if p.W is not None:
                cache.move_to_end(p)
            p = p.parent

    def _values(self, node: _Node) -> tuple[torch.Tensor, torch.Tensor | None]:
        if node.W is not None:
            if node is not self._root:
                self._cache.move_to_end(node)
            return node.W, node.H
        chain = []
        p: _Node | None = node
        while p is not None and p.W is None:
            chain.append(p)
            p = p.parent
        assert p is not None  # the root always holds its values
        W, H = p.W, p.H
        assert W is not None
        # top-down: recompute each missing node from its parent (same seeds, same bits)
        for child in reversed(chain):
            parent = child.parent
            assert parent is not None and parent.left is not None and parent.right is not None
            lead = () if self.levy_area is None else (2,)
            z = self._randn(self._seed(parent), lead)
            h1 = parent.left.b - parent.a
            h2 = parent.b - parent.left.b
            W1, H1, W2, H2 = split(W, H, z, h1, h2)
            self._store(parent.left, W1, H1)
            self._store(parent.right, W2, H2)
            W, H = (W1, H1) if child is parent.left else (W2, H2)
        return W, H

    def _forward_increment(self, ta: float, tb: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        w = self._target_width(ta, tb)
        self._insert(ta, w)
        self._insert(tb, w)
        nodes = self._cover(ta, tb)
        W, H = self._values(nodes[0])
        h = nodes[0].b - nodes[0].a
        if len(nodes) == 1:
            # a fresh tensor, so that callers may modify it without touching the cache
            W, H = W.clone(), None if H is None else H.clone()
        for node in nodes[1:]:
            W2, H2 = self._values(node)
            h2 = node.b - node.a
            W, H = join(W, H, h, W2, H2, h2)
            h += h2
        # the parents of the cover are on the paths to ta and tb
        self._touch_ancestors(nodes[0])
        self._touch_ancestors(nodes[-1])
        return W, H
