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

from ..models import CNF, DepthCat, JacobianFrobenius, KineticEnergy
from . import harness, require
from ._models import mlp
from .config import ODEConfig, check, is_int
from .harness import Headline, StepOutput, ode_solver_setup

__all__ = ["Config", "Task", "load_toy_density"]

DATASETS = ("moons", "circles", "swiss_roll")


@dataclass
class Config(ODEConfig):
    """Options of ``torchnde run density``."""

    out: Path = field(default=Path("runs/density"), metadata={"help": "run folder"})
    dataset: str = field(default="moons", metadata={"help": "the 2-D data", "choices": DATASETS})
    epochs: int = field(default=60, metadata={"help": "passes over the training set"})
    batch_size: int = field(default=128, metadata={"help": "points per step (global)"})
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


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """Log density of each row of ``z`` under the standard normal."""
    return -0.5 * (z**2).sum(-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


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
        solver, controller, dt0 = ode_solver_setup(cfg)
        kw: dict[str, Any] = dict(
            solver=solver, controller=controller, dt0=dt0, t1=cfg.t1, trace="exact"
        )
        self.train_cnfs, self.eval_cnfs = {}, {}
        for key in self.MODELS:
            h = cfg.hidden
            field_ = DepthCat(mlp([3, h, h, h, 2]), dim=1)
            regs = [KineticEnergy(), JacobianFrobenius("exact")] if key == "rnode" else []
            self.train_cnfs[key] = CNF(field_, 2, regularisers=regs, **kw)
            # The same flow without the running costs: the test-time solve of both models.
            self.eval_cnfs[key] = CNF(field_, 2, **kw)
        return nn.ModuleDict(self.train_cnfs)

    def nfe(self, key: str, train: bool = True) -> int:
        cnf = self.train_cnfs[key] if train else self.eval_cnfs[key]
        return int(cnf.last_stats["num_fevals"])

    @property
    def num_train(self) -> int:
        return self.config.num_train

    def step(self, model: Any, index: torch.Tensor) -> StepOutput:
        x = self.x[index.to(self.device)]
        cfg = self.config
        logp = model["ffjord"].log_prob(x)
        z, delta, regs = model["rnode"].flow(x)
        logp_r = standard_normal_log_prob(z) + delta
        kin, jac = regs["kinetic_energy"], regs["jacobian_frobenius"]
        loss = -logp - logp_r + cfg.kinetic * kin + cfg.jacobian * jac
        nfe = {f"nfe_{k}": self.nfe(k) for k in self.MODELS}
        logs = {"nll_ffjord": -logp, "nll_rnode": -logp_r, "kinetic": kin, "jacobian": jac}
        return StepOutput(loss, logs, {"nfe": sum(nfe.values()), **nfe})

    def evaluate(self, model: Any) -> dict[str, Any]:
        metrics: dict[str, Any] = {"dataset": self.config.dataset}
        with torch.no_grad():
            for key in self.MODELS:
                logp = self.eval_cnfs[key].log_prob(self.x_test)
                metrics[key] = {
                    "test_log_likelihood": float(logp.mean()),
                    "test_nfe": self.nfe(key, False),
                }
        metrics["gaussian"] = {
            "test_log_likelihood": float(gaussian_log_prob(self.x, self.x_test).mean())
        }
        return metrics

    #: How close RNODE's test log-likelihood must be to FFJORD's to count as "similar" (nats).
    SIMILAR_NATS = 0.05

    @classmethod
    def headline(cls, metrics: dict[str, Any]) -> list[Headline]:
        f, r, g = metrics["ffjord"], metrics["rnode"], metrics["gaussian"]
        ll_f, ll_r, ll_g = (m["test_log_likelihood"] for m in (f, r, g))
        if ll_f > ll_g:
            fits = f"yes: FFJORD's likelihood is {ll_f - ll_g:.3f} nats above the Gaussian's"
        else:
            fits = f"no: FFJORD's likelihood is {ll_g - ll_f:.3f} nats below the Gaussian's"
        gap, tol = ll_r - ll_f, cls.SIMILAR_NATS
        fewer = r["test_nfe"] < f["test_nfe"]
        saved = f"{1 - r['test_nfe'] / f['test_nfe']:.0%} fewer NFE" if f["test_nfe"] else ""
        if not fewer:
            nfe = "no: RNODE needs no fewer function evaluations than FFJORD"
        elif gap >= -tol:
            nfe = f"yes: {saved}, likelihood {gap:+.3f} nats (within {tol} or better)"
        else:
            nfe = (
                f"partly: {saved}, but RNODE's likelihood is {-gap:.3f} nats worse than FFJORD's "
                f"(more than {tol}: not similar)"
            )
        return [
            Headline(
                f"test log-likelihood on {metrics['dataset']} (nats, standardised data), "
                "FFJORD / RNODE / Gaussian",
                f"{f['test_log_likelihood']:.3f} / {r['test_log_likelihood']:.3f} / "
                f"{g['test_log_likelihood']:.3f}",
                "FFJORD fits multi-modal 2-D densities a Gaussian cannot "
                "(Grathwohl et al. 2019, Fig. 2)",
                fits,
            ),
            Headline(
                "forward NFE on the test set, FFJORD vs RNODE; likelihood gap RNODE - FFJORD",
                f"{f['test_nfe']} vs {r['test_nfe']}; {gap:+.3f} nats",
                "RNODE needs fewer function evaluations at a similar likelihood "
                "(Finlay et al. 2020, Table 2)",
                nfe,
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
        ev = metrics["eval"]
        for i, key in enumerate(self.MODELS):
            with torch.no_grad():
                logp = self.eval_cnfs[key].log_prob(grid)
                samples = self.eval_cnfs[key].sample(2000, generator=gen).cpu().numpy()
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
