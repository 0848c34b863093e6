r"""Physics-informed networks on two ODEs, against torchnde's own solver.

Trial solutions that satisfy the initial conditions by construction (Lagaris, Likas,
Fotiadis 1998; neurodiffeq, Chen et al. 2020), trained on the residual alone at fresh
collocation points each step (:class:`torchnde.pinn.Solver1D`):

- a damped oscillator $x'' + 2\zeta\omega x' + \omega^2 x = 0$, $x(0) = 1$, $x'(0) = 0$,
  $\zeta = 0.1$, $\omega = 2$ on $[0, 5]$ (one network, :class:`~torchnde.pinn.IVP` with a
  derivative condition);
- Lotka-Volterra $x' = \alpha x - \beta x y$, $y' = \delta x y - \gamma y$ with
  $\alpha = \beta = \gamma = \delta = 1$, $(x, y)(0) = (1.5, 1)$ on $[0, 5]$ (an ODE system:
  one network and one IVP per unknown).

The reference is :func:`torchnde.solve` (Dopri5, rtol $10^{-10}$, float64) at 501 times.
Headline (``eval``): ``oscillator_max_abs_error``, ``lotka_volterra_max_abs_error`` and
``max_abs_error`` (the larger), each the maximum over the 501 times and the unknowns.

``torchnde run pinn-ode`` (about 1-2 minutes on 2 cores).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

import torchnde
from torchnde.pinn import FCNN, IVP, Generator1D, Solver1D, diff

from . import harness
from .config import ExperimentConfig, check, is_int, is_positive
from .harness import Headline, StepOutput

__all__ = ["Config", "Task"]

ZETA, OMEGA = 0.1, 2.0
ALPHA, BETA, GAMMA, DELTA = 1.0, 1.0, 1.0, 1.0
LV_Y0 = (1.5, 1.0)


@dataclass
class Config(ExperimentConfig):
    """Options of ``torchnde run pinn-ode``."""

    out: Path = field(default=Path("runs/pinn-ode"), metadata={"help": "run folder"})
    epochs: int = field(default=40, metadata={"help": "epochs of `steps_per_epoch` steps"})
    steps_per_epoch: int = field(default=100, metadata={"help": "Adam steps per epoch"})
    batch_size: int = field(
        default=256, metadata={"help": "collocation points per step (uniform, fresh each step)"}
    )
    lr: float = field(default=1e-2, metadata={"help": "Adam learning rate (cosine decay)"})
    hidden: int = field(default=32, metadata={"help": "width of the two tanh hidden layers"})
    t_oscillator: float = field(default=5.0, metadata={"help": "oscillator horizon"})
    t_lotka_volterra: float = field(default=5.0, metadata={"help": "Lotka-Volterra horizon"})

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("steps_per_epoch", "hidden"):
            value = getattr(self, key)
            check(is_int(value) and value >= 1, key, "an int >= 1", value)
        for key in ("t_oscillator", "t_lotka_volterra"):
            check(is_positive(getattr(self, key)), key, "a positive number", getattr(self, key))


def _lotka_volterra(t: torch.Tensor, y: torch.Tensor, args: Any) -> torch.Tensor:
    x, v = y[..., 0], y[..., 1]
    return torch.stack([ALPHA * x - BETA * x * v, DELTA * x * v - GAMMA * v], dim=-1)


def _oscillator(t: torch.Tensor, y: torch.Tensor, args: Any) -> torch.Tensor:
    x, v = y[..., 0], y[..., 1]
    return torch.stack([v, -2 * ZETA * OMEGA * v - OMEGA**2 * x], dim=-1)


def reference(name: str, t1: float, num: int = 501) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ts, ys)``: torchnde's Dopri5 solution (rtol 1e-10) of problem ``name``, ``ys`` of
    shape ``(num, 2)`` (time first)."""
    field_, y0 = (_oscillator, (1.0, 0.0)) if name == "oscillator" else (_lotka_volterra, LV_Y0)
    ts = torch.linspace(0.0, t1, num, dtype=torch.float64)
    sol = torchnde.solve(
        torchnde.ODETerm(field_),
        torchnde.Dopri5(),
        0.0,
        t1,
        torch.tensor([y0], dtype=torch.float64),
        dt0=1e-3,
        saveat=torchnde.SaveAt(ts=ts),
        controller=torchnde.PIDController(rtol=1e-10, atol=1e-12),
    )
    ys = cast(torch.Tensor, sol.ys)  # SaveAt(ts) always fills ys
    return ts, ys[:, 0]


class Task(harness.Task):
    name = "pinn-ode"
    title = "physics-informed networks on a damped oscillator and Lotka-Volterra"
    paper = (
        "Lagaris, Likas, Fotiadis 1998, Artificial Neural Networks for Solving Ordinary and "
        "Partial Differential Equations; Chen et al. 2020, NeuroDiffEq"
    )
    Config = Config

    def setup(self) -> nn.Module:
        cfg = self.config
        width = (cfg.hidden, cfg.hidden)
        osc = Solver1D(
            lambda x, t: [diff(x, t, 2) + 2 * ZETA * OMEGA * diff(x, t) + OMEGA**2 * x],
            [IVP(0.0, 1.0, 0.0)],
            0.0,
            cfg.t_oscillator,
            nets=[FCNN(1, 1, width)],
            train_generator=Generator1D(cfg.batch_size, 0.0, cfg.t_oscillator, "uniform"),
        )
        lv = Solver1D(
            lambda x, y, t: [
                diff(x, t) - (ALPHA * x - BETA * x * y),
                diff(y, t) - (DELTA * x * y - GAMMA * y),
            ],
            [IVP(0.0, LV_Y0[0]), IVP(0.0, LV_Y0[1])],
            0.0,
            cfg.t_lotka_volterra,
            nets=[FCNN(1, 1, width), FCNN(1, 1, width)],
            train_generator=Generator1D(cfg.batch_size, 0.0, cfg.t_lotka_volterra, "uniform"),
        )
        return nn.ModuleDict({"oscillator": osc, "lotka_volterra": lv})

    @property
    def num_train(self) -> int:
        return self.config.steps_per_epoch * self.config.batch_size

    def step(self, model: nn.Module, index: torch.Tensor) -> StepOutput:
        # Each index stands for one collocation point of each problem, drawn afresh.
        n = len(index)
        losses = {}
        for key, solver in model.items():  # type: ignore[operator]
            (t,) = solver.train_generator.get_examples()
            losses[key] = solver.point_residual(t[:n])
        total = losses["oscillator"] + losses["lotka_volterra"]
        return StepOutput(total, logs={f"{k}_residual": v.detach() for k, v in losses.items()})

    def evaluate(self, model: nn.Module) -> dict[str, Any]:
        cfg = self.config
        out: dict[str, Any] = {}
        self.curves: dict[str, tuple[Any, Any, Any]] = {}
        for key, t1 in (("oscillator", cfg.t_oscillator), ("lotka_volterra", cfg.t_lotka_volterra)):
            ts, ref = reference(key, t1)
            sol = model[key].get_solution(copy_nets=False)  # type: ignore[index]
            with torch.no_grad():
                pred = sol(ts)
            if key == "oscillator":
                pred_t = pred.double().reshape(-1, 1)
                ref_t = ref[:, :1]
            else:
                pred_t = torch.stack([p.double() for p in pred], dim=1)
                ref_t = ref
            out[f"{key}_max_abs_error"] = float((pred_t - ref_t).abs().max())
            self.curves[key] = (ts.numpy(), ref_t.numpy(), pred_t.numpy())
        out["max_abs_error"] = max(
            out["oscillator_max_abs_error"], out["lotka_volterra_max_abs_error"]
        )
        return out

    @classmethod
    def headline(cls, metrics: dict[str, Any]) -> list[Headline]:
        rows = []
        for key, label in (
            ("oscillator", "damped oscillator"),
            ("lotka_volterra", "Lotka-Volterra"),
        ):
            err = metrics[f"{key}_max_abs_error"]
            if err < 1e-2:
                verdict = f"yes (criterion: max error < 1e-2 of O(1) solutions): {err:.2e}"
            elif err < 1e-1:
                verdict = f"partly: max error {err:.2e} (criterion for yes: < 1e-2); train longer"
            else:
                verdict = f"no: max error {err:.2e} against the solver's reference"
            rows.append(
                Headline(
                    f"{label}: max abs error against Dopri5",
                    f"{err:.2e}",
                    "a trial solution that meets the initial conditions exactly, trained on the "
                    "ODE residual alone, reproduces the solution (Lagaris et al. 1998; "
                    "neurodiffeq); no common error figure is claimed for these two problems",
                    verdict,
                )
            )
        return rows

    def figure(self, model: nn.Module, metrics: dict[str, Any]) -> Any:
        from .report import new_figure

        fig = new_figure(11, 4)
        axes = fig.subplots(1, 2)
        for ax, (key, title) in zip(
            axes, (("oscillator", "damped oscillator x(t)"), ("lotka_volterra", "Lotka-Volterra"))
        ):
            ts, ref, pred = self.curves[key]
            for j in range(ref.shape[1]):
                ax.plot(ts, ref[:, j], color="k", lw=1.5, label="Dopri5" if j == 0 else None)
                ax.plot(ts, pred[:, j], color="tab:red", ls="--", lw=1.5,
                        label="PINN" if j == 0 else None)  # fmt: skip
            ax.set(
                xlabel="t", title=f"{title}: max err {metrics['eval'][key + '_max_abs_error']:.1e}"
            )
            ax.legend(fontsize="small")
        fig.suptitle("torchnde: physics-informed networks vs the solver")
        return fig
