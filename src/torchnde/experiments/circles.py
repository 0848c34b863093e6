r"""Nested circles: a plain neural ODE against an augmented one (Dupont, Doucet, Teh 2019).

Points in the disk $\lVert x \rVert \le 0.5$ have label $-1$, points in the annulus
$1 \le \lVert x \rVert \le 1.5$ label $+1$ (the $g$ function of the paper, in 2-D). Both models
are $x \mapsto w^\top h(1) + b$ with $dh/dt = \mathrm{MLP}(h)$, $h(0) = x$ for the neural ODE and
$h(0) = (x, 0_p)$ for the augmented one, trained together on the same batches with the mean
squared error to the labels. The flow of an ODE is a homeomorphism of the plane, so the plain
model cannot move the disk out of the annulus to separate them linearly: it squeezes through,
with a large and growing number of function evaluations, where the augmented model lifts the
disk into the extra dimensions cheaply. Headline: test accuracy and NFE of both.

The data are drawn from a fixed generator (``data_seed``), no download.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models import Augmented, Autonomous, NeuralODE
from . import harness
from ._models import mlp
from .config import ODEConfig, check, is_int
from .harness import Headline, StepOutput, ode_solver_setup
from .runfolder import read_jsonl

__all__ = ["Config", "Task", "nested_circles"]


@dataclass
class Config(ODEConfig):
    """Options of ``torchnde run circles``."""

    out: Path = field(default=Path("runs/circles"), metadata={"help": "run folder"})
    epochs: int = field(default=40, metadata={"help": "passes over the training set"})
    batch_size: int = field(default=64, metadata={"help": "points per step (global)"})
    lr: float = field(default=3e-3, metadata={"help": "Adam learning rate (cosine decay)"})
    num_train: int = field(default=1024, metadata={"help": "training points"})
    num_test: int = field(default=1024, metadata={"help": "test points"})
    hidden: int = field(default=32, metadata={"help": "hidden width of the vector fields"})
    augment: int = field(default=5, metadata={"help": "extra zero dimensions of the ANODE"})
    data_seed: int = field(default=0, metadata={"help": "seed of the data generator"})

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("num_train", "num_test", "hidden", "augment"):
            v = getattr(self, key)
            check(is_int(v) and v >= 1, key, "an int >= 1", v)
        check(
            is_int(self.data_seed) and self.data_seed >= 0,
            "data_seed",
            "an int >= 0",
            self.data_seed,
        )


def nested_circles(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points, half in the disk of radius 0.5 (label -1), half in the annulus
    ``1 <= r <= 1.5`` (label +1), uniform in area; float32 ``(n, 2)`` and ``(n,)``."""
    rng = np.random.default_rng(seed)
    inner = n // 2
    u = rng.uniform(size=n)
    r = np.where(np.arange(n) < inner, 0.5 * np.sqrt(u), np.sqrt(1.0 + u * (1.5**2 - 1.0)))
    angle = rng.uniform(0, 2 * np.pi, size=n)
    x = np.stack([r * np.cos(angle), r * np.sin(angle)], -1)
    y = np.where(np.arange(n) < inner, -1.0, 1.0)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)


class Task(harness.Task):
    name = "circles"
    title = "nested circles: neural ODE vs augmented neural ODE"
    paper = "Dupont, Doucet, Teh 2019, Augmented Neural ODEs (NeurIPS)"
    Config = Config

    MODELS = ("node", "anode")

    def setup(self) -> nn.Module:
        cfg = self.config
        self.x, self.y = (v.to(self.device) for v in nested_circles(cfg.num_train, cfg.data_seed))
        self.x_test, self.y_test = (
            v.to(self.device) for v in nested_circles(cfg.num_test, cfg.data_seed + 1)
        )
        solver, controller, dt0 = ode_solver_setup(cfg)

        def node(dim: int) -> NeuralODE:
            field_ = Autonomous(mlp([dim, cfg.hidden, cfg.hidden, dim], nn.ReLU))
            return NeuralODE(field_, solver, controller=controller, dt0=dt0)

        aug = 2 + cfg.augment
        self.odes = {"node": node(2), "anode": node(aug)}
        return nn.ModuleDict(
            {
                "node": nn.Sequential(self.odes["node"], nn.Linear(2, 1)),
                "anode": nn.Sequential(
                    Augmented(self.odes["anode"], cfg.augment), nn.Linear(aug, 1)
                ),
            }
        )

    def nfe(self, key: str) -> int:
        """Forward function evaluations of the last solve of model ``key``."""
        return int(self.odes[key].last_stats["num_fevals"])

    @property
    def num_train(self) -> int:
        return self.config.num_train

    def step(self, model: Any, index: torch.Tensor) -> StepOutput:
        index = index.to(self.device)
        x, y = self.x[index], self.y[index]
        logs, nfe, total = {}, {}, 0
        for key in self.MODELS:
            out = model[key](x)
            logs[f"loss_{key}"] = (out[:, 0] - y) ** 2
            nfe[f"nfe_{key}"] = self.nfe(key)
            total += self.nfe(key)
        loss = sum(logs.values())
        return StepOutput(loss, logs, {"nfe": total, **nfe})

    def evaluate(self, model: Any) -> dict[str, Any]:
        metrics: dict[str, Any] = {}
        with torch.no_grad():
            for key in self.MODELS:
                out = model[key](self.x_test)[:, 0]
                metrics[key] = {
                    "test_accuracy": float(
                        ((out > 0).float() * 2 - 1 == self.y_test).float().mean()
                    ),
                    "test_mse": float(((out - self.y_test) ** 2).mean()),
                    "test_nfe": self.nfe(key),
                }
        return metrics

    @classmethod
    def headline(cls, metrics: dict[str, Any]) -> list[Headline]:
        n, a = metrics["node"], metrics["anode"]
        gain = a["test_accuracy"] - n["test_accuracy"]
        acc = f"yes: ANODE {gain:.1%} higher" if gain > 0 else f"no: ANODE not higher ({gain:+.1%})"
        mse = (
            f"yes: {1 - a['test_mse'] / n['test_mse']:.0%} lower"
            if a["test_mse"] < n["test_mse"]
            else "no: ANODE's test MSE is not lower"
        )
        nfe = (
            f"yes: {n['test_nfe'] - a['test_nfe']} fewer"
            if a["test_nfe"] < n["test_nfe"]
            else "no: ANODE needs no fewer NFEs"
        )
        return [
            Headline(
                "test accuracy, NODE vs ANODE",
                f"{n['test_accuracy']:.1%} vs {a['test_accuracy']:.1%}",
                "a NODE flow can only squeeze the disk through a gap in the annulus; "
                "ANODE separates them (Sec. 4, Figs. 5-7)",
                acc,
            ),
            Headline(
                "test MSE, NODE vs ANODE",
                f"{n['test_mse']:.3g} vs {a['test_mse']:.3g}",
                "ANODE reaches a lower loss (Fig. 7)",
                mse,
            ),
            Headline(
                "forward NFE on the test set, NODE vs ANODE",
                f"{n['test_nfe']} vs {a['test_nfe']}",
                "ANODE needs fewer NFEs; NODE's grow during training (Fig. 8)",
                nfe,
            ),
        ]

    def figure(self, model: Any, metrics: dict[str, Any]) -> Any:
        from .report import new_figure

        fig = new_figure(14, 4.4)
        axes = fig.subplots(1, 3)
        g = torch.linspace(-2, 2, 81, device=self.device)
        grid = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)
        xt, yt = self.x_test.cpu().numpy(), self.y_test.cpu().numpy()
        for ax, key in zip(axes[:2], self.MODELS):
            with torch.no_grad():
                out = model[key](grid)
            z = out[:, 0].reshape(81, 81).cpu().numpy()
            gn = g.cpu().numpy()
            cs = ax.contourf(
                gn, gn, z, levels=np.linspace(-1.5, 1.5, 13), cmap="RdBu_r", extend="both"
            )
            ax.contour(gn, gn, z, levels=[0.0], colors="k", linewidths=1.2)
            ax.scatter(xt[:, 0], xt[:, 1], c=yt, cmap="RdBu_r", s=3, edgecolors="none")
            m = metrics["eval"][key]
            ax.set(
                title=f"{key.upper()}: accuracy {m['test_accuracy']:.1%}, NFE {m['test_nfe']}",
                aspect="equal",
                xlabel="$x_1$",
                ylabel="$x_2$",
            )
        fig.colorbar(cs, ax=axes[1], shrink=0.8, label="model output")
        ax = axes[2]
        hist = self._history()
        if hist:
            steps = [r["step"] for r in hist]
            for key in self.MODELS:
                ax.plot(steps, [r[f"nfe_{key}"] for r in hist], lw=1, label=key.upper())
            ax.legend()
        ax.set(xlabel="step", ylabel="forward NFE per step", title="function evaluations")
        fig.suptitle("torchnde: nested circles, neural ODE vs augmented neural ODE (Dupont 2019)")
        return fig

    def _history(self) -> list[dict[str, Any]]:
        path = self.config.out / "metrics.jsonl"
        return read_jsonl(path)
