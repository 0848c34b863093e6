r"""An equivariant CNF against a plain CNF of the same size on a double-well particle system
(Koehler, Klein, Noe 2020).

The target is the Boltzmann density $p(x) \propto e^{-E(x)}$ of $n$ identical particles in
$d$ dimensions (default 4 in 2-D) bound pairwise by a double-well potential, the "DW-4"
system of Koehler et al. (2020):

$$E(x) = \sum_{i<j} b\,(r_{ij} - r_0)^2 + c\,(r_{ij} - r_0)^4,\qquad r_{ij} = \lVert x_i -
x_j\rVert,$$

with $b = -4$, $c = 0.9$, $r_0 = 4$: every pair is a dimer with two stable bond lengths
$r_0 \pm 1.49$ separated by a barrier of $b^2/4c \approx 4.4$ (in units of $kT$). $E$ is
invariant under rotations, reflections, translations and permutations of the particles.
The reference samples come from long random-walk Metropolis chains on $E$ in the project
(:func:`metropolis`, one independent chain per sample, centred); the acceptance rate is
reported.

Both flows model the density of the centred configuration on the $(n-1)d$-dimensional
centre-of-mass-free subspace:

- ``equivariant``: :class:`~torchnde.models.EquivariantCNF` with an
  :class:`~torchnde.models.EGNNField`;
- ``plain``: a :class:`~torchnde.models.CNF` with an MLP field on orthonormal coordinates
  of the subspace, its width chosen so that it has at least as many parameters.

Headline: test NLL (nats per configuration, original units) and the effective sample size
of importance reweighting the flows' samples to $e^{-E}$,
$\mathrm{ESS} = (\sum_i w_i)^2 / (N\sum_i w_i^2)$ with $w = e^{-E(x)}/q(x)$ (1 for a
perfect flow). ``torchnde run dimer`` takes a few minutes on 2 cores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models import CNF, DepthCat, EGNNField, EquivariantCNF
from . import harness
from ._models import mlp
from .config import ODEConfig, check, is_int, is_positive
from .harness import Headline, StepOutput, ode_solver_setup

__all__ = ["Config", "Task", "double_well_energy", "mean_free_basis", "metropolis"]


def double_well_energy(
    x: torch.Tensor, b: float = -4.0, c: float = 0.9, r0: float = 4.0
) -> torch.Tensor:
    r"""$E(x) = \sum_{i<j} b(r_{ij} - r_0)^2 + c(r_{ij} - r_0)^4$ of ``(batch, n, d)``
    configurations: ``(batch,)``."""
    n = x.shape[1]
    i, j = torch.triu_indices(n, n, 1)
    r = (x[:, i] - x[:, j]).norm(dim=-1) - r0
    return (b * r**2 + c * r**4).sum(-1)


def metropolis(
    num_chains: int,
    num_particles: int,
    dim: int,
    steps: int,
    step_size: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, float]:
    """Random-walk Metropolis on :func:`double_well_energy`, ``num_chains`` independent
    chains of ``steps`` steps from a wide random start; returns the centred final states
    ``(num_chains, num_particles, dim)`` (float64) and the acceptance rate."""
    x = 3.0 * torch.randn(num_chains, num_particles, dim, generator=generator, dtype=torch.float64)
    e = double_well_energy(x)
    accepted = 0.0
    for _ in range(steps):
        prop = x + step_size * torch.randn(x.shape, generator=generator, dtype=x.dtype)
        e_prop = double_well_energy(prop)
        u = torch.rand(num_chains, generator=generator, dtype=x.dtype)
        ok = u.log() < e - e_prop
        x = torch.where(ok[:, None, None], prop, x)
        e = torch.where(ok, e_prop, e)
        accepted += float(ok.double().mean())
    return x - x.mean(1, keepdim=True), accepted / steps


def mean_free_basis(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """An ``(n, n - 1)`` matrix with orthonormal columns orthogonal to ``(1, ..., 1)``
    (Helmert's): coordinates of the centre-of-mass-free subspace."""
    u = torch.zeros(n, n - 1, dtype=dtype)
    for k in range(1, n):
        u[:k, k - 1] = 1.0 / math.sqrt(k * (k + 1))
        u[k, k - 1] = -k / math.sqrt(k * (k + 1))
    return u


def _num_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@dataclass
class Config(ODEConfig):
    """Options of ``torchnde run dimer``."""

    out: Path = field(default=Path("runs/dimer"), metadata={"help": "run folder"})
    epochs: int = field(default=60, metadata={"help": "passes over the training set"})
    batch_size: int = field(default=128, metadata={"help": "configurations per step"})
    lr: float = field(default=5e-3, metadata={"help": "Adam learning rate (cosine decay)"})
    method: str = field(default="rk4", metadata={"help": "ODE solver of both flows"})
    step_size: float = field(default=0.25, metadata={"help": "step of fixed-step methods"})
    num_particles: int = field(default=4, metadata={"help": "particles"})
    dim: int = field(default=2, metadata={"help": "space dimension"})
    num_train: int = field(default=1024, metadata={"help": "training configurations"})
    num_test: int = field(default=1024, metadata={"help": "test configurations"})
    num_ess: int = field(default=1024, metadata={"help": "flow samples for the ESS"})
    mcmc_steps: int = field(default=4000, metadata={"help": "Metropolis steps per chain"})
    mcmc_step_size: float = field(default=0.3, metadata={"help": "Metropolis proposal std"})
    hidden: int = field(default=16, metadata={"help": "EGNN feature width"})
    layers: int = field(default=2, metadata={"help": "EGNN layers"})
    data_seed: int = field(default=0, metadata={"help": "seed of the MCMC"})

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("dim", "num_train", "num_test", "num_ess", "mcmc_steps", "hidden", "layers"):
            v = getattr(self, key)
            check(is_int(v) and v >= 1, key, "an int >= 1", v)
        n = self.num_particles
        check(is_int(n) and n >= 2, "num_particles", "an int >= 2", n)
        check(is_positive(self.mcmc_step_size), "mcmc_step_size", "a positive number",
              self.mcmc_step_size)  # fmt: skip
        check(is_int(self.data_seed) and self.data_seed >= 0, "data_seed", "an int >= 0",
              self.data_seed)  # fmt: skip


class Task(harness.Task):
    name = "dimer"
    title = "equivariant CNF vs a plain CNF of the same size on a double-well particle system"
    paper = (
        "Koehler, Klein, Noe 2020, Equivariant Flows: Exact Likelihood Generative Learning for "
        "Symmetric Densities; Satorras et al. 2021, E(n) Equivariant Normalizing Flows"
    )
    Config = Config
    MODELS = ("equivariant", "plain")

    def setup(self) -> nn.Module:
        cfg = self.config
        n, d = cfg.num_particles, cfg.dim
        gen = torch.Generator().manual_seed(cfg.data_seed)
        x, self.acceptance = metropolis(
            cfg.num_train + cfg.num_test, n, d, cfg.mcmc_steps, cfg.mcmc_step_size, gen
        )
        self.k = (n - 1) * d
        # One length scale, so the flows see unit-scale data (rotations commute with it).
        self.scale = float((x[: cfg.num_train] ** 2).sum((1, 2)).mean().div(self.k).sqrt())
        y = (x / self.scale).float().to(self.device)
        self.y, self.y_test = y[: cfg.num_train], y[cfg.num_train :]
        self.x_test = x[cfg.num_train :]
        self.basis = mean_free_basis(n, torch.float32).to(self.device)
        solver, controller, dt0 = ode_solver_setup(cfg)
        kw: dict[str, Any] = dict(solver=solver, controller=controller, dt0=dt0)
        eq_field = EGNNField(n, d, hidden=cfg.hidden, num_layers=cfg.layers)
        target = _num_params(eq_field)
        width = 1
        while _num_params(mlp([self.k + 1, width, width, self.k])) < target:
            width += 1
        self.plain_width = width
        fields = {"equivariant": eq_field,
                  "plain": DepthCat(mlp([self.k + 1, width, width, self.k]))}  # fmt: skip
        # Training: Hutchinson's trace (one vector-Jacobian product per evaluation, FFJORD);
        # evaluation: the exact trace (k products), the same flows.
        self.models: dict[str, CNF] = {}
        self.eval_models: dict[str, CNF] = {}
        for trace, into in (("hutchinson", self.models), ("exact", self.eval_models)):
            into["equivariant"] = EquivariantCNF(fields["equivariant"], n, d, trace=trace, **kw)
            into["plain"] = CNF(fields["plain"], self.k, trace=trace, **kw)
        return nn.ModuleDict(self.models)

    def to_coords(self, y: torch.Tensor) -> torch.Tensor:
        """Centred ``(batch, n, d)`` -> orthonormal subspace coordinates ``(batch, k)``."""
        return torch.einsum("nk,bnd->bkd", self.basis.to(y.dtype), y).reshape(y.shape[0], -1)

    def from_coords(self, c: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        c = c.reshape(c.shape[0], cfg.num_particles - 1, cfg.dim)
        return torch.einsum("nk,bkd->bnd", self.basis.to(c.dtype), c)

    def log_q(self, models: Any, key: str, y: torch.Tensor) -> torch.Tensor:
        """Log-density of the centred configurations ``y`` (scaled units) under a flow."""
        if key == "plain":
            return models[key].log_prob(self.to_coords(y))
        return models[key].log_prob(y)

    def gaussian_nll(self) -> float:
        """Test NLL (original units) of the Gaussian fitted to the training configurations in
        subspace coordinates: the reference a flow must beat to have learned anything."""
        c = self.to_coords(self.y.double()) * self.scale
        c_test = self.to_coords(self.y_test.double()) * self.scale
        cov = torch.cov(c.T, correction=0)
        dist = torch.distributions.MultivariateNormal(c.mean(0), covariance_matrix=cov)
        return float(-dist.log_prob(c_test).mean())

    @property
    def num_train(self) -> int:
        return self.config.num_train

    def step(self, model: Any, index: torch.Tensor) -> StepOutput:
        y = self.y[index.to(self.device)]
        lp = {key: self.log_q(model, key, y) for key in self.MODELS}
        nfe = {f"nfe_{k}": float(self.models[k].last_stats["num_fevals"]) for k in self.MODELS}
        logs = {f"nll_{k}": -v for k, v in lp.items()}
        return StepOutput(
            -(lp["equivariant"] + lp["plain"]), logs, {"nfe": sum(nfe.values()), **nfe}
        )

    def evaluate(self, model: Any) -> dict[str, Any]:
        cfg = self.config
        shift = self.k * math.log(self.scale)  # log-density in original units
        out: dict[str, Any] = {
            "mcmc_acceptance": self.acceptance,
            "plain_width": self.plain_width,
            "num_params_equivariant": _num_params(self.models["equivariant"]),
            "num_params_plain": _num_params(self.models["plain"]),
            "test_energy_mean": float(double_well_energy(self.x_test).mean()),
            "gaussian_test_nll": self.gaussian_nll(),
        }
        gen = torch.Generator(device=self.device).manual_seed(cfg.seed + 1)
        with torch.no_grad():
            for key in self.MODELS:
                nll = -(self.log_q(self.eval_models, key, self.y_test).double() - shift)
                out[f"{key}_test_nll"] = float(nll.mean())
                if key == "plain":
                    y = self.from_coords(model[key].sample(cfg.num_ess, generator=gen))
                else:
                    y = model[key].sample(cfg.num_ess, generator=gen)
                log_q = self.log_q(self.eval_models, key, y).double() - shift
                x = y.double() * self.scale
                log_w = -double_well_energy(x) - log_q
                log_w = log_w[torch.isfinite(log_w)]
                ess = torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0))
                out[f"{key}_ess"] = float(ess / cfg.num_ess)
                out[f"{key}_sample_energy_mean"] = float(double_well_energy(x).mean())
        return out

    @classmethod
    def headline(cls, metrics: dict[str, Any]) -> list[Headline]:
        eq, pl = metrics["equivariant_test_nll"], metrics["plain_test_nll"]
        gauss = metrics["gaussian_test_nll"]
        if pl > gauss - 0.05:
            nll_note = f"; the plain CNF is no better than the fitted Gaussian ({gauss:.3f})"
        else:
            nll_note = ""
        e_ess, p_ess = metrics["equivariant_ess"], metrics["plain_ess"]
        nll_v = (f"yes: {pl - eq:.3f} nats lower" if eq < pl
                 else f"no: {eq - pl:.3f} nats higher")  # fmt: skip
        ratio = e_ess / p_ess if p_ess > 0 else float("inf")
        if e_ess > 1.5 * p_ess:
            ess_v = f"yes: {e_ess:.1%} vs {p_ess:.1%} ({ratio:.1f}x)"
        elif e_ess > p_ess:
            ess_v = f"partly: {e_ess:.1%} vs {p_ess:.1%}, within the noise of a 1.5x margin"
        else:
            ess_v = f"no: {e_ess:.1%} vs {p_ess:.1%}"
        if max(e_ess, p_ess) < 0.05:
            ess_v += "; both below 5%, too few effective samples for useful reweighting"
        return [
            Headline(
                "test NLL (nats per configuration), equivariant / plain CNF "
                f"({metrics['num_params_equivariant']} / {metrics['num_params_plain']} "
                "parameters)",
                f"{eq:.3f} / {pl:.3f} (fitted Gaussian {gauss:.3f})",
                "an equivariant flow has a lower NLL than a non-equivariant one of similar "
                "size on DW-4 (Koehler et al. 2020; Satorras et al. 2021, their DW-4 results)",
                nll_v + " for the equivariant flow" + nll_note,
            ),
            Headline(
                "effective sample size of reweighting to exp(-E), equivariant / plain",
                f"{e_ess:.1%} / {p_ess:.1%}",
                "the symmetric flow's samples are closer to the Boltzmann density, so "
                "reweighting them loses less (Koehler et al. 2020)",
                ess_v + " (criterion: 1.5x the plain ESS)",
            ),
        ]

    def figure(self, model: Any, metrics: dict[str, Any]) -> Any:
        from .report import new_figure

        cfg = self.config
        n = cfg.num_particles
        i, j = torch.triu_indices(n, n, 1)
        gen = torch.Generator(device=self.device).manual_seed(cfg.seed + 2)
        with torch.no_grad():
            ys = {
                "MCMC (test)": self.y_test,
                "equivariant": model["equivariant"].sample(cfg.num_ess, generator=gen),
                "plain": self.from_coords(model["plain"].sample(cfg.num_ess, generator=gen)),
            }
        fig = new_figure(10, 4)
        ax_r, ax_e = fig.subplots(1, 2)
        for name, y in ys.items():
            x = y.double().cpu() * self.scale
            r = (x[:, i] - x[:, j]).norm(dim=-1).reshape(-1).numpy()
            ax_r.hist(r, bins=60, range=(0, 8), density=True, histtype="step", label=name)
            e = double_well_energy(x).clamp(max=40).numpy()
            ax_e.hist(e, bins=60, density=True, histtype="step", label=name)
        ax_r.set(xlabel="pair distance", title="pair distances")
        ax_e.set(xlabel="energy E(x)", title="energies")
        ax_r.legend(fontsize="small")
        fig.suptitle("torchnde: equivariant vs plain CNF on the double-well system")
        return fig
