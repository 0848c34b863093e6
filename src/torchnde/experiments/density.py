r"""FFJORD on 2-D densities, with and without RNODE regularisation (Grathwohl et al. 2019;
Finlay et al. 2020).

A continuous normalising flow maps data $x$ to $z(T)$ by $dz/dt = f(t, z)$, $z(0) = x$; by the
instantaneous change of variables
$\log p(x) = \log \mathcal N(z(T); 0, I) + \int_0^T \operatorname{tr}\,\partial f/\partial z\,dt$.
In 2-D the trace is exact (one gradient per dimension), so no Hutchinson noise is needed. Two
flows are trained together on the same batches: plain FFJORD (negative log-likelihood) and RNODE
(plus $\lambda_K \int \lVert f \rVert^2 dt + \lambda_J \int \lVert \partial f/\partial z
\rVert_F^2 dt$, here exact). The data are scikit-learn's ``make_moons``, ``make_circles`` or
``make_swiss_roll`` (its $(x, z)$ plane), standardised with the training mean and standard
deviation. Headline: test log-likelihood of both flows against a full-covariance Gaussian
fitted to the training data, and the function evaluations of each flow.
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

from . import harness, require
from ._models import MLPField
from .config import ODEConfig, check, is_int
from .harness import Headline, StepOutput, ode_solver_setup

__all__ = ["Config", "Task", "load_toy_density"]

DATASETS = ("moons", "circles", "swiss_roll")


@dataclass
class Config(ODEConfig):
    """Options of ``torchnde run density``."""

    out: Path = field(default=Path("runs/density"), metadata={"help": "run folder"})
    dataset: str = field(default="moons", metadata={"help": "the 2-D data", "choices": DATASETS})
    epochs: int = field(default=25, metadata={"help": "passes over the training set"})
    batch_size: int = field(default=256, metadata={"help": "points per step (global)"})
    lr: float = field(default=5e-3, metadata={"help": "Adam learning rate (cosine decay)"})
    rtol: float = field(default=1e-4, metadata={"help": "relative tolerance (adaptive methods)"})
    atol: float = field(default=1e-4, metadata={"help": "absolute tolerance (adaptive methods)"})
    num_train: int = field(default=2048, metadata={"help": "training points"})
    num_test: int = field(default=2048, metadata={"help": "test points"})
    hidden: int = field(default=64, metadata={"help": "hidden width of the vector field"})
    t1: float = field(default=1.0, metadata={"help": "integration time of the flow"})
    kinetic: float = field(default=0.05, metadata={"help": "RNODE weight of the kinetic energy"})
    jacobian: float = field(default=0.05, metadata={"help": "RNODE weight of the Jacobian norm"})
    data_seed: int = field(default=0, metadata={"help": "seed of the data generator"})

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("num_train", "num_test", "hidden"):
            v = getattr(self, key)
            check(is_int(v) and v >= 1, key, "an int >= 1", v)
        for key in ("kinetic", "jacobian"):
            v = getattr(self, key)
            check(isinstance(v, float) and v >= 0, key, "a number >= 0", v)
        check(isinstance(self.t1, float) and self.t1 > 0, "t1", "a positive number", self.t1)
        check(
            is_int(self.data_seed) and self.data_seed >= 0,
            "data_seed",
            "an int >= 0",
            self.data_seed,
        )


def load_toy_density(name: str, n: int, seed: int) -> torch.Tensor:
    """``n`` points of scikit-learn's 2-D toy data ``name`` (unstandardised), float32."""
    datasets = require("sklearn.datasets", "scikit-learn", "density")
    if name == "moons":
        x, _ = datasets.make_moons(n, noise=0.05, random_state=seed)
    elif name == "circles":
        x, _ = datasets.make_circles(n, noise=0.05, factor=0.5, random_state=seed)
    elif name == "swiss_roll":
        x3, _ = datasets.make_swiss_roll(n, noise=0.5, random_state=seed)
        x = x3[:, [0, 2]]
    else:
        raise ValueError(f"`name` must be one of {DATASETS}, got {name!r}.")
    return torch.tensor(np.asarray(x), dtype=torch.float32)


def cnf_vector_field(field_: nn.Module, regularise: bool) -> Any:
    r"""The vector field of $(z, \int \operatorname{tr} J)$, plus $(\int \lVert f\rVert^2,
    \int \lVert J \rVert_F^2)$ with ``regularise``; the Jacobian $J = \partial f/\partial z$ is
    formed row by row (exact, cheap in 2-D)."""

    def vf(t: torch.Tensor, state: tuple[torch.Tensor, ...], args: Any) -> tuple[torch.Tensor, ...]:
        training = torch.is_grad_enabled()
        z = state[0]
        with torch.enable_grad():
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            f = field_(t, z)
            rows = [
                torch.autograd.grad(f[:, i].sum(), z, create_graph=training, retain_graph=True)[0]
                for i in range(z.shape[-1])
            ]
        if not training:
            f = f.detach()
        div = torch.stack([rows[i][:, i] for i in range(len(rows))]).sum(0)
        if not regularise:
            return f, div
        frob = torch.stack([(r**2).sum(-1) for r in rows]).sum(0)
        return f, div, (f**2).sum(-1), frob

    return vf


class CNF(nn.Module):
    """A continuous normalising flow on 2-D data (FFJORD, exact trace)."""

    def __init__(self, hidden: int, setup: tuple[Any, Any, float | None], t1: float) -> None:
        super().__init__()
        self.field = MLPField(2, hidden, layers=3, act=nn.Softplus)
        self.solver, self.controller, self.dt0 = setup
        self.t1 = t1
        self.num_fevals = 0

    def log_prob(self, x: torch.Tensor, regularise: bool = False) -> tuple[torch.Tensor, ...]:
        """``log p(x)`` per point (and the kinetic and Jacobian integrals with ``regularise``)."""
        zeros = x.new_zeros(x.shape[0])
        y0 = (x, zeros, zeros, zeros) if regularise else (x, zeros)
        sol = torchnde.solve(
            torchnde.ODETerm(cnf_vector_field(self.field, regularise)),
            self.solver,
            0.0,
            self.t1,
            y0,
            dt0=self.dt0,
            controller=self.controller,
        )
        self.num_fevals = int(sol.stats["num_fevals"])
        z, div, *reg = (y[-1] for y in sol.ys)
        logp = -0.5 * (z**2).sum(-1) - math.log(2 * math.pi) + div
        return (logp, *reg)

    def sample(self, z: torch.Tensor) -> torch.Tensor:
        """Map base samples ``z`` back to data space (solve from ``t1`` to 0)."""
        sol = torchnde.solve(
            torchnde.ODETerm(self.field),
            self.solver,
            self.t1,
            0.0,
            z,
            dt0=self.dt0,
            controller=self.controller,
        )
        return sol.ys[-1]


def gaussian_log_prob(train: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Log density of ``x`` under the maximum-likelihood Gaussian of ``train``."""
    mean = train.double().mean(0)
    cov = torch.cov(train.double().T, correction=0)
    dist = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)
    return dist.log_prob(x.double())


class Task(harness.Task):
    name = "density"
    title = "FFJORD on a 2-D density, with and without RNODE, against a Gaussian"
    paper = (
        "Grathwohl, Chen, Bettencourt, Sutskever, Duvenaud 2019, FFJORD; Finlay et al. 2020, "
        "How to train your neural ODE (RNODE)"
    )
    Config = Config

    MODELS = ("ffjord", "rnode")

    def setup(self) -> nn.Module:
        cfg = self.config
        train = load_toy_density(cfg.dataset, cfg.num_train, cfg.data_seed)
        test = load_toy_density(cfg.dataset, cfg.num_test, cfg.data_seed + 1)
        self.mean, self.std = train.mean(0), train.std(0)
        self.x = ((train - self.mean) / self.std).to(self.device)
        self.x_test = ((test - self.mean) / self.std).to(self.device)
        setup = ode_solver_setup(cfg)
        return nn.ModuleDict({k: CNF(cfg.hidden, setup, cfg.t1) for k in self.MODELS})

    @property
    def num_train(self) -> int:
        return self.config.num_train

    def step(self, model: Any, index: torch.Tensor) -> StepOutput:
        x = self.x[index.to(self.device)]
        cfg = self.config
        (logp,) = model["ffjord"].log_prob(x)
        logp_r, kin, jac = model["rnode"].log_prob(x, regularise=True)
        loss = -logp - logp_r + cfg.kinetic * kin + cfg.jacobian * jac
        nfe = {f"nfe_{k}": model[k].num_fevals for k in self.MODELS}
        logs = {"nll_ffjord": -logp, "nll_rnode": -logp_r, "kinetic": kin, "jacobian": jac}
        return StepOutput(loss, logs, {"nfe": sum(nfe.values()), **nfe})

    def evaluate(self, model: Any) -> dict[str, Any]:
        metrics: dict[str, Any] = {"dataset": self.config.dataset}
        with torch.no_grad():
            for key in self.MODELS:
                (logp,) = model[key].log_prob(self.x_test)
                metrics[key] = {
                    "test_log_likelihood": float(logp.mean()),
                    "test_nfe": model[key].num_fevals,
                }
        metrics["gaussian"] = {
            "test_log_likelihood": float(gaussian_log_prob(self.x, self.x_test).mean())
        }
        return metrics

    @classmethod
    def headline(cls, metrics: dict[str, Any]) -> list[Headline]:
        f, r, g = metrics["ffjord"], metrics["rnode"], metrics["gaussian"]
        return [
            Headline(
                f"test log-likelihood on {metrics['dataset']} (nats, standardised data), "
                "FFJORD / RNODE / Gaussian",
                f"{f['test_log_likelihood']:.3f} / {r['test_log_likelihood']:.3f} / "
                f"{g['test_log_likelihood']:.3f}",
                "FFJORD fits multi-modal 2-D densities a Gaussian cannot "
                "(Grathwohl et al. 2019, Fig. 2)",
            ),
            Headline(
                "forward NFE on the test set, FFJORD vs RNODE",
                f"{f['test_nfe']} vs {r['test_nfe']}",
                "RNODE needs fewer function evaluations at a similar likelihood "
                "(Finlay et al. 2020, Table 2)",
            ),
        ]

    def figure(self, model: Any, metrics: dict[str, Any]) -> Any:
        from .report import new_figure

        fig = new_figure(17, 3.8)
        axes = fig.subplots(1, 5)
        lim = 3.0
        xd = self.x_test.cpu().numpy()
        axes[0].scatter(xd[:, 0], xd[:, 1], s=1, color="k", alpha=0.5)
        axes[0].set(title=f"test data ({self.config.dataset})")
        n = 60
        g = torch.linspace(-lim, lim, n, device=self.device)
        grid = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)
        gen = torch.Generator().manual_seed(1234)
        z = torch.randn(2000, 2, generator=gen).to(self.device)
        ev = metrics["eval"]
        for i, key in enumerate(self.MODELS):
            with torch.no_grad():
                (logp,) = model[key].log_prob(grid)
                samples = model[key].sample(z).cpu().numpy()
            dens = logp.exp().reshape(n, n).cpu().numpy()
            ax_d, ax_s = axes[1 + 2 * i], axes[2 + 2 * i]
            ax_d.imshow(dens, origin="lower", extent=(-lim, lim, -lim, lim), cmap="magma")
            ax_d.set(title=f"{key.upper()} density (test LL {ev[key]['test_log_likelihood']:.2f})")
            ax_s.scatter(samples[:, 0], samples[:, 1], s=1, color="tab:blue", alpha=0.5)
            ax_s.set(title=f"{key.upper()} samples (NFE {ev[key]['test_nfe']})")
        for ax in axes:
            ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xticks=[], yticks=[])
        fig.suptitle(
            "torchnde: FFJORD density estimation with and without RNODE "
            f"(Gaussian test LL {ev['gaussian']['test_log_likelihood']:.2f})"
        )
        return fig
