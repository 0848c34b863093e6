r"""An SDE-GAN fitted to a time-dependent Ornstein–Uhlenbeck process (Kidger et al. 2021,
torchsde's ``examples/sde_gan.py``), simulated in the project.

Data: paths of the Itô SDE (additive, time-dependent noise)

$$ dY = (\mu t - \theta Y)\,dt + \sigma \frac{2t}{63}\,dW, \qquad Y_0 \sim \mathcal U(-1, 1), $$

$\mu = 0.02$, $\theta = 0.1$, $\sigma = 0.4$, on $[0, 63]$ (torchsde's example), observed at
``num_times`` equally spaced times, simulated with the stochastic Runge–Kutta method SRA1 at
step ``sim_dt`` (:func:`simulate_ou`) and normalised by the mean and standard deviation of
$Y_0$ (as the example).

Model: :class:`torchnde.models.SDEGAN`, the example's sizes (hidden 16, MLP width 16, noise 3,
initial noise 5, LipSwish, weight clipping), reversible Heun for both solves, trained by
simultaneous gradient descent–ascent of the Wasserstein loss with one Adam over both networks
(learning rates ``lr`` for the generator and ``discriminator_lr`` for the critic; the example
uses Adadelta and 10 000 steps of batch 1024, far beyond a few minutes on a CPU). The
generator evaluated is the average of its parameters over the last ``average_last`` of the
steps (stochastic weight averaging, as the example; ``ks_marginal_last_generator`` is the
last generator's score).

Metrics (``eval``): ``ks_marginal``, the mean two-sample Kolmogorov–Smirnov statistic between
``num_test`` generated paths and ``num_test`` held-out true paths at five times (0, 1/4,
1/2, 3/4 and all of the window); ``ks_marginal_untrained``, the same for the generator before
training; ``ks_marginal_floor``, the same between two independent sets of true paths (the
sampling floor: a perfect generator scores about this).

``torchnde run sde-gan`` (a few minutes on 2 cores); ``full=true`` for the example's scale
(8192 paths, 64 times, batch 1024, 10 000 steps; hours on a CPU).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import torchnde as tn

from ..models import SDEGAN
from . import harness
from .config import ExperimentConfig, check, is_int, is_positive
from .harness import Headline, StepOutput
from .latent_sde import ks_statistic

__all__ = ["Config", "Task", "simulate_ou"]

OU = {"mu": 0.02, "theta": 0.1, "sigma": 0.4, "t_end": 63.0}
ADJOINTS = ("reversible", "direct")


def simulate_ou(num: int, ts: torch.Tensor, *, seed: int, dt: float = 0.1) -> torch.Tensor:
    r"""``num`` paths of the time-dependent OU process at ``ts`` (from $Y_0 \sim
    \mathcal U(-1, 1)$), shape ``(len(ts), num, 1)``, not normalised."""
    mu, theta, sigma, t_end = OU["mu"], OU["theta"], OU["sigma"], OU["t_end"]
    gen = torch.Generator().manual_seed(seed)
    y0 = torch.rand(num, 1, generator=gen, dtype=ts.dtype) * 2 - 1

    def drift(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return mu * t - theta * y

    def diffusion(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (sigma * 2 * t / t_end).to(y.dtype).expand_as(y)

    with torch.no_grad():
        return tn.sdeint(drift, diffusion, y0, ts, noise="additive", method="sra1", dt=dt,
                         seed=seed + 1)  # fmt: skip


@dataclass
class Config(ExperimentConfig):
    """Options of ``torchnde run sde-gan``."""

    out: Path = field(default=Path("runs/sde-gan"), metadata={"help": "run folder"})
    epochs: int = field(default=50, metadata={"help": "passes over the training paths"})
    batch_size: int = field(default=128, metadata={"help": "real (and generated) paths per step"})
    lr: float = field(default=3e-4, metadata={"help": "generator learning rate (Adam, cosine)"})
    discriminator_lr: float = field(
        default=1.5e-3, metadata={"help": "critic learning rate (Adam, cosine)"}
    )
    beta1: float = field(default=0.5, metadata={"help": "Adam's first-moment decay"})
    num_train: int = field(default=2048, metadata={"help": "training paths"})
    num_test: int = field(default=2048, metadata={"help": "held-out (and generated) paths"})
    num_times: int = field(default=32, metadata={"help": "observation times in [0, 63]"})
    hidden: int = field(default=16, metadata={"help": "hidden state size (both networks)"})
    mlp: int = field(default=16, metadata={"help": "width of the networks"})
    noise: int = field(default=3, metadata={"help": "Brownian channels of the generator"})
    initial_noise: int = field(default=5, metadata={"help": "size of the initial noise"})
    lipschitz: str = field(
        default="clip",
        metadata={"help": "critic constraint: weight clipping or gradient penalty",
                  "choices": ("clip", "gp")},
    )  # fmt: skip
    adjoint: str = field(
        default="direct",
        metadata={"help": "gradients: reversible (O(1) memory) or direct backpropagation",
                  "choices": ADJOINTS},
    )  # fmt: skip
    average_last: float = field(
        default=0.5,
        metadata={"help": "average the generator over this fraction of the steps, at the end"},
    )
    sim_dt: float = field(default=0.1, metadata={"help": "SRA1 step of the data"})
    data_seed: int = field(default=0, metadata={"help": "seed of the data"})
    full: bool = field(
        default=False,
        metadata={"help": "the example's scale: 8192 paths, 64 times, batch 1024, 10000 steps"},
    )

    def __post_init__(self) -> None:
        if self.full:
            larger = {"num_train": 8192, "num_times": 64, "batch_size": 1024, "epochs": 1250,
                      "adjoint": "reversible"}  # fmt: skip
            for key, value in larger.items():
                if getattr(self, key) == self.__dataclass_fields__[key].default:
                    setattr(self, key, value)
        super().__post_init__()
        for key in ("num_train", "num_test", "hidden", "mlp", "noise", "initial_noise"):
            value = getattr(self, key)
            check(is_int(value) and value >= 1, key, "an int >= 1", value)
        check(is_int(self.num_times) and self.num_times >= 2, "num_times", "an int >= 2",
              self.num_times)  # fmt: skip
        check(is_int(self.data_seed) and self.data_seed >= 0, "data_seed", "an int >= 0",
              self.data_seed)  # fmt: skip
        for key in ("discriminator_lr", "sim_dt"):
            check(is_positive(getattr(self, key)), key, "a positive number", getattr(self, key))
        check(isinstance(self.beta1, (int, float)) and 0 <= self.beta1 < 1, "beta1",
              "a number in [0, 1)", self.beta1)  # fmt: skip
        check(isinstance(self.average_last, (int, float)) and 0 <= self.average_last <= 1,
              "average_last", "a number in [0, 1]", self.average_last)  # fmt: skip
        check(self.lipschitz in ("clip", "gp"), "lipschitz", "'clip' or 'gp'", self.lipschitz)
        check(self.adjoint in ADJOINTS, "adjoint", f"one of {list(ADJOINTS)}", self.adjoint)
        if self.lipschitz == "gp" and self.adjoint == "reversible":
            raise ValueError(
                "config key `adjoint` must be 'direct' with lipschitz=gp (the gradient "
                "penalty differentiates the critic twice, which the reversible adjoint does "
                "not support), got 'reversible'."
            )


class _Trainee(nn.Module):
    """The SDE-GAN being trained and the running average of its generator's parameters over
    the last steps (stochastic weight averaging, as torchsde's example), kept as a second,
    frozen copy; both are in the state dict, so checkpoints carry the average."""

    steps: torch.Tensor
    num_averaged: torch.Tensor

    def __init__(self, gan: SDEGAN, average_from: int) -> None:
        super().__init__()
        self.gan = gan
        self.averaged = copy.deepcopy(gan.generator).requires_grad_(False)
        self.average_from = average_from
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))
        self.register_buffer("num_averaged", torch.zeros((), dtype=torch.int64))

    @torch.no_grad()
    def after_step(self) -> None:
        """Clip the critic's weights, then fold the generator into the average."""
        self.gan.constrain_()
        self.steps += 1
        if int(self.steps) > self.average_from:
            self.num_averaged += 1
            w = 1.0 / float(self.num_averaged)
            for avg, p in zip(self.averaged.parameters(), self.gan.generator.parameters()):
                avg.lerp_(p, w)

    def generator_for_eval(self) -> SDEGAN:
        """The GAN with the averaged generator (the last one before any averaging)."""
        if int(self.num_averaged) == 0:
            return self.gan
        out = copy.deepcopy(self.gan)
        out.generator.load_state_dict(self.averaged.state_dict())
        return out


class _AdamThenConstrain(torch.optim.Adam):
    """Adam followed by the trainee's :meth:`_Trainee.after_step` after every step."""

    def __init__(self, params: Any, trainee: _Trainee, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self._trainee = trainee

    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        out = super().step(closure)
        self._trainee.after_step()
        return out


class Task(harness.Task):
    name = "sde-gan"
    title = "SDE-GAN with a neural CDE critic on a time-dependent Ornstein-Uhlenbeck process"
    paper = "Kidger, Foster, Li, Oberhauser, Lyons 2021, Neural SDEs as Infinite-Dimensional GANs"
    Config = Config

    #: The times (fractions of the window) at which marginals are compared.
    KS_FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)

    def setup(self) -> nn.Module:
        cfg = self.config
        ts = torch.linspace(0.0, OU["t_end"], cfg.num_times)
        raw = simulate_ou(cfg.num_train + 2 * cfg.num_test, ts, seed=cfg.data_seed,
                          dt=cfg.sim_dt)  # fmt: skip
        y0 = raw[0, : cfg.num_train]
        ys = (raw - y0.mean()) / y0.std()
        self.ts = ts.to(self.device)
        self.train = ys[:, : cfg.num_train].to(self.device)
        self.test = ys[:, cfg.num_train : cfg.num_train + cfg.num_test].to(self.device)
        self.floor = ys[:, cfg.num_train + cfg.num_test :].to(self.device)
        adjoint = tn.ReversibleAdjoint() if cfg.adjoint == "reversible" else tn.DirectAdjoint()
        gan = SDEGAN(
            1, initial_noise_size=cfg.initial_noise, noise_size=cfg.noise,
            hidden_size=cfg.hidden, mlp_size=cfg.mlp, lipschitz=cfg.lipschitz, adjoint=adjoint,
        )  # fmt: skip
        gan.constrain_()  # start inside the constraint set
        self.untrained = copy.deepcopy(gan).to(self.device)
        total = cfg.epochs * (cfg.num_train // min(cfg.batch_size, cfg.num_train))
        return _Trainee(gan, average_from=int(total * (1 - cfg.average_last)))

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        cfg = self.config
        trainee: _Trainee = model  # type: ignore[assignment]
        g_params, d_params = trainee.gan.parameter_groups()
        groups = [
            {"params": g_params, "lr": cfg.lr},
            {"params": d_params, "lr": cfg.discriminator_lr},
        ]
        return _AdamThenConstrain(groups, trainee, betas=(cfg.beta1, 0.99))

    @property
    def num_train(self) -> int:
        return self.config.num_train

    def step(self, model: nn.Module, index: torch.Tensor) -> StepOutput:
        trainee: Any = model
        real = self.train[:, index.to(self.device)]
        loss = trainee.gan.loss(self.ts, real)
        steps = self.ts.numel() - 1
        return StepOutput(loss, nfe={"nfe": float(3 * steps)})

    def _generate(self, gan: SDEGAN) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat(
                [gan.sample(self.ts, c.shape[1]) for c in self.test.split(1024, dim=1)], dim=1
            )

    def _ks(self, paths: torch.Tensor) -> tuple[float, list[float]]:
        n = self.ts.numel()
        idx = sorted({round(f * (n - 1)) for f in self.KS_FRACTIONS})
        a, b = paths[..., 0].cpu().numpy(), self.test[..., 0].cpu().numpy()
        per_time = [ks_statistic(a[i], b[i]) for i in idx]
        return float(np.mean(per_time)), per_time

    def evaluate(self, model: nn.Module) -> dict[str, Any]:
        trainee: _Trainee = model  # type: ignore[assignment]
        self.fake = self._generate(trainee.generator_for_eval())
        self.fake_untrained = self._generate(self.untrained)
        ks, per_time = self._ks(self.fake)
        ks0, per_time0 = self._ks(self.fake_untrained)
        ks_last, _ = self._ks(self._generate(trainee.gan))
        floor, _ = self._ks(self.floor)
        n = self.ts.numel()
        times = [float(self.ts[round(f * (n - 1))]) for f in self.KS_FRACTIONS]
        return {
            "ks_marginal": ks,
            "ks_marginal_untrained": ks0,
            "ks_marginal_floor": floor,
            "ks_marginal_last_generator": ks_last,
            "generators_averaged": int(trainee.num_averaged),
            "ks_times": times,
            "ks_per_time": per_time,
            "ks_per_time_untrained": per_time0,
            "generated_mean_end": float(self.fake[-1].mean()),
            "generated_std_end": float(self.fake[-1].std()),
            "data_mean_end": float(self.test[-1].mean()),
            "data_std_end": float(self.test[-1].std()),
        }

    @classmethod
    def headline(cls, metrics: dict[str, Any]) -> list[Headline]:
        m = metrics
        ks, ks0, floor = m["ks_marginal"], m["ks_marginal_untrained"], m["ks_marginal_floor"]
        if ks <= 2 * floor + 0.05:
            verdict = f"yes (criterion: KS <= 2 x floor + 0.05): {ks:.3f} (floor {floor:.3f})"
        elif ks <= ks0 / 2:
            verdict = (
                f"partly: {ks:.3f} is at most half the untrained generator's {ks0:.3f}, but "
                f"above 2 x floor + 0.05 (floor {floor:.3f})"
            )
        else:
            verdict = f"no: {ks:.3f} vs {ks0:.3f} before training (floor {floor:.3f})"
        return [
            Headline(
                "mean KS statistic of generated vs true marginals at 5 times",
                f"{ks:.3f} (untrained generator {ks0:.3f}, two true samples {floor:.3f})",
                "an SDE-GAN with a neural CDE critic learns the time-dependent OU process; its "
                "marginals match the data's (Kidger et al. 2021, Sec. 4; torchsde's sde_gan.py "
                "shows the histograms of the marginals overlapping)",
                verdict,
            )
        ]

    def figure(self, model: nn.Module, metrics: dict[str, Any]) -> Any:
        from .report import new_figure

        ts = self.ts.cpu().numpy()
        real = self.test[..., 0].cpu().numpy()
        fake = self.fake[..., 0].cpu().numpy()
        fake0 = self.fake_untrained[..., 0].cpu().numpy()
        fig = new_figure(15, 4.2)
        ax_paths, ax_mid, ax_end = fig.subplots(1, 3)
        for i in range(min(20, real.shape[1], fake.shape[1])):
            ax_paths.plot(ts, real[:, i], color="tab:gray", lw=0.7, alpha=0.7)
            ax_paths.plot(ts, fake[:, i], color="tab:red", lw=0.7, alpha=0.7)
        ax_paths.plot([], [], color="tab:gray", label="real")
        ax_paths.plot([], [], color="tab:red", label="generated")
        ax_paths.set(xlabel="t", ylabel="Y (normalised)", title="sample paths")
        ax_paths.legend(fontsize="small")
        for ax, i in ((ax_mid, len(ts) // 2), (ax_end, len(ts) - 1)):
            lo, hi = np.quantile(np.concatenate([real[i], fake[i]]), [0.002, 0.998])
            bins = np.linspace(float(lo), float(hi), 40)
            ax.hist(real[i], bins=bins, alpha=0.5, density=True, color="tab:gray", label="real")
            ax.hist(fake[i], bins=bins, alpha=0.5, density=True, color="tab:red",
                    label="generated")  # fmt: skip
            ax.hist(fake0[i], bins=bins, histtype="step", density=True, color="tab:blue",
                    label="untrained")  # fmt: skip
            ax.set(xlabel="Y", title=f"marginal at t = {ts[i]:.0f}")
            ax.legend(fontsize="small")
        fig.suptitle("torchnde: SDE-GAN on a time-dependent Ornstein-Uhlenbeck process")
        return fig
