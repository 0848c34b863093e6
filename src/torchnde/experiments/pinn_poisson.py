r"""A physics-informed network on a 2-D Poisson problem with an analytic solution.

Problem 5 of Lagaris, Likas, Fotiadis (1998):

$$\Delta u = e^{-x}(x - 2 + y^3 + 6y) \ \text{on}\ [0, 1]^2, \qquad u = e^{-x}(x + y^3)
  \ \text{on the boundary},$$

whose solution is $u = e^{-x}(x + y^3)$. The Dirichlet values on the four edges hold exactly
(:class:`torchnde.pinn.DirichletBVP2D`); the network is trained on the residual at
``batch_size`` fresh uniform points per step. ``residual=func`` computes the Laplacian per
point with ``torch.func`` (``vmap`` of forward-over-reverse, :func:`torchnde.pinn.laplacian`)
instead of autograd on the batch; both give the same loss.

Headline (``eval``): ``rel_l2``, $\|u_\theta - u\|_2 / \|u\|_2$ on a $101 \times 101$ grid;
also ``max_abs_error``. ``torchnde run pinn-poisson`` (about 1-2 minutes on 2 cores).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchnde.pinn import FCNN, DirichletBVP2D, Generator2D, Solver2D, diff, laplacian

from . import harness
from .config import ExperimentConfig, check, is_int
from .harness import Headline, StepOutput

__all__ = ["Config", "Task", "exact"]


def exact(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The analytic solution $e^{-x}(x + y^3)$."""
    return torch.exp(-x) * (x + y**3)


def source(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The right-hand side $e^{-x}(x - 2 + y^3 + 6y)$."""
    return torch.exp(-x) * (x - 2 + y**3 + 6 * y)


def condition() -> DirichletBVP2D:
    """The exact solution's values on the edges of the unit square."""
    return DirichletBVP2D(
        0.0,
        lambda y: y**3,
        1.0,
        lambda y: (1 + y**3) / math.e,
        0.0,
        lambda x: x * torch.exp(-x),
        1.0,
        lambda x: torch.exp(-x) * (x + 1),
    )


@dataclass
class Config(ExperimentConfig):
    """Options of ``torchnde run pinn-poisson``."""

    out: Path = field(default=Path("runs/pinn-poisson"), metadata={"help": "run folder"})
    epochs: int = field(default=30, metadata={"help": "epochs of `steps_per_epoch` steps"})
    steps_per_epoch: int = field(default=100, metadata={"help": "Adam steps per epoch"})
    batch_size: int = field(default=256, metadata={"help": "collocation points per step"})
    lr: float = field(default=1e-2, metadata={"help": "Adam learning rate (cosine decay)"})
    hidden: int = field(default=32, metadata={"help": "width of the two tanh hidden layers"})
    residual: str = field(
        default="autograd",
        metadata={"help": "how the Laplacian is taken", "choices": ("autograd", "func")},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("steps_per_epoch", "hidden"):
            value = getattr(self, key)
            check(is_int(value) and value >= 1, key, "an int >= 1", value)


class Task(harness.Task):
    name = "pinn-poisson"
    title = "physics-informed network on 2-D Poisson (Lagaris et al. problem 5)"
    paper = (
        "Lagaris, Likas, Fotiadis 1998, Artificial Neural Networks for Solving Ordinary and "
        "Partial Differential Equations"
    )
    Config = Config

    def setup(self) -> nn.Module:
        cfg = self.config
        return Solver2D(
            lambda u, x, y: [diff(u, x, 2) + diff(u, y, 2) - source(x, y)],
            [condition()],
            (0.0, 0.0),
            (1.0, 1.0),
            nets=[FCNN(2, 1, (cfg.hidden, cfg.hidden))],
            train_generator=Generator2D((cfg.batch_size, 1), method="uniform"),
        )

    @property
    def num_train(self) -> int:
        return self.config.steps_per_epoch * self.config.batch_size

    def step(self, model: nn.Module, index: torch.Tensor) -> StepOutput:
        solver: Any = model
        x, y = (c[: len(index)] for c in solver.train_generator.get_examples())
        if self.config.residual == "autograd":
            return StepOutput(solver.point_residual(x, y))
        like = next(model.parameters())
        points = torch.cat([x, y], dim=1).to(like)
        res = laplacian(solver.trial_function(0), points) - source(points[:, 0], points[:, 1])
        return StepOutput(res.pow(2))

    def evaluate(self, model: nn.Module) -> dict[str, Any]:
        solver: Any = model
        g = torch.linspace(0.0, 1.0, 101, dtype=torch.float64)
        gx, gy = torch.meshgrid(g, g, indexing="ij")
        with torch.no_grad():
            pred = solver.get_solution(copy_nets=False)(gx, gy).double().reshape(gx.shape)
        ref = exact(gx, gy)
        self.grid = (gx.numpy(), gy.numpy(), ref.numpy(), pred.numpy())
        return {
            "rel_l2": float((pred - ref).norm() / ref.norm()),
            "max_abs_error": float((pred - ref).abs().max()),
        }

    @classmethod
    def headline(cls, metrics: dict[str, Any]) -> list[Headline]:
        e = metrics["rel_l2"]
        if e < 1e-3:
            verdict = f"yes (criterion: relative L2 error < 1e-3): {e:.2e}"
        elif e < 1e-2:
            verdict = f"partly: relative L2 error {e:.2e} (criterion for yes: < 1e-3)"
        else:
            verdict = f"no: relative L2 error {e:.2e}"
        return [
            Headline(
                "relative L2 error on a 101 x 101 grid",
                f"{e:.2e} (max abs error {metrics['max_abs_error']:.2e})",
                "a trial solution with the boundary values built in, trained on the residual, "
                "matches the analytic solution closely (Lagaris et al. 1998, problem 5: "
                "deviation plots, no relative L2 figure stated)",
                verdict,
            )
        ]

    def figure(self, model: nn.Module, metrics: dict[str, Any]) -> Any:
        from .report import new_figure

        gx, gy, ref, pred = self.grid
        fig = new_figure(11, 4)
        axes = fig.subplots(1, 2)
        im0 = axes[0].pcolormesh(gx, gy, pred, shading="auto")
        axes[0].set(title="PINN u(x, y)", xlabel="x", ylabel="y")
        fig.colorbar(im0, ax=axes[0])
        im1 = axes[1].pcolormesh(gx, gy, abs(pred - ref), shading="auto", cmap="magma")
        axes[1].set(title=f"|error|, rel L2 {metrics['eval']['rel_l2']:.1e}", xlabel="x")
        fig.colorbar(im1, ax=axes[1])
        fig.suptitle("torchnde: PINN on 2-D Poisson (Lagaris et al. problem 5)")
        return fig
