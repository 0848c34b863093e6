r"""Fit a neural SDE to Ornstein–Uhlenbeck or geometric Brownian motion sample paths and compare
the marginal distributions of the fitted model with the data's.

Data: ``num_train`` and ``num_test`` paths on $[0, 1]$ at ``num_times`` equally spaced times,
drawn with the exact transition laws of

- ``ou``: $dX = \theta(\mu - X)\,dt + \sigma\,dW$, $\theta = 2$, $\mu = 1$, $\sigma = 0.5$,
  $X_0 \sim \mathcal N(0, 0.3^2)$;
- ``gbm``: $dX = \mu X\,dt + \sigma X\,dW$, $\mu = 0.5$, $\sigma = 0.4$,
  $X_0 \sim \mathcal U(0.5, 1.5)$.

Model: $dX = f_\theta(t, X)\,dt + g_\phi(t, X)\,dW$ (Itô, diagonal noise) with MLP drift and a
softplus-MLP diffusion. It is trained by maximum likelihood of the observed transitions under
the Euler–Maruyama discretisation, $X_{k+1} \mid X_k \sim \mathcal N(X_k + f\Delta, g^2\Delta)$
(a quasi-likelihood; not the SDE-GAN or latent-SDE objective), and evaluated by *simulating*
it with :func:`torchnde.sdeint` from the test paths' initial values and comparing the
marginals (mean, standard deviation, 1-Wasserstein distance) with the test data and with the
exact marginals of the true process. The noise floor of the distance is that of the true
process simulated from the same initial values with independent noise.
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

from . import harness
from ._models import mlp
from .config import ExperimentConfig, check, is_int
from .harness import Headline, StepOutput

__all__ = ["Config", "Task", "sample_paths", "true_marginals"]

PROCESSES = ("ou", "gbm")
OU = {"theta": 2.0, "mu": 1.0, "sigma": 0.5, "x0_std": 0.3}
GBM = {"mu": 0.5, "sigma": 0.4, "x0_low": 0.5, "x0_high": 1.5}


@dataclass
class Config(ExperimentConfig):
    """Options of ``torchnde run sde``."""

    out: Path = field(default=Path("runs/sde"), metadata={"help": "run folder"})
    process: str = field(default="ou", metadata={"help": "the data", "choices": PROCESSES})
    epochs: int = field(default=40, metadata={"help": "passes over the training paths"})
    batch_size: int = field(default=64, metadata={"help": "paths per step (global)"})
    lr: float = field(default=5e-3, metadata={"help": "Adam learning rate (cosine decay)"})
    num_train: int = field(default=512, metadata={"help": "training paths"})
    num_test: int = field(default=1024, metadata={"help": "test paths"})
    num_times: int = field(default=41, metadata={"help": "observation times in [0, 1]"})
    hidden: int = field(default=32, metadata={"help": "hidden width of drift and diffusion"})
    substeps: int = field(default=5, metadata={"help": "solver steps per observation interval"})
    data_seed: int = field(default=0, metadata={"help": "seed of the data generator"})

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("num_train", "num_test", "hidden", "substeps"):
            v = getattr(self, key)
            check(is_int(v) and v >= 1, key, "an int >= 1", v)
        check(
            is_int(self.num_times) and self.num_times >= 2,
            "num_times",
            "an int >= 2",
            self.num_times,
        )
        check(
            is_int(self.data_seed) and self.data_seed >= 0,
            "data_seed",
            "an int >= 0",
            self.data_seed,
        )


def sample_paths(
    process: str, n: int, ts: np.ndarray, seed: int, x0: np.ndarray | None = None
) -> np.ndarray:
    """``n`` exact sample paths of ``process`` at times ``ts``: shape ``(n, len(ts))``; from
    the initial values ``x0`` when given, else from the process's initial law."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, len(ts)))
    if x0 is not None:
        x[:, 0] = x0
    elif process == "ou":
        x[:, 0] = OU["x0_std"] * rng.standard_normal(n)
    else:
        x[:, 0] = rng.uniform(GBM["x0_low"], GBM["x0_high"], n)
    for k, dt in enumerate(np.diff(ts)):
        z = rng.standard_normal(n)
        if process == "ou":
            th, mu, s = OU["theta"], OU["mu"], OU["sigma"]
            decay = math.exp(-th * dt)
            sd = s * math.sqrt((1 - decay**2) / (2 * th))
            x[:, k + 1] = mu + (x[:, k] - mu) * decay + sd * z
        else:
            mu, s = GBM["mu"], GBM["sigma"]
            x[:, k + 1] = x[:, k] * np.exp((mu - s**2 / 2) * dt + s * math.sqrt(dt) * z)
    return x


def true_marginals(process: str, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact mean and standard deviation of ``X_t`` at the times ``ts``."""
    if process == "ou":
        th, mu, s, s0 = OU["theta"], OU["mu"], OU["sigma"], OU["x0_std"]
        decay = np.exp(-th * ts)
        mean = mu * (1 - decay)
        var = s0**2 * decay**2 + s**2 * (1 - decay**2) / (2 * th)
        return mean, np.sqrt(var)
    mu, s, lo, hi = GBM["mu"], GBM["sigma"], GBM["x0_low"], GBM["x0_high"]
    m0, m2 = (lo + hi) / 2, (hi**3 - lo**3) / (3 * (hi - lo))
    mean = m0 * np.exp(mu * ts)
    second = m2 * np.exp((2 * mu + s**2) * ts)
    return mean, np.sqrt(second - mean**2)


def wasserstein_1d(a: np.ndarray, b: np.ndarray) -> float:
    """1-Wasserstein distance between two equally sized 1-D samples."""
    return float(np.abs(np.sort(a) - np.sort(b)).mean())


class NeuralSDE(nn.Module):
    r"""Drift $f(t, x) = \mathrm{MLP}([x, t])$ and diffusion $g = \mathrm{softplus}(\mathrm{MLP}
    ([x, t]))$ of a scalar Itô SDE; counts drift calls."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.drift_net = mlp([2, hidden, hidden, 1], nn.Softplus)
        self.diffusion_net = mlp([2, hidden, hidden, 1], nn.Softplus)
        self.calls = 0

    def _in(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, torch.as_tensor(t).to(x).expand_as(x)], dim=-1)

    def drift(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.drift_net(self._in(t, x))

    def diffusion(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.softplus(self.diffusion_net(self._in(t, x))) + 1e-4


class Task(harness.Task):
    name = "sde"
    title = "neural SDE fitted to Ornstein-Uhlenbeck / geometric Brownian motion paths"
    paper = (
        "Kidger, Foster, Li, Lyons 2021, Neural SDEs as Infinite-Dimensional GANs; Li, Wong, "
        "Chen, Duvenaud 2020, Scalable Gradients for SDEs"
    )
    Config = Config

    def setup(self) -> nn.Module:
        cfg = self.config
        self.ts_np = np.linspace(0.0, 1.0, cfg.num_times)
        train = sample_paths(cfg.process, cfg.num_train, self.ts_np, cfg.data_seed)
        test = sample_paths(cfg.process, cfg.num_test, self.ts_np, cfg.data_seed + 1)
        # The true process from the test paths' initial values, with independent noise: what
        # a perfect model would give, so the sampling-noise floor of the distances.
        self.floor = sample_paths(
            cfg.process, cfg.num_test, self.ts_np, cfg.data_seed + 2, x0=test[:, 0]
        )
        self.x = torch.tensor(train, dtype=torch.float32, device=self.device)
        self.x_test = torch.tensor(test, dtype=torch.float32, device=self.device)
        self.ts = torch.tensor(self.ts_np, dtype=torch.float32, device=self.device)
        return NeuralSDE(cfg.hidden)

    @property
    def num_train(self) -> int:
        return self.config.num_train

    def step(self, model: Any, index: torch.Tensor) -> StepOutput:
        x = self.x[index.to(self.device)]  # (batch, times)
        dt = self.ts.diff()  # (times - 1,)
        x0, x1 = x[:, :-1, None], x[:, 1:, None]
        t = self.ts[:-1].expand(x.shape[0], -1)[..., None]
        model.calls = 0
        mean = x0 + model.drift(t, x0) * dt[:, None]
        var = model.diffusion(t, x0) ** 2 * dt[:, None]
        nll = 0.5 * ((x1 - mean) ** 2 / var + torch.log(2 * math.pi * var))
        loss = nll.mean(dim=(1, 2))
        return StepOutput(loss, nfe={"nfe": float(dt.numel())})

    def simulate(self, model: Any, x0: torch.Tensor) -> torch.Tensor:
        """Sample paths of the fitted SDE from ``x0`` ``(n,)`` at the observation times."""
        cfg = self.config
        dt = 1.0 / ((cfg.num_times - 1) * cfg.substeps)
        model.calls = 0
        ys = torchnde.sdeint(
            model.drift, model.diffusion, x0[:, None], self.ts, method="euler", dt=dt
        )
        return ys[..., 0].T  # (n, times)

    def evaluate(self, model: Any) -> dict[str, Any]:
        with torch.no_grad():
            sim = self.simulate(model, self.x_test[:, 0])
        nfe = model.calls
        self.sim = sim.cpu().numpy()
        test = self.x_test.cpu().numpy()
        mean_true, std_true = true_marginals(self.config.process, self.ts_np)
        m_sim, s_sim = self.sim.mean(0), self.sim.std(0)
        m_test, s_test = test.mean(0), test.std(0)
        w_model = [wasserstein_1d(self.sim[:, k], test[:, k]) for k in range(len(self.ts_np))]
        w_floor = [wasserstein_1d(self.floor[:, k], test[:, k]) for k in range(len(self.ts_np))]
        return {
            "process": self.config.process,
            "model_mean_t1": float(m_sim[-1]),
            "model_std_t1": float(s_sim[-1]),
            "data_mean_t1": float(m_test[-1]),
            "data_std_t1": float(s_test[-1]),
            "true_mean_t1": float(mean_true[-1]),
            "true_std_t1": float(std_true[-1]),
            "max_abs_mean_error": float(np.abs(m_sim - mean_true).max()),
            "max_abs_std_error": float(np.abs(s_sim - std_true).max()),
            "wasserstein_t1": w_model[-1],
            "wasserstein_t1_noise_floor": w_floor[-1],
            "wasserstein_mean_over_times": float(np.mean(w_model[1:])),
            "wasserstein_floor_mean_over_times": float(np.mean(w_floor[1:])),
            "simulation_nfe": nfe,
        }

    #: Marginals count as reproduced within this fraction of the exact standard deviation.
    MARGINAL_TOL = 0.1
    #: The 1-Wasserstein distance counts as at the noise level within this factor of it.
    NOISE_FACTOR = 1.5

    @classmethod
    def headline(cls, metrics: dict[str, Any]) -> list[Headline]:
        m = metrics
        err_mean = abs(m["model_mean_t1"] - m["true_mean_t1"]) / m["true_std_t1"]
        err_std = abs(m["model_std_t1"] - m["true_std_t1"]) / m["true_std_t1"]
        off = f"mean off by {err_mean:.2f}, std by {err_std:.2f} exact stds"
        tol = cls.MARGINAL_TOL
        marginal = (
            f"yes: {off}" if max(err_mean, err_std) <= tol else f"no (criterion {tol}): {off}"
        )
        ratio = m["wasserstein_mean_over_times"] / m["wasserstein_floor_mean_over_times"]
        noise = (
            f"yes: {ratio:.2f}x the noise floor"
            if ratio <= cls.NOISE_FACTOR
            else f"no (criterion {cls.NOISE_FACTOR}x): {ratio:.2f}x the noise floor"
        )
        return [
            Headline(
                f"{m['process'].upper()} marginal at t=1, mean ± std: model / data / exact",
                f"{m['model_mean_t1']:.3f} ± {m['model_std_t1']:.3f} / "
                f"{m['data_mean_t1']:.3f} ± {m['data_std_t1']:.3f} / "
                f"{m['true_mean_t1']:.3f} ± {m['true_std_t1']:.3f}",
                "a fitted neural SDE reproduces the data's marginal distributions "
                "(Kidger et al. 2021, Sec. 5)",
                marginal,
            ),
            Headline(
                "1-Wasserstein distance to the test marginals, mean over times: model vs the "
                "true process from the same initial values",
                f"{m['wasserstein_mean_over_times']:.4f} vs "
                f"{m['wasserstein_floor_mean_over_times']:.4f}",
                "at the sampling-noise level when the fit is good",
                noise,
            ),
        ]

    def figure(self, model: Any, metrics: dict[str, Any]) -> Any:
        from .report import new_figure

        fig = new_figure(15, 4.2)
        ax_paths, ax_marg, ax_fields = fig.subplots(1, 3)
        ts = self.ts_np
        test = self.x_test.cpu().numpy()
        for i in range(20):
            ax_paths.plot(ts, test[i], color="tab:gray", lw=0.7, alpha=0.7)
            ax_paths.plot(ts, self.sim[i], color="tab:blue", lw=0.7, alpha=0.7)
        ax_paths.plot([], [], color="tab:gray", label="data")
        ax_paths.plot([], [], color="tab:blue", label="fitted SDE")
        ax_paths.set(xlabel="t", ylabel="X", title="sample paths (same initial values)")
        ax_paths.legend(fontsize="small")
        mean_true, std_true = true_marginals(self.config.process, ts)
        for (m, s), label, colour in (
            ((mean_true, std_true), "exact", "k"),
            ((test.mean(0), test.std(0)), "test data", "tab:gray"),
            ((self.sim.mean(0), self.sim.std(0)), "fitted SDE", "tab:blue"),
        ):
            ax_marg.plot(ts, m, color=colour, label=f"{label} mean")
            ax_marg.plot(ts, m + s, color=colour, ls="--", lw=0.8)
            ax_marg.plot(ts, m - s, color=colour, ls="--", lw=0.8)
        ax_marg.set(xlabel="t", ylabel="X", title="marginals: mean ± std")
        ax_marg.legend(fontsize="small")
        lo, hi = np.quantile(test, [0.01, 0.99])
        grid = torch.linspace(float(lo), float(hi), 100, device=self.device)[:, None]
        t_half = torch.tensor(0.5, device=self.device)
        with torch.no_grad():
            f = model.drift(t_half, grid)[:, 0].cpu().numpy()
            g = model.diffusion(t_half, grid)[:, 0].cpu().numpy()
        xg = grid[:, 0].cpu().numpy()
        if self.config.process == "ou":
            f_true = OU["theta"] * (OU["mu"] - xg)
            g_true = np.full_like(xg, OU["sigma"])
        else:
            f_true, g_true = GBM["mu"] * xg, GBM["sigma"] * xg
        ax_fields.plot(xg, f, color="tab:blue", label="drift (fitted)")
        ax_fields.plot(xg, f_true, color="tab:blue", ls=":", label="drift (true)")
        ax_fields.plot(xg, g, color="tab:orange", label="diffusion (fitted)")
        ax_fields.plot(xg, g_true, color="tab:orange", ls=":", label="diffusion (true)")
        ax_fields.set(xlabel="x", title="drift and diffusion at t = 0.5")
        ax_fields.legend(fontsize="small")
        fig.suptitle(f"torchnde: neural SDE fitted to {self.config.process.upper()} paths")
        return fig
