r"""FFJORD, Monge-Ampere flow and CP-Flow on the same 2-D densities, against the true density.

Three flows are trained by maximum likelihood on the same batches of one 2-D density:

- FFJORD (Grathwohl et al. 2019): a CNF with a free-form field ``DepthCat(mlp)``;
- Monge-Ampere flow (Zhang, E, Wang 2018): a CNF whose field is the gradient of a scalar
  potential ``DepthCat(mlp)`` of the same widths (:class:`~torchnde.models.MongeAmpereFlow`);
- CP-Flow (Huang et al. 2021): the gradient map of a strongly convex ICNN
  (:class:`~torchnde.models.CPFlow`), exact log-determinant (``cpflow_estimator=exact``) or
  the paper's stochastic estimator of its gradient (``stochastic``); samples by inverting it.

The densities have a closed form, so the test log-likelihood of the true density is the
ceiling every model is measured against (``eval.true_test_loglik``):

- ``moons``: the two half-circles of scikit-learn's ``make_moons`` (arc parameter uniform)
  blurred by isotropic Gaussian noise of std ``noise``; the density is the arc integral of
  the Gaussian, by a 2000-node midpoint rule on each arc (error far below the Monte-Carlo
  error of the test mean);
- ``8gaussians``: FFJORD's mixture of 8 Gaussians of std ``noise`` on a circle of radius 2.

All numbers are in nats per point of the standardised data (training mean and std), for the
true density too. ``torchnde run flows-2d`` runs in a few minutes on 2 cores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models import CNF, CPFlow, DepthCat, MongeAmpereFlow
from . import harness
from ._models import mlp
from .config import ODEConfig, check, is_int, is_positive
from .harness import Headline, StepOutput, ode_solver_setup

__all__ = ["Config", "Task", "sample_density", "true_log_prob"]

DATASETS = ("moons", "8gaussians")
MODELS = ("ffjord", "monge_ampere", "cpflow")
_ARC_NODES = 2000


@dataclass
class Config(ODEConfig):
    """Options of ``torchnde run flows-2d``."""

    out: Path = field(default=Path("runs/flows-2d"), metadata={"help": "run folder"})
    dataset: str = field(default="moons", metadata={"help": "the 2-D density", "choices": DATASETS})
    noise: float = field(default=0.1, metadata={"help": "std of the density's Gaussian blur"})
    epochs: int = field(default=50, metadata={"help": "passes over the training set"})
    batch_size: int = field(default=128, metadata={"help": "points per step (global)"})
    lr: float = field(default=5e-3, metadata={"help": "Adam learning rate (cosine decay)"})
    method: str = field(default="rk4", metadata={"help": "ODE solver of the two CNFs"})
    step_size: float = field(default=0.1, metadata={"help": "step of fixed-step methods"})
    num_train: int = field(default=2048, metadata={"help": "training points"})
    num_test: int = field(default=2048, metadata={"help": "test points"})
    hidden: int = field(default=32, metadata={"help": "hidden width of every network"})
    cpflow_blocks: int = field(default=2, metadata={"help": "CP-Flow's composed ICNN blocks"})
    cpflow_estimator: str = field(
        default="exact",
        metadata={"help": "CP-Flow's log-det in training", "choices": ("exact", "stochastic")},
    )
    data_seed: int = field(default=0, metadata={"help": "seed of the data generator"})

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("num_train", "num_test", "hidden", "cpflow_blocks"):
            v = getattr(self, key)
            check(is_int(v) and v >= 1, key, "an int >= 1", v)
        check(is_positive(self.noise), "noise", "a positive number", self.noise)
        check(is_int(self.data_seed) and self.data_seed >= 0, "data_seed", "an int >= 0",
              self.data_seed)  # fmt: skip


def _arcs(n: int) -> torch.Tensor:
    """Points of the two moons' arcs at parameters ``theta`` (``n`` per arc): ``(2n, 2)``."""
    th = (torch.arange(n, dtype=torch.float64) + 0.5) * math.pi / n
    upper = torch.stack([th.cos(), th.sin()], -1)
    lower = torch.stack([1 - th.cos(), 0.5 - th.sin()], -1)
    return torch.cat([upper, lower])


def _centres() -> torch.Tensor:
    a = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    return 2.0 * torch.stack([a.cos(), a.sin()], -1)


def sample_density(name: str, n: int, noise: float, generator: torch.Generator) -> torch.Tensor:
    """``n`` points ``(n, 2)`` (float64) of the density ``name``."""
    if name == "moons":
        th = torch.rand(n, generator=generator, dtype=torch.float64) * math.pi
        lower = torch.rand(n, generator=generator, dtype=torch.float64) < 0.5
        x = torch.stack([th.cos(), th.sin()], -1)
        x = torch.where(lower.unsqueeze(-1), torch.stack([1 - th.cos(), 0.5 - th.sin()], -1), x)
    elif name == "8gaussians":
        x = _centres()[torch.randint(0, 8, (n,), generator=generator)]
    else:
        raise ValueError(f"`name` must be one of {DATASETS}, got {name!r}.")
    return x + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)


def true_log_prob(name: str, x: torch.Tensor, noise: float) -> torch.Tensor:
    """The exact log-density of ``name`` at ``x`` ``(batch, 2)`` (float64); for ``moons`` the
    arc integral by the midpoint rule."""
    if name not in DATASETS:
        raise ValueError(f"`name` must be one of {DATASETS}, got {name!r}.")
    centres = _arcs(_ARC_NODES) if name == "moons" else _centres()
    out = []
    for chunk in x.double().split(1024):  # bounded memory: 1024 x 4000 pairs at a time
        d2 = ((chunk.unsqueeze(1) - centres.unsqueeze(0)) ** 2).sum(-1)
        log_n = -0.5 * d2 / noise**2 - math.log(2 * math.pi * noise**2)
        out.append(torch.logsumexp(log_n, 1) - math.log(centres.shape[0]))
    return torch.cat(out)


class Task(harness.Task):
    name = "flows-2d"
    title = "FFJORD, Monge-Ampere flow and CP-Flow on one 2-D density, against the true density"
    paper = (
        "Grathwohl et al. 2019, FFJORD; Zhang, E, Wang 2018, Monge-Ampere Flow for Generative "
        "Modeling; Huang, Chen, Tsirigotis, Courville 2021, Convex Potential Flows"
    )
    Config = Config

    def setup(self) -> nn.Module:
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.data_seed)
        train = sample_density(cfg.dataset, cfg.num_train, cfg.noise, gen)
        test = sample_density(cfg.dataset, cfg.num_test, cfg.noise, gen)
        self.mean, self.std = train.mean(0), train.std(0)
        self.x = ((train - self.mean) / self.std).float().to(self.device)
        self.x_test = ((test - self.mean) / self.std).float().to(self.device)
        self.true_test = true_log_prob(cfg.dataset, test, cfg.noise) + self.std.log().sum()
        solver, controller, dt0 = ode_solver_setup(cfg)
        kw: dict[str, Any] = dict(solver=solver, controller=controller, dt0=dt0, trace="exact")
        h = cfg.hidden
        self.models: dict[str, Any] = {
            "ffjord": CNF(DepthCat(mlp([3, h, h, h, 2])), 2, **kw),
            "monge_ampere": MongeAmpereFlow(DepthCat(mlp([3, h, h, h, 1])), 2, **kw),
            "cpflow": CPFlow(2, hidden=h, num_layers=3, num_blocks=cfg.cpflow_blocks),
        }
        return nn.ModuleDict(self.models)

    @property
    def num_train(self) -> int:
        return self.config.num_train

    def step(self, model: Any, index: torch.Tensor) -> StepOutput:
        x = self.x[index.to(self.device)]
        lp_f = model["ffjord"].log_prob(x)
        lp_m = model["monge_ampere"].log_prob(x)
        cp = model["cpflow"]
        stochastic = self.config.cpflow_estimator == "stochastic"
        lp_c = cp.surrogate_log_prob(x) if stochastic else cp.log_prob(x)
        nfe = {f"nfe_{k}": float(self.models[k].last_stats["num_fevals"])
               for k in ("ffjord", "monge_ampere")}  # fmt: skip
        logs = {"nll_ffjord": -lp_f, "nll_monge_ampere": -lp_m}
        if not stochastic:
            logs["nll_cpflow"] = -lp_c
        return StepOutput(-(lp_f + lp_m + lp_c), logs, {"nfe": sum(nfe.values()), **nfe})

    def evaluate(self, model: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"dataset": self.config.dataset}
        with torch.no_grad():
            for key in MODELS:
                lp = model[key].log_prob(self.x_test)
                out[f"{key}_test_loglik"] = float(lp.mean())
        out["true_test_loglik"] = float(self.true_test.mean())
        out["true_test_loglik_se"] = float(self.true_test.std() / math.sqrt(len(self.true_test)))
        with torch.no_grad():
            z = model["cpflow"](self.x_test[:256])
        x_back = model["cpflow"].inverse(z, tol=1e-5)
        out["cpflow_inverse_error"] = float((x_back - self.x_test[:256]).abs().max())
        return out

    #: Within this many nats of the true density's test log-likelihood counts as a fit.
    CLOSE_NATS = 0.1

    @classmethod
    def headline(cls, metrics: dict[str, Any]) -> list[Headline]:
        true = metrics["true_test_loglik"]
        lls = {k: metrics[f"{k}_test_loglik"] for k in MODELS}
        gaps = {k: true - v for k, v in lls.items()}
        value = " / ".join(f"{lls[k]:.3f}" for k in MODELS) + f" (true density {true:.3f})"
        gap_txt = ", ".join(f"{k} {gaps[k]:.3f}" for k in MODELS)
        close = [k for k in MODELS if gaps[k] <= cls.CLOSE_NATS]
        if len(close) == 3:
            fit = (
                f"yes: all three within {cls.CLOSE_NATS} nats of the true density (gaps {gap_txt})"
            )
        elif close:
            fit = (f"partly: within {cls.CLOSE_NATS} nats of the true density only "
                   f"{', '.join(close)} (gaps {gap_txt})")  # fmt: skip
        else:
            fit = f"no: none within {cls.CLOSE_NATS} nats of the true density (gaps {gap_txt})"
        d_ma, d_cp = lls["monge_ampere"] - lls["ffjord"], lls["cpflow"] - lls["ffjord"]
        if min(d_ma, d_cp) >= -cls.CLOSE_NATS:
            comp = (f"yes: Monge-Ampere {d_ma:+.3f}, CP-Flow {d_cp:+.3f} nats against FFJORD "
                    f"(criterion: no worse than {cls.CLOSE_NATS})")  # fmt: skip
        elif max(d_ma, d_cp) >= -cls.CLOSE_NATS:
            comp = f"partly: Monge-Ampere {d_ma:+.3f}, CP-Flow {d_cp:+.3f} nats against FFJORD"
        else:
            comp = f"no: Monge-Ampere {d_ma:+.3f}, CP-Flow {d_cp:+.3f} nats against FFJORD"
        return [
            Headline(
                f"test log-likelihood on {metrics['dataset']} (nats, standardised), FFJORD / "
                "Monge-Ampere / CP-Flow",
                value,
                "all three are universal density models that fit multi-modal 2-D densities "
                "(Grathwohl et al. 2019 and Huang et al. 2021, their 2-D toy densities)",
                fit,
            ),
            Headline(
                "restricted flows against the free-form CNF (nats, model - FFJORD)",
                f"Monge-Ampere {d_ma:+.3f}, CP-Flow {d_cp:+.3f}",
                "a gradient (optimal-transport) field loses no expressivity: Brenier's map is "
                "a gradient (Zhang et al. 2018; Huang et al. 2021 report CP-Flow competitive "
                "with FFJORD on toy densities)",
                comp,
            ),
            Headline(
                "CP-Flow inverse by convex optimisation: max error of f^-1(f(x)), 256 test points",
                f"{metrics['cpflow_inverse_error']:.1e}",
                "the map is invertible by convex optimisation (Huang et al. 2021)",
                ("yes" if metrics["cpflow_inverse_error"] < 1e-3 else "no")
                + f": criterion below 1e-3 in float32, got {metrics['cpflow_inverse_error']:.1e}",
            ),
        ]

    def figure(self, model: Any, metrics: dict[str, Any]) -> Any:
        from .report import new_figure

        fig = new_figure(16, 4)
        axes = fig.subplots(1, 4)
        lim, n = 2.5, 60
        g = torch.linspace(-lim, lim, n, device=self.device)
        grid = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)
        raw = grid.double().cpu() * self.std + self.mean
        true = true_log_prob(self.config.dataset, raw, self.config.noise) + self.std.log().sum()
        panels = [("true density", true)]
        with torch.no_grad():
            for key in MODELS:
                panels.append((key, model[key].log_prob(grid).double().cpu()))
        ev = metrics["eval"]
        for ax, (name, lp) in zip(axes, panels):
            ax.imshow(lp.exp().reshape(n, n).numpy(), origin="lower",
                      extent=(-lim, lim, -lim, lim), cmap="magma")  # fmt: skip
            ll = ev["true_test_loglik"] if name == "true density" else ev[f"{name}_test_loglik"]
            ax.set(title=f"{name} (test LL {ll:.2f})", xticks=[], yticks=[])
        fig.suptitle(f"torchnde: three flows on {self.config.dataset}")
        return fig
