r"""Neural CDE classification of UEA BasicMotions with 30% of the observations dropped
(Kidger, Morrill, Foster, Lyons 2020).

BasicMotions (bundled, :func:`torchnde.data.load_basicmotions`): 40 + 40 recordings of a smart
watch's accelerometer and gyroscope (6 channels, 100 times) during four activities. As in the
paper's irregular-sampling experiments, a fixed random 30% of the time points of every series
(``drop``, drawn with ``data_seed``) are removed; the remaining observations, with time as an
extra channel, define a natural cubic spline $X$ through each series (missing values simply
skipped). The model is the neural CDE
$z(t_0) = \ell(X(t_0))$, $dz = \tanh(\mathrm{MLP}(z))\,dX(t)$, class logits $= W z(t_1)$.
Headline: test accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import torchnde

from ..data import load_basicmotions
from . import harness
from ._models import mlp
from .config import ExperimentConfig, check, is_int, is_positive
from .harness import Headline, StepOutput

__all__ = ["CDEFunc", "Config", "Task", "drop_observations"]


@dataclass
class Config(ExperimentConfig):
    """Options of ``torchnde run motions``."""

    out: Path = field(default=Path("runs/motions"), metadata={"help": "run folder"})
    epochs: int = field(default=30, metadata={"help": "passes over the 40 training series"})
    batch_size: int = field(default=10, metadata={"help": "series per step (global)"})
    lr: float = field(default=5e-3, metadata={"help": "Adam learning rate (cosine decay)"})
    method: str = field(
        default="midpoint",
        metadata={"help": "solver", "choices": ("midpoint", "rk4", "euler", "dopri5", "tsit5")},
    )
    rtol: float = field(default=1e-3, metadata={"help": "relative tolerance (adaptive methods)"})
    atol: float = field(default=1e-4, metadata={"help": "absolute tolerance (adaptive methods)"})
    drop: float = field(default=0.3, metadata={"help": "fraction of time points dropped"})
    hidden: int = field(default=16, metadata={"help": "dimension of the CDE state"})
    width: int = field(default=32, metadata={"help": "hidden width of the vector field"})
    data_seed: int = field(default=0, metadata={"help": "seed of the dropped observations"})

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("hidden", "width"):
            v = getattr(self, key)
            check(is_int(v) and v >= 1, key, "an int >= 1", v)
        for key in ("rtol", "atol"):
            v = getattr(self, key)
            check(is_positive(v), key, "a positive number", v)
        check(isinstance(self.drop, float) and 0 <= self.drop < 1, "drop", "in [0, 1)", self.drop)
        check(
            is_int(self.data_seed) and self.data_seed >= 0,
            "data_seed",
            "an int >= 0",
            self.data_seed,
        )


def drop_observations(x: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """``x`` ``(batch, length, channels)`` with a random ``fraction`` of the time points of each
    series set to NaN (all channels of a time point together), reproducibly from ``seed``."""
    rng = np.random.default_rng(seed)
    x = x.clone()
    n_drop = int(round(fraction * x.shape[1]))
    for i in range(x.shape[0]):
        idx = rng.choice(x.shape[1], size=n_drop, replace=False)
        x[i, torch.as_tensor(idx)] = float("nan")
    return x


class CDEFunc(nn.Module):
    r"""$f(z) = \tanh(\mathrm{MLP}(z))$ reshaped to ``(hidden, channels)``; counts its calls."""

    def __init__(self, hidden: int, channels: int, width: int) -> None:
        super().__init__()
        self.hidden, self.channels = hidden, channels
        self.net = mlp([hidden, width, width, hidden * channels], nn.Softplus)
        self.calls = 0

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.tanh(self.net(z)).reshape(*z.shape[:-1], self.hidden, self.channels)


class NeuralCDE(nn.Module):
    """Initial map, CDE vector field and linear read-out (Kidger et al. 2020)."""

    def __init__(self, channels: int, hidden: int, width: int, classes: int) -> None:
        super().__init__()
        self.initial = nn.Linear(channels, hidden)
        self.func = CDEFunc(hidden, channels, width)
        self.readout = nn.Linear(hidden, classes)


class Task(harness.Task):
    name = "motions"
    title = "neural CDE on UEA BasicMotions with 30% of the observations dropped"
    paper = (
        "Kidger, Morrill, Foster, Lyons 2020, Neural Controlled Differential Equations for "
        "Irregular Time Series"
    )
    Config = Config

    def setup(self) -> nn.Module:
        cfg = self.config
        x_tr, self.y, x_te, self.y_test, self.classes = load_basicmotions()
        mean, std = x_tr.mean((0, 1)), x_tr.std((0, 1))
        length = x_tr.shape[1]
        self.t = torch.linspace(0.0, 1.0, length)
        parts = []
        for k, x in enumerate((x_tr, x_te)):
            x = drop_observations((x - mean) / std, cfg.drop, cfg.data_seed + k)
            time = self.t.expand(x.shape[0], length)[..., None]
            parts.append(torch.cat([time, x], dim=-1))
        self.raw = parts
        # Spline coefficients once per dataset.
        self.coeffs = torchnde.natural_cubic_coeffs(parts[0], self.t).to(self.device)
        self.coeffs_test = torchnde.natural_cubic_coeffs(parts[1], self.t).to(self.device)
        self.t = self.t.to(self.device)
        self.y, self.y_test = self.y.to(self.device), self.y_test.to(self.device)
        self.nfe = 0
        return NeuralCDE(parts[0].shape[-1], cfg.hidden, cfg.width, len(self.classes))

    @property
    def num_train(self) -> int:
        return len(self.y)

    def _logits(self, model: Any, coeffs: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        X = torchnde.CubicSpline(coeffs, self.t)
        z0 = model.initial(X.evaluate(self.t[0]))
        model.func.calls = 0
        # Fixed-step methods: one step per knot interval (steps are clipped to the knots, so a
        # dt0 a bit above the spacing avoids a sliver step after each knot).
        dt0 = 1.5 * float(self.t[1] - self.t[0])
        zs = torchnde.cdeint(
            X,
            model.func,
            z0,
            self.t[[0, -1]],
            solver=cfg.method,
            rtol=cfg.rtol,
            atol=cfg.atol,
            dt0=dt0,
        )
        self.nfe = model.func.calls
        return model.readout(zs[-1])

    def step(self, model: Any, index: torch.Tensor) -> StepOutput:
        index = index.to(self.device)
        logits = self._logits(model, self.coeffs[index])
        loss = nn.functional.cross_entropy(logits, self.y[index], reduction="none")
        return StepOutput(loss, nfe={"nfe": self.nfe})

    def evaluate(self, model: Any) -> dict[str, Any]:
        with torch.no_grad():
            logits = self._logits(model, self.coeffs_test)
            train_logits = self._logits(model, self.coeffs)
        pred = logits.argmax(-1)
        self.confusion = torch.zeros(len(self.classes), len(self.classes), dtype=torch.int64)
        for a, b in zip(self.y_test.tolist(), pred.tolist()):
            self.confusion[a, b] += 1
        return {
            "test_accuracy": float((pred == self.y_test).float().mean()),
            "train_accuracy": float((train_logits.argmax(-1) == self.y).float().mean()),
            "dropped_fraction": self.config.drop,
            "chance_accuracy": float(torch.bincount(self.y_test).max()) / len(self.y_test),
            "test_nfe": self.nfe,
        }

    @classmethod
    def headline(cls, metrics: dict[str, Any]) -> list[Headline]:
        acc, chance = metrics["test_accuracy"], metrics["chance_accuracy"]
        if acc >= 0.9:
            verdict = f"yes (criterion >= 90%): {acc - chance:.1%} above chance"
        elif acc > chance:
            verdict = f"partly: above chance ({chance:.1%}) but below 90%"
        else:
            verdict = f"no: not above chance ({chance:.1%})"
        return [
            Headline(
                f"test accuracy, {metrics['dropped_fraction']:.0%} of observations dropped",
                f"{acc:.1%} (chance, the majority class: {chance:.1%})",
                "neural CDEs classify irregularly sampled series with 30% dropped (98.7% on "
                "CharacterTrajectories, Kidger et al. 2020, Table 1; BasicMotions is not in "
                "the paper, full-data classifiers reach ~100% on it)",
                verdict,
            )
        ]

    def figure(self, model: Any, metrics: dict[str, Any]) -> Any:
        from .report import new_figure

        fig = new_figure(13, 4.2)
        ax_series, ax_conf = fig.subplots(1, 2, width_ratios=(2, 1))
        x = self.raw[1]
        i = 0
        X = torchnde.CubicSpline(self.coeffs_test[i : i + 1].cpu(), self.t.cpu())
        fine = torch.linspace(0, 1, 400)
        with torch.no_grad():
            path = torch.stack([X.evaluate(s)[0] for s in fine]).numpy()
        t_np = self.t.cpu().numpy()
        for c in range(1, 4):
            line = ax_series.plot(fine.numpy() * 10, path[:, c], lw=1, label=f"acc. {'xyz'[c - 1]}")
            ax_series.plot(t_np * 10, x[i, :, c].numpy(), "o", ms=2.5, color=line[0].get_color())
        ax_series.set(
            xlabel="time (s)",
            ylabel="standardised value",
            title=f"test series 0 ({self.classes[int(self.y_test[0])]}): kept observations "
            "and the spline",
        )
        ax_series.legend(fontsize="small")
        conf = self.confusion.numpy()
        ax_conf.imshow(conf, cmap="Blues")
        for a in range(conf.shape[0]):
            for b in range(conf.shape[1]):
                dark = conf[a, b] > conf.max() / 2
                colour = "white" if dark else "black"
                ax_conf.text(b, a, str(conf[a, b]), ha="center", va="center", color=colour)
        ticks = list(range(len(self.classes)))
        ax_conf.set(
            xticks=ticks,
            yticks=ticks,
            xticklabels=self.classes,
            yticklabels=self.classes,
            xlabel="predicted",
            ylabel="true",
            title=f"test accuracy {metrics['eval']['test_accuracy']:.1%}",
        )
        fig.suptitle("torchnde: neural CDE on BasicMotions with 30% of observations dropped")
        return fig
