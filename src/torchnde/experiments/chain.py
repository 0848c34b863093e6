r"""A constrained chain: a Cartesian constrained Hamiltonian network against an HNN in
generalised coordinates (Finzi, Wang, Wilson 2020).

The chain is the double pendulum (two unit masses on unit rods, the first pinned at the
origin, $g = 9.8$; :mod:`torchnde.data.mechanics`). From few training trajectories
(``num_traj``) both models learn from the true time derivatives, each in its coordinates:

- :class:`~torchnde.models.CHNN` on $z = (x_1, x_2, p_1, p_2) \in \mathbb{R}^8$, Cartesian
  positions and momenta, with the two rod constraints $|x_1|^2 = 1$, $|x_2 - x_1|^2 = 1$ given
  and only the potential $V_\theta(x)$ learned (unit masses: the observed momenta are
  $p = m \dot x$ with the true masses, so learning the masses too would be inconsistent);
- :class:`~torchnde.models.HNN` on $(\theta_1, \theta_2, p_{\theta_1}, p_{\theta_2})$ with the
  canonical momenta $p_\theta = M(\theta)\,\omega$, learning the whole $H_\theta$ (whose
  kinetic part hides the configuration-dependent mass matrix).

Evaluation: ``num_eval`` unseen initial states rolled out over ``t_eval`` seconds
(``Dopri5``); metrics under ``eval``: ``chnn_traj_mse`` and ``hnn_traj_mse``, both the mean
squared error of the two bobs' Cartesian positions against the truth. The paper: the
constrained Cartesian model is far more data efficient (an order of magnitude lower rollout
error at equal data, Fig. 4).

``full=true``: 100 trajectories, wider networks, longer training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.mechanics import (
    DOUBLE_PENDULUM_G,
    _reference,
    double_pendulum_dynamics,
    generate_double_pendulum,
)
from ..models import CHNN, HNN
from . import harness
from ._mechanics import (
    check_ints,
    check_positive,
    float64_rollout,
    smaller_verdict,
    trajectory_mse,
    uniform_states,
)
from ._models import mlp
from .config import ExperimentConfig
from .harness import Headline, StepOutput

__all__ = ["Config", "Task", "to_cartesian", "to_canonical"]


@dataclass
class Config(ExperimentConfig):
    """Options of ``torchnde run chain``."""

    out: Path = field(default=Path("runs/chain"), metadata={"help": "run folder"})
    epochs: int = field(default=100, metadata={"help": "passes over the training points"})
    batch_size: int = field(default=100, metadata={"help": "points per step (global)"})
    lr: float = field(default=3e-3, metadata={"help": "Adam learning rate (cosine decay)"})
    hidden: int = field(default=64, metadata={"help": "hidden width of both MLPs"})
    num_traj: int = field(default=4, metadata={"help": "training trajectories (little data)"})
    num_times: int = field(default=50, metadata={"help": "points per training trajectory"})
    angle: float = field(default=1.0, metadata={"help": "initial angles in [-angle, angle]"})
    num_eval: int = field(default=8, metadata={"help": "unseen initial states rolled out"})
    t_eval: float = field(default=2.0, metadata={"help": "rollout length (s)"})
    num_save: int = field(default=50, metadata={"help": "saved times along the rollout"})
    rtol: float = field(default=1e-6, metadata={"help": "rtol of the rollouts (Dopri5)"})
    atol: float = field(default=1e-8, metadata={"help": "atol of the rollouts"})
    data_seed: int = field(default=0, metadata={"help": "seed of the data generator"})
    full: bool = field(
        default=False, metadata={"help": "larger scale: 100 trajectories, hidden 128"}
    )

    def __post_init__(self) -> None:
        if self.full:
            self.num_traj, self.hidden, self.epochs, self.num_eval = 100, 128, 200, 50
        super().__post_init__()
        check_ints(self, ("hidden", "num_traj", "num_eval", "num_save"), 1)
        check_ints(self, ("num_times",), 2)
        check_ints(self, ("data_seed",), 0)
        check_positive(self, ("t_eval", "angle", "rtol", "atol"))


def _rods(x: torch.Tensor) -> torch.Tensor:
    """The chain's constraints on one sample's positions ``(4,)``: unit rods."""
    x1, x2 = x[:2], x[2:]
    return torch.stack([(x1**2).sum() - 1.0, ((x2 - x1) ** 2).sum() - 1.0])


def to_cartesian(s: torch.Tensor) -> torch.Tensor:
    """States ``(..., 4)`` ``(theta1, theta2, omega1, omega2)`` as ``(x1, x2, p1, p2)``
    ``(..., 8)`` (unit masses: ``p = dx/dt``)."""
    t1, t2, w1, w2 = s.unbind(-1)
    e1 = torch.stack([torch.sin(t1), -torch.cos(t1)], -1)
    e2 = torch.stack([torch.sin(t2), -torch.cos(t2)], -1)
    d1 = torch.stack([torch.cos(t1), torch.sin(t1)], -1)
    d2 = torch.stack([torch.cos(t2), torch.sin(t2)], -1)
    v1 = w1[..., None] * d1
    v2 = v1 + w2[..., None] * d2
    return torch.cat([e1, e1 + e2, v1, v2], -1)


def _cartesian_derivative(s: torch.Tensor, ds: torch.Tensor) -> torch.Tensor:
    t1, t2, w1, w2 = s.unbind(-1)
    a1, a2 = ds[..., 2], ds[..., 3]
    x = to_cartesian(s)
    d1 = torch.stack([torch.cos(t1), torch.sin(t1)], -1)
    d2 = torch.stack([torch.cos(t2), torch.sin(t2)], -1)
    n1 = torch.stack([-torch.sin(t1), torch.cos(t1)], -1)
    n2 = torch.stack([-torch.sin(t2), torch.cos(t2)], -1)
    acc1 = a1[..., None] * d1 + (w1**2)[..., None] * n1
    acc2 = acc1 + a2[..., None] * d2 + (w2**2)[..., None] * n2
    return torch.cat([x[..., 4:], acc1, acc2], -1)


def to_canonical(s: torch.Tensor) -> torch.Tensor:
    """``(theta, omega)`` as ``(theta, p_theta)`` with ``p_theta = M(theta) omega``."""
    t1, t2, w1, w2 = s.unbind(-1)
    c = torch.cos(t1 - t2)
    return torch.stack([t1, t2, 2 * w1 + w2 * c, w2 + w1 * c], -1)


def _canonical_derivative(s: torch.Tensor, ds: torch.Tensor) -> torch.Tensor:
    # dp/dt = dL/dtheta (Euler-Lagrange).
    t1, t2, w1, w2 = s.unbind(-1)
    g, sd = DOUBLE_PENDULUM_G, torch.sin(t1 - t2)
    return torch.stack(
        [w1, w2, -w1 * w2 * sd - 2 * g * torch.sin(t1), w1 * w2 * sd - g * torch.sin(t2)], -1
    )


def _from_canonical(c: torch.Tensor) -> torch.Tensor:
    t1, t2, p1, p2 = c.unbind(-1)
    cd = torch.cos(t1 - t2)
    det = 2 - cd**2
    w1 = (p1 - cd * p2) / det
    w2 = (2 * p2 - cd * p1) / det
    return torch.stack([t1, t2, w1, w2], -1)


class Task(harness.Task):
    name = "chain"
    title = "constrained chain: Cartesian CHNN vs HNN in generalised coordinates"
    paper = (
        "Finzi, Wang, Wilson 2020, Simplifying Hamiltonian and Lagrangian Neural Networks via "
        "Explicit Constraints"
    )
    Config = Config

    MODELS = ("chnn", "hnn")

    def setup(self) -> nn.Module:
        cfg = self.config
        _, s, ds = generate_double_pendulum(
            cfg.num_traj, cfg.num_times, 3.0, angle=cfg.angle, seed=cfg.data_seed
        )
        s, ds = s.reshape(-1, 4), ds.reshape(-1, 4)
        self.data = {
            "chnn": (to_cartesian(s), _cartesian_derivative(s, ds)),
            "hnn": (to_canonical(s), _canonical_derivative(s, ds)),
        }
        self.data = {k: (a.float().to(self.device), b.float().to(self.device))
                     for k, (a, b) in self.data.items()}  # fmt: skip
        h = cfg.hidden
        return nn.ModuleDict(
            {
                "chnn": CHNN(_rods, mlp([4, h, h, 1], nn.Softplus), 4, learn_mass=False),
                "hnn": HNN(mlp([4, h, h, 1], nn.Softplus)),
            }
        ).to(self.device)

    @property
    def num_train(self) -> int:
        return self.data["hnn"][0].shape[0]

    def step(self, model: Any, index: torch.Tensor) -> StepOutput:
        index = index.to(self.device)
        t = torch.zeros((), device=self.device)
        logs = {}
        for k in self.MODELS:
            z, dz = self.data[k][0][index], self.data[k][1][index]
            logs[f"loss_{k}"] = ((model[k](t, z) - dz) ** 2).mean(1)
        return StepOutput(sum(logs.values()), logs)  # type: ignore[arg-type]

    def evaluate(self, model: Any) -> dict[str, Any]:
        cfg = self.config
        s0 = uniform_states(cfg.num_eval, cfg.angle, cfg.data_seed)
        ts = torch.linspace(0.0, cfg.t_eval, cfg.num_save, dtype=torch.float64)
        truth = to_cartesian(_reference(double_pendulum_dynamics, s0, ts))[..., :4]
        self.rollouts: dict[str, torch.Tensor] = {"truth": truth}
        metrics: dict[str, Any] = {"rollout_t1": cfg.t_eval}
        starts = {"chnn": to_cartesian(s0), "hnn": to_canonical(s0)}
        for key in self.MODELS:
            ys, status = float64_rollout(model[key], starts[key], ts, cfg.rtol, cfg.atol)
            pos = ys[..., :4] if key == "chnn" else to_cartesian(_from_canonical(ys))[..., :4]
            self.rollouts[key] = pos
            metrics[f"{key}_traj_mse"] = trajectory_mse(pos, truth)
            metrics[f"{key}_status"] = status
            if key == "chnn":
                with torch.no_grad():
                    viol = model[key].to(torch.float64).constraint_violation(ys.reshape(-1, 8))
                    model[key].to(torch.float32)
                metrics["chnn_constraint_violation"] = float(viol.abs().max())
        return metrics

    @classmethod
    def headline(cls, metrics: dict[str, Any]) -> list[Headline]:
        mc, mh = metrics["chnn_traj_mse"], metrics["hnn_traj_mse"]
        verdict = smaller_verdict(mc, mh, "CHNN", "HNN", "rollout MSE")
        return [
            Headline(
                f"rollout MSE of the bobs' positions over {metrics['rollout_t1']:.3g} s, CHNN vs "
                "HNN",
                f"{mc:.3g} vs {mh:.3g}",
                "the Cartesian constrained model is far more data efficient (about an order of "
                "magnitude lower rollout error at equal data, Fig. 4)",
                verdict,
            )
        ]

    def figure(self, model: Any, metrics: dict[str, Any]) -> Any:
        from .report import new_figure

        fig = new_figure(6, 4.4)
        ax = fig.subplots(1, 1)
        colours = {"truth": "k", "chnn": "tab:blue", "hnn": "tab:red"}
        for key, pos in self.rollouts.items():
            y = pos[:, 0].numpy()
            ax.plot(y[:, 2], y[:, 3], color=colours[key], lw=1, label=key.upper())
        ax.set(xlabel="x", ylabel="y", title="second bob, one unseen state", aspect="equal")
        ax.legend(fontsize="small")
        fig.suptitle("torchnde: constrained chain, CHNN vs HNN (Finzi et al. 2020)")
        return fig
