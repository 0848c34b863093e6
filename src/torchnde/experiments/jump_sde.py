r"""A neural jump SDE fitted to a Hawkes process (Jia & Benson 2019, synthetic data).

The data are sequences of a Hawkes process with exponential kernel on $[0, T]$,

$$ \lambda^*(t) = \mu + \alpha\beta \sum_{t_i < t} e^{-\beta (t - t_i)}, $$

simulated exactly by Ogata's thinning (:func:`simulate_hawkes`), with $\mu = 0.2$,
$\alpha = 0.8$, $\beta = 1$ (the "Hawkes 1" process of Omi et al. 2019, also used by Jia &
Benson; branching ratio 0.8, mean rate $\mu / (1 - \alpha) = 1$). The model is
:class:`torchnde.models.NeuralJumpSDE` trained by maximum likelihood. Its test log-likelihood
per sequence (``eval.test_loglik``) is reported beside that of the true intensity
(``eval.true_intensity_loglik``, the best any model can do on average) and that of the best
homogeneous Poisson process (``eval.poisson_loglik``, the rate fitted on the training set),
which knows nothing of the self-excitation.

``torchnde run jump-sde`` (about 1-2 minutes on 2 cores); ``full=true`` for a larger run
(more sequences, epochs and a wider model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models import NeuralJumpSDE
from . import harness
from .config import ExperimentConfig, check, is_int, is_positive
from .harness import Headline, StepOutput

__all__ = ["Config", "Task", "hawkes_loglik", "simulate_hawkes"]


def simulate_hawkes(
    mu: float, alpha: float, beta: float, t_end: float, rng: np.random.Generator
) -> np.ndarray:
    r"""One sequence of the exponential Hawkes process on ``[0, t_end]`` by Ogata's thinning.

    Between events the intensity only decays, so its value just after the current time
    bounds it until the next event: candidates are drawn at that rate and kept with
    probability $\lambda^*(t) / \bar\lambda$, which is exact (no discretisation).
    """
    t, excite = 0.0, 0.0  # excite = sum_i alpha beta exp(-beta (t - t_i))
    out: list[float] = []
    while True:
        bound = mu + excite
        dt = rng.exponential(1.0 / bound)
        t += dt
        if t > t_end:
            return np.asarray(out)
        excite *= math.exp(-beta * dt)
        if rng.uniform() * bound <= mu + excite:
            out.append(t)
            excite += alpha * beta


def hawkes_loglik(times: np.ndarray, mu: float, alpha: float, beta: float, t_end: float) -> float:
    r"""The exact log-likelihood of one sequence under the true intensity:
    $\sum_i \log \lambda^*(t_i) - \mu T - \alpha \sum_i (1 - e^{-\beta (T - t_i)})$."""
    log_sum, excite, prev = 0.0, 0.0, 0.0
    for t in times:
        excite *= math.exp(-beta * (t - prev))
        log_sum += math.log(mu + excite)
        excite += alpha * beta
        prev = t
    compensator = mu * t_end + alpha * float(np.sum(1.0 - np.exp(-beta * (t_end - times))))
    return log_sum - compensator


@dataclass
class Config(ExperimentConfig):
    """Options of ``torchnde run jump-sde``."""

    out: Path = field(default=Path("runs/jump-sde"), metadata={"help": "run folder"})
    epochs: int = field(default=10, metadata={"help": "passes over the training sequences"})
    lr: float = field(default=1e-2, metadata={"help": "Adam learning rate (cosine decay)"})
    batch_size: int = field(default=32, metadata={"help": "sequences per step (global)"})
    num_train: int = field(default=96, metadata={"help": "training sequences"})
    num_test: int = field(default=128, metadata={"help": "test sequences"})
    t_end: float = field(default=20.0, metadata={"help": "observation window [0, t_end]"})
    mu: float = field(default=0.2, metadata={"help": "Hawkes base rate"})
    alpha: float = field(default=0.8, metadata={"help": "Hawkes branching ratio (< 1)"})
    beta: float = field(default=1.0, metadata={"help": "Hawkes kernel decay rate"})
    latent: int = field(default=4, metadata={"help": "latent state size"})
    hidden: int = field(default=16, metadata={"help": "hidden width of the networks"})
    step_size: float = field(default=0.5, metadata={"help": "RK4 step between events"})
    full: bool = field(
        default=False,
        metadata={"help": "larger run: 1000/500 sequences on [0, 100], 30 epochs, latent 10"},
    )

    def __post_init__(self) -> None:
        if self.full:  # the larger run, for every key left at its default
            larger = {"num_train": 1000, "num_test": 500, "t_end": 100.0, "epochs": 30,
                      "latent": 10, "hidden": 32, "step_size": 0.25}  # fmt: skip
            for key, value in larger.items():
                if getattr(self, key) == self.__dataclass_fields__[key].default:
                    setattr(self, key, value)
        super().__post_init__()
        for key in ("num_train", "num_test", "latent", "hidden"):
            value = getattr(self, key)
            check(is_int(value) and value >= 1, key, "an int >= 1", value)
        for key in ("t_end", "mu", "beta", "step_size"):
            check(is_positive(getattr(self, key)), key, "a positive number", getattr(self, key))
        check(
            isinstance(self.alpha, (int, float)) and 0 <= self.alpha < 1,
            "alpha",
            "a number in [0, 1) (a stationary process)",
            self.alpha,
        )


def _pad(seqs: list[np.ndarray]) -> torch.Tensor:
    width = max(1, max(len(s) for s in seqs))
    out = torch.full((len(seqs), width), float("nan"), dtype=torch.float64)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.from_numpy(s)
    return out


class Task(harness.Task):
    name = "jump-sde"
    title = "neural jump SDE fitted to a Hawkes process by maximum likelihood"
    paper = "Jia, Benson 2019, Neural Jump Stochastic Differential Equations"
    Config = Config

    def setup(self) -> nn.Module:
        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        p = (cfg.mu, cfg.alpha, cfg.beta, cfg.t_end)
        self.train_seqs = [simulate_hawkes(*p, rng) for _ in range(cfg.num_train)]
        self.test_seqs = [simulate_hawkes(*p, rng) for _ in range(cfg.num_test)]
        self.train = _pad(self.train_seqs).to(self.device)
        self.test = _pad(self.test_seqs).to(self.device)
        return NeuralJumpSDE(cfg.latent, cfg.hidden, step_size=cfg.step_size).to(
            self.device, torch.float64
        )

    @property
    def num_train(self) -> int:
        return self.config.num_train

    def step(self, model: nn.Module, index: torch.Tensor) -> StepOutput:
        times = self.train[index.to(self.device)]
        keep = int((~torch.isnan(times)).sum(1).max())
        loglik = model(times[:, : max(keep, 1)], self.config.t_end)
        # Per unit time, so the learning rate does not depend on the window.
        return StepOutput(
            -loglik / self.config.t_end, nfe={"nfe": float(getattr(model, "num_fevals", 0))}
        )

    def evaluate(self, model: nn.Module) -> dict[str, Any]:
        cfg = self.config
        with torch.no_grad():
            model_ll = float(model(self.test, cfg.t_end).mean())
        true_ll = float(
            np.mean(
                [hawkes_loglik(s, cfg.mu, cfg.alpha, cfg.beta, cfg.t_end) for s in self.test_seqs]
            )
        )
        rate = sum(len(s) for s in self.train_seqs) / (cfg.num_train * cfg.t_end)
        counts = np.array([len(s) for s in self.test_seqs], dtype=float)
        poisson_ll = float(np.mean(counts * math.log(rate) - rate * cfg.t_end))
        gap = true_ll - poisson_ll
        return {
            "test_loglik": model_ll,
            "true_intensity_loglik": true_ll,
            "poisson_loglik": poisson_ll,
            "poisson_rate": rate,
            "gap_closed": (model_ll - poisson_ll) / gap if gap > 0 else float("nan"),
            "events_per_sequence": float(counts.mean()),
        }

    @classmethod
    def headline(cls, metrics: dict[str, Any]) -> list[Headline]:
        ll, true, pois = (
            metrics["test_loglik"],
            metrics["true_intensity_loglik"],
            metrics["poisson_loglik"],
        )
        closed = metrics["gap_closed"]
        numbers = (
            f"{closed:.0%} of the gap from the Poisson baseline ({pois:.2f}) to the true "
            f"intensity ({true:.2f})"
        )
        if closed >= 0.5:
            verdict = f"yes (criterion: at least half the gap closed): {numbers}"
        elif ll > pois:
            verdict = f"partly: beats the Poisson baseline, but closes only {numbers}"
        else:
            verdict = f"no: no better than the Poisson baseline ({ll:.2f} vs {pois:.2f})"
        return [
            Headline(
                "test log-likelihood per sequence",
                f"{ll:.2f} (true intensity {true:.2f}, best homogeneous Poisson {pois:.2f})",
                "on synthetic Hawkes data the neural JSDE's log-likelihood comes close to the "
                "true model's and above models that ignore the history (Jia & Benson 2019, "
                "Sec. 5.1)",
                verdict,
            )
        ]

    def figure(self, model: nn.Module, metrics: dict[str, Any]) -> Any:
        from .report import new_figure

        cfg = self.config
        seq = self.test_seqs[0]
        ts = np.linspace(0.0, cfg.t_end, 400)
        true = []
        for t in ts:
            past = seq[seq < t]
            true.append(cfg.mu + cfg.alpha * cfg.beta * np.sum(np.exp(-cfg.beta * (t - past))))
        fitted = model.intensity_at(  # type: ignore[operator]
            torch.from_numpy(seq).to(self.device), torch.from_numpy(ts).to(self.device)
        )
        fig = new_figure(10, 4)
        ax = fig.subplots()
        ax.plot(ts, true, color="k", lw=1.5, label="true intensity")
        ax.plot(ts, fitted.cpu().numpy(), color="tab:red", lw=1.5, ls="--", label="neural JSDE")
        ax.axhline(metrics["eval"]["poisson_rate"], color="tab:gray", lw=1, label="Poisson fit")
        ax.plot(seq, np.zeros_like(seq), "|", color="tab:blue", ms=12, label="events")
        ax.set(xlabel="t", ylabel="intensity", title="a test sequence of the Hawkes process")
        ax.legend(fontsize="small")
        fig.suptitle("torchnde: neural jump SDE on a Hawkes process (Jia & Benson 2019)")
        return fig
