r"""Learn gravity and the coefficient of restitution of a bouncing ball from noisy heights.

torchdiffeq's ``examples/bouncing_ball.py`` differentiates the impact times of a ball by
chaining terminal-event solves (``odeint_event``) by hand, one per bounce. Here the whole
bouncing trajectory is **one solve** with a non-terminal event: $\dot h = v$, $\dot v = -g$,
and where the height crosses zero downwards the velocity is reset to $v^+ = -e\,v^-$ and the
solve continues. The observed heights after the first impact depend on $g$ and $e$ through
the impact times (located on the dense output, differentiable by the implicit function
theorem) and through the resets, so both are learned by gradient descent on the mean squared
error of the heights.

The data are the closed-form trajectory (:func:`torchnde.data.hybrid.bouncing_ball`, no
solver involved) at ``num_times`` equally spaced times in $[0, t_1]$, with Gaussian noise of
standard deviation ``noise``; defaults are torchdiffeq's ball ($h_0 = 10$, $g = 9.8$,
absorption 0.2, i.e. $e = 0.8$). Each observation is a training example; a step solves the
whole trajectory once and scores the observations of its batch.

Baselines: the initial guess, and the best free-fall fit without events ($h = h_0 - g t^2/2$
by least squares, in closed form), which has no restitution at all.

``torchnde run bouncing-ball``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import torchnde

from ..data.hybrid import bouncing_ball, bouncing_ball_impacts
from . import harness
from .config import ODEConfig, check, is_int, is_positive
from .harness import Headline, StepOutput, ode_solver_setup

__all__ = ["BouncingBall", "Config", "Task"]

#: The relative error at or below which a parameter counts as recovered (the headline's ``yes``).
RECOVERED = 0.02


@dataclass
class Config(ODEConfig):
    """Options of ``torchnde run bouncing-ball``."""

    out: Path = field(default=Path("runs/bouncing-ball"), metadata={"help": "run folder"})
    epochs: int = field(default=150, metadata={"help": "full passes over the observations"})
    lr: float = field(default=0.05, metadata={"help": "Adam learning rate (cosine decay)"})
    batch_size: int = field(
        default=161, metadata={"help": "observations per step (the default: all of them)"}
    )
    checkpoint_every: int = field(
        default=50, metadata={"help": "write the checkpoint every this many epochs"}
    )
    rtol: float = field(default=1e-6, metadata={"help": "relative tolerance (adaptive methods)"})
    atol: float = field(default=1e-8, metadata={"help": "absolute tolerance (adaptive methods)"})
    step_size: float = field(default=0.01, metadata={"help": "step of fixed-step methods"})
    gravity: float = field(default=9.8, metadata={"help": "true gravity of the data"})
    restitution: float = field(
        default=0.8, metadata={"help": "true coefficient of restitution (1 - absorption)"}
    )
    height: float = field(default=10.0, metadata={"help": "initial height (known to the model)"})
    t1: float = field(default=8.0, metadata={"help": "end of the observation window"})
    num_times: int = field(default=161, metadata={"help": "observed heights in [0, t1]"})
    noise: float = field(default=0.2, metadata={"help": "std of the noise on the heights"})
    data_seed: int = field(default=0, metadata={"help": "seed of the observation noise"})
    init_gravity: float = field(default=5.0, metadata={"help": "initial guess of gravity"})
    init_restitution: float = field(
        default=0.9, metadata={"help": "initial guess of the restitution"}
    )
    dtype: str = field(
        default="float64",
        metadata={"help": "dtype of the data and the model", "choices": ("float32", "float64")},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("gravity", "height", "t1", "init_gravity"):
            value = getattr(self, key)
            check(is_positive(value), key, "a positive number", value)
        for key in ("restitution", "init_restitution"):
            value = getattr(self, key)
            check(is_positive(value) and value < 1, key, "a number in (0, 1)", value)
        check(
            isinstance(self.noise, float) and math.isfinite(self.noise) and self.noise >= 0,
            "noise",
            "a number >= 0",
            self.noise,
        )
        check(
            is_int(self.num_times) and self.num_times >= 2,
            "num_times",
            "an int >= 2",
            self.num_times,
        )
        check(
            is_int(self.data_seed) and self.data_seed >= 0,
            "data_seed",
            "an int >= 0",
            self.data_seed,
        )
        zeno = _zeno_time(self.gravity, self.restitution, self.height)
        check(
            self.t1 < zeno,
            "t1",
            f"before the Zeno time {zeno:.4g} of the true ball (where its bounces accumulate)",
            self.t1,
        )


def _zeno_time(gravity: float, restitution: float, height: float) -> float:
    """When the bounces of a ball dropped from rest accumulate:
    ``sqrt(2 h / g) (1 + e) / (1 - e)``."""
    return math.sqrt(2 * height / gravity) * (1 + restitution) / (1 - restitution)


class BouncingBall(nn.Module):
    r"""A ball dropped from rest at a known height, with learnable gravity $g$ and coefficient
    of restitution $e$ (parametrised as $\log g$ and $\operatorname{logit} e$, so both stay in
    range): $\dot h = v$, $\dot v = -g$, and $v^+ = -e v^-$ where $h$ crosses zero downwards.
    ``forward(ts)`` is one solve with a non-terminal event; it returns the
    :class:`torchnde.Solution` (state ``(1, 2)``: height, velocity; ``sol.event_ts`` the
    impacts)."""

    def __init__(
        self,
        gravity: float,
        restitution: float,
        height: float,
        *,
        solver: Any,
        controller: Any,
        dt0: float | None,
    ) -> None:
        super().__init__()
        # float64 here, so that .to(float64) does not keep a float32 rounding of them.
        f64 = torch.float64
        self.log_gravity = nn.Parameter(torch.tensor(math.log(gravity), dtype=f64))
        logit = math.log(restitution / (1 - restitution))
        self.logit_restitution = nn.Parameter(torch.tensor(logit, dtype=f64))
        self.height = height
        self.solver, self.controller, self.dt0 = solver, controller, dt0

    @property
    def gravity(self) -> torch.Tensor:
        return self.log_gravity.exp()

    @property
    def restitution(self) -> torch.Tensor:
        return torch.sigmoid(self.logit_restitution)

    def vector_field(self, t: torch.Tensor, y: torch.Tensor, args: Any) -> torch.Tensor:
        dv = -self.gravity * torch.ones_like(y[..., 1])
        return torch.stack([y[..., 1], dv], dim=-1)

    @staticmethod
    def ground(t: torch.Tensor, y: torch.Tensor, args: Any) -> torch.Tensor:
        return y[..., 0]

    def bounce(self, t: torch.Tensor, y: torch.Tensor, args: Any) -> torch.Tensor:
        return torch.stack([y[..., 0], -self.restitution * y[..., 1]], dim=-1)

    def forward(self, ts: torch.Tensor, max_steps: int = 4096) -> torchnde.Solution:
        y0 = torch.stack([torch.tensor(self.height), torch.tensor(0.0)]).to(ts)[None]
        return torchnde.solve(
            torchnde.ODETerm(self.vector_field),
            self.solver,
            ts[0],
            ts[-1],
            y0,
            dt0=self.dt0,
            saveat=torchnde.SaveAt(ts=ts),
            controller=self.controller,
            event=torchnde.Event(self.ground, direction=-1, terminal=False, reset=self.bounce),
            max_steps=max_steps,
        )


class Task(harness.Task):
    name = "bouncing-ball"
    title = "gravity and restitution of a bouncing ball learned through non-terminal events"
    paper = (
        "Chen, Amos, Nickel 2021, Learning Neural Event Functions for Ordinary Differential "
        "Equations (torchdiffeq's bouncing_ball.py)"
    )
    Config = Config

    def setup(self) -> nn.Module:
        cfg = self.config
        dtype = getattr(torch, cfg.dtype)
        self.ts = torch.linspace(0.0, cfg.t1, cfg.num_times, dtype=torch.float64)
        h, _ = bouncing_ball(self.ts, cfg.gravity, cfg.restitution, cfg.height)
        gen = torch.Generator().manual_seed(cfg.data_seed)
        noise = cfg.noise * torch.randn(h.shape, generator=gen, dtype=torch.float64)
        self.clean = h.to(self.device, dtype)
        self.obs = (h + noise).to(self.device, dtype)
        self.ts = self.ts.to(self.device, dtype)
        self.true_impacts = bouncing_ball_impacts(
            cfg.gravity, cfg.restitution, cfg.height, t1=cfg.t1
        ).to(self.device, dtype)
        solver, controller, dt0 = ode_solver_setup(cfg)
        model = BouncingBall(
            cfg.init_gravity,
            cfg.init_restitution,
            cfg.height,
            solver=solver,
            controller=controller,
            dt0=dt0,
        ).to(self.device, dtype)
        with torch.no_grad():
            self.initial = model(self.ts, max_steps=100_000).ys[:, 0, 0]
        return model

    @property
    def num_train(self) -> int:
        return self.config.num_times

    def step(self, model: Any, index: torch.Tensor) -> StepOutput:
        sol = model(self.ts)
        index = index.to(self.device)
        loss = (sol.ys[index, 0, 0] - self.obs[index]) ** 2
        return StepOutput(loss, nfe={"nfe": float(sol.stats["num_fevals"])})

    def evaluate(self, model: Any) -> dict[str, Any]:
        cfg = self.config
        with torch.no_grad():
            sol = model(self.ts, max_steps=100_000)
        self.prediction, self.impacts = sol.ys[:, 0, 0], sol.event_ts
        g, e = model.gravity.item(), model.restitution.item()
        # Without events: the best free fall h0 - g t^2 / 2 (least squares, closed form).
        a = -0.5 * self.ts**2
        g_free = float(((self.obs - cfg.height) * a).sum() / (a * a).sum())
        n = min(len(self.impacts), len(self.true_impacts))
        impact_err = (self.impacts[:n] - self.true_impacts[:n]).abs()
        return {
            "gravity": g,
            "restitution": e,
            "gravity_rel_error": abs(g - cfg.gravity) / cfg.gravity,
            "restitution_rel_error": abs(e - cfg.restitution) / cfg.restitution,
            "initial_gravity_rel_error": abs(cfg.init_gravity - cfg.gravity) / cfg.gravity,
            "initial_restitution_rel_error": abs(cfg.init_restitution - cfg.restitution)
            / cfg.restitution,
            "free_fall_gravity": g_free,
            "free_fall_gravity_rel_error": abs(g_free - cfg.gravity) / cfg.gravity,
            "num_impacts": len(self.impacts),
            "true_num_impacts": len(self.true_impacts),
            "impact_time_max_error": float(impact_err.max()) if n else float("nan"),
            "height_rmse_vs_clean": float(((self.prediction - self.clean) ** 2).mean().sqrt()),
            "initial_height_rmse_vs_clean": float(((self.initial - self.clean) ** 2).mean().sqrt()),
            "noise_std": cfg.noise,
            "eval_nfe": sol.stats["num_fevals"],
            "eval_status": torchnde.Status(int(sol.status.reshape(-1)[0])).name,
        }

    @classmethod
    def headline(cls, metrics: dict[str, Any]) -> list[Headline]:
        rows = []
        for key, label, init, extra in (
            (
                "gravity",
                "gravity g",
                "initial_gravity_rel_error",
                f"; free fall without events: {metrics['free_fall_gravity_rel_error']:.1%}",
            ),
            ("restitution", "restitution e", "initial_restitution_rel_error", ""),
        ):
            err, err0 = metrics[f"{key}_rel_error"], metrics[init]
            if err <= RECOVERED:
                verdict = f"yes (criterion: within {RECOVERED:.0%}): {err:.2%}"
            elif err < err0:
                verdict = (
                    f"partly: {err:.2%} is below the initial guess's {err0:.1%} but not "
                    f"within {RECOVERED:.0%}"
                )
            else:
                verdict = f"no: {err:.2%}, no better than the initial guess's {err0:.1%}"
            rows.append(
                Headline(
                    f"relative error of {label}",
                    f"{err:.2%} ({key} {metrics[key]:.4g}; initial guess {err0:.1%}{extra})",
                    "learned from observed heights through the impacts (torchdiffeq's example "
                    "differentiates the impact times; no fit published)",
                    verdict,
                )
            )
        return rows

    def figure(self, model: nn.Module, metrics: dict[str, Any]) -> Any:
        from .report import new_figure

        t_ = self.ts.cpu().numpy()
        fig = new_figure(9, 4)
        ax = fig.subplots()
        ax.plot(t_, self.obs.cpu().numpy(), ".", color="tab:gray", ms=3, label="observed")
        ax.plot(t_, self.clean.cpu().numpy(), color="k", lw=1, label="true")
        ax.plot(
            t_, self.initial.cpu().numpy(), color="tab:blue", lw=1, ls=":", label="initial guess"
        )
        ax.plot(
            t_, self.prediction.cpu().numpy(), color="tab:red", lw=1.5, ls="--", label="learned"
        )
        impacts = self.impacts.cpu().numpy()
        ax.plot(
            impacts, 0 * impacts, "o", color="tab:red", fillstyle="none", label="learned impacts"
        )
        ev = metrics["eval"]
        ax.set(
            xlabel="t",
            ylabel="height",
            title=f"g = {ev['gravity']:.4g} ({ev['gravity_rel_error']:.2%} off), "
            f"e = {ev['restitution']:.4g} ({ev['restitution_rel_error']:.2%} off)",
        )
        ax.legend(fontsize="small")
        fig.suptitle("torchnde: a bouncing ball learned through non-terminal events")
        return fig
