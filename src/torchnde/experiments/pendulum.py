r"""The ideal pendulum: a Hamiltonian neural network against a baseline neural ODE of the same
size (Greydanus, Dzamba, Yosinski 2019, Sec. 4, "Task 2: ideal pendulum").

Data (:func:`torchnde.data.mechanics.generate_pendulum`, as the paper): $H = 6(1 - \cos q) +
p^2/2$, ``num_traj`` trajectories of 75 points over $[0, 5]$ from initial states at radius
1.3-2.3 of the phase plane, Gaussian noise 0.1 on the observed states; half the trajectories
train, the rest are never seen. Both models map the state $x = (q, p)$ through the same MLP
body (two tanh layers of ``hidden`` units): the HNN's head is one scalar $H_\theta$ and its
field $J \nabla H_\theta$ (:class:`~torchnde.models.HNN`); the baseline's head is the two
components of $\dot x$ directly. Both are trained on the same batches to the true time
derivatives, with the squared error (the paper's objective).

Evaluation: from ``num_eval`` unseen initial states (same distribution, another seed), both
learned fields and the true one are solved over ``periods`` periods of the slowest of them
(``Dopri5`` at ``rtol``/``atol``; the truth with ``Dopri8`` at 1e-10). Metrics under ``eval``:
``hnn_energy_drift`` and ``node_energy_drift`` (the mean absolute change of the *true* energy
along the rollout, over the saved times and the states), ``hnn_traj_mse`` and
``node_traj_mse`` (against the true trajectories). The paper: the baseline's energy drifts
while the HNN's stays near its initial value (Fig. 3).

``full=true``: the paper's scale (hidden 200, 2000 full-batch steps at lr 1e-3 and 50 test
states; the paper integrates at rtol 1e-12, we use 1e-9).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.mechanics import (
    _reference,
    _ring,
    generate_pendulum,
    pendulum_dynamics,
    pendulum_energy,
    pendulum_period,
)
from ..models import HNN, Autonomous
from . import harness
from ._mechanics import (
    check_ints,
    check_positive,
    energy_drift,
    energy_drift_panel,
    float64_rollout,
    smaller_verdict,
    trajectory_mse,
)
from ._models import mlp
from .config import ExperimentConfig, check
from .harness import Headline, StepOutput

__all__ = ["Config", "Task"]


@dataclass
class Config(ExperimentConfig):
    """Options of ``torchnde run pendulum``."""

    out: Path = field(default=Path("runs/pendulum"), metadata={"help": "run folder"})
    epochs: int = field(default=500, metadata={"help": "passes over the training points"})
    batch_size: int = field(default=256, metadata={"help": "points per step (global)"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate (cosine decay)"})
    hidden: int = field(default=64, metadata={"help": "hidden width of both MLPs"})
    num_traj: int = field(default=50, metadata={"help": "trajectories (half train)"})
    noise_std: float = field(default=0.1, metadata={"help": "noise on the observed states"})
    num_eval: int = field(default=8, metadata={"help": "unseen initial states rolled out"})
    periods: int = field(default=20, metadata={"help": "rollout length in periods"})
    num_save: int = field(default=400, metadata={"help": "saved times along the rollout"})
    rtol: float = field(default=1e-7, metadata={"help": "rtol of the rollouts (Dopri5)"})
    atol: float = field(default=1e-9, metadata={"help": "atol of the rollouts"})
    data_seed: int = field(default=0, metadata={"help": "seed of the data generator"})
    full: bool = field(
        default=False, metadata={"help": "paper scale: hidden 200, 2000 steps, 50 test states"}
    )

    def __post_init__(self) -> None:
        if self.full:
            self.hidden, self.num_eval, self.rtol, self.atol = 200, 50, 1e-9, 1e-11
            self.batch_size, self.epochs = 1875, 2000  # full batch: 25 trajectories x 75
        super().__post_init__()
        check_ints(self, ("hidden", "num_eval", "periods", "num_save"), 1)
        check_ints(self, ("data_seed",), 0)
        check_ints(self, ("num_traj",), 2)
        check(
            isinstance(self.noise_std, (int, float)) and self.noise_std >= 0,
            "noise_std",
            "a number >= 0",
            self.noise_std,
        )
        check_positive(self, ("rtol", "atol"))


class Task(harness.Task):
    name = "pendulum"
    title = "ideal pendulum: Hamiltonian neural network vs a baseline neural ODE"
    paper = "Greydanus, Dzamba, Yosinski 2019, Hamiltonian Neural Networks (NeurIPS)"
    Config = Config

    MODELS = ("hnn", "node")

    def setup(self) -> nn.Module:
        cfg = self.config
        _, x, dxdt = generate_pendulum(cfg.num_traj, noise_std=cfg.noise_std, seed=cfg.data_seed)
        n_train = cfg.num_traj // 2
        self.x = x[:, :n_train].reshape(-1, 2).float().to(self.device)
        self.dxdt = dxdt[:, :n_train].reshape(-1, 2).float().to(self.device)
        h = cfg.hidden
        return nn.ModuleDict(
            {
                "hnn": HNN(mlp([2, h, h, 1], nn.Tanh)),
                "node": Autonomous(mlp([2, h, h, 2], nn.Tanh)),
            }
        ).to(self.device)

    @property
    def num_train(self) -> int:
        return self.x.shape[0]

    def step(self, model: Any, index: torch.Tensor) -> StepOutput:
        index = index.to(self.device)
        x, target = self.x[index], self.dxdt[index]
        t = torch.zeros((), device=self.device)
        logs = {f"loss_{k}": ((model[k](t, x) - target) ** 2).mean(1) for k in self.MODELS}
        return StepOutput(sum(logs.values()), logs)  # type: ignore[arg-type]

    def evaluate(self, model: Any) -> dict[str, Any]:
        cfg = self.config
        rng = np.random.default_rng(cfg.data_seed + 1_000_003)
        x0 = _ring(cfg.num_eval, rng, (1.3, 2.3))  # float64, unseen
        period = max(pendulum_period(float(e)) for e in pendulum_energy(x0))
        ts = torch.linspace(0.0, cfg.periods * period, cfg.num_save, dtype=torch.float64)
        truth = _reference(pendulum_dynamics, x0, ts)
        self.rollouts: dict[str, torch.Tensor] = {"truth": truth}
        metrics: dict[str, Any] = {"rollout_t1": float(ts[-1]), "rollout_period": period}
        for key in self.MODELS:
            ys, status = float64_rollout(model[key], x0, ts, cfg.rtol, cfg.atol)
            self.rollouts[key] = ys
            metrics[f"{key}_energy_drift"] = energy_drift(pendulum_energy, ys, x0)
            metrics[f"{key}_traj_mse"] = trajectory_mse(ys, truth)
            metrics[f"{key}_status"] = status
        with torch.no_grad():
            t = torch.zeros((), device=self.device)
            for key in self.MODELS:
                err = ((model[key](t, self.x) - self.dxdt) ** 2).mean()
                metrics[f"{key}_train_mse"] = float(err)
        return metrics

    @classmethod
    def headline(cls, metrics: dict[str, Any]) -> list[Headline]:
        eh, en = metrics["hnn_energy_drift"], metrics["node_energy_drift"]
        mh, mn = metrics["hnn_traj_mse"], metrics["node_traj_mse"]
        periods = metrics["rollout_t1"] / metrics["rollout_period"]
        energy = smaller_verdict(eh, en, "the HNN", "the baseline", "drift")
        traj = smaller_verdict(mh, mn, "the HNN", "the baseline", "trajectory MSE")
        return [
            Headline(
                f"true-energy drift over {periods:.0f} periods, HNN vs NODE",
                f"{eh:.3g} vs {en:.3g}",
                "the baseline's energy drifts, the HNN's stays near its initial value "
                "(Fig. 3; pendulum test energy MSE 0.043 vs 0.39, Table 1)",
                energy,
            ),
            Headline(
                "trajectory MSE on unseen initial states, HNN vs NODE",
                f"{mh:.3g} vs {mn:.3g}",
                "the HNN's trajectories stay closer to the truth over long rollouts (Fig. 3)",
                traj,
            ),
        ]

    def figure(self, model: Any, metrics: dict[str, Any]) -> Any:
        from .report import new_figure

        fig = new_figure(12, 4.4)
        ax_phase, ax_energy = fig.subplots(1, 2)
        colours = {"truth": "k", "hnn": "tab:blue", "node": "tab:red"}
        ts = np.linspace(0, metrics["eval"]["rollout_t1"], self.config.num_save)
        for key, ys in self.rollouts.items():
            y = ys[:, 0].numpy()
            ax_phase.plot(y[:, 0], y[:, 1], color=colours[key], lw=1, label=key.upper())
        ax_phase.set(xlabel="q", ylabel="p", title="rollout of one unseen state", aspect="equal")
        ax_phase.legend(fontsize="small")
        energy_drift_panel(ax_energy, ts, self.rollouts, pendulum_energy, colours)
        fig.suptitle("torchnde: ideal pendulum, HNN vs baseline NODE (Greydanus et al. 2019)")
        return fig
