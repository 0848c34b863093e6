r"""Graph layers on node features ``(..., num_nodes, channels)``: GCN, GraphSAGE (mean) and
GAT-style attention. Each is called as ``layer(x, graph)`` so one layer serves static and
time-varying graphs; all are permutation-equivariant (renaming nodes permutes the output)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .graph import Graph, as_graph, propagate, segment_softmax

__all__ = ["GATConv", "GCNConv", "Pointwise", "SAGEConv"]


def _check_features(x: Any, graph: Graph, in_features: int, layer: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise ValueError(
            f"{layer}: node features must be a tensor of shape (..., num_nodes, channels), "
            f"got {x if not isinstance(x, torch.Tensor) else tuple(x.shape)}."
        )
    if x.shape[-2] != graph.num_nodes or x.shape[-1] != in_features:
        raise ValueError(
            f"{layer}: node features of shape {tuple(x.shape)} do not fit a graph of "
            f"{graph.num_nodes} nodes and {in_features} input channels; expected "
            f"(..., {graph.num_nodes}, {in_features})."
        )


class GCNConv(nn.Module):
    r"""Graph convolution (Kipf & Welling 2017): $X' = \hat D^{-1/2}(A+I)\hat D^{-1/2} X W + b$.

    References:
        T. N. Kipf, M. Welling, "Semi-supervised classification with graph convolutional
        networks", ICLR 2017.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.linear = nn.Linear(in_features, out_features, bias=bias)

    def forward(self, x: torch.Tensor, graph: Any) -> torch.Tensor:
        g = as_graph(graph)
        _check_features(x, g, self.in_features, "GCNConv")
        ei, w = g.gcn_weight(x.dtype)
        h = x @ self.linear.weight.T  # transform first: cheaper when out < in
        h = propagate(h, ei[0], ei[1], w, g.num_nodes)
        return h if self.linear.bias is None else h + self.linear.bias


class SAGEConv(nn.Module):
    r"""GraphSAGE with the mean aggregator (Hamilton et al. 2017):
    $x_i' = W_1 x_i + W_2 \operatorname{mean}_{j \to i} x_j + b$.

    References:
        W. L. Hamilton, R. Ying, J. Leskovec, "Inductive representation learning on large
        graphs", NeurIPS 2017.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.root = nn.Linear(in_features, out_features, bias=bias)
        self.neighbour = nn.Linear(in_features, out_features, bias=False)

    def forward(self, x: torch.Tensor, graph: Any) -> torch.Tensor:
        g = as_graph(graph)
        _check_features(x, g, self.in_features, "SAGEConv")
        return self.root(x) + g.propagate(self.neighbour(x), g.mean_weight(x.dtype))


class GATConv(nn.Module):
    r"""Graph attention (Veličković et al. 2018): per head,
    $\alpha_{ij} = \operatorname{softmax}_{j \to i}\big(\mathrm{LeakyReLU}(a^\top[W x_i \,\|\,
    W x_j])\big)$ over the incoming edges and a self-loop, $x_i' = \sum_j \alpha_{ij} W x_j$;
    heads concatenated (``concat=True``) or averaged.

    References:
        P. Veličković et al., "Graph attention networks", ICLR 2018.
    """

    def __init__(
        self, in_features: int, out_features: int, heads: int = 1, concat: bool = True,
        negative_slope: float = 0.2,
    ) -> None:  # fmt: skip
        super().__init__()
        if concat and out_features % heads:
            raise ValueError(
                f"GATConv: `out_features`={out_features} must be divisible by `heads`={heads} "
                "when concat=True."
            )
        self.in_features, self.out_features = in_features, out_features
        self.heads, self.concat, self.negative_slope = heads, concat, negative_slope
        self.head_dim = out_features // heads if concat else out_features
        self.linear = nn.Linear(in_features, heads * self.head_dim, bias=False)
        self.att_src = nn.Parameter(torch.randn(heads, self.head_dim) / self.head_dim**0.5)
        self.att_dst = nn.Parameter(torch.randn(heads, self.head_dim) / self.head_dim**0.5)
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, x: torch.Tensor, graph: Any) -> torch.Tensor:
        g = as_graph(graph)
        _check_features(x, g, self.in_features, "GATConv")
        n, h, d = g.num_nodes, self.heads, self.head_dim
        loops = torch.arange(n, device=x.device)
        src = torch.cat([g.src, loops])
        dst = torch.cat([g.dst, loops])
        z = self.linear(x).unflatten(-1, (h, d))  # (..., N, H, D)
        s = (z * self.att_src).sum(-1)  # (..., N, H)
        t = (z * self.att_dst).sum(-1)
        e = nn.functional.leaky_relu(
            s.index_select(-2, src) + t.index_select(-2, dst), self.negative_slope
        )  # (..., E, H)
        alpha = segment_softmax(e.transpose(-1, -2), dst, n)  # (..., H, E)
        zh = z.movedim(-2, -3)  # (..., H, N, D)
        out = propagate(zh, src, dst, alpha, n).movedim(-3, -2)  # (..., N, H, D)
        out = out.flatten(-2) if self.concat else out.mean(-2)
        return out + self.bias


class Pointwise(nn.Module):
    """A network applied to every node on its own (``net(x)``, the graph unused): a node-wise
    MLP between graph layers of a :class:`~torchnde.graphs.GraphVectorField`."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, graph: Any = None) -> torch.Tensor:
        return self.net(x)
