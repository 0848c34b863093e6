r"""A latent SDE fitted to the stochastic Lorenz attractor (Li et al. 2020, torchsde's
``examples/latent_sde_lorenz.py``), simulated in the project.

Data: paths of the stochastic Lorenz system (Itô, diagonal multiplicative noise)

$$ dx_1 = a_1 (x_2 - x_1)\,dt + b_1 x_1\,dW_1, \quad
   dx_2 = (a_2 x_1 - x_2 - x_1 x_3)\,dt + b_2 x_2\,dW_2, \quad
   dx_3 = (x_1 x_2 - a_3 x_3)\,dt + b_3 x_3\,dW_3, $$

$a = (10, 28, 8/3)$, $b = (0.1, 0.28, 0.3)$, $x(0) \sim \mathcal N(0, I)$, on $[0, 2]$ at
``num_times`` equally spaced times, simulated by Euler–Maruyama with step ``sim_dt``
(:func:`simulate_lorenz`), normalised per channel (mean and standard deviation over times
and paths, as torchsde's example) and observed with Gaussian noise of standard deviation
``noise_std``.

Model: :class:`torchnde.models.LatentSDE` (latent size 4, GRU context encoder), trained on
the ELBO with the KL weight annealed linearly from 0 to 1 over ``kl_anneal_steps`` steps
(torchsde's schedule). The observation noise of the likelihood is learnt (one standard
deviation per channel) by default; torchsde's example keeps it at ``noise_std``, which makes
the ELBO of a briefly trained model a very large negative number dominated by the
reconstruction error (``learn_obs_std=false obs_std=0.01`` restores that).

Metrics (``eval``), per sequence of ``num_times`` x 3 observations, in nats:

- ``elbo``: the ELBO on the training sequences (KL weight 1), averaged over
  ``eval_samples`` posterior paths per sequence;
- ``test_nll``: minus the ELBO on held-out sequences, an upper bound on their negative
  log-likelihood under the model;
- ``gaussian_test_nll``: the exact negative log-likelihood of the held-out sequences under
  the baseline of independent Gaussians per time and channel fitted to the training
  sequences (a model with no dynamics); ``untrained_test_nll``: ``test_nll`` of the model
  before training;
- ``prior_ks_marginal``: the mean two-sample Kolmogorov–Smirnov statistic between paths of
  the fitted *prior* SDE and the held-out data, over the three channels at five times (the
  sample paths of the figure); ``prior_ks_marginal_untrained``, ``ks_marginal_floor``: the
  same for the untrained prior and for a second set of true paths (the sampling floor).

``torchnde run latent-sde`` (a few minutes on 2 cores); ``full=true`` for torchsde's scale
(1024 paths, batch 1024, 5000 steps, hidden 128, context 64, step 0.01, fixed observation
noise 0.01; hours on a CPU).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import torchnde as tn

from ..models import LatentSDE
from . import harness
from .config import ExperimentConfig, check, is_int, is_positive
from .harness import Headline, StepOutput

__all__ = ["Config", "Task", "ks_statistic", "lorenz_drift", "lorenz_diffusion", "simulate_lorenz"]

LORENZ_A = (10.0, 28.0, 8.0 / 3.0)
LORENZ_B = (0.1, 0.28, 0.3)


def lorenz_drift(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The Lorenz vector field $(a_1(x_2 - x_1), a_2 x_1 - x_2 - x_1 x_3, x_1 x_2 - a_3
    x_3)$, for ``x`` of shape ``(batch, 3)``."""
    a1, a2, a3 = LORENZ_A
    x1, x2, x3 = x.unbind(-1)
    return torch.stack([a1 * (x2 - x1), a2 * x1 - x2 - x1 * x3, x1 * x2 - a3 * x3], dim=-1)


def lorenz_diffusion(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The diagonal multiplicative noise $(b_1 x_1, b_2 x_2, b_3 x_3)$."""
    return x * x.new_tensor(LORENZ_B)


def simulate_lorenz(num: int, ts: torch.Tensor, *, seed: int, dt: float = 1e-3) -> torch.Tensor:
    """``num`` paths of the stochastic Lorenz system at ``ts`` from $x(0) \\sim \\mathcal
    N(0, I)$ (Euler–Maruyama, step ``dt``), shape ``(len(ts), num, 3)``, not normalised."""
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(num, 3, generator=gen, dtype=ts.dtype)
    with torch.no_grad():
        return tn.sdeint(
            lorenz_drift, lorenz_diffusion, x0, ts, method="euler", dt=dt, seed=seed + 1
        )


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """The two-sample Kolmogorov–Smirnov statistic $\\sup_x |F_a(x) - F_b(x)|$ of two 1-D
    samples (the largest gap between their empirical distribution functions)."""
    a, b = np.sort(np.asarray(a, float)), np.sort(np.asarray(b, float))
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / a.size
    fb = np.searchsorted(b, grid, side="right") / b.size
    return float(np.abs(fa - fb).max())


@dataclass
class Config(ExperimentConfig):
    """Options of ``torchnde run latent-sde``."""

    out: Path = field(default=Path("runs/latent-sde"), metadata={"help": "run folder"})
    epochs: int = field(default=50, metadata={"help": "passes over the training paths"})
    batch_size: int = field(default=64, metadata={"help": "paths per step (global)"})
    lr: float = field(default=1e-2, metadata={"help": "Adam learning rate (cosine decay)"})
    num_train: int = field(default=512, metadata={"help": "training paths"})
    num_test: int = field(default=256, metadata={"help": "held-out paths"})
    num_times: int = field(default=100, metadata={"help": "observation times in [0, t1]"})
    t1: float = field(default=2.0, metadata={"help": "end of the observation window"})
    noise_std: float = field(default=0.01, metadata={"help": "observation noise of the data"})
    latent: int = field(default=4, metadata={"help": "latent size"})
    context: int = field(default=32, metadata={"help": "context size"})
    hidden: int = field(default=64, metadata={"help": "width of the networks and the GRU"})
    dt: float = field(default=0.02, metadata={"help": "step of the latent solves (Euler)"})
    obs_std: float = field(
        default=0.1, metadata={"help": "observation noise of the likelihood (its start if learnt)"}
    )
    learn_obs_std: bool = field(default=True, metadata={"help": "learn the observation noise"})
    kl_anneal_steps: int = field(
        default=100, metadata={"help": "steps of the linear KL warm-up from 0 to 1"}
    )
    eval_samples: int = field(
        default=4, metadata={"help": "posterior paths per sequence in the evaluation"}
    )
    sim_dt: float = field(default=1e-3, metadata={"help": "Euler–Maruyama step of the data"})
    data_seed: int = field(default=0, metadata={"help": "seed of the data"})
    full: bool = field(
        default=False,
        metadata={"help": "torchsde's scale: 1024 paths, batch 1024, 5000 steps, hidden 128"},
    )

    def __post_init__(self) -> None:
        if self.full:
            larger = {"num_train": 1024, "batch_size": 1024, "epochs": 5000, "hidden": 128,
                      "context": 64, "dt": 0.01, "obs_std": 0.01, "learn_obs_std": False,
                      "kl_anneal_steps": 1000}  # fmt: skip
            for key, value in larger.items():
                if getattr(self, key) == self.__dataclass_fields__[key].default:
                    setattr(self, key, value)
        super().__post_init__()
        for key in ("num_train", "num_test", "latent", "context", "hidden", "eval_samples"):
            value = getattr(self, key)
            check(is_int(value) and value >= 1, key, "an int >= 1", value)
        check(is_int(self.num_times) and self.num_times >= 2, "num_times", "an int >= 2",
              self.num_times)  # fmt: skip
        check(is_int(self.kl_anneal_steps) and self.kl_anneal_steps >= 0, "kl_anneal_steps",
              "an int >= 0", self.kl_anneal_steps)  # fmt: skip
        check(is_int(self.data_seed) and self.data_seed >= 0, "data_seed", "an int >= 0",
              self.data_seed)  # fmt: skip
        for key in ("t1", "dt", "obs_std", "sim_dt"):
            check(is_positive(getattr(self, key)), key, "a positive number", getattr(self, key))
        check(
            isinstance(self.noise_std, (int, float)) and self.noise_std >= 0,
            "noise_std",
            "a number >= 0",
            self.noise_std,
        )


class _Trained(nn.Module):
    """The latent SDE and the count of training steps (for the KL warm-up; a buffer, so it is
    checkpointed with the model)."""

    def __init__(self, model: LatentSDE) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("steps", torch.zeros((), dtype=torch.float64))


class Task(harness.Task):
    name = "latent-sde"
    title = "latent SDE on the stochastic Lorenz attractor: ELBO, test NLL bound, prior samples"
    paper = (
        "Li, Wong, Chen, Duvenaud 2020, Scalable Gradients for Stochastic Differential Equations"
    )
    Config = Config

    #: The times (fractions of the window) at which marginals are compared.
    KS_FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)

    def setup(self) -> nn.Module:
        cfg = self.config
        ts = torch.linspace(0.0, cfg.t1, cfg.num_times, dtype=torch.float32)
        raw = simulate_lorenz(cfg.num_train + 2 * cfg.num_test, ts, seed=cfg.data_seed,
                              dt=cfg.sim_dt)  # fmt: skip
        train_raw = raw[:, : cfg.num_train]
        mean, std = train_raw.mean(dim=(0, 1)), train_raw.std(dim=(0, 1))
        gen = torch.Generator().manual_seed(cfg.data_seed + 2)
        xs = (raw - mean) / std + cfg.noise_std * torch.randn(raw.shape, generator=gen)
        self.ts = ts.to(self.device)
        self.train = xs[:, : cfg.num_train].to(self.device)
        self.test = xs[:, cfg.num_train : cfg.num_train + cfg.num_test].to(self.device)
        # A second set of true paths: the sampling floor of the KS statistics.
        self.floor = xs[:, cfg.num_train + cfg.num_test :].to(self.device)
        model = LatentSDE(
            3, cfg.latent, cfg.context, cfg.hidden, obs_std=cfg.obs_std,
            learn_obs_std=cfg.learn_obs_std, dt=cfg.dt,
        )  # fmt: skip
        self.untrained = copy.deepcopy(model).to(self.device)
        return _Trained(model)

    @property
    def num_train(self) -> int:
        return self.config.num_train

    def step(self, model: nn.Module, index: torch.Tensor) -> StepOutput:
        cfg = self.config
        wrapped: Any = model
        xs = self.train[:, index.to(self.device)]
        out = wrapped.model(self.ts, xs)
        anneal = max(cfg.kl_anneal_steps, 1)
        weight = min(1.0, float(wrapped.steps) / anneal) if cfg.kl_anneal_steps else 1.0
        wrapped.steps += 1
        kl = out.kl_z0 + out.kl_path
        loss = -(out.log_px - weight * kl) / cfg.num_times  # per time, for the learning rate
        return StepOutput(
            loss, logs={"elbo": out.elbo.detach(), "kl": kl.detach()},
            nfe={"nfe": float(2 * math.ceil(cfg.t1 / cfg.dt))},
        )  # fmt: skip

    def _elbo(self, model: LatentSDE, xs: torch.Tensor) -> float:
        """The mean ELBO of the sequences ``xs``, over ``eval_samples`` posterior paths each."""
        total = 0.0
        with torch.no_grad():
            for _ in range(self.config.eval_samples):
                for chunk in xs.split(256, dim=1):
                    total += float(model.elbo(self.ts, chunk).sum())
        return total / (self.config.eval_samples * xs.shape[1])

    def _ks(self, paths: torch.Tensor) -> float:
        n = self.ts.numel()
        idx = sorted({round(f * (n - 1)) for f in self.KS_FRACTIONS})
        a, b = paths.cpu().numpy(), self.test.cpu().numpy()
        return float(np.mean([ks_statistic(a[i, :, c], b[i, :, c]) for i in idx for c in range(3)]))

    def evaluate(self, model: nn.Module) -> dict[str, Any]:
        cfg = self.config
        fitted: LatentSDE = model.model  # type: ignore[assignment]
        fitted.eval()
        obs = cfg.num_times * 3
        elbo = self._elbo(fitted, self.train)
        test_nll = -self._elbo(fitted, self.test)
        untrained_nll = -self._elbo(self.untrained, self.test)
        mean = self.train.mean(dim=1, keepdim=True)
        std = self.train.std(dim=1, keepdim=True)
        gauss = torch.distributions.Normal(mean, std).log_prob(self.test).sum(dim=(0, 2))
        gaussian_nll = -float(gauss.mean())
        with torch.no_grad():
            self.prior_paths = fitted.sample(self.ts, cfg.num_test)
            untrained_paths = self.untrained.sample(self.ts, cfg.num_test)
            recon = fitted(self.ts, self.test[:, :64])
            self.recon = fitted.projector(recon.zs)
        return {
            "elbo": elbo,
            "test_nll": test_nll,
            "gaussian_test_nll": gaussian_nll,
            "untrained_test_nll": untrained_nll,
            "test_nll_per_observation": test_nll / obs,
            "gaussian_test_nll_per_observation": gaussian_nll / obs,
            "prior_ks_marginal": self._ks(self.prior_paths),
            "prior_ks_marginal_untrained": self._ks(untrained_paths),
            "ks_marginal_floor": self._ks(self.floor),
            "test_reconstruction_mse": float(((self.recon - self.test[:, :64]) ** 2).mean()),
            "obs_std_learnt": [float(s) for s in fitted.obs_logstd.detach().exp()],
            "observations_per_sequence": obs,
        }

    @classmethod
    def headline(cls, metrics: dict[str, Any]) -> list[Headline]:
        m = metrics
        nll, gauss, untrained = m["test_nll"], m["gaussian_test_nll"], m["untrained_test_nll"]
        if nll < gauss:
            verdict = (
                f"yes (criterion: the bound is below the baseline's exact NLL): {nll:.1f} < "
                f"{gauss:.1f} nats per sequence"
            )
        elif nll < untrained:
            verdict = (
                f"partly: better than before training ({untrained:.1f}) but the bound "
                f"{nll:.1f} is not below the Gaussian baseline's NLL {gauss:.1f}"
            )
        else:
            verdict = f"no: the bound {nll:.1f} is no better than before training ({untrained:.1f})"
        ks, ks0, floor = (
            m["prior_ks_marginal"],
            m["prior_ks_marginal_untrained"],
            m["ks_marginal_floor"],
        )
        if ks <= 2 * floor + 0.05:
            ks_verdict = f"yes (criterion: KS <= 2 x floor + 0.05): {ks:.3f} (floor {floor:.3f})"
        elif ks < ks0:
            ks_verdict = (
                f"partly: closer than the untrained prior ({ks0:.3f}) but {ks:.3f} is above "
                f"2 x floor + 0.05 (floor {floor:.3f})"
            )
        else:
            ks_verdict = f"no: {ks:.3f}, no closer than the untrained prior ({ks0:.3f})"
        return [
            Headline(
                "test NLL bound (-ELBO) per sequence: latent SDE / Gaussian per time / untrained",
                f"{nll:.1f} / {gauss:.1f} / {untrained:.1f} nats (train ELBO {m['elbo']:.1f})",
                "a latent SDE trained on the ELBO fits the stochastic Lorenz attractor (Li et al. "
                "2020, Sec. 7.2; torchsde's latent_sde_lorenz.py shows posterior fits and prior "
                "samples; no number is given)",
                verdict,
            ),
            Headline(
                "prior samples: mean KS statistic of the marginals vs held-out data",
                f"{ks:.3f} (untrained prior {ks0:.3f}, true paths {floor:.3f})",
                "samples of the learnt prior SDE reproduce the attractor's stochastic dynamics "
                "(torchsde's example, figure of prior samples)",
                ks_verdict,
            ),
        ]

    def figure(self, model: nn.Module, metrics: dict[str, Any]) -> Any:
        from .report import new_figure

        ts = self.ts.cpu().numpy()
        data = self.test.cpu().numpy()
        recon = self.recon.cpu().numpy()
        prior = self.prior_paths.cpu().numpy()
        fig = new_figure(15, 8)
        axes = fig.subplots(2, 3)
        panels = ((data, "held-out data"), (recon, "posterior (reconstruction)"),
                  (prior, "prior samples"))  # fmt: skip
        for ax, (xs, title) in zip(axes[0], panels):
            for i in range(min(12, xs.shape[1])):
                ax.plot(xs[:, i, 0], xs[:, i, 2], lw=0.7)
            ax.set(xlabel="$x_1$", ylabel="$x_3$", title=title)
        for c, ax in enumerate(axes[1]):
            for i in range(min(6, recon.shape[1])):
                colour = f"C{i}"
                ax.plot(ts, data[:, i, c], ".", color=colour, ms=2)
                ax.plot(ts, recon[:, i, c], "-", color=colour, lw=1)
            ax.set(xlabel="t", ylabel=f"$x_{c + 1}$ (normalised)",
                   title="data (dots) and posterior paths")  # fmt: skip
        fig.suptitle("torchnde: latent SDE on the stochastic Lorenz attractor (Li et al. 2020)")
        return fig
