r"""Graph data: networkx's karate club, a k-nearest-neighbour graph over scikit-learn's digits
(semi-supervised node classification with few labels), and Kuramoto oscillators on a random
geometric graph solved by torchnde (dynamic graph prediction). Nothing is downloaded: the first
two ship inside networkx / scikit-learn (the ``experiments`` extra), the third is generated."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "GraphDynamics",
    "NodeClassification",
    "generate_kuramoto",
    "load_digits_knn",
    "load_karate_club",
    "random_geometric_graph",
]


def _require(module: str, package: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"this graph dataset needs {package}, which is not installed: "
            f"pip install 'torchnde[experiments]' (or pip install {package})."
        ) from None


@dataclass
class NodeClassification:
    """A graph with node features ``x (N, F)``, labels ``y (N,)`` and boolean masks of the
    labelled (training), validation and test nodes."""

    graph: Any  # torchnde.graphs.Graph
    x: torch.Tensor
    y: torch.Tensor
    train_mask: torch.Tensor
    val_mask: torch.Tensor
    test_mask: torch.Tensor

    @property
    def num_classes(self) -> int:
        return int(self.y.max()) + 1


def _undirected(edges: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Both directions of each edge, no self-loops, no duplicates: ``(2, E)``, sorted."""
    e = torch.cat([edges, edges.flip(0)], 1)
    e = e[:, e[0] != e[1]]
    key = torch.unique(e[0] * num_nodes + e[1])
    return torch.stack([key // num_nodes, key % num_nodes])


def _few_labels(
    y: torch.Tensor, per_class: int, num_val: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    n = len(y)
    train = torch.zeros(n, dtype=torch.bool)
    for c in range(int(y.max()) + 1):
        idx = torch.nonzero(y == c).flatten()
        if len(idx) < per_class:
            raise ValueError(
                f"`labels_per_class`={per_class} but class {c} has only {len(idx)} nodes."
            )
        train[idx[torch.randperm(len(idx), generator=gen)[:per_class]]] = True
    rest = torch.nonzero(~train).flatten()
    rest = rest[torch.randperm(len(rest), generator=gen)]
    val = torch.zeros(n, dtype=torch.bool)
    val[rest[:num_val]] = True
    return train, val, ~(train | val)


def load_karate_club() -> NodeClassification:
    """Zachary's karate club (34 members, 78 friendships, from networkx): one-hot node
    features, the two clubs after the split as labels, one labelled member per club (the
    instructor, node 0, and the administrator, node 33); no validation nodes."""
    from ..graphs import Graph

    nx = _require("networkx", "networkx")
    g = nx.karate_club_graph()
    edges = torch.tensor(list(g.edges()), dtype=torch.int64).T
    n = g.number_of_nodes()
    y = torch.tensor([int(g.nodes[i]["club"] != "Mr. Hi") for i in range(n)])
    train = torch.zeros(n, dtype=torch.bool)
    train[[0, 33]] = True
    val = torch.zeros(n, dtype=torch.bool)
    return NodeClassification(Graph(_undirected(edges, n), n), torch.eye(n), y, train, val, ~train)


def load_digits_knn(
    k: int = 10, labels_per_class: int = 10, num_val: int = 200, seed: int = 0
) -> NodeClassification:
    """scikit-learn's 1797 8x8 digits as a graph: each image joined to its ``k`` nearest
    neighbours in pixel space (symmetrised), pixel features in [0, 1], the digit as label,
    ``labels_per_class`` labelled nodes per class (GRAND's few-label protocol, adapted from
    Planetoid's 20 to 10 per class), ``num_val`` validation nodes and the rest for testing."""
    from ..graphs import Graph

    datasets = _require("sklearn.datasets", "scikit-learn")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"load_digits_knn: `k` must be a positive int, got {k!r}.")
    data = datasets.load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.int64)
    n = len(x)
    d = torch.cdist(x.double(), x.double())
    d.fill_diagonal_(float("inf"))
    nbrs = d.topk(k, largest=False).indices  # (n, k)
    edges = torch.stack([torch.arange(n).repeat_interleave(k), nbrs.reshape(-1)])
    train, val, test = _few_labels(y, labels_per_class, num_val, seed)
    return NodeClassification(Graph(_undirected(edges, n), n), x, y, train, val, test)


def random_geometric_graph(
    num_nodes: int, radius: float, seed: int = 0
) -> tuple[Any, torch.Tensor]:
    """Nodes uniform in the unit square, joined when closer than ``radius``: ``(Graph,
    positions (N, 2))``, seeded."""
    from ..graphs import Graph

    gen = torch.Generator().manual_seed(seed)
    pos = torch.rand(num_nodes, 2, generator=gen, dtype=torch.float64)
    close = torch.cdist(pos, pos) < radius
    close.fill_diagonal_(False)
    edges = torch.nonzero(close).T
    return Graph(_undirected(edges, num_nodes), num_nodes), pos


@dataclass
class GraphDynamics:
    r"""Trajectories on a fixed graph: ``states (num_traj, T, N, C)`` at ``t (T,)``, with static
    node features ``static (N, S)``."""

    graph: Any
    t: torch.Tensor
    states: torch.Tensor
    static: torch.Tensor
    positions: torch.Tensor


def generate_kuramoto(
    num_nodes: int = 40, num_traj: int = 16, num_times: int = 41, t1: float = 4.0,
    radius: float = 0.3, coupling: float = 2.0, seed: int = 0,
) -> GraphDynamics:  # fmt: skip
    r"""Kuramoto oscillators on a random geometric graph,
    $\dot\theta_i = \omega_i + \frac{K}{\deg_i}\sum_{j \sim i}\sin(\theta_j - \theta_i)$,
    with natural frequencies $\omega_i \sim N(0, 1)$ and ``num_traj`` random initial phases,
    solved by torchnde (``Tsit5``, rtol 1e-8) in float64 and saved at ``num_times`` equally
    spaced times in ``[0, t1]``. States are $(\cos\theta_i, \sin\theta_i)$ (``C = 2``); the
    static node features are $\omega_i$ (``S = 1``)."""
    import torchnde as tn

    graph, pos = random_geometric_graph(num_nodes, radius, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    omega = torch.randn(num_nodes, generator=gen, dtype=torch.float64)
    theta0 = 2 * torch.pi * torch.rand(num_traj, num_nodes, generator=gen, dtype=torch.float64)
    w = graph.rw_weight(torch.float64) * coupling

    def f(t: torch.Tensor, th: torch.Tensor, args: Any) -> torch.Tensor:
        diff = torch.sin(th[:, graph.src] - th[:, graph.dst]) * w
        return omega + th.new_zeros(th.shape).index_add(1, graph.dst, diff)

    t = torch.linspace(0, t1, num_times, dtype=torch.float64)
    sol = tn.solve(
        tn.ODETerm(f), tn.Tsit5(), t[0], t[-1], theta0, saveat=tn.SaveAt(ts=t),
        controller=tn.PIDController(rtol=1e-8, atol=1e-10),
    )  # fmt: skip
    th = sol.ys.transpose(0, 1)  # (num_traj, T, N)
    states = torch.stack([torch.cos(th), torch.sin(th)], -1).float()
    return GraphDynamics(graph, t.float(), states, omega[:, None].float(), pos.float())
