r"""Fast and Deep Graph Neural Networks (Gallicchio & Micheli 2020): untrained contractive
recurrent graph reservoirs, each iterated to its fixed point (on :class:`torchnde.models.DEQ`),
stacked deep, with a trained linear readout (ridge regression in closed form)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..models import DEQ
from .graph import Graph, as_graph

__all__ = ["FDGNN", "GraphReservoir", "ridge_readout"]


class GraphReservoir(nn.Module):
    r"""One untrained reservoir layer: the node states are the fixed point of
    $x_v = \tanh\big(W_{in} u_v + \hat W \sum_{w \to v} x_w\big)$.

    $W_{in}$ is uniform in $[-\omega, \omega]$ (``input_scaling``); $\hat W$ is a random matrix
    rescaled so that $\lVert \hat W \rVert_2 \, k = \rho$ with $k$ the graph's largest
    degree and ``rho < 1``: the map is then a contraction (tanh is 1-Lipschitz and the
    adjacency's norm is at most $k$), the sufficient condition of the paper's graph embedding
    stability, so the fixed point exists, is unique and every start converges to it. (The
    paper also uses the weaker, necessary spectral-radius scaling $\rho(\hat W) k < 1$;
    ``scaling="spectral"`` gives it, without the uniqueness guarantee.)

    Weights are buffers (never trained). ``forward(u, graph)`` on ``(..., N, in_features)``.
    """

    def __init__(
        self, in_features: int, units: int, *, rho: float = 0.9, input_scaling: float = 1.0,
        scaling: str = "norm", generator: torch.Generator | None = None, tol: float = 1e-6,
        max_iters: int = 200,
    ) -> None:  # fmt: skip
        super().__init__()
        if not 0 < rho < 1 and scaling == "norm":
            raise ValueError(
                f"GraphReservoir: `rho` must lie in (0, 1) for a contractive reservoir, got "
                f"{rho!r}."
            )
        if scaling not in ("norm", "spectral"):
            raise ValueError(
                f"GraphReservoir: `scaling` must be 'norm' or 'spectral', got {scaling!r}."
            )
        w_in = (2 * torch.rand(units, in_features, generator=generator) - 1) * input_scaling
        w = 2 * torch.rand(units, units, generator=generator) - 1
        size = (
            torch.linalg.matrix_norm(w, 2)
            if scaling == "norm"
            else torch.linalg.eigvals(w).abs().max()
        )
        self.register_buffer("w_in", w_in)
        self.register_buffer("w_hat", w / size)  # unit norm (or radius); times rho / k per graph
        self.w_in: torch.Tensor
        self.w_hat: torch.Tensor
        self.rho, self.units, self.in_features = rho, units, in_features
        self.tol, self.max_iters = tol, max_iters
        self.last_stats: dict[str, Any] = {}

    def step(self, x: torch.Tensor, u: torch.Tensor, graph: Graph) -> torch.Tensor:
        """One application of the reservoir map to states ``x`` ``(..., N, units)``."""
        scale = self.rho / max(graph.max_degree(), 1)
        w_hat = self.w_hat.to(x.dtype) * scale
        drive = u @ self.w_in.to(u.dtype).T
        return torch.tanh(drive + graph.propagate(x) @ w_hat.T)

    def forward(self, u: torch.Tensor, graph: Any, x0: torch.Tensor | None = None) -> torch.Tensor:
        g = as_graph(graph)
        single = u.ndim == 2
        uu = u[None] if single else u
        z0 = (
            uu.new_zeros(*uu.shape[:-1], self.units)
            if x0 is None
            else x0.reshape(*uu.shape[:-1], self.units)
        )
        deq = DEQ(lambda z, v: self.step(z, v, g), max_iters=self.max_iters, tol=self.tol)
        with torch.no_grad():
            x = deq(uu, z0)
        self.last_stats = dict(deq.last_stats)
        return x[0] if single else x


def ridge_readout(features: torch.Tensor, targets: torch.Tensor, ridge: float = 1e-3) -> nn.Linear:
    r"""A linear readout fitted by ridge regression in closed form:
    $W = Y^\top \tilde H (\tilde H^\top \tilde H + \lambda I)^{-1}$ on features with a bias
    column. ``targets`` are ``(n, out)`` (one-hot for classification) or class ids ``(n,)``."""
    if targets.ndim == 1:
        targets = nn.functional.one_hot(targets.long()).to(features.dtype)
    h = torch.cat([features, features.new_ones(len(features), 1)], 1)
    gram = h.T @ h + ridge * torch.eye(h.shape[1], dtype=h.dtype, device=h.device)
    coef = torch.linalg.solve(gram, h.T @ targets.to(h.dtype))  # (F + 1, out)
    lin = nn.Linear(features.shape[1], targets.shape[1]).to(features.dtype)
    with torch.no_grad():
        lin.weight.copy_(coef[:-1].T)
        lin.bias.copy_(coef[-1])
    return lin


class FDGNN(nn.Module):
    r"""FDGNN (Gallicchio & Micheli 2020): ``num_layers`` stacked :class:`GraphReservoir` layers
    (layer $l$ is driven by layer $l-1$'s fixed point), node embeddings the concatenation of
    all layers' fixed points, and a trained linear readout: ``fit(...)`` solves ridge
    regression in closed form (the only training), then ``forward`` predicts.

    ``pool=None`` classifies nodes; ``"sum"``/``"mean"`` classifies whole graphs (pass a list
    of ``(graph, x)`` pairs to :meth:`embed_graphs`).

    References:
        C. Gallicchio, A. Micheli, "Fast and deep graph neural networks", AAAI 2020.
    """

    def __init__(
        self, in_features: int, units: int, num_layers: int = 2, *, rho: float = 0.9,
        input_scaling: float = 1.0, ridge: float = 1e-3, pool: str | None = None,
        seed: int = 0, tol: float = 1e-6,
    ) -> None:  # fmt: skip
        super().__init__()
        if pool not in (None, "sum", "mean"):
            raise ValueError(f"FDGNN: `pool` must be None, 'sum' or 'mean', got {pool!r}.")
        gen = torch.Generator().manual_seed(seed)
        self.reservoirs = nn.ModuleList(
            GraphReservoir(
                in_features if i == 0 else units,
                units,
                rho=rho,
                input_scaling=input_scaling,
                generator=gen,
                tol=tol,
            )  # fmt: skip
            for i in range(num_layers)
        )
        self.ridge, self.pool = ridge, pool
        self.readout: nn.Linear | None = None

    def embed(self, x: torch.Tensor, graph: Any) -> torch.Tensor:
        """Node embeddings ``(..., N, num_layers * units)`` (pooled over nodes with ``pool``)."""
        g = as_graph(graph)
        states, h = [], x
        for res in self.reservoirs:
            h = res(h, g)
            states.append(h)
        z = torch.cat(states, -1)
        if self.pool == "sum":
            return z.sum(-2)
        return z.mean(-2) if self.pool == "mean" else z

    def embed_graphs(self, data: Sequence[tuple[Any, torch.Tensor]]) -> torch.Tensor:
        """Pooled embeddings ``(len(data), num_layers * units)`` of ``(graph, x)`` pairs."""
        return torch.stack([self.embed(x, g) for g, x in data])

    def fit(self, features: torch.Tensor, targets: torch.Tensor) -> FDGNN:
        """Fit the readout on embeddings (from :meth:`embed`) and targets by ridge regression."""
        self.readout = ridge_readout(features, targets, self.ridge)
        return self

    def forward(self, x: torch.Tensor, graph: Any) -> torch.Tensor:
        if self.readout is None:
            raise RuntimeError("FDGNN: the readout is not fitted; call fit(embeddings, y) first.")
        return self.readout(self.embed(x, graph))
