r"""Dynamic graph prediction: a graph neural ODE forecasting Kuramoto oscillators on a random
geometric graph, against the static baseline of predicting the last observed state.

The data (:func:`torchnde.data.generate_kuramoto`) are trajectories of
$\dot\theta_i = \omega_i + \frac{K}{\deg_i}\sum_{j\sim i}\sin(\theta_j - \theta_i)$ on one
seeded random geometric graph, solved by torchnde in float64, observed as
$(\cos\theta_i, \sin\theta_i)$ at equally spaced times; the natural frequencies $\omega_i$
are known node features. Trajectories are split into training and test ones. The model is a
data-controlled GDE (Poli et al. 2020): $\dot X = f_\theta(X, \omega, G)$ with a GraphSAGE
layer and a node-wise MLP, trained on windows of ``horizon + 1`` observations (solved from each
window's first state). Test: from the last observed state of each test trajectory (time index
``num_times - horizon - 1``), forecast the last ``horizon`` observations; the headline is
the forecast's mean squared error against predicting the last observed state.
``full=true``: 100 nodes, 64 trajectories, a longer horizon.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..graphs import GDE, GraphVectorField, Pointwise, SAGEConv
from . import harness
from .config import ODEConfig, check, is_int
from .harness import Headline, StepOutput, ode_solver_setup

__all__ = ["Config", "Task"]

ODE_METHODS = next(f for f in fields(ODEConfig) if f.name == "method").metadata["choices"]


@dataclass
class Config(ODEConfig):
    """Options of ``torchnde run graph-dynamics``."""

    out: Path = field(default=Path("runs/graph-dynamics"), metadata={"help": "run folder"})
    epochs: int = field(default=20, metadata={"help": "passes over the training windows"})
    batch_size: int = field(default=32, metadata={"help": "windows per step (global)"})
    lr: float = field(default=3e-3, metadata={"help": "Adam learning rate (cosine decay)"})
    checkpoint_every: int = field(default=10, metadata={"help": "checkpoint every N epochs"})
    method: str = field(
        default="rk4", metadata={"help": "ODE solver of the GDE", "choices": ODE_METHODS}
    )
    step_size: float = field(default=0.05, metadata={"help": "step of fixed-step methods"})
    num_nodes: int = field(default=40, metadata={"help": "oscillators (graph nodes)"})
    num_traj: int = field(default=24, metadata={"help": "trajectories (random initial phases)"})
    num_test: int = field(default=6, metadata={"help": "of them held out for testing"})
    num_times: int = field(default=41, metadata={"help": "observations per trajectory"})
    t1: float = field(default=4.0, metadata={"help": "length of a trajectory"})
    radius: float = field(default=0.3, metadata={"help": "radius of the geometric graph"})
    coupling: float = field(default=2.0, metadata={"help": "Kuramoto coupling K"})
    horizon: int = field(default=10, metadata={"help": "forecast (and training window) steps"})
    hidden: int = field(default=64, metadata={"help": "hidden width of the vector field"})
    data_seed: int = field(default=0, metadata={"help": "seed of the graph and the data"})
    full: bool = field(
        default=False, metadata={"help": "larger scale: 100 nodes, 64 trajectories, horizon 20"}
    )

    def __post_init__(self) -> None:
        if self.full:
            for key, default, big in (
                ("num_nodes", 40, 100), ("num_traj", 24, 64), ("num_test", 6, 16),
                ("num_times", 41, 81), ("t1", 4.0, 8.0), ("horizon", 10, 20),
                ("radius", 0.3, 0.2),
            ):  # fmt: skip
                if getattr(self, key) == default:
                    setattr(self, key, big)
        super().__post_init__()
        for key in ("num_nodes", "hidden", "horizon"):
            v = getattr(self, key)
            check(is_int(v) and v >= 1, key, "an int >= 1", v)
        check(
            is_int(self.num_test) and 1 <= self.num_test < self.num_traj,
            "num_test",
            f"an int in [1, num_traj - 1] (num_traj={self.num_traj})",
            self.num_test,
        )
        check(
            is_int(self.num_times) and self.num_times > self.horizon + 1,
            "num_times",
            f"an int > horizon + 1 = {self.horizon + 1}",
            self.num_times,
        )
        for key in ("t1", "radius", "coupling"):
            v = getattr(self, key)
            check(isinstance(v, float) and v > 0, key, "a positive number", v)


class Task(harness.Task):
    name = "graph-dynamics"
    title = "graph neural ODE forecasting Kuramoto oscillators on a random geometric graph"
    paper = (
        "Poli, Massaroli, Park, Yamashita, Asama, Park 2020, Graph Neural Ordinary "
        "Differential Equations (dynamic graph prediction)"
    )
    Config = Config

    def setup(self) -> nn.Module:
        from ..data.graphs import generate_kuramoto

        cfg = self.config
        data = generate_kuramoto(
            cfg.num_nodes, cfg.num_traj, cfg.num_times, cfg.t1, cfg.radius, cfg.coupling,
            cfg.data_seed,
        )  # fmt: skip
        self.data = data
        self.graph = data.graph.to(self.device)
        states = data.states.to(self.device)
        self.train_states, self.test_states = states[cfg.num_test :], states[: cfg.num_test]
        self.t = data.t.to(self.device)
        h = cfg.horizon
        self.window_t = self.t[: h + 1] - self.t[0]
        per_traj = cfg.num_times - h
        self.windows = [(i, s) for i in range(len(self.train_states)) for s in range(per_traj)]
        solver, controller, dt0 = ode_solver_setup(cfg)
        hid = cfg.hidden
        layers = [
            SAGEConv(3, hid),
            Pointwise(nn.Sequential(nn.Linear(hid, hid), nn.Tanh(), nn.Linear(hid, 2))),
        ]
        field_ = GraphVectorField(layers, self.graph, static=data.static.to(self.device))
        return GDE(field_, float(self.window_t[-1]), solver=solver, controller=controller,
                   dt0=dt0)  # fmt: skip

    @property
    def num_train(self) -> int:
        return len(self.windows)

    def step(self, model: Any, index: torch.Tensor) -> StepOutput:
        h = self.config.horizon
        batch = torch.stack(
            [self.train_states[i, s : s + h + 1] for i, s in (self.windows[j] for j in index)]
        )  # (B, h + 1, N, 2)
        pred = model(batch[:, 0], ts=self.window_t)  # (h + 1, B, N, 2)
        loss = ((pred[1:] - batch[:, 1:].transpose(0, 1)) ** 2).mean(dim=(0, 2, 3))
        return StepOutput(loss, nfe={"nfe": float(model.last_stats["num_fevals"])})

    def evaluate(self, model: Any) -> dict[str, Any]:
        cfg = self.config
        obs = cfg.num_times - cfg.horizon - 1
        last = self.test_states[:, obs]  # (num_test, N, 2)
        target = self.test_states[:, obs + 1 :]  # (num_test, horizon, N, 2)
        with torch.no_grad():
            pred = model(last, ts=self.window_t).transpose(0, 1)[:, 1:]
        self.forecast = pred
        err = ((pred - target) ** 2).mean(dim=(0, 2, 3))
        static = ((last[:, None] - target) ** 2).mean(dim=(0, 2, 3))
        return {
            "gde_forecast_mse": float(err.mean()),
            "static_baseline_mse": float(static.mean()),
            "gde_forecast_mse_by_step": [float(e) for e in err],
            "static_baseline_mse_by_step": [float(e) for e in static],
            "test_nfe": float(model.last_stats["num_fevals"]),
            "num_nodes": self.graph.num_nodes,
            "num_edges": self.graph.num_edges,
            "forecast_time": float(self.window_t[-1]),
        }

    @classmethod
    def headline(cls, metrics: dict[str, Any]) -> list[Headline]:
        mse, base = metrics["gde_forecast_mse"], metrics["static_baseline_mse"]
        ratio = base / mse if mse > 0 else float("inf")
        if ratio >= 2:
            verdict = f"yes (criterion: at least 2x below the static baseline): {ratio:.3g}x below"
        elif mse < base:
            verdict = f"partly: {ratio:.3g}x below the static baseline (criterion 2x)"
        else:
            verdict = "no: the GDE forecast is no better than repeating the last state"
        return [
            Headline(
                f"forecast MSE over {metrics['forecast_time']:.3g} time units, GDE vs the last "
                "observed state",
                f"{mse:.3g} vs {base:.3g}",
                "GDEs forecast dynamics on graphs better than static baselines (Poli et al. "
                "2020, dynamic graph prediction; no number for this system)",
                verdict,
            )
        ]

    def figure(self, model: Any, metrics: dict[str, Any]) -> Any:
        from .report import new_figure

        cfg, ev = self.config, metrics["eval"]
        fig = new_figure(12, 4.2)
        ax_traj, ax_err = fig.subplots(1, 2)
        t = self.t.cpu().numpy()
        obs = cfg.num_times - cfg.horizon - 1
        truth = self.test_states[0].cpu().numpy()  # (T, N, 2)
        fc = self.forecast[0].cpu().numpy()
        for n, colour in zip(range(3), ("tab:blue", "tab:orange", "tab:green")):
            ax_traj.plot(t, truth[:, n, 1], color=colour, lw=1.2, label=f"node {n}")
            ax_traj.plot(t[obs + 1 :], fc[:, n, 1], color=colour, ls="--", lw=1.5)
        ax_traj.axvline(t[obs], color="k", lw=0.8, ls=":")
        ax_traj.set(xlabel="t", ylabel=r"$\sin\theta$", title="test trajectory (dashed: GDE)")
        ax_traj.legend(fontsize="small")
        steps = range(1, cfg.horizon + 1)
        ax_err.plot(steps, ev["gde_forecast_mse_by_step"], marker="o", label="GDE")
        ax_err.plot(steps, ev["static_baseline_mse_by_step"], marker="s", label="last state")
        ax_err.set(xlabel="forecast step", ylabel="MSE", title="forecast error", yscale="log")
        ax_err.legend()
        fig.suptitle("torchnde: graph neural ODE forecasting Kuramoto oscillators")
        return fig
