r"""Optimal energy shaping of a pendulum (Massaroli, Poli, Califano, Park, Yamashita, Asama
2021): a neural potential and a damping injection trained through the solver to bring the
pendulum from a set of initial states to a target.

The plant is the damped pendulum under a torque (:func:`torchnde.data.mechanics.
forced_pendulum_dynamics`: $m = l = 1$, $g = 9.8$, friction ``friction``), the controller
:class:`~torchnde.models.EnergyShaping`, $u = -\nabla V_\theta(q) - \mathrm{softplus}(k_\phi(q,
\dot q))\,\dot q$ with $V_\theta$ and $k_\phi$ small MLPs. A training example is an initial
state ($q_0$ uniform in $[-\pi, \pi]$, $\dot q_0$ in $[-1, 1]$); its loss is the integral cost

$$J = \int_0^{t_1} (q - q^*)^2 + \dot q^2 + \lambda u^2 \, dt$$

computed with the state by ``torchnde.solve(..., integral=...)`` (``RK4`` at ``step_size``)
and differentiated through the solve. The target is $(q^*, 0)$, $q^* = $ ``target`` (by default
$\pi/2$, the horizontal position, not an equilibrium of the plant: holding it needs the
learned potential to cancel gravity there).

Evaluation from ``num_eval`` unseen initial states of the same distribution; metrics under
``eval``: ``final_distance`` (mean Euclidean distance of $(q, \dot q)$ to the target at $t_1$)
and ``final_distance_uncontrolled`` ($u = 0$). The paper: the shaped closed loop reaches the
target from the whole set of initial states.

``full=true``: wider networks, 1024 initial states, 100 epochs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import torchnde

from ..data.mechanics import forced_pendulum_dynamics
from ..models import EnergyShaping
from . import harness
from ._models import mlp
from .config import ExperimentConfig, check, is_int, is_positive
from .harness import Headline, StepOutput

__all__ = ["Config", "Task"]


@dataclass
class Config(ExperimentConfig):
    """Options of ``torchnde run energy-shaping``."""

    out: Path = field(default=Path("runs/energy-shaping"), metadata={"help": "run folder"})
    epochs: int = field(default=60, metadata={"help": "passes over the initial states"})
    batch_size: int = field(default=64, metadata={"help": "initial states per step"})
    lr: float = field(default=1e-2, metadata={"help": "Adam learning rate (cosine decay)"})
    hidden: int = field(default=32, metadata={"help": "hidden width of both networks"})
    num_train: int = field(default=128, metadata={"help": "training initial states"})
    num_eval: int = field(default=256, metadata={"help": "unseen initial states"})
    target: float = field(default=math.pi / 2, metadata={"help": "target angle q*"})
    # t1 = 5: mean distance 0.115 with 99% of the states within 0.1; t1 = 3 stopped at 0.35.
    t1: float = field(default=5.0, metadata={"help": "horizon of the cost and of the metric"})
    step_size: float = field(default=0.1, metadata={"help": "RK4 step"})
    control_weight: float = field(default=1e-3, metadata={"help": "lambda of the u^2 cost"})
    friction: float = field(default=0.1, metadata={"help": "the plant's friction b"})
    data_seed: int = field(default=0, metadata={"help": "seed of the initial states"})
    full: bool = field(
        default=False, metadata={"help": "larger scale: hidden 64, 1024 states, 100 epochs"}
    )

    def __post_init__(self) -> None:
        if self.full:
            self.hidden, self.num_train, self.num_eval, self.epochs = 64, 1024, 1024, 100
        super().__post_init__()
        for key in ("hidden", "num_train", "num_eval"):
            v = getattr(self, key)
            check(is_int(v) and v >= 1, key, "an int >= 1", v)
        check(
            is_int(self.data_seed) and self.data_seed >= 0, "data_seed", "an int >= 0",
            self.data_seed,
        )  # fmt: skip
        for key in ("t1", "step_size"):
            check(is_positive(getattr(self, key)), key, "a positive number", getattr(self, key))
        for key in ("control_weight", "friction"):
            v = getattr(self, key)
            check(isinstance(v, (int, float)) and v >= 0, key, "a number >= 0", v)
        check(
            isinstance(self.target, (int, float)) and math.isfinite(self.target), "target",
            "a finite number", self.target,
        )  # fmt: skip


def _initial_states(n: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    lim = np.array([math.pi, 1.0])
    return torch.tensor(rng.uniform(-lim, lim, size=(n, 2)), dtype=torch.float32)


class Task(harness.Task):
    name = "energy-shaping"
    title = "optimal energy shaping: a pendulum brought to a target by a neural controller"
    paper = (
        "Massaroli, Poli, Califano, Park, Yamashita, Asama 2021, Optimal Energy Shaping via "
        "Neural Approximators"
    )
    Config = Config

    def setup(self) -> nn.Module:
        cfg = self.config
        self.x0 = _initial_states(cfg.num_train, cfg.data_seed).to(self.device)
        self.x0_eval = _initial_states(cfg.num_eval, cfg.data_seed + 1_000_003).to(self.device)
        self.star = torch.tensor([cfg.target, 0.0], device=self.device)
        h = cfg.hidden
        return EnergyShaping(mlp([1, h, h, 1], nn.Tanh), mlp([2, h, 1], nn.Tanh)).to(self.device)

    @property
    def num_train(self) -> int:
        return self.config.num_train

    def plant(self, t: torch.Tensor, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return forced_pendulum_dynamics(t, x, u, damping=self.config.friction)

    def _solve(self, model: Any, x0: torch.Tensor, ts: torch.Tensor | None = None) -> Any:
        cfg = self.config
        # The running cost needs u at the state the vector field has just been called at
        # (solve(integral=) calls the field, then the cost, on the same state object): keep
        # it rather than differentiate the potential twice per evaluation.
        last: dict[str, Any] = {}

        def field_(t: torch.Tensor, x: torch.Tensor, args: Any) -> torch.Tensor:
            u = torch.zeros_like(x[:, :1]) if model is None else model.control(x)
            last["x"], last["u"] = x, u
            return self.plant(t, x, u)

        def cost(t: torch.Tensor, x: torch.Tensor, args: Any) -> torch.Tensor:
            err = ((x - self.star) ** 2).sum(1)
            if model is None:
                return err
            u = last["u"] if last.get("x") is x else model.control(x)
            return err + cfg.control_weight * (u**2).sum(1)

        saveat = torchnde.SaveAt(ts=ts) if ts is not None else torchnde.SaveAt(t1=True)
        return torchnde.solve(
            torchnde.ODETerm(field_),
            torchnde.RK4(),
            0.0,
            cfg.t1,
            x0,
            dt0=cfg.step_size,
            saveat=saveat,
            controller=torchnde.ConstantStepSize(),
            integral=cost,
        )

    def step(self, model: Any, index: torch.Tensor) -> StepOutput:
        sol = self._solve(model, self.x0[index.to(self.device)])
        loss = sol.integral[-1] / self.config.t1
        dist = ((sol.ys[-1] - self.star) ** 2).sum(1).sqrt()
        return StepOutput(loss, {"final_distance": dist.detach()}, {"nfe": sol.stats["num_fevals"]})

    def evaluate(self, model: Any) -> dict[str, Any]:
        cfg = self.config
        ts = torch.linspace(0.0, cfg.t1, 61, device=self.device)
        metrics: dict[str, Any] = {"target": cfg.target, "t1": cfg.t1}
        self.paths: dict[str, torch.Tensor] = {}
        for key, m in (("", model), ("_uncontrolled", None)):
            with torch.no_grad():
                sol = self._solve(m, self.x0_eval, ts)
            ys = sol.ys
            self.paths[key or "_controlled"] = ys.cpu()
            dist = ((ys[-1] - self.star) ** 2).sum(1).sqrt()
            metrics[f"final_distance{key}"] = float(dist.mean())
            metrics[f"within_0.1{key}"] = float((dist < 0.1).float().mean())
            metrics[f"cost{key}"] = float(sol.integral[-1].mean() / cfg.t1)
        return metrics

    @classmethod
    def headline(cls, metrics: dict[str, Any]) -> list[Headline]:
        d, d0 = metrics["final_distance"], metrics["final_distance_uncontrolled"]
        share = metrics["within_0.1"]
        if d < 0.1:
            verdict = f"yes (criterion: mean distance < 0.1): {share:.0%} of the states within 0.1"
        elif d < d0:
            verdict = (
                f"partly: {d0 / d:.3g}x closer than uncontrolled, but not within 0.1 (criterion)"
            )
        else:
            verdict = "no: not closer to the target than without control"
        return [
            Headline(
                f"mean distance to the target at t1 = {metrics['t1']:.3g}, controlled vs "
                "uncontrolled",
                f"{d:.3g} vs {d0:.3g}",
                "the shaped closed loop brings the pendulum to the target from the whole set "
                "of initial states",
                verdict,
            )
        ]

    def figure(self, model: Any, metrics: dict[str, Any]) -> Any:
        from .report import new_figure

        fig = new_figure(12, 4.4)
        ax_c, ax_u = fig.subplots(1, 2)
        ts = np.linspace(0, self.config.t1, 61)
        for ax, key, title in (
            (ax_c, "_controlled", "controlled"),
            (ax_u, "_uncontrolled", "uncontrolled"),
        ):
            ys = self.paths[key][:, :32, 0].numpy()
            ax.plot(ts, ys, color="tab:blue", lw=0.6, alpha=0.6)
            ax.axhline(self.config.target, color="k", ls="--", lw=1)
            ax.set(xlabel="t", ylabel="q", title=title)
        fig.suptitle("torchnde: optimal energy shaping of a pendulum (Massaroli et al. 2021)")
        return fig
