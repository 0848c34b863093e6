r"""GP-ODE on a noisy Van der Pol trajectory: forecast with uncertainty bands.

Heinonen et al. 2018, "Learning unknown ODE models with Gaussian processes" (npODE). The data
are one trajectory of the Van der Pol oscillator $x' = y$, $y' = \mu (1 - x^2) y - x$
($\mu = 1$, from $(2, 0)$, solved by torchnde at rtol 1e-10), observed every ``dt`` on
$[0,$ ``t_train`` $]$ with Gaussian noise of std ``noise``. The model is
:class:`torchnde.discovery.GPODEField` with ``grid`` x ``grid`` inducing points on
$[-3, 3]^2$, its inducing values' variational posterior and kernel fitted by the ELBO with
``num_samples`` reparameterised fields per step (started by gradient matching on
kernel-smoothed derivative estimates, ``GPODEField.init_from_derivatives``), through
``torchnde.solve`` (Dopri5), the noise std learned. ``eval``: ``test_mse`` of the posterior
mean field's forecast on
$(t_\mathrm{train}, t_\mathrm{test}]$ against the clean trajectory, and ``coverage_95``, the
fraction of fresh noisy observations there inside the 95% predictive band (200 sampled fields,
plus the learned noise): about 0.95 when the uncertainty is calibrated.

``torchnde run gp-ode`` (about 2 minutes on 2 cores).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

import torchnde
from torchnde.discovery import GPODEField, collocate_data

from . import harness
from ._models import finite_mse, reference_solve
from .config import ODEConfig, check, is_int, is_positive
from .harness import Headline, StepOutput, ode_solver_setup

__all__ = ["Config", "Task", "van_der_pol"]

MU = 1.0
Y0 = (2.0, 0.0)


@dataclass
class Config(ODEConfig):
    """Options of ``torchnde run gp-ode``."""

    out: Path = field(default=Path("runs/gp-ode"), metadata={"help": "run folder"})
    epochs: int = field(default=300, metadata={"help": "Adam steps (one trajectory)"})
    lr: float = field(default=3e-2, metadata={"help": "Adam learning rate (cosine decay)"})
    batch_size: int = field(default=1, metadata={"help": "trajectories per step (there is one)"})
    rtol: float = field(default=1e-5, metadata={"help": "relative tolerance"})
    atol: float = field(default=1e-6, metadata={"help": "absolute tolerance"})
    grid: int = field(default=6, metadata={"help": "inducing points per side of the grid"})
    num_samples: int = field(default=4, metadata={"help": "sampled fields per step"})
    noise: float = field(default=0.1, metadata={"help": "observation noise std"})
    dt: float = field(default=0.2, metadata={"help": "sampling interval"})
    t_train: float = field(default=7.0, metadata={"help": "end of the training window"})
    t_test: float = field(default=14.0, metadata={"help": "end of the forecast window"})

    def __post_init__(self) -> None:
        super().__post_init__()
        for key, low in (("grid", 2), ("num_samples", 1)):
            value = getattr(self, key)
            check(is_int(value) and value >= low, key, f"an int >= {low}", value)
        check(is_positive(self.noise), "noise", "a positive number", self.noise)
        check(is_positive(self.t_train), "t_train", "a positive number", self.t_train)
        check(
            is_positive(self.dt) and self.dt <= self.t_train / 4, "dt", "in (0, t_train/4]", self.dt
        )
        check(
            is_positive(self.t_test) and self.t_test > self.t_train,
            "t_test",
            "a number > t_train",
            self.t_test,
        )


def van_der_pol(t: Any, y: torch.Tensor, args: Any = None) -> torch.Tensor:
    x, v = y[..., 0], y[..., 1]
    return torch.stack([v, MU * (1 - x**2) * v - x], -1)


def _solve_clean(ts: torch.Tensor) -> torch.Tensor:
    return reference_solve(van_der_pol, Y0, ts)


class Model(nn.Module):
    """The GP field, the learned initial state and the learned log noise std."""

    def __init__(self, gp: GPODEField, y0: torch.Tensor, noise: float) -> None:
        super().__init__()
        self.gp = gp
        self.y0 = nn.Parameter(y0.clone())
        self.log_noise = nn.Parameter(torch.tensor(noise, dtype=y0.dtype).log())


class Task(harness.Task):
    name = "gp-ode"
    title = "GP-ODE (sparse GP vector field) forecasts a noisy Van der Pol with calibrated bands"
    paper = "Heinonen et al. 2018, Learning unknown ODE models with Gaussian processes"
    Config = Config

    def setup(self) -> nn.Module:
        cfg = self.config
        n = round(cfg.t_test / cfg.dt) + 1
        ts = torch.linspace(0.0, (n - 1) * cfg.dt, n, dtype=torch.float64)
        clean = _solve_clean(ts)
        g = torch.Generator().manual_seed(cfg.seed)
        noisy = clean + cfg.noise * torch.randn(clean.shape, generator=g, dtype=torch.float64)
        train = ts <= cfg.t_train + 1e-9
        self.ts, self.clean, self.noisy, self.train = ts, clean, noisy, train
        self.solver, self.controller, self.dt0 = ode_solver_setup(cfg)
        side = torch.linspace(-3.0, 3.0, cfg.grid, dtype=torch.float64)
        z = torch.cartesian_prod(side, side)
        gp = GPODEField(z, lengthscale=6.0 / (cfg.grid - 1) * 1.5, variance=1.0)
        # Start by gradient matching on kernel-smoothed derivative estimates (no solver).
        x_dot, x = collocate_data(noisy[train], ts[train])
        gp.init_from_derivatives(x, x_dot, noise_variance=cfg.noise)
        self.generator = torch.Generator().manual_seed(cfg.seed + 1)
        return Model(gp, noisy[0], cfg.noise).to(self.device)

    @property
    def num_train(self) -> int:
        return 1

    def _solve(self, model: Any, ts: torch.Tensor, batch: int) -> tuple[torch.Tensor, int]:
        y0 = model.y0.expand(batch, -1)
        sol = torchnde.solve(
            torchnde.ODETerm(model.gp),
            self.solver,
            float(ts[0]),
            float(ts[-1]),
            y0,
            dt0=self.dt0,
            saveat=torchnde.SaveAt(ts=ts.to(self.device)),
            controller=self.controller,
            max_steps=20000,
            throw=False,
        )
        return cast(torch.Tensor, sol.ys), int(sol.stats["num_fevals"])

    def step(self, model: Any, index: torch.Tensor) -> StepOutput:
        cfg = self.config
        ts, obs = self.ts[self.train], self.noisy[self.train].to(self.device)
        model.gp.sample(cfg.num_samples, self.generator)
        pred, nfe = self._solve(model, ts, cfg.num_samples)  # (T, S, 2)
        model.gp.use_mean()
        sigma = model.log_noise.exp()
        loglik = (
            (-0.5 * ((pred - obs[:, None]) / sigma) ** 2 - model.log_noise - 0.9189385332046727)
            .sum((0, 2))
            .mean()
        )
        num = obs.numel()
        loss = (-loglik + model.gp.kl()) / num
        nll = (-loglik / num).detach()
        return StepOutput(
            loss.reshape(1).expand(len(index)),
            {"nll": nll.reshape(1).expand(len(index))},
            {"nfe": float(nfe)},
        )

    def evaluate(self, model: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        test = ~self.train
        with torch.no_grad():
            mean, _ = self._solve(model, self.ts, 1)
            mean = mean[:, 0].cpu()
            model.gp.sample(200, torch.Generator().manual_seed(12345))
            samples, _ = self._solve(model, self.ts, 200)
            model.gp.use_mean()
            samples = samples.cpu()
            sigma = float(model.log_noise.exp())
            noisy_samples = samples + sigma * torch.randn(
                samples.shape, generator=torch.Generator().manual_seed(54321), dtype=samples.dtype
            )
            finite = torch.isfinite(noisy_samples).all(-1).all(0)
            lo = noisy_samples[:, finite].quantile(0.025, dim=1)
            hi = noisy_samples[:, finite].quantile(0.975, dim=1)
        fresh = self.clean + self.config.noise * torch.randn(
            self.clean.shape, generator=torch.Generator().manual_seed(999), dtype=torch.float64
        )
        inside = (fresh >= lo) & (fresh <= hi)
        out["test_mse"] = finite_mse(mean[test], self.clean[test])
        out["train_mse"] = finite_mse(mean[self.train], self.clean[self.train])
        out["coverage_95"] = float(inside[test].double().mean())
        out["coverage_95_train"] = float(inside[self.train].double().mean())
        out["band_width_test"] = float((hi - lo)[test].mean())
        out["learned_noise"] = sigma
        out["lengthscale"] = model.gp.log_lengthscale.exp().tolist()
        out["finite_samples"] = int(finite.sum())
        out["t_train"], out["t_test"] = self.config.t_train, self.config.t_test
        self._curves = (mean, lo, hi, fresh)
        return out

    @classmethod
    def headline(cls, metrics: dict[str, Any]) -> list[Headline]:
        m, c = metrics["test_mse"], metrics["coverage_95"]
        ok_mse, ok_cov = m < 0.1, 0.85 <= c <= 1.0
        if ok_mse and ok_cov:
            verdict = f"yes: forecast MSE {m:.3g} and {c:.0%} of new observations in the band"
        elif ok_mse or ok_cov:
            verdict = (
                f"partly: forecast MSE {m:.3g}, coverage {c:.0%} (yes needs MSE < 0.1 and "
                "coverage >= 85%)"
            )
        else:
            verdict = f"no: forecast MSE {m:.3g}, coverage {c:.0%}"
        return [
            Headline(
                "forecast MSE on (t_train, t_test]; coverage of the 95% predictive band",
                f"test_mse {m:.3g}; coverage_95 {c:.3f}",
                "npODE learns the Van der Pol vector field from a short noisy trajectory, "
                "forecasts it accurately beyond the data, and its uncertainty covers the "
                "truth (Heinonen et al. 2018, Sec. 5 and Fig. 3; no single number to compare)",
                verdict,
            )
        ]

    def figure(self, model: nn.Module, metrics: dict[str, Any]) -> Any:
        from .report import new_figure

        mean, lo, hi, fresh = self._curves
        fig = new_figure(10, 4)
        axes = fig.subplots(1, 2)
        for i, (ax, name) in enumerate(zip(axes, ("x", "y"))):
            ax.fill_between(self.ts, lo[:, i], hi[:, i], alpha=0.3, label="95% band")
            ax.plot(self.ts, self.clean[:, i], "k-", lw=1, label="truth")
            ax.plot(self.ts, mean[:, i], "C0--", label="GP-ODE mean")
            ax.plot(self.ts[self.train], self.noisy[self.train, i], "k.", ms=3, label="data")
            ax.axvline(metrics["eval"]["t_train"], color="0.6", lw=0.8)
            ax.set(xlabel="t", title=name, ylim=(-5, 5))
        axes[0].legend(fontsize="small")
        fig.suptitle("torchnde: GP-ODE on Van der Pol (Heinonen et al. 2018)")
        return fig
