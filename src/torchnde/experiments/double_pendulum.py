r"""The double pendulum: a Lagrangian neural network against a baseline neural ODE of the same
size (Cranmer, Greydanus, Hoyer, Battaglia, Spergel, Ho 2020, Sec. 6).

Data (:func:`torchnde.data.mechanics.generate_double_pendulum`): unit masses and lengths,
$g = 9.8$, state $x = (\theta_1, \theta_2, \omega_1, \omega_2)$, ``num_traj`` trajectories
from angles uniform in $\pm$ ``angle`` and angular velocities in $\pm 1$, solved at
reference tolerance; the training pairs are the states and their true accelerations (the
paper trains on accelerations). Both models share one MLP body (two softplus layers of
``hidden`` units, softplus for the LNN's second derivatives) and predict only the
accelerations, so the only difference is the structure: the LNN's head is one scalar
$L_\theta(q, \dot q)$ (plus the fixed $\tfrac12 \lVert \dot q \rVert^2$ of
:class:`KineticPrior`) and its accelerations solve the Euler–Lagrange equations
(:class:`~torchnde.models.LNN`); the baseline's head is $\ddot q$ directly (a second-order
neural ODE, the paper's "baseline neural network"). Trained on the same batches with the
squared error of the accelerations.

Evaluation: from ``num_eval`` unseen initial states (same distribution, another seed), both
learned fields and the truth are solved over ``[0, t_eval]``. Metrics under ``eval``:
``lnn_energy_drift`` and ``node_energy_drift`` (the mean absolute change of the *true*
energy along the rollout), ``lnn_traj_mse`` and ``node_traj_mse``. The paper: the LNN
conserves energy where the baseline's drifts (Fig. 4: on a 40 s rollout the baseline's energy
error grows, the LNN's stays near zero). The double pendulum is chaotic: over long rollouts
the trajectory MSE of any model saturates at the spread of the attractor; the energy is the
meaningful long-time measure.

``full=true``: hidden 500 (the paper's width; three layers there), 40 s rollouts of 50 states.
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
    double_pendulum_dynamics,
    double_pendulum_energy,
    generate_double_pendulum,
)
from ..models import LNN
from . import harness
from ._mechanics import (
    check_ints,
    check_positive,
    energy_drift,
    energy_drift_panel,
    float64_rollout,
    smaller_verdict,
    trajectory_mse,
    uniform_states,
)
from ._models import mlp
from .config import ExperimentConfig, check
from .harness import Headline, StepOutput

__all__ = ["Config", "KineticPrior", "SecondOrderMLP", "Task"]


@dataclass
class Config(ExperimentConfig):
    """Options of ``torchnde run double-pendulum``."""

    out: Path = field(default=Path("runs/double-pendulum"), metadata={"help": "run folder"})
    epochs: int = field(default=50, metadata={"help": "passes over the training points"})
    batch_size: int = field(default=256, metadata={"help": "points per step (global)"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate (cosine decay)"})
    hidden: int = field(default=64, metadata={"help": "hidden width of both MLPs"})
    num_traj: int = field(default=40, metadata={"help": "training trajectories"})
    num_times: int = field(default=50, metadata={"help": "points per training trajectory"})
    t_train: float = field(default=5.0, metadata={"help": "length of a training trajectory"})
    angle: float = field(default=1.0, metadata={"help": "initial angles in [-angle, angle]"})
    num_eval: int = field(default=8, metadata={"help": "unseen initial states rolled out"})
    t_eval: float = field(default=10.0, metadata={"help": "rollout length (s)"})
    num_save: int = field(default=200, metadata={"help": "saved times along the rollout"})
    eps: float = field(default=1e-3, metadata={"help": "LNN: added to the velocity Hessian"})
    rtol: float = field(default=1e-6, metadata={"help": "rtol of the rollouts (Dopri5)"})
    atol: float = field(default=1e-8, metadata={"help": "atol of the rollouts"})
    data_seed: int = field(default=0, metadata={"help": "seed of the data generator"})
    full: bool = field(
        default=False, metadata={"help": "larger scale: hidden 500, 40 s rollouts, 50 states"}
    )

    def __post_init__(self) -> None:
        if self.full:
            self.hidden, self.num_eval, self.t_eval, self.num_save = 500, 50, 40.0, 800
            self.num_traj, self.epochs = 200, 300
        super().__post_init__()
        check_ints(self, ("hidden", "num_traj", "num_eval", "num_save"), 1)
        check_ints(self, ("num_times",), 2)
        check_ints(self, ("data_seed",), 0)
        check_positive(self, ("t_train", "t_eval", "angle", "rtol", "atol"))
        check(
            isinstance(self.eps, (int, float)) and self.eps >= 0, "eps", "a number >= 0", self.eps
        )


class KineticPrior(nn.Module):
    r"""$L_\theta(q, \dot q) = \mathrm{MLP}(q, \dot q) + \tfrac12 \lVert \dot q \rVert^2$: a
    general network plus a fixed quadratic term, so that the velocity Hessian starts near the
    identity and the first accelerations are well posed. A bare MLP's velocity Hessian is
    near zero and indefinite at initialisation, and (at this size and budget) its LNN does not
    train (acceleration MSE stays at the targets' variance); Cranmer et al. designed a special
    initialisation for the same reason."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[:, 0] + 0.5 * (x[:, 2:] ** 2).sum(1)


class SecondOrderMLP(nn.Module):
    r"""The baseline: $(\dot q, \ddot q) = (\dot q, \mathrm{MLP}(q, \dot q))$."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def acceleration(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def forward(self, t: Any, x: torch.Tensor, args: Any = None) -> torch.Tensor:
        return torch.cat([x[:, 2:], self.net(x)], dim=1)


class Task(harness.Task):
    name = "double-pendulum"
    title = "double pendulum: Lagrangian neural network vs a baseline neural ODE"
    paper = "Cranmer, Greydanus, Hoyer, Battaglia, Spergel, Ho 2020, Lagrangian Neural Networks"
    Config = Config

    MODELS = ("lnn", "node")

    def setup(self) -> nn.Module:
        cfg = self.config
        _, x, dxdt = generate_double_pendulum(
            cfg.num_traj, cfg.num_times, cfg.t_train, angle=cfg.angle, seed=cfg.data_seed
        )
        self.x = x.reshape(-1, 4).float().to(self.device)
        self.acc = dxdt[..., 2:].reshape(-1, 2).float().to(self.device)
        h = cfg.hidden
        return nn.ModuleDict(
            {
                "lnn": LNN(KineticPrior(mlp([4, h, h, 1], nn.Softplus)), eps=cfg.eps),
                "node": SecondOrderMLP(mlp([4, h, h, 2], nn.Softplus)),
            }
        ).to(self.device)

    @property
    def num_train(self) -> int:
        return self.x.shape[0]

    def step(self, model: Any, index: torch.Tensor) -> StepOutput:
        index = index.to(self.device)
        x, target = self.x[index], self.acc[index]
        logs = {
            f"loss_{k}": ((model[k].acceleration(x) - target) ** 2).mean(1) for k in self.MODELS
        }
        return StepOutput(sum(logs.values()), logs)  # type: ignore[arg-type]

    def evaluate(self, model: Any) -> dict[str, Any]:
        cfg = self.config
        x0 = uniform_states(cfg.num_eval, cfg.angle, cfg.data_seed)
        ts = torch.linspace(0.0, cfg.t_eval, cfg.num_save, dtype=torch.float64)
        truth = _reference(double_pendulum_dynamics, x0, ts)
        self.rollouts: dict[str, torch.Tensor] = {"truth": truth}
        metrics: dict[str, Any] = {"rollout_t1": cfg.t_eval}
        for key in self.MODELS:
            ys, status = float64_rollout(model[key], x0, ts, cfg.rtol, cfg.atol)
            self.rollouts[key] = ys
            metrics[f"{key}_energy_drift"] = energy_drift(double_pendulum_energy, ys, x0)
            metrics[f"{key}_traj_mse"] = trajectory_mse(ys, truth)
            metrics[f"{key}_status"] = status
        # The scale of the drifts: the energies' spread over the rolled-out states.
        metrics["energy_spread"] = float(double_pendulum_energy(x0).std())
        with torch.no_grad():
            for key in self.MODELS:
                err = ((model[key].acceleration(self.x) - self.acc) ** 2).mean()
                metrics[f"{key}_train_acc_mse"] = float(err)
        return metrics

    @classmethod
    def headline(cls, metrics: dict[str, Any]) -> list[Headline]:
        el, en = metrics["lnn_energy_drift"], metrics["node_energy_drift"]
        ml, mn = metrics["lnn_traj_mse"], metrics["node_traj_mse"]
        energy = smaller_verdict(el, en, "the LNN", "the baseline", "drift")
        traj = smaller_verdict(ml, mn, "the LNN", "the baseline", "trajectory MSE")
        return [
            Headline(
                f"true-energy drift over {metrics['rollout_t1']:.3g} s, LNN vs NODE",
                f"{el:.3g} vs {en:.3g}",
                "the LNN conserves energy, the baseline's drifts (Fig. 4)",
                energy,
            ),
            Headline(
                "trajectory MSE on unseen initial states, LNN vs NODE",
                f"{ml:.3g} vs {mn:.3g}",
                "no number published for the trajectories (a chaotic system: both diverge "
                "from the truth eventually)",
                traj,
            ),
        ]

    def figure(self, model: Any, metrics: dict[str, Any]) -> Any:
        from .report import new_figure

        fig = new_figure(12, 4.4)
        ax_traj, ax_energy = fig.subplots(1, 2)
        colours = {"truth": "k", "lnn": "tab:blue", "node": "tab:red"}
        ts = np.linspace(0, metrics["eval"]["rollout_t1"], self.config.num_save)
        for key, ys in self.rollouts.items():
            ax_traj.plot(ts, ys[:, 0, 1].numpy(), color=colours[key], lw=1, label=key.upper())
        ax_traj.set(xlabel="t", ylabel=r"$\theta_2$", title="rollout of one unseen state")
        ax_traj.legend(fontsize="small")
        energy_drift_panel(ax_energy, ts, self.rollouts, double_pendulum_energy, colours)
        fig.suptitle("torchnde: double pendulum, LNN vs baseline NODE (Cranmer et al. 2020)")
        return fig
