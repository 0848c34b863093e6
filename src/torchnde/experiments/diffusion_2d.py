r"""Score-based diffusion on 2-D densities with known likelihood (Song et al. 2021).

Two densities with closed-form log-density: an 8-component Gaussian mixture on a circle and
a noisy swiss roll $x = \tfrac{u}{7}(\cos u, \sin u) + \mathcal N(0, 0.1^2 I)$,
$u \sim U[1.5\pi, 4.5\pi]$ (its density a 1-D integral, by quadrature). For each of the VP,
VE and sub-VP SDEs a :class:`~torchnde.diffusion.ScoreMLP` is trained by denoising score
matching; then

- ``pf_ode_test_nll``: the model's exact negative log-likelihood of the test set by the
  probability-flow ODE (:func:`torchnde.diffusion.log_prob`, exact trace, Tsit5), beside
  ``true_test_nll``, that of the true density (the best possible on average);
- ``mmd_<sampler>_<steps>``: the unbiased MMD$^2$ between samples of every sampler at
  10, 20, 50 and 1000 steps (and the adaptive probability-flow ODE, ``mmd_pf_ode_adaptive``)
  and held-out data, with ``mmd_heldout`` (two independent draws of the true law, the floor)
  and the score evaluations of each in ``nfe_<sampler>_<steps>``.

Metrics are under ``eval["<dataset>/<sde>"]``. ``torchnde run diffusion-2d`` runs a few
minutes on 2 cores; ``full=true`` trains longer on more data with more samples.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import diffusion as dn
from . import harness
from ._diffusion import mmd2, parse_ints, parse_names
from .config import ExperimentConfig, check, is_int
from .harness import Headline, StepOutput

__all__ = ["Config", "Task", "sample_density", "true_log_prob"]

DATASETS = ("mixture", "swiss_roll")
SDES = ("vp", "ve", "subvp")
#: The samplers of the experiment (the keys' names).
SAMPLERS = (
    "euler_maruyama", "srk", "reversible_heun", "pc", "pf_ode", "ddim", "heun", "dpm_solver",
    "dpm_solver++",
)  # fmt: skip
_NOISE = {"mixture": 0.15, "swiss_roll": 0.1}
_ROLL = (1.5 * math.pi, 4.5 * math.pi, 7.0)


def make_sde(name: str) -> dn.AbstractForwardSDE:
    if name == "vp":
        return dn.VPSDE()
    if name == "subvp":
        return dn.SubVPSDE()
    return dn.VESDE(sigma_min=0.01, sigma_max=8.0)


def sample_density(name: str, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` draws of the 2-D density ``name`` (float64)."""
    s = _NOISE[name]
    noise = s * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    if name == "mixture":
        k = torch.randint(0, 8, (n,), generator=gen)
        ang = 2 * math.pi * k.double() / 8
        return 1.5 * torch.stack([ang.cos(), ang.sin()], 1) + noise
    lo, hi, scale = _ROLL
    u = lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)
    return (u / scale)[:, None] * torch.stack([u.cos(), u.sin()], 1) + noise


def _centres(name: str) -> torch.Tensor:
    if name == "mixture":
        ang = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
        return 1.5 * torch.stack([ang.cos(), ang.sin()], 1)
    lo, hi, scale = _ROLL
    # The midpoint rule on 1000 nodes, about 0.013 apart along the curve: for a Gaussian of
    # width 0.1 its error is of order exp(-2 pi^2 (0.1 / 0.013)^2), nothing.
    u = lo + (hi - lo) * (torch.arange(1000, dtype=torch.float64) + 0.5) / 1000
    return (u / scale)[:, None] * torch.stack([u.cos(), u.sin()], 1)


def true_log_prob(name: str, x: torch.Tensor) -> torch.Tensor:
    """The exact log-density of ``name`` at ``x`` (an equal-weight Gaussian mixture; for the
    swiss roll over a fine quadrature of its curve)."""
    c, s = _centres(name), _NOISE[name]
    d2 = torch.cdist(x.double(), c).pow(2)
    log_n = -d2 / (2 * s * s) - math.log(2 * math.pi * s * s)
    return torch.logsumexp(log_n, 1) - math.log(len(c))


@dataclass
class Config(ExperimentConfig):
    """Options of ``torchnde run diffusion-2d``."""

    out: Path = field(default=Path("runs/diffusion-2d"), metadata={"help": "run folder"})
    datasets: str = field(default="mixture,swiss_roll", metadata={"help": "comma-separated"})
    sdes: str = field(default="vp,ve,subvp", metadata={"help": "comma-separated: vp, ve, subvp"})
    samplers: str = field(default=",".join(SAMPLERS), metadata={"help": "comma-separated"})
    steps: str = field(default="10,20,50,1000", metadata={"help": "sampler steps, comma-separated"})
    epochs: int = field(default=250, metadata={"help": "passes over the training set"})
    batch_size: int = field(default=512, metadata={"help": "points per step"})
    lr: float = field(default=3e-3, metadata={"help": "Adam learning rate (cosine decay)"})
    num_train: int = field(default=8192, metadata={"help": "training points per dataset"})
    num_test: int = field(default=1000, metadata={"help": "test points (NLL and MMD)"})
    num_samples: int = field(default=1000, metadata={"help": "samples per sampler"})
    hidden: int = field(default=128, metadata={"help": "score network width"})
    depth: int = field(default=3, metadata={"help": "score network hidden layers"})
    weighting: str = field(
        default="likelihood",
        metadata={
            "help": "DSM weighting (likelihood: Song et al. 2021b)",
            "choices": dn.WEIGHTINGS,
        },
    )
    importance_sampling: bool = field(
        default=True,
        metadata={"help": "draw t uniformly in log-SNR (with weighting=likelihood; off otherwise)"},
    )
    full: bool = field(
        default=False,
        metadata={"help": "larger run: 32768 points (4x the steps), width 256, 4000 samples"},
    )

    def __post_init__(self) -> None:
        if self.full:
            larger = {"num_train": 32768, "epochs": 250, "hidden": 256, "num_samples": 4000,
                      "num_test": 4000}  # fmt: skip
            for key, value in larger.items():
                if getattr(self, key) == self.__dataclass_fields__[key].default:
                    setattr(self, key, value)
        super().__post_init__()
        for key in ("num_train", "num_test", "num_samples", "hidden", "depth"):
            v = getattr(self, key)
            check(is_int(v) and v >= 2, key, "an int >= 2", v)
        if self.weighting != "likelihood":
            self.importance_sampling = False  # it applies to the likelihood weighting only
        parse_names("datasets", self.datasets, DATASETS)
        parse_names("sdes", self.sdes, SDES)
        parse_names("samplers", self.samplers, SAMPLERS)
        parse_ints("steps", self.steps)


class Task(harness.Task):
    name = "diffusion-2d"
    title = "score-based diffusion (VP, VE, sub-VP) on 2-D densities: PF-ODE NLL and samplers"
    paper = (
        "Song et al. 2021, Score-Based Generative Modeling through SDEs; Song, Meng, Ermon 2021 "
        "(DDIM); Karras et al. 2022; Lu et al. 2022 (DPM-Solver)"
    )
    Config = Config

    def setup(self) -> nn.Module:
        cfg = self.config
        self.datasets = parse_names("datasets", cfg.datasets, DATASETS)
        self.sde_names = parse_names("sdes", cfg.sdes, SDES)
        self.sdes = {s: make_sde(s) for s in self.sde_names}
        self.data: dict[str, dict[str, torch.Tensor]] = {}
        for i, d in enumerate(self.datasets):
            g = torch.Generator().manual_seed(1000 * cfg.seed + i)
            self.data[d] = {
                "train": sample_density(d, cfg.num_train, g).float(),
                "test": sample_density(d, cfg.num_test, g).float(),
                "heldout": sample_density(d, cfg.num_samples, g).float(),
            }
        nets = {
            f"{d}/{s}": dn.ScoreMLP(2, self.sdes[s], cfg.hidden, cfg.depth)
            for d in self.datasets
            for s in self.sde_names
        }
        return nn.ModuleDict({k.replace("/", "__"): v for k, v in nets.items()})

    @property
    def num_train(self) -> int:
        return self.config.num_train

    def step(self, model: Any, index: torch.Tensor) -> StepOutput:
        total = torch.zeros(len(index), device=self.device)
        logs = {}
        for d in self.datasets:
            x = self.data[d]["train"][index].to(self.device)
            for s in self.sde_names:
                loss = dn.dsm_loss(
                    self.sdes[s], model[f"{d}__{s}"], x, weighting=self.config.weighting,
                    importance_sampling=self.config.importance_sampling,
                )  # fmt: skip
                logs[f"dsm_{d}_{s}"] = loss.detach()
                total = total + loss
        return StepOutput(total, logs)

    def evaluate(self, model: Any) -> dict[str, Any]:
        cfg = self.config
        steps = parse_ints("steps", cfg.steps)
        samplers = parse_names("samplers", cfg.samplers, SAMPLERS)
        out: dict[str, Any] = {}
        self.fig_samples: dict[str, dict[str, np.ndarray]] = {}
        for d in self.datasets:
            test = self.data[d]["test"].double()
            true_nll = float(-true_log_prob(d, test).mean())
            floor = mmd2(self.data[d]["heldout"], test)
            for s in self.sde_names:
                sde, net = self.sdes[s], model[f"{d}__{s}"].double()
                m: dict[str, Any] = {"true_test_nll": true_nll, "mmd_heldout": floor}
                st: dict[str, Any] = {}
                with torch.no_grad():
                    lp = dn.log_prob(sde, net, test, rtol=1e-5, atol=1e-5, stats=st)
                m["pf_ode_test_nll"] = float(-lp.mean())
                m["pf_ode_nll_nfe"] = st["nfe"]
                net.float()  # sampling in float32: the MMD needs no more
                shown = self.fig_samples.setdefault(f"{d}/{s}", {})
                runs: list[tuple[str, int | None]] = [(sp, n) for sp in samplers for n in steps]
                if "pf_ode" in samplers:
                    runs.append(("pf_ode", None))
                for sp, n in runs:
                    gen = torch.Generator().manual_seed(cfg.seed + 17)
                    st, start = {}, time.perf_counter()
                    with torch.no_grad():
                        kw: dict[str, Any] = {}
                        if sp == "pf_ode" and n is not None:
                            import torchnde as tn

                            kw["solver"] = tn.RK4()
                        x = dn.sample(
                            sde, net, (cfg.num_samples, 2), sampler=sp, steps=n,
                            generator=gen, dtype=torch.float32, stats=st, **kw,
                        )  # fmt: skip
                    key = f"{sp}_{'adaptive' if n is None else n}"
                    ok = bool(torch.isfinite(x).all())
                    m[f"mmd_{key}"] = mmd2(x, test) if ok else float("nan")
                    m[f"time_s_{key}"] = time.perf_counter() - start
                    m[f"nfe_{key}"] = st["nfe"]
                    if key in ("euler_maruyama_1000", "ddim_10", "heun_10", "dpm_solver++_10"):
                        shown[key] = x.numpy()
                out[f"{d}/{s}"] = m
        return out

    @classmethod
    def headline(cls, metrics: dict[str, Any]) -> list[Headline]:
        rows = [(k, v) for k, v in metrics.items() if isinstance(v, dict)]
        gaps = {k: v["pf_ode_test_nll"] - v["true_test_nll"] for k, v in rows}
        worst = max(gaps.values())
        nll = "; ".join(
            f"{k} {v['pf_ode_test_nll']:.3f} (true {v['true_test_nll']:.3f})" for k, v in rows
        )
        best = min(gaps.values())
        crit = "within 0.1 nats of the true NLL"
        if worst < 0.1:
            v1 = f"yes (criterion: every model {crit}): worst gap {worst:.3f}"
        elif best < 0.1:
            v1 = f"partly: some models {crit} (best gap {best:.3f}), the worst {worst:.3f} above"
        else:
            v1 = f"no: no model {crit} (best gap {best:.3f})"
        heads = [
            Headline(
                "PF-ODE test NLL (nats) beside the true density's",
                nll,
                "the probability-flow ODE turns a score model into an exact likelihood model whose "
                "NLL approaches the data's (Song et al. 2021, Sec. 4.3, Table 2)",
                v1,
            )
        ]
        # Few-step ODE samplers against the 1000-step reverse SDE.
        pairs: list[tuple[str, float, float, float, float, float]] = []
        need = ("euler_maruyama_1000", "dpm_solver++_20", "ddim_10", "dpm_solver++_10")
        for k, v in rows:
            if all(f"mmd_{n}" in v for n in need):
                em, dpm, ddim, dpm10 = (float(v[f"mmd_{n}"]) for n in need)
                pairs.append((k, em, dpm, ddim, dpm10, v["mmd_heldout"]))
        if pairs:
            # "Approaches": within the larger of 1.5x the SDE's MMD^2 and the SDE's + 2e-3.
            close = [p for p in pairs if p[2] <= max(1.5 * p[1], p[1] + 2e-3)]
            better = [p for p in pairs if p[4] < p[3]]
            value = "; ".join(
                f"{k}: EM-1000 {em:.4f}, DPM++-20 {dpm:.4f}, DDIM-10 {dd:.4f}, DPM++-10 {d10:.4f} "
                f"(floor {fl:.4f})"
                for k, em, dpm, dd, d10, fl in pairs
            )
            n = len(pairs)
            if len(close) == n and len(better) == n:
                v2 = (f"yes (criteria: DPM-Solver++ at 20 steps within max(1.5x, +2e-3) of EM at "
                      f"1000, and better than DDIM at 10 steps): all {n} models")  # fmt: skip
            elif close or better:
                v2 = (f"partly: DPM++-20 close to EM-1000 in {len(close)}/{n} models, DPM++-10 "
                      f"better than DDIM-10 in {len(better)}/{n}")  # fmt: skip
            else:
                v2 = "no: neither holds in any model"
            heads.append(
                Headline(
                    "sample MMD^2 against held-out data",
                    value,
                    "second-order ODE samplers reach the quality of 1000-step SDE sampling in "
                    "10-20 steps and beat DDIM at equal NFE (Lu et al. 2022, Karras et al. 2022)",
                    v2,
                )
            )
        return heads

    def figure(self, model: Any, metrics: dict[str, Any]) -> Any:
        from .report import new_figure

        keys = list(self.fig_samples)
        cols = ["data", "euler_maruyama_1000", "ddim_10", "heun_10", "dpm_solver++_10"]
        fig = new_figure(3 * len(cols), 3 * len(keys))
        axes = fig.subplots(len(keys), len(cols), squeeze=False)
        ev = metrics["eval"]
        for r, k in enumerate(keys):
            d = k.split("/")[0]
            for c, name in enumerate(cols):
                ax = axes[r][c]
                if name == "data":
                    pts = self.data[d]["test"].numpy()
                    title = f"{k}: test data"
                else:
                    pts = self.fig_samples[k].get(name)  # type: ignore[assignment]
                    title = f"{name} (MMD² {ev[k].get('mmd_' + name, float('nan')):.4f})"
                if pts is not None:
                    ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.5)
                ax.set(xlim=(-2.5, 2.5), ylim=(-2.5, 2.5), aspect="equal", xticks=[], yticks=[])
                ax.set_title(title, fontsize=8)
        fig.suptitle("torchnde: score-based diffusion samplers on 2-D densities")
        return fig
