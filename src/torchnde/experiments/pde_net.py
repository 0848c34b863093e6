r"""PDE-Net on simulated 2-D convection-diffusion: recover the PDE, roll it out far ahead.

Long, Lu, Ma, Dong 2018 ("PDE-Net: Learning PDEs from Data"; the symbolic network of PDE-Net
2.0, Long, Lu, Dong 2019). The data solve, exactly (Fourier modes on the periodic square
$[0, 2\pi]^2$),

$$u_t = a\, u_x + b\, u_y + c\, u_{xx} + d\, u_{yy}, \qquad (a, b, c, d) = (0.6, 0.8, 0.2, 0.2)$$

(the paper's convection-diffusion test with its variable coefficients replaced by their
constant parts), from random band-limited initial values
$u_0 = \sum_{|k|,|l| \le 4} \lambda_{kl} \cos(kx + ly) + \gamma_{kl} \sin(kx + ly)$,
normalised to unit standard deviation, on a ``grid`` x ``grid`` mesh, snapshots every
$\delta t = 0.015$ (the paper's). :class:`torchnde.discovery.PDENet` (moment-constrained
``kernel_size`` filters of ``order`` for $u_x, u_y, u_{xx}, u_{xy}, u_{yy}$, a two-layer
SymNet for the right-hand side) is trained on ``num_blocks`` δt-blocks (forward Euler steps
through ``torchnde.solve``), the loss summed over all of them. ``eval``: ``coef_rel_error``
(the expanded SymNet against the true linear right-hand side, all monomials, spurious terms
included) and ``rollout_rel_l2`` (relative L2 error at the end of ``rollout_blocks`` blocks
from unseen initial values, 10x the training horizon by default), beside the same rollout with
the true coefficients and fixed (zero free moment) filters: the discretisation's own error.

``torchnde run pde-net`` (about 25 s on 2 cores; a few minutes on a loaded machine).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..discovery import PDENet
from . import harness
from .config import ExperimentConfig, check, is_int
from .harness import Headline, StepOutput

__all__ = ["COEFFICIENTS", "Config", "Task", "convection_diffusion", "random_initial_values"]

#: ``(a, b, c, d)`` of ``u_t = a u_x + b u_y + c u_xx + d u_yy``.
COEFFICIENTS = {"u_x": 0.6, "u_y": 0.8, "u_xx": 0.2, "u_yy": 0.2}
DT = 0.015


@dataclass
class Config(ExperimentConfig):
    """Options of ``torchnde run pde-net``."""

    out: Path = field(default=Path("runs/pde-net"), metadata={"help": "run folder"})
    epochs: int = field(default=10, metadata={"help": "passes over the one-block pairs"})
    batch_size: int = field(default=32, metadata={"help": "snapshot pairs per Adam step"})
    lr: float = field(default=1e-2, metadata={"help": "Adam learning rate (cosine decay)"})
    grid: int = field(default=32, metadata={"help": "grid points per side"})
    num_train: int = field(default=24, metadata={"help": "training trajectories"})
    num_test: int = field(default=8, metadata={"help": "test initial values"})
    num_blocks: int = field(default=20, metadata={"help": "δt-blocks in training"})
    rollout_blocks: int = field(default=200, metadata={"help": "δt-blocks of the rollout"})
    kernel_size: int = field(default=5, metadata={"help": "filter size (odd)"})
    order: int = field(default=2, metadata={"help": "order of the derivative filters"})
    num_layers: int = field(default=2, metadata={"help": "product layers of the SymNet"})
    noise: float = field(default=0.0, metadata={"help": "data noise, times the data's std"})
    lbfgs_iters: int = field(
        default=50, metadata={"help": "L-BFGS iterations per stage of the multi-step phase"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for key, low in (
            ("grid", 9),
            ("num_train", 1),
            ("num_test", 1),
            ("num_blocks", 1),
            ("rollout_blocks", 1),
            ("order", 1),
            ("num_layers", 0),
            ("lbfgs_iters", 0),
        ):
            value = getattr(self, key)
            check(is_int(value) and value >= low, key, f"an int >= {low}", value)
        check(
            is_int(self.kernel_size) and self.kernel_size % 2 == 1 and self.kernel_size >= 3,
            "kernel_size",
            "an odd int >= 3",
            self.kernel_size,
        )
        check(
            self.kernel_size >= 2 + self.order,
            "kernel_size",
            f"at least 2 + order = {2 + self.order} (second derivatives to that order)",
            self.kernel_size,
        )
        check(self.noise >= 0, "noise", "a number >= 0", self.noise)


def random_initial_values(
    num: int, grid: int, generator: torch.Generator, max_mode: int = 4
) -> torch.Tensor:
    r"""``num`` fields $\sum_{|k|,|l| \le N} \lambda_{kl}\cos(kx+ly) + \gamma_{kl}\sin(kx+ly)$
    on the ``grid`` x ``grid`` mesh of $[0, 2\pi)^2$, standard normal amplitudes, each field
    normalised to unit standard deviation; ``(num, grid, grid)``, float64."""
    x = torch.arange(grid, dtype=torch.float64) * (2 * torch.pi / grid)
    xx, yy = torch.meshgrid(x, x, indexing="ij")
    modes = torch.arange(-max_mode, max_mode + 1, dtype=torch.float64)
    k, l_ = torch.meshgrid(modes, modes, indexing="ij")
    phase = k.reshape(-1, 1, 1) * xx + l_.reshape(-1, 1, 1) * yy  # (modes, H, W)
    lam = torch.randn(num, phase.shape[0], 1, 1, generator=generator, dtype=torch.float64)
    gam = torch.randn(num, phase.shape[0], 1, 1, generator=generator, dtype=torch.float64)
    u = (lam * torch.cos(phase) + gam * torch.sin(phase)).sum(1)
    u = u - u.mean((-2, -1), keepdim=True)
    return u / u.std(dim=(-2, -1), keepdim=True)


def convection_diffusion(u0: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
    r"""The exact solution of $u_t = a u_x + b u_y + c u_{xx} + d u_{yy}$ (``COEFFICIENTS``)
    on the periodic square from ``u0`` ``(batch, H, W)`` at times ``ts``, by Fourier modes:
    $\hat u_{kl}(t) = \hat u_{kl}(0)\, e^{(i a k + i b l - c k^2 - d l^2) t}$ (exact for
    band-limited ``u0``). Returns ``(len(ts), batch, H, W)``."""
    n1, n2 = u0.shape[-2:]
    k = torch.fft.fftfreq(n1, 1.0 / n1, dtype=torch.float64)[:, None]
    l_ = torch.fft.fftfreq(n2, 1.0 / n2, dtype=torch.float64)[None, :]
    a, b, c, d = (COEFFICIENTS[n] for n in ("u_x", "u_y", "u_xx", "u_yy"))
    rate = 1j * (a * k + b * l_) - c * k**2 - d * l_**2
    u_hat = torch.fft.fft2(u0)
    out = [torch.fft.ifft2(u_hat * torch.exp(rate * float(t))).real for t in ts]
    return torch.stack(out)


def _rel_l2(pred: torch.Tensor, truth: torch.Tensor) -> float:
    """The mean over samples of ``||pred - truth|| / ||truth||`` (fields of the last 2 dims)."""
    num = torch.linalg.vector_norm(pred - truth, dim=(-2, -1))
    den = torch.linalg.vector_norm(truth, dim=(-2, -1))
    ratio = num / den
    return float(ratio.mean()) if bool(torch.isfinite(ratio).all()) else 1e300


class Task(harness.Task):
    name = "pde-net"
    title = "PDE-Net recovers 2-D convection-diffusion and predicts far beyond its training"
    paper = "Long, Lu, Ma, Dong 2018, PDE-Net: Learning PDEs from Data"
    Config = Config

    def setup(self) -> nn.Module:
        cfg = self.config
        g = torch.Generator().manual_seed(cfg.seed)
        u0 = random_initial_values(cfg.num_train + cfg.num_test, cfg.grid, g)
        ts = torch.arange(cfg.num_blocks + 1, dtype=torch.float64) * DT
        clean = convection_diffusion(u0[: cfg.num_train], ts)  # (K + 1, n, H, W)
        noise = torch.randn(clean.shape, generator=g, dtype=torch.float64)
        self.train_data = (
            (clean + cfg.noise * noise).movedim(0, 1).to(self.device)
        )  # (n, K+1, H, W)
        self.test_u0 = u0[cfg.num_train :]
        self.dx = 2 * torch.pi / cfg.grid
        return self._model(learnable=True).to(self.device)

    def _model(self, learnable: bool) -> PDENet:
        cfg = self.config
        return PDENet(
            dx=self.dx,
            kernel_size=cfg.kernel_size,
            order=cfg.order,
            num_layers=cfg.num_layers,
            learnable_filters=learnable,
        )

    @property
    def num_train(self) -> int:
        # Adam's phase fits one δt-block on every pair of consecutive snapshots.
        return self.config.num_train * self.config.num_blocks

    def step(self, model: Any, index: torch.Tensor) -> StepOutput:
        k = self.config.num_blocks
        i = index.to(self.device)
        data = self.train_data[i // k]
        start = data[torch.arange(len(i), device=self.device), i % k]
        target = data[torch.arange(len(i), device=self.device), i % k + 1]
        pred = model.rollout(start, DT, 1)[1]
        err = ((pred - target) ** 2).mean((-2, -1)) / DT**2
        return StepOutput(err, nfe={"nfe": 1.0})

    def _multistep_loss(self, model: Any, blocks: int) -> torch.Tensor:
        data = self.train_data
        pred = model.rollout(data[:, 0], DT, blocks)  # (blocks + 1, n, H, W)
        err = ((pred[1:].movedim(0, 1) - data[:, 1 : blocks + 1]) ** 2).mean((-2, -1))
        return err.sum(1).mean()

    def refine(self, model: Any) -> dict[str, Any]:
        """The paper's layer-wise training: L-BFGS (strong Wolfe) on the multi-step loss of
        2, 5, 10, 20, ... δt-blocks (up to ``num_blocks``), each from the previous result."""
        cfg = self.config
        schedule = [b for b in (2, 5, 10, 20, 40, 80) if b < cfg.num_blocks] + [cfg.num_blocks]
        out: dict[str, Any] = {"blocks": schedule, "lbfgs_iters": cfg.lbfgs_iters}
        if not cfg.lbfgs_iters:
            return out
        losses = []
        for blocks in schedule:
            lbfgs = torch.optim.LBFGS(
                model.parameters(),
                max_iter=cfg.lbfgs_iters,
                history_size=50,
                line_search_fn="strong_wolfe",
                tolerance_grad=1e-12,
                tolerance_change=1e-15,
            )

            def closure(blocks: int = blocks, lbfgs: Any = lbfgs) -> torch.Tensor:
                lbfgs.zero_grad(set_to_none=True)
                loss = self._multistep_loss(model, blocks)
                loss.backward()
                return loss

            lbfgs.step(closure)
            with torch.no_grad():
                losses.append(float(self._multistep_loss(model, blocks)))
        out["loss_after"] = losses
        return out

    def evaluate(self, model: Any) -> dict[str, Any]:
        cfg = self.config
        out: dict[str, Any] = {}
        expr = model.expression()
        keys = set(expr) | set(COEFFICIENTS)
        diff = sum((expr.get(k, 0.0) - COEFFICIENTS.get(k, 0.0)) ** 2 for k in keys)
        true = sum(v**2 for v in COEFFICIENTS.values())
        out["coef_rel_error"] = float((diff / true) ** 0.5)
        out["learned_coefficients"] = {
            k: expr.get(k, 0.0) for k in ("1", "u", *model.feature_names()[1:])
        }
        big = {k: v for k, v in expr.items() if abs(v) >= 1e-3}
        out["learned_equation"] = "u_t = " + " + ".join(
            f"{v:.4f} {k}" for k, v in sorted(big.items(), key=lambda kv: -abs(kv[1]))
        )
        ts = torch.arange(cfg.rollout_blocks + 1, dtype=torch.float64) * DT
        truth = convection_diffusion(self.test_u0, ts)
        with torch.no_grad():
            pred = model.rollout(self.test_u0.to(self.device), DT, cfg.rollout_blocks).cpu()
            reference = self._model(learnable=False).to(self.device)
            _set_true_symnet(reference)
            floor = reference.rollout(self.test_u0.to(self.device), DT, cfg.rollout_blocks).cpu()
        out["rollout_rel_l2"] = _rel_l2(pred[-1], truth[-1])
        out["rollout_rel_l2_true_coefficients"] = _rel_l2(floor[-1], truth[-1])
        out["train_horizon_rel_l2"] = _rel_l2(pred[cfg.num_blocks], truth[cfg.num_blocks])
        out["t_train"], out["t_rollout"] = cfg.num_blocks * DT, cfg.rollout_blocks * DT
        every = max(1, cfg.rollout_blocks // 50)
        self._curve = [
            (float(ts[i]), _rel_l2(pred[i], truth[i]), _rel_l2(floor[i], truth[i]))
            for i in range(1, cfg.rollout_blocks + 1, every)
        ]
        self._fields = (truth[-1, 0], pred[-1, 0])
        return out

    @classmethod
    def headline(cls, metrics: dict[str, Any]) -> list[Headline]:
        c, r, f = (
            metrics["coef_rel_error"],
            metrics["rollout_rel_l2"],
            metrics["rollout_rel_l2_true_coefficients"],
        )
        t = metrics["t_rollout"]
        if c < 0.05 and r < 0.1:
            verdict = f"yes: coefficients to {c:.2g} relative, rollout error {r:.3g} at t = {t:g}"
        elif c < 0.05 or r < 0.1:
            verdict = (
                f"partly: coef_rel_error {c:.3g}, rollout_rel_l2 {r:.3g} at t = {t:g} (yes needs "
                "< 0.05 and < 0.1)"
            )
        else:
            verdict = f"no: coef_rel_error {c:.3g}, rollout_rel_l2 {r:.3g} at t = {t:g}"
        return [
            Headline(
                "learned PDE; relative L2 error of the rollout at t_rollout (true coefficients "
                "with fixed filters beside)",
                f"{metrics['learned_equation']} (coef_rel_error {c:.3g}); rollout_rel_l2 {r:.3g} "
                f"at t = {t:g} (training horizon {metrics['t_train']:g}; true coefficients "
                f"{f:.3g})",
                "PDE-Net identifies the convection-diffusion terms and coefficients and predicts "
                "the dynamics for a relatively long time, well beyond the 20 δt-blocks of "
                "training (Long et al. 2018, Sec. 4.1, variable coefficients, 7x7 filters; "
                "errors shown in figures, no single number to compare)",
                verdict,
            )
        ]

    def figure(self, model: nn.Module, metrics: dict[str, Any]) -> Any:
        from .report import new_figure

        fig = new_figure(12, 3.6)
        axes = fig.subplots(1, 3)
        t, err, floor = zip(*self._curve)
        axes[0].semilogy(t, err, label="PDE-Net")
        axes[0].semilogy(t, floor, "--", label="true coefficients, fixed filters")
        axes[0].axvline(metrics["eval"]["t_train"], color="0.6", lw=0.8)
        axes[0].set(xlabel="t", ylabel="relative L2 error", title="rollout on unseen data")
        axes[0].legend(fontsize="small")
        truth, pred = self._fields
        for ax, f, name in ((axes[1], truth, "truth"), (axes[2], pred, "PDE-Net")):
            ax.imshow(f.T, origin="lower", cmap="RdBu_r")
            ax.set(title=f"{name}, t = {metrics['eval']['t_rollout']:g}", xticks=[], yticks=[])
        fig.suptitle("torchnde: PDE-Net on 2-D convection-diffusion (Long et al. 2018)")
        return fig


def _set_true_symnet(model: PDENet) -> None:
    """Make ``model``'s SymNet the exact linear right-hand side (no products)."""
    names = model.feature_names()
    with torch.no_grad():
        for p in model.symnet.parameters():
            p.zero_()
        w = model.symnet.out.weight
        for name, value in COEFFICIENTS.items():
            w[0, names.index(name)] = value
