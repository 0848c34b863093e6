r"""TrajectoryNet on a simulated branching process: interpolate a held-out snapshot
(Tong, Huang, Wolf, van Dijk, Krishnaswamy 2020).

The data are 2-D "cells" of a branching diffusion, observed only as unpaired population
snapshots at times $0, 1, 2, 3, 4$ (a fresh population per snapshot, as in single-cell
sequencing, which destroys the cells it measures). Every cell starts near the origin,
moves right at unit speed and, from $t = 1$ on, leaves the axis on one of two curved
branches,

$$dx = 1\,dt + \sigma dW_1,\qquad dy = s\,\kappa\,(t - 1)_+\,dt + \sigma dW_2,\qquad
s = \pm 1,$$

simulated by Euler-Maruyama with step 0.01 (:func:`simulate_branching`). The snapshot at
``holdout`` (default $t = 2$, between the branch point and the last snapshots) is held out.

:class:`~torchnde.models.TrajectoryNet` is trained by maximum likelihood on the other four
(one CNF through time with a standard normal prior at ``base_time``, plus the RNODE kinetic
energy with weight ``kinetic``); it predicts the held-out population by transporting the
previous snapshot's cells forward. The baseline is linear (McCann displacement)
interpolation of the exact optimal-transport coupling of the two neighbouring snapshots.
Both are scored by the exact 1-Wasserstein distance (optimal assignment, scipy) to the
held-out cells, ``eval.holdout_w1`` and ``eval.linear_holdout_w1``; ``eval.w1_floor`` is that
distance between two independent populations of the held-out time (the best possible).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models import DepthCat, TrajectoryNet
from . import harness, require
from ._models import mlp
from .config import ODEConfig, check, is_int, is_positive
from .harness import Headline, StepOutput, ode_solver_setup

__all__ = ["Config", "Task", "linear_interpolation", "simulate_branching", "wasserstein1"]

TIMES = (0.0, 1.0, 2.0, 3.0, 4.0)


def simulate_branching(
    n: int, t: float, curvature: float, sigma: float, generator: torch.Generator
) -> torch.Tensor:
    """``n`` independent cells of the branching process at time ``t``: ``(n, 2)`` float64."""
    dt = 0.01
    x = 0.1 * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    branch = torch.randint(0, 2, (n,), generator=generator).double() * 2 - 1
    steps = round(t / dt)
    for k in range(steps):
        s = k * dt
        drift = torch.stack([torch.ones(n, dtype=torch.float64),
                             branch * curvature * max(s - 1.0, 0.0)], -1)  # fmt: skip
        noise = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        x = x + drift * dt + sigma * math.sqrt(dt) * noise
    return x


def _assignment(a: np.ndarray, b: np.ndarray, power: int) -> tuple[np.ndarray, float]:
    optimize = require("scipy.optimize", "scipy", "trajectorynet")
    cost = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1) ** power
    rows, cols = optimize.linear_sum_assignment(cost)
    return cols[np.argsort(rows)], float(cost[rows, cols].mean())


def wasserstein1(a: torch.Tensor, b: torch.Tensor) -> float:
    """The exact 1-Wasserstein distance between two equal-size point clouds (uniform
    weights), by optimal assignment."""
    if a.shape != b.shape:
        raise ValueError(
            f"wasserstein1: need point clouds of equal shape, got {a.shape}, {b.shape}."
        )
    return _assignment(a.detach().double().cpu().numpy(), b.detach().double().cpu().numpy(), 1)[1]


def linear_interpolation(a: torch.Tensor, b: torch.Tensor, frac: float) -> torch.Tensor:
    """McCann's displacement interpolation at ``frac`` of the optimal (squared-distance)
    coupling of two equal-size point clouds."""
    perm, _ = _assignment(a.double().cpu().numpy(), b.double().cpu().numpy(), 2)
    return (1 - frac) * a + frac * b[torch.from_numpy(perm)]


@dataclass
class Config(ODEConfig):
    """Options of ``torchnde run trajectorynet``."""

    out: Path = field(default=Path("runs/trajectorynet"), metadata={"help": "run folder"})
    epochs: int = field(default=40, metadata={"help": "passes over the training cells"})
    batch_size: int = field(default=128, metadata={"help": "cells per snapshot per step"})
    lr: float = field(default=5e-3, metadata={"help": "Adam learning rate (cosine decay)"})
    method: str = field(default="rk4", metadata={"help": "ODE solver"})
    step_size: float = field(default=0.25, metadata={"help": "step of fixed-step methods"})
    num_train: int = field(default=512, metadata={"help": "training cells per snapshot"})
    num_test: int = field(default=512, metadata={"help": "held-out cells"})
    holdout: int = field(default=2, metadata={"help": "index of the held-out snapshot (1-3)"})
    curvature: float = field(default=0.75, metadata={"help": "branch curvature kappa"})
    sigma: float = field(default=0.1, metadata={"help": "diffusion of the cells"})
    hidden: int = field(default=64, metadata={"help": "hidden width of the vector field"})
    kinetic: float = field(default=0.1, metadata={"help": "weight of the kinetic energy"})
    base_time: float = field(default=-1.0, metadata={"help": "time of the normal prior"})
    data_seed: int = field(default=0, metadata={"help": "seed of the simulation"})

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("num_train", "num_test", "hidden"):
            v = getattr(self, key)
            check(is_int(v) and v >= 1, key, "an int >= 1", v)
        check(is_int(self.holdout) and 1 <= self.holdout <= 3, "holdout",
              "1, 2 or 3 (an inner snapshot)", self.holdout)  # fmt: skip
        check(is_positive(self.sigma), "sigma", "a positive number", self.sigma)
        check(isinstance(self.kinetic, (int, float)) and self.kinetic >= 0, "kinetic",
              "a number >= 0", self.kinetic)  # fmt: skip
        check(isinstance(self.base_time, (int, float)) and self.base_time < 0, "base_time",
              "a number < 0 (before the first snapshot)", self.base_time)  # fmt: skip
        check(is_int(self.data_seed) and self.data_seed >= 0, "data_seed", "an int >= 0",
              self.data_seed)  # fmt: skip


class Task(harness.Task):
    name = "trajectorynet"
    title = "TrajectoryNet interpolates a held-out snapshot of a branching process"
    paper = (
        "Tong, Huang, Wolf, van Dijk, Krishnaswamy 2020, TrajectoryNet: A Dynamic Optimal "
        "Transport Network for Modeling Cellular Dynamics"
    )
    Config = Config

    def setup(self) -> nn.Module:
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.data_seed)
        sim = [simulate_branching(cfg.num_train, t, cfg.curvature, cfg.sigma, gen) for t in TIMES]
        self.train_idx = [k for k in range(len(TIMES)) if k != cfg.holdout]
        allx = torch.cat([sim[k] for k in self.train_idx])
        self.mean, self.std = allx.mean(0), allx.std(0)
        self.raw = sim
        self.snapshots = [((s - self.mean) / self.std).float().to(self.device) for s in sim]
        t_h = TIMES[cfg.holdout]
        self.holdout_cells = simulate_branching(cfg.num_test, t_h, cfg.curvature, cfg.sigma, gen)
        self.floor_cells = simulate_branching(cfg.num_test, t_h, cfg.curvature, cfg.sigma, gen)
        self.prev_cells = simulate_branching(
            cfg.num_test, TIMES[cfg.holdout - 1], cfg.curvature, cfg.sigma, gen
        )
        self.next_cells = simulate_branching(
            cfg.num_test, TIMES[cfg.holdout + 1], cfg.curvature, cfg.sigma, gen
        )
        solver, controller, dt0 = ode_solver_setup(cfg)
        h = cfg.hidden
        self.model = TrajectoryNet(
            DepthCat(mlp([3, h, h, h, 2])), 2, base_time=cfg.base_time, solver=solver,
            controller=controller, dt0=dt0,
        )  # fmt: skip
        return self.model

    @property
    def num_train(self) -> int:
        return self.config.num_train

    def step(self, model: Any, index: torch.Tensor) -> StepOutput:
        idx = index.to(self.device)
        loss = torch.zeros(len(idx), device=self.device)
        kin_total = torch.zeros(len(idx), device=self.device)
        logs: dict[str, torch.Tensor] = {}
        nfe = 0.0
        for k in self.train_idx:
            lp, kin = model(self.snapshots[k][idx], TIMES[k])
            loss = loss - lp + self.config.kinetic * kin
            kin_total = kin_total + kin
            logs[f"nll_t{int(TIMES[k])}"] = -lp
            nfe += float(model.last_stats["num_fevals"])
        logs["kinetic"] = kin_total
        return StepOutput(loss, logs, {"nfe": nfe})

    def _to_raw(self, y: torch.Tensor) -> torch.Tensor:
        return y.double().cpu() * self.std + self.mean

    def evaluate(self, model: Any) -> dict[str, Any]:
        cfg = self.config
        k = cfg.holdout
        t_prev, t_h, t_next = TIMES[k - 1], TIMES[k], TIMES[k + 1]
        prev = ((self.prev_cells - self.mean) / self.std).float().to(self.device)
        with torch.no_grad():
            pred = self._to_raw(model.transport(prev, t_prev, t_h))
        frac = (t_h - t_prev) / (t_next - t_prev)
        linear = linear_interpolation(self.prev_cells, self.next_cells, frac)
        with torch.no_grad():
            train_ll = {
                f"train_nll_t{int(TIMES[j])}": float(
                    -(model.log_prob(self.snapshots[j], TIMES[j]).double()
                      - self.std.log().sum()).mean()
                )
                for j in self.train_idx
            }  # fmt: skip
        return {
            "holdout_time": t_h,
            "holdout_w1": wasserstein1(pred, self.holdout_cells),
            "linear_holdout_w1": wasserstein1(linear, self.holdout_cells),
            "w1_floor": wasserstein1(self.floor_cells, self.holdout_cells),
            "previous_snapshot_w1": wasserstein1(self.prev_cells, self.holdout_cells),
            # How far the two branches have split: the mean |y| of the cells.
            "holdout_branch_split": float(self.holdout_cells[:, 1].abs().mean()),
            "branch_split": float(pred[:, 1].abs().mean()),
            "linear_branch_split": float(linear[:, 1].abs().mean()),
            **train_ll,
        }

    @classmethod
    def headline(cls, metrics: dict[str, Any]) -> list[Headline]:
        tn_, lin, floor = (metrics[k] for k in ("holdout_w1", "linear_holdout_w1", "w1_floor"))
        prev = metrics["previous_snapshot_w1"]
        split, pred, lin_s = (
            metrics[k] for k in ("holdout_branch_split", "branch_split", "linear_branch_split")
        )
        err = abs(pred - split) / split
        split_v = ("yes" if err <= 0.25 else "no") + f": {err:.0%} off the true split"
        if tn_ <= lin:
            verdict = f"yes: {tn_:.3f} vs {lin:.3f} for linear interpolation"
        elif tn_ < prev:
            verdict = (f"partly: better than the previous snapshot ({prev:.3f}) but worse than "
                       f"linear interpolation ({tn_:.3f} vs {lin:.3f})")  # fmt: skip
        else:
            verdict = f"no: {tn_:.3f}, not better than the previous snapshot ({prev:.3f})"
        return [
            Headline(
                f"W1 to the held-out snapshot t={metrics['holdout_time']:g}, TrajectoryNet / "
                "linear OT interpolation (floor: two samples of the truth)",
                f"{tn_:.3f} / {lin:.3f} (floor {floor:.3f}, previous snapshot {prev:.3f})",
                "with the kinetic (dynamic OT) regulariser TrajectoryNet interpolates held-out "
                "time points at least as well as static OT interpolation, better on curved "
                "paths (Tong et al. 2020, held-out time-point experiments)",
                verdict + " (criterion: lower W1 than linear interpolation)",
            ),
            Headline(
                "branch split at the held-out time (mean abs(y)), truth / TrajectoryNet / linear",
                f"{split:.3f} / {pred:.3f} / {lin_s:.3f}",
                "TrajectoryNet recovers the branching between the observed snapshots "
                "(Tong et al. 2020, their branching toy data)",
                split_v + " (criterion: within 25% of the true split)",
            ),
        ]

    def figure(self, model: Any, metrics: dict[str, Any]) -> Any:
        from .report import new_figure

        cfg = self.config
        k = cfg.holdout
        prev = ((self.prev_cells - self.mean) / self.std).float().to(self.device)
        with torch.no_grad():
            pred = self._to_raw(model.transport(prev, TIMES[k - 1], TIMES[k])).numpy()
        lin = linear_interpolation(
            self.prev_cells,
            self.next_cells,
            (TIMES[k] - TIMES[k - 1]) / (TIMES[k + 1] - TIMES[k - 1]),
        ).numpy()
        fig = new_figure(12, 4.5)
        ax_d, ax_p = fig.subplots(1, 2)
        for j, s in enumerate(self.raw):
            a = s.numpy()
            lab = f"t={TIMES[j]:g}" + (" (held out)" if j == k else "")
            ax_d.scatter(a[:, 0], a[:, 1], s=2, alpha=0.5, label=lab)
        ax_d.set(title="snapshots of the branching process")
        ax_d.legend(fontsize="small", markerscale=4)
        h = self.holdout_cells.numpy()
        ax_p.scatter(h[:, 0], h[:, 1], s=2, color="k", alpha=0.4, label="held-out truth")
        ev = metrics["eval"]
        ax_p.scatter(pred[:, 0], pred[:, 1], s=2, color="tab:red", alpha=0.5,
                     label=f"TrajectoryNet (W1 {ev['holdout_w1']:.3f})")  # fmt: skip
        ax_p.scatter(lin[:, 0], lin[:, 1], s=2, color="tab:blue", alpha=0.5,
                     label=f"linear OT (W1 {ev['linear_holdout_w1']:.3f})")  # fmt: skip
        ax_p.set(title=f"held-out t={TIMES[k]:g}")
        ax_p.legend(fontsize="small", markerscale=4)
        fig.suptitle("torchnde: TrajectoryNet on a branching process")
        return fig
