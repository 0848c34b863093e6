r"""A small graph container on plain PyTorch: an ``edge_index`` and the normalised weights
built once, with message passing by ``index_add`` (linear in the number of edges)."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["Graph", "as_graph", "propagate", "segment_softmax"]


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    return f"{type(x).__name__} {x!r}"[:120]


def propagate(
    x: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, weight: torch.Tensor | None,
    num_nodes: int,
) -> torch.Tensor:  # fmt: skip
    r"""$\mathrm{out}_i = \sum_{(j \to i)} w_{ji} x_j$ for node features ``x`` of shape
    ``(..., num_nodes, channels)``: a gather of the sources and an ``index_add`` into the
    destinations, $O(E \cdot \text{channels})$. ``weight`` is ``(E,)`` or ``(..., E)``
    (per-sample weights, e.g. attention), or ``None`` for ones."""
    msg = x.index_select(-2, src)  # (..., E, C)
    if weight is not None:
        msg = msg * weight.unsqueeze(-1)
    out = x.new_zeros(*msg.shape[:-2], num_nodes, msg.shape[-1])
    return out.index_add(-2, dst, msg)


def segment_softmax(scores: torch.Tensor, dst: torch.Tensor, num_nodes: int) -> torch.Tensor:
    r"""Softmax of edge scores ``(..., E)`` over the incoming edges of each destination node
    (so the weights into every node sum to one), shifted by each node's maximum for
    stability."""
    shape = (*scores.shape[:-1], num_nodes)
    idx = dst.expand_as(scores)
    top = scores.new_full(shape, float("-inf")).scatter_reduce(
        -1, idx, scores.detach(), "amax", include_self=True
    )
    e = torch.exp(scores - top.gather(-1, idx))
    total = scores.new_zeros(shape).scatter_add(-1, idx, e)
    return e / total.gather(-1, idx)


class Graph:
    r"""A graph of ``num_nodes`` nodes and ``E`` directed edges ``edge_index[0] -> edge_index[1]``
    (an undirected graph lists both directions), with optional positive ``edge_weight``
    ``(E,)``. The normalisations the layers use are computed once and cached:

    - :meth:`gcn_weight`: $\hat D^{-1/2}(A + I)\hat D^{-1/2}$ (Kipf & Welling), self-loops added;
    - :meth:`rw_weight`: $D^{-1} A$ (row-stochastic: the weights into each node sum to one,
      the random walk whose Laplacian is $I - D^{-1}A$);
    - :meth:`mean_weight`: $D^{-1}A$ without edge weights (GraphSAGE's mean aggregator).

    Features are ``(..., num_nodes, channels)``; :meth:`propagate` sums weighted messages.
    """

    def __init__(
        self, edge_index: torch.Tensor, num_nodes: int | None = None,
        edge_weight: torch.Tensor | None = None,
    ) -> None:  # fmt: skip
        if not isinstance(edge_index, torch.Tensor):
            raise TypeError(
                f"Graph: `edge_index` must be an int64 tensor of shape (2, E), got "
                f"{_describe(edge_index)}."
            )
        if edge_index.ndim != 2 or edge_index.shape[0] != 2:
            raise ValueError(
                f"Graph: `edge_index` must have shape (2, E) (sources, destinations), got "
                f"shape {tuple(edge_index.shape)}; transpose an (E, 2) edge list."
            )
        if edge_index.dtype.is_floating_point or edge_index.dtype == torch.bool:
            raise TypeError(
                f"Graph: `edge_index` must hold integers, got dtype {edge_index.dtype}; pass "
                "edge_index.long()."
            )
        edge_index = edge_index.long()
        if num_nodes is None:
            num_nodes = int(edge_index.max()) + 1 if edge_index.numel() else 0
        if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 1:
            raise ValueError(f"Graph: `num_nodes` must be a positive int, got {num_nodes!r}.")
        if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= num_nodes):
            raise ValueError(
                f"Graph: `edge_index` holds node ids in [{int(edge_index.min())}, "
                f"{int(edge_index.max())}] but num_nodes={num_nodes}: ids must lie in "
                f"[0, {num_nodes - 1}]."
            )
        if edge_weight is not None:
            if not isinstance(edge_weight, torch.Tensor) or edge_weight.shape != (
                edge_index.shape[1],
            ):
                raise ValueError(
                    f"Graph: `edge_weight` must be a tensor of shape ({edge_index.shape[1]},) "
                    f"(one per edge), got {_describe(edge_weight)}."
                )
        self.edge_index, self.num_nodes, self.edge_weight = edge_index, num_nodes, edge_weight
        self._cache: dict[str, Any] = {}

    @property
    def src(self) -> torch.Tensor:
        return self.edge_index[0]

    @property
    def dst(self) -> torch.Tensor:
        return self.edge_index[1]

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    def _weights(self, dtype: torch.dtype) -> torch.Tensor:
        if self.edge_weight is None:
            return torch.ones(self.num_edges, dtype=dtype, device=self.edge_index.device)
        return self.edge_weight.to(dtype)

    def in_degree(self, dtype: torch.dtype = torch.float32, weighted: bool = True) -> torch.Tensor:
        """The (weighted) number of edges into each node, ``(num_nodes,)``."""
        w = self._weights(dtype) if weighted else self._weights(dtype).new_ones(self.num_edges)
        return w.new_zeros(self.num_nodes).index_add(0, self.dst, w)

    def max_degree(self) -> int:
        """The largest unweighted in-degree (the constant of FDGNN's stability condition)."""
        return self._cached(
            "max_degree", torch.float64,
            lambda: int(self.in_degree(torch.float64, weighted=False).max()),
        )  # fmt: skip

    def _cached(self, key: str, dtype: torch.dtype, make: Any) -> Any:
        k = f"{key}:{dtype}"
        if k not in self._cache:
            self._cache[k] = make()
        return self._cache[k]

    def gcn_weight(self, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        r"""``(edge_index with self-loops, weights)`` of $\hat D^{-1/2}(A+I)\hat D^{-1/2}$."""

        def make() -> tuple[torch.Tensor, torch.Tensor]:
            loops = torch.arange(self.num_nodes, device=self.edge_index.device)
            ei = torch.cat([self.edge_index, torch.stack([loops, loops])], 1)
            w = torch.cat([self._weights(dtype), self._weights(dtype).new_ones(self.num_nodes)])
            deg = w.new_zeros(self.num_nodes).index_add(0, ei[1], w)
            dinv = deg.rsqrt()
            return ei, dinv[ei[0]] * w * dinv[ei[1]]

        return self._cached("gcn", dtype, make)

    def rw_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        r"""Weights of the row-stochastic $D^{-1}A$: the weights into each node sum to one
        (nodes without incoming edges get none)."""

        def make() -> torch.Tensor:
            w = self._weights(dtype)
            deg = self.in_degree(dtype)
            return w / deg.clamp_min(torch.finfo(dtype).tiny)[self.dst]

        return self._cached("rw", dtype, make)

    def mean_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Weights of the unweighted neighbour mean (GraphSAGE's mean aggregator)."""

        def make() -> torch.Tensor:
            deg = self.in_degree(dtype, weighted=False)
            return (1.0 / deg.clamp_min(1.0))[self.dst]

        return self._cached("mean", dtype, make)

    def propagate(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """``out_i = sum over edges j -> i of weight * x_j`` (see :func:`propagate`)."""
        return propagate(x, self.src, self.dst, weight, self.num_nodes)

    def to(self, device: Any) -> Graph:
        ew = None if self.edge_weight is None else self.edge_weight.to(device)
        return Graph(self.edge_index.to(device), self.num_nodes, ew)

    def permute(self, perm: torch.Tensor) -> Graph:
        """The same graph with node ``perm[i]`` renamed ``i`` (features permute as ``x[perm]``)."""
        inv = torch.empty_like(perm)
        inv[perm] = torch.arange(len(perm), device=perm.device)
        return Graph(inv[self.edge_index], self.num_nodes, self.edge_weight)

    def dense_adjacency(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The dense ``(num_nodes, num_nodes)`` matrix with ``A[dst, src] = weight`` (tests and
        small graphs only)."""
        a = torch.zeros(self.num_nodes, self.num_nodes, dtype=dtype)
        return a.index_put((self.dst, self.src), self._weights(dtype), accumulate=True)

    def __repr__(self) -> str:
        return f"Graph(num_nodes={self.num_nodes}, num_edges={self.num_edges})"


def as_graph(graph: Any, argument: str = "graph") -> Graph:
    """A :class:`Graph` from a ``Graph``, an ``edge_index`` tensor ``(2, E)``, or any object
    with an ``edge_index`` attribute (a ``torch_geometric.data.Data``, duck-typed: its
    ``num_nodes`` and ``edge_weight``/``edge_attr`` of shape ``(E,)`` are used when present)."""
    if isinstance(graph, Graph):
        return graph
    if isinstance(graph, torch.Tensor):
        return Graph(graph)
    ei = getattr(graph, "edge_index", None)
    if isinstance(ei, torch.Tensor):
        n = getattr(graph, "num_nodes", None)
        w = getattr(graph, "edge_weight", None)
        if w is None:
            attr = getattr(graph, "edge_attr", None)
            w = attr if isinstance(attr, torch.Tensor) and attr.ndim == 1 else None
        return Graph(ei, int(n) if n is not None else None, w)
    raise TypeError(
        f"`{argument}` must be a torchnde.graphs.Graph, an edge_index tensor of shape (2, E) "
        f"or an object with an `edge_index` attribute (torch_geometric Data), got "
        f"{_describe(graph)}."
    )
