r"""Graph neural diffusion (GRAND, Chamberlain et al. 2021): $\dot X = (A(X) - I) X$ with a
row-stochastic diffusivity $A$ (attention, or the random walk $D^{-1}W$), linear (``A`` fixed
at the start) or nonlinear (``A`` recomputed from $X(t)$), explicit or implicit solvers."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import torchnde as tn

from ..models._config import SolveConfig
from .graph import Graph, as_graph, segment_softmax

__all__ = ["GRAND", "DiffusionField", "GraphAttention"]


class GraphAttention(nn.Module):
    r"""GRAND's diffusivity: scaled dot-product attention over the incoming edges,
    $a_{ij} = \operatorname{softmax}_{j \to i}\big((W_K x_j)^\top W_Q x_i / d_k\big)$, averaged
    over ``heads``; the weights into every node sum to one (row-stochastic). Returns edge
    weights ``(..., E)`` for features ``(..., N, C)``."""

    def __init__(self, channels: int, key_dim: int = 16, heads: int = 1) -> None:
        super().__init__()
        self.heads, self.key_dim = heads, key_dim
        self.query = nn.Linear(channels, heads * key_dim)
        self.key = nn.Linear(channels, heads * key_dim)

    def forward(self, x: torch.Tensor, graph: Graph) -> torch.Tensor:
        q = self.query(x).unflatten(-1, (self.heads, self.key_dim))  # (..., N, H, K)
        k = self.key(x).unflatten(-1, (self.heads, self.key_dim))
        score = (q.index_select(-3, graph.dst) * k.index_select(-3, graph.src)).sum(-1)
        score = score / self.key_dim  # (..., E, H)
        return segment_softmax(score.transpose(-1, -2), graph.dst, graph.num_nodes).mean(-2)


class DiffusionField(nn.Module):
    r"""The diffusion vector field $f(t, X) = (A - I)X = \sum_{j \to i} a_{ij}(x_j - x_i)$ for
    row-stochastic edge weights $a$ (they sum to one into each node).

    ``attention=None`` diffuses with the random walk $D^{-1}W$ of the graph; else $A$ is
    ``attention(X, graph)`` (a :class:`GraphAttention`): recomputed from the state at every
    evaluation when ``nonlinear``, else passed in as ``args`` (the weights at the start).
    """

    def __init__(
        self, graph: Any, attention: nn.Module | None = None, nonlinear: bool = False
    ) -> None:
        super().__init__()
        self.graph = as_graph(graph)
        self.attention = attention
        self.nonlinear = nonlinear
        if nonlinear and attention is None:
            raise ValueError(
                "DiffusionField: nonlinear diffusion recomputes the attention from X: pass "
                "`attention=GraphAttention(channels)`."
            )

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The edge weights $a$ at state ``x``: ``(E,)`` or ``(..., E)``."""
        if self.attention is None:
            return self.graph.rw_weight(x.dtype)
        return self.attention(x, self.graph)

    def forward(self, t: torch.Tensor, x: torch.Tensor, args: Any = None) -> torch.Tensor:
        w = self.weights(x) if self.nonlinear or args is None else args
        return self.graph.propagate(x, w) - x * _inflow(w, self.graph)[..., None]


def _inflow(w: torch.Tensor, graph: Graph) -> torch.Tensor:
    """Row sums of A (one for nodes with incoming edges, zero for isolated nodes)."""
    out = w.new_zeros(*w.shape[:-1], graph.num_nodes)
    return out.index_add(-1, graph.dst, w)


class GRAND(nn.Module):
    r"""GRAND (Chamberlain et al. 2021): encode node features, diffuse them by
    $\dot X = (A(X) - I) X$ from $0$ to ``t1``, decode:
    ``decoder(X(t1))`` with ``X(0) = encoder(dropout(x))``.

    Args:
        graph: a :class:`Graph`, an ``edge_index`` or a torch_geometric ``Data``.
        in_features, hidden, out_features: encoder ``Linear(in, hidden)``, decoder
            ``Linear(hidden, out)``.
        t1: the diffusion time.
        attention: ``True`` (default) learns the diffusivity by attention; ``False`` diffuses
            with the random walk $D^{-1}W$ of the graph.
        nonlinear: recompute the attention from $X(t)$ (GRAND-nl) instead of fixing it at
            $X(0)$ (GRAND-l, the default).
        heads, key_dim: of the attention.
        dropout: on the input features.
        solver, controller, rtol, atol, dt0, adjoint, max_steps: the solve. Explicit
            (default ``Dopri5``) or implicit (``ImplicitEuler()``, ``Kvaerno5()``, ...): the
            implicit solvers form the dense Jacobian of the whole state
            (``(N·hidden)²`` entries), so they suit graphs of up to a few thousand state
            entries.

    ``forward(x)`` takes ``(num_nodes, in_features)`` or ``(batch, num_nodes, in_features)``.

    References:
        B. P. Chamberlain, J. Rowbottom, M. Gorinova, S. Webb, E. Rossi, M. M. Bronstein,
        "GRAND: Graph neural diffusion", ICML 2021.
    """

    def __init__(
        self, graph: Any, in_features: int, hidden: int, out_features: int, t1: float = 1.0, *,
        attention: bool = True, nonlinear: bool = False, heads: int = 1, key_dim: int = 16,
        dropout: float = 0.0, solver: Any = None, controller: Any = None,
        rtol: float | None = None, atol: float | None = None, dt0: float | None = None,
        adjoint: Any = None, max_steps: int = 4096,
    ) -> None:  # fmt: skip
        super().__init__()
        if not t1 > 0:
            raise ValueError(f"GRAND: the diffusion time `t1` must be positive, got {t1!r}.")
        self.encoder = nn.Linear(in_features, hidden)
        self.decoder = nn.Linear(hidden, out_features)
        att = GraphAttention(hidden, key_dim, heads) if attention else None
        self.field = DiffusionField(graph, att, nonlinear)
        self.dropout = nn.Dropout(dropout)
        self.t1 = float(t1)
        self.config = SolveConfig(
            "GRAND", tn.Dopri5() if solver is None else solver, adjoint, rtol, atol, controller,
            dt0, max_steps,
        )  # fmt: skip
        self.last_stats: dict[str, Any] = {}

    def diffuse(self, x0: torch.Tensor, ts: torch.Tensor | None = None) -> torch.Tensor:
        """Solve the diffusion from hidden features ``x0`` ``(..., N, hidden)``: ``X(t1)``, or
        ``X`` at ``ts`` (time first)."""
        single = x0.ndim == 2
        y0 = x0[None] if single else x0
        args = None if self.field.nonlinear else self.field.weights(y0)
        saveat = tn.SaveAt(t1=True) if ts is None else tn.SaveAt(ts=ts)
        t0, t1 = (0.0, self.t1) if ts is None else (ts[0], ts[-1])
        sol = self.config.solve(self.field, t0, t1, y0, saveat, args)
        self.last_stats = dict(sol.stats)
        ys = sol.ys[-1] if ts is None else sol.ys
        return ys.select(-3, 0) if single else ys

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.diffuse(self.encoder(self.dropout(x))))
