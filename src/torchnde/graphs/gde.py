r"""Graph neural ordinary differential equations (Poli et al. 2020): graph layers as the vector
field of node features, on static and time-varying graphs, solved by :func:`torchnde.solve`."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

import torchnde as tn

from ..models._config import SolveConfig, describe
from .graph import Graph, as_graph

__all__ = ["GDE", "GraphSequence", "GraphVectorField"]


class GraphSequence:
    r"""A piecewise-constant graph: ``graphs[k]`` on $[s_{k-1}, s_k)$ for the increasing
    ``switch_times`` $s_0 < s_1 < \dots$ (one fewer than the graphs). A :class:`GDE` on it
    steps exactly onto the switch times (they become the controller's ``jump_ts``)."""

    def __init__(self, graphs: Sequence[Any], switch_times: Any) -> None:
        self.graphs = [as_graph(g, "graphs[...]") for g in graphs]
        ts = torch.as_tensor(switch_times, dtype=torch.float64).reshape(-1)
        if len(ts) != len(self.graphs) - 1:
            raise ValueError(
                f"GraphSequence: {len(self.graphs)} graphs need {len(self.graphs) - 1} "
                f"switch_times (one between each pair), got {len(ts)}."
            )
        if len(ts) > 1 and not bool((ts[1:] > ts[:-1]).all()):
            raise ValueError(
                f"GraphSequence: `switch_times` must be strictly increasing, got {ts.tolist()}."
            )
        if len({g.num_nodes for g in self.graphs}) > 1:
            raise ValueError(
                "GraphSequence: every graph must have the same nodes, got num_nodes "
                f"{[g.num_nodes for g in self.graphs]}."
            )
        self.switch_times = ts

    def at(self, t: Any) -> Graph:
        """The graph in force at time ``t`` (a scalar)."""
        t_ = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
        if t_.numel() != 1:
            raise NotImplementedError(
                "GraphSequence: a time-varying graph needs one time for the whole batch; "
                "use a joint (per_sample=False) controller."
            )
        k = int(torch.searchsorted(self.switch_times, t_.cpu(), right=True)[0])
        return self.graphs[k]


class GraphVectorField(nn.Module):
    r"""$f(t, X) = \ell_L(\sigma(\dots \sigma(\ell_1([X, S], G(t)))\dots), G(t))$: graph layers
    (:class:`~torchnde.graphs.GCNConv`, :class:`~torchnde.graphs.SAGEConv`,
    :class:`~torchnde.graphs.GATConv`, anything called ``layer(x, graph)``) with activation
    $\sigma$ between them, on node features ``X`` of shape ``(batch, num_nodes, channels)``.

    ``graph`` is a static graph (a :class:`Graph`, an ``edge_index`` or a torch_geometric
    ``Data``), a :class:`GraphSequence`, or a function ``t -> graph``. ``static`` are node
    features ``(num_nodes, s)`` concatenated to the state before the first layer (the
    data-controlled GDE); the first layer then takes ``channels + s`` inputs.
    """

    def __init__(
        self, layers: Sequence[nn.Module], graph: Any, activation: nn.Module | None = None,
        static: torch.Tensor | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        if not layers:
            raise ValueError("GraphVectorField: `layers` must hold at least one graph layer.")
        self.layers = nn.ModuleList(layers)
        self.activation = nn.Tanh() if activation is None else activation
        if isinstance(graph, GraphSequence) or (
            callable(graph) and not isinstance(graph, (Graph, torch.Tensor))
        ):
            self.graph: Any = graph
        else:
            self.graph = as_graph(graph)
        self.static = static

    @property
    def jump_ts(self) -> torch.Tensor | None:
        """The times the graph switches (a :class:`GraphSequence`'s), else ``None``."""
        return self.graph.switch_times if isinstance(self.graph, GraphSequence) else None

    def graph_at(self, t: Any) -> Graph:
        if isinstance(self.graph, Graph):
            return self.graph
        if isinstance(self.graph, GraphSequence):
            return self.graph.at(t)
        return as_graph(self.graph(t), "graph(t)")

    def forward(self, t: torch.Tensor, x: torch.Tensor, args: Any = None) -> torch.Tensor:
        g = self.graph_at(t)
        h = x
        if self.static is not None:
            s = self.static.to(x.dtype)
            h = torch.cat([h, s.expand(*x.shape[:-1], s.shape[-1])], -1)
        for i, layer in enumerate(self.layers):
            h = layer(h, g)
            if i < len(self.layers) - 1:
                h = self.activation(h)
        return h


class GDE(nn.Module):
    r"""A graph neural ODE (Poli et al. 2020): $\dot X = f_\theta(t, X, G(t))$ on node features
    from $t_0$ to $t_1$, returning $X(t_1)$ (or $X$ at ``ts``, time first:
    ``(len(ts), *x.shape)``).

    Args:
        vector_field: a :class:`GraphVectorField` (or any ``f(t, x, args)`` module).
        t1, t0: the integration interval (default ``[0, 1]``).
        solver, controller, rtol, atol, dt0, adjoint, max_steps: the solve, as in
            :class:`torchnde.models.NeuralODE` (default ``Tsit5`` with a PID controller);
            any solver and adjoint of torchnde works, implicit ones included.

    ``x`` is ``(num_nodes, channels)`` (one graph) or ``(batch, num_nodes, channels)``.
    A :class:`GraphSequence` graph puts its switch times into the controller's ``jump_ts``.
    ``last_stats`` holds the last solve's statistics.

    References:
        M. Poli, S. Massaroli, J. Park, A. Yamashita, H. Asama, J. Park, "Graph neural
        ordinary differential equations", AAAI DLGMA workshop 2020 (arXiv:1911.07532).
    """

    def __init__(
        self, vector_field: Callable[..., torch.Tensor], t1: float = 1.0, *, t0: float = 0.0,
        solver: Any = None, controller: Any = None, rtol: float | None = None,
        atol: float | None = None, dt0: float | None = None, adjoint: Any = None,
        max_steps: int = 4096,
    ) -> None:  # fmt: skip
        super().__init__()
        if not callable(vector_field):
            raise TypeError(
                f"GDE: `vector_field` must be a module f(t, x, args), got {describe(vector_field)}."
            )
        if not float(t1) > float(t0):
            raise ValueError(f"GDE: `t1` must be greater than `t0`, got t0={t0!r}, t1={t1!r}.")
        self.vector_field = vector_field
        self.t0, self.t1 = float(t0), float(t1)
        self.config = SolveConfig("GDE", solver, adjoint, rtol, atol, controller, dt0, max_steps)
        jumps = getattr(vector_field, "jump_ts", None)
        if isinstance(jumps, torch.Tensor):
            ctrl = copy.copy(self.config.controller)
            old = ctrl.jump_ts
            ctrl.jump_ts = jumps if old is None else torch.cat([old.to(jumps), jumps])
            self.config.controller = ctrl
        self.last_stats: dict[str, Any] = {}

    def forward(
        self, x: torch.Tensor, ts: torch.Tensor | None = None, args: Any = None
    ) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim not in (2, 3):
            raise ValueError(
                "GDE: `x` must be node features (num_nodes, channels) or (batch, num_nodes, "
                f"channels), got {describe(x)}."
            )
        single = x.ndim == 2
        y0 = x[None] if single else x
        saveat = tn.SaveAt(t1=True) if ts is None else tn.SaveAt(ts=ts)
        t1 = self.t1 if ts is None else ts[-1]
        t0 = self.t0 if ts is None else ts[0]
        sol = self.config.solve(self.vector_field, t0, t1, y0, saveat, args)
        self.last_stats = dict(sol.stats)
        ys = sol.ys
        if ts is None:
            ys = ys[-1]
            return ys[0] if single else ys
        return ys[:, 0] if single else ys

    def extra_repr(self) -> str:
        return f"t0={self.t0}, t1={self.t1}, {self.config!r}"
