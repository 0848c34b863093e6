r"""Neural CDE classification of sktime's JapaneseVowels, beside GRU-D and ODE-RNN.

JapaneseVowels (UEA/UCR archive, read at run time from the installed sktime): 270 training
and 370 test utterances of the vowel /ae/ by nine speakers, 12 LPC cepstrum coefficients per
frame, 7 to 29 frames: ragged lengths, so every series ends at its own time. Task: the
speaker (9 classes).

The series are standardised per channel (training statistics) and padded to 29 frames; each
model sees only a series' own frames:

- neural CDE (Kidger et al. 2020) with time as a channel, on the natural cubic spline
  (``test_accuracy``) and, as a second model, on the causal Hermite cubic with backward
  differences of Morrill et al. 2021 (``hermite_test_accuracy``): the padding is NaN, and the
  path holds the last value after a series' end, so the state barely moves there;
- GRU-D (Che et al. 2018) with the padding left out by ``lengths``
  (``grud_test_accuracy``);
- ODE-RNN (Rubanova et al. 2019) on per-sample times, the padding repeating a series' last
  time with mask 0 (``odernn_test_accuracy``).

All four have a hidden state of size ``hidden`` and a linear read-out of their final state,
and train together (the loss is the sum of their cross-entropies; they share no parameter).
``torchnde run vowels`` takes a few minutes on 2 cores; ``full=true`` trains longer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import torchnde as tn
from torchnde.models import GRUD, ODERNN, NeuralCDE

from . import MissingDependency, harness
from .config import ExperimentConfig, check, is_int
from .harness import Headline, StepOutput

__all__ = ["Config", "Task", "load_japanese_vowels"]

MODELS = ("ncde", "hermite", "grud", "odernn")
LENGTH = 29
FRAMES = 10.0


@dataclass
class Config(ExperimentConfig):
    """Options of ``torchnde run vowels``."""

    out: Path = field(default=Path("runs/vowels"), metadata={"help": "run folder"})
    epochs: int = field(default=40, metadata={"help": "passes over the 270 training series"})
    batch_size: int = field(default=32, metadata={"help": "series per step (global)"})
    lr: float = field(default=5e-3, metadata={"help": "Adam learning rate (cosine decay)"})
    hidden: int = field(default=32, metadata={"help": "hidden state size of GRU-D and ODE-RNN"})
    cde_hidden: int = field(default=16, metadata={"help": "hidden state size of the CDEs"})
    width: int = field(default=32, metadata={"help": "hidden width of the CDE vector field"})
    odernn_units: int = field(default=64, metadata={"help": "width of the ODE-RNN's ODE"})
    method: str = field(
        default="rk4",
        metadata={"help": "solver of every model", "choices": ("rk4", "midpoint", "euler")},
    )
    full: bool = field(
        default=False,
        metadata={
            "help": "a longer, larger run: epochs=80, hidden=64, cde_hidden=32, width=64, "
            "odernn_units=128 (overrides those keys)"
        },
    )

    def __post_init__(self) -> None:
        if self.full:
            self.epochs, self.hidden, self.cde_hidden = 80, 64, 32
            self.width, self.odernn_units = 64, 128
        super().__post_init__()
        for key in ("hidden", "cde_hidden", "width", "odernn_units"):
            v = getattr(self, key)
            check(is_int(v) and v >= 1, key, "an int >= 1", v)


def load_japanese_vowels() -> dict[str, Any]:
    """JapaneseVowels from the installed sktime: ``x_train`` ``(270, 29, 12)`` and ``x_test``
    ``(370, 29, 12)`` (float32, NaN after a series' end), ``len_train``/``len_test`` (int64),
    ``y_train``/``y_test`` (int64 in 0..8) and ``classes`` (sktime's labels).

    Raises:
        MissingDependency: sktime is not installed (``pip install 'torchnde[timeseries]'``).
    """
    try:
        from sktime.datasets import load_japanese_vowels as load
    except ImportError:
        raise MissingDependency(
            "experiment 'vowels' needs sktime, which is not installed: pip install "
            "'torchnde[timeseries]' (or pip install sktime)."
        ) from None
    out: dict[str, Any] = {}
    classes: list[str] | None = None
    for split in ("train", "test"):
        frame, labels = load(split=split, return_X_y=True)
        n, channels = frame.shape
        x = np.full((n, LENGTH, channels), np.nan, dtype=np.float32)
        lengths = np.zeros(n, dtype=np.int64)
        for i in range(n):
            cols = [np.asarray(frame.iloc[i, c], dtype=np.float32) for c in range(channels)]
            length = len(cols[0])
            x[i, :length] = np.stack(cols, axis=-1)
            lengths[i] = length
        if classes is None:
            classes = sorted({str(v) for v in labels}, key=lambda s: (len(s), s))
        out[f"x_{split}"] = torch.from_numpy(x)
        out[f"len_{split}"] = torch.from_numpy(lengths)
        out[f"y_{split}"] = torch.tensor([classes.index(str(v)) for v in labels])
    out["classes"] = classes
    return out


class Task(harness.Task):
    name = "vowels"
    title = "neural CDE vs GRU-D vs ODE-RNN on JapaneseVowels (ragged lengths 7-29)"
    paper = (
        "Kidger, Morrill, Foster, Lyons 2020, Neural Controlled Differential Equations for "
        "Irregular Time Series; Morrill, Kidger, Yang, Lyons 2021, Neural CDEs for Online "
        "Prediction Tasks"
    )
    Config = Config

    def setup(self) -> nn.Module:
        cfg = self.config
        data = load_japanese_vowels()
        self.classes = data["classes"]
        x_tr, x_te = data["x_train"], data["x_test"]
        mean = torch.nanmean(x_tr, dim=(0, 1))
        std = torch.sqrt(torch.nanmean((x_tr - mean) ** 2, dim=(0, 1)))
        self.x = [(x - mean) / std for x in (x_tr, x_te)]
        self.lengths = [data["len_train"], data["len_test"]]
        self.y = [data["y_train"].to(self.device), data["y_test"].to(self.device)]
        # Time in units of FRAMES frames: the time channel of the CDE path then moves about
        # as much as the standardised data do (with one unit per frame it dominates the path
        # and the initial logits are ~10x too large).
        self.t = torch.arange(LENGTH, dtype=torch.float32) / FRAMES
        channels, hidden, k = x_tr.shape[-1], cfg.hidden, len(self.classes)
        solver = tn.METHODS[cfg.method]()
        cde: dict[str, Any] = dict(width=cfg.width, solver=cfg.method)
        h_cde = cfg.cde_hidden
        model = nn.ModuleDict(
            {
                "ncde": NeuralCDE(channels, h_cde, k, interpolation="cubic", **cde),
                "hermite": NeuralCDE(channels, h_cde, k, interpolation="hermite", **cde),
                "grud": GRUD(channels, hidden),
                "grud_readout": nn.Linear(hidden, k),
                "odernn": ODERNN(
                    channels, hidden, hidden_units=cfg.odernn_units, solver=solver, dt0=1 / FRAMES
                ),
                "odernn_readout": nn.Linear(hidden, k),
            }
        )
        # Path coefficients once per dataset; per-sample times for the ODE-RNN (the padding
        # repeats a series' last time); masks (1 = observed) for GRU-D and ODE-RNN.
        self.coeffs: dict[str, list[torch.Tensor]] = {}
        for key in ("ncde", "hermite"):
            m: Any = model[key]
            self.coeffs[key] = [m.interpolate(x, self.t).to(self.device) for x in self.x]
        self.ts = []
        for lengths in self.lengths:
            last = (lengths - 1).clamp(min=0)[:, None].float() / FRAMES
            self.ts.append(torch.minimum(self.t.expand(len(lengths), LENGTH), last))
        self.mask = [(~torch.isnan(x)).float() for x in self.x]
        self.nfe: dict[str, int] = {}
        return model.to(self.device)

    @property
    def num_train(self) -> int:
        return len(self.y[0])

    def _logits(self, model: Any, key: str, split: int, index: torch.Tensor) -> torch.Tensor:
        idx = index.to(self.device)
        if key in ("ncde", "hermite"):
            m = model[key]
            out = m(self.coeffs[key][split][idx], self.t.to(self.device))
            self.nfe[key] = m.nfe
            return out
        x = self.x[split][index].to(self.device)
        mask = self.mask[split][index].to(self.device)
        if key == "grud":
            h, _ = model["grud"](self.t.to(self.device), x, mask, self.lengths[split][index])
            self.nfe[key] = 0
            return model["grud_readout"](h)
        h, _ = model["odernn"](self.ts[split][index].to(self.device), x, mask)
        self.nfe[key] = model["odernn"].nfe
        return model["odernn_readout"](h)

    def step(self, model: Any, index: torch.Tensor) -> StepOutput:
        logs = {}
        y = self.y[0][index.to(self.device)]
        for key in MODELS:
            logits = self._logits(model, key, 0, index)
            logs[f"loss_{key}"] = nn.functional.cross_entropy(logits, y, reduction="none")
        loss = sum(logs.values())
        nfe = {f"nfe_{k}": float(self.nfe[k]) for k in MODELS if k != "grud"}
        return StepOutput(loss, logs, {"nfe": sum(nfe.values()), **nfe})  # type: ignore[arg-type]

    def evaluate(self, model: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        names = {"ncde": "", "hermite": "hermite_", "grud": "grud_", "odernn": "odernn_"}
        preds = {}
        with torch.no_grad():
            for key in MODELS:
                for split, label in ((1, "test"), (0, "train")):
                    index = torch.arange(len(self.y[split]))
                    pred = self._logits(model, key, split, index).argmax(-1)
                    acc = float((pred == self.y[split]).float().mean())
                    out[f"{names[key]}{label}_accuracy"] = acc
                    if split == 1:
                        preds[key] = pred
        y = self.y[1]
        self.confusion = torch.zeros(len(self.classes), len(self.classes), dtype=torch.int64)
        for a, b in zip(y.tolist(), preds["ncde"].tolist()):
            self.confusion[a, b] += 1
        out["chance_accuracy"] = float(torch.bincount(y).max()) / len(y)
        out["num_parameters"] = {
            "ncde": sum(p.numel() for p in model["ncde"].parameters()),
            "hermite": sum(p.numel() for p in model["hermite"].parameters()),
            "grud": sum(p.numel() for k in ("grud", "grud_readout") for p in model[k].parameters()),
            "odernn": sum(
                p.numel() for k in ("odernn", "odernn_readout") for p in model[k].parameters()
            ),
        }
        return out

    @classmethod
    def headline(cls, metrics: dict[str, Any]) -> list[Headline]:
        acc, grud, ode = (
            metrics["test_accuracy"],
            metrics["grud_test_accuracy"],
            metrics["odernn_test_accuracy"],
        )
        chance, herm = metrics["chance_accuracy"], metrics["hermite_test_accuracy"]
        best = max(grud, ode)
        if acc >= best - 0.01 and acc > chance:
            verdict = f"yes (criterion: within 1 point of the best baseline or above): {acc:.1%}"
            verdict += f" vs {best:.1%}"
        elif acc > chance:
            verdict = (
                f"partly: above chance ({chance:.1%}) but {best - acc:.1%} below the best baseline"
            )
        else:
            verdict = f"no: not above chance ({chance:.1%})"
        gap = herm - acc
        if abs(gap) <= 0.02:
            v2 = f"yes (criterion: within 2 points): Hermite {herm:.1%} vs cubic {acc:.1%}"
        elif gap > 0:
            v2 = f"yes: the causal Hermite path is {gap:.1%} above the natural cubic"
        elif herm > chance:
            v2 = f"partly: Hermite {-gap:.1%} below the natural cubic"
        else:
            v2 = f"no: Hermite {herm:.1%} not above chance ({chance:.1%})"
        return [
            Headline(
                "test accuracy: neural CDE vs GRU-D vs ODE-RNN",
                f"{acc:.1%} vs {grud:.1%} vs {ode:.1%} (chance {chance:.1%})",
                "the neural CDE matches or beats GRU-D and ODE-RNN on irregular series "
                "(CharacterTrajectories, 30% dropped: 98.7% vs 94.2% vs 95.4%, Kidger et al. "
                "2020, Table 1; JapaneseVowels is not in the paper, 1-NN DTW reaches ~95% on it)",
                verdict,
            ),
            Headline(
                "test accuracy: causal Hermite cubic vs natural cubic path",
                f"{herm:.1%} vs {acc:.1%}",
                "Hermite cubics with backward differences (causal, usable online) do about as "
                "well as natural cubic splines offline (Morrill et al. 2021)",
                v2,
            ),
        ]

    def figure(self, model: Any, metrics: dict[str, Any]) -> Any:
        from .report import new_figure

        ev = metrics["eval"]
        fig = new_figure(12, 4.2)
        ax_bar, ax_conf = fig.subplots(1, 2)
        labels = ["NCDE (cubic)", "NCDE (Hermite)", "GRU-D", "ODE-RNN"]
        keys = ["test_accuracy", "hermite_test_accuracy", "grud_test_accuracy"]
        keys.append("odernn_test_accuracy")
        values = [ev[k] for k in keys]
        ax_bar.bar(labels, values, color=["tab:red", "tab:orange", "tab:blue", "tab:green"])
        ax_bar.axhline(ev["chance_accuracy"], color="k", ls="--", lw=1, label="chance")
        for i, v in enumerate(values):
            ax_bar.text(i, v + 0.01, f"{v:.1%}", ha="center")
        ax_bar.set(ylim=(0, 1.08), ylabel="test accuracy", title="JapaneseVowels, 370 test series")
        ax_bar.legend(fontsize="small")
        conf = self.confusion.numpy()
        ax_conf.imshow(conf, cmap="Blues")
        ticks = list(range(len(self.classes)))
        ax_conf.set(
            xticks=ticks,
            yticks=ticks,
            xticklabels=self.classes,
            yticklabels=self.classes,
            xlabel="predicted speaker",
            ylabel="true speaker",
            title="neural CDE (cubic): confusion",
        )
        fig.suptitle("torchnde: neural CDE vs GRU-D vs ODE-RNN on JapaneseVowels")
        return fig
