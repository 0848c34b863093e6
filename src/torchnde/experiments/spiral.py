r"""Fit a neural ODE to a 2-D spiral: torchdiffeq's ``ode_demo``, on bundled data.

The data (:func:`torchnde.data.load_spiral`) is one trajectory of $dy/dt = y^{\circ 3} A$ with
$A = \begin{pmatrix} -0.1 & 2 \\ -2 & -0.1 \end{pmatrix}$, $y(0) = (2, 0)$, at 1000 times in
$[0, 25]$. The model is $dy/dt = \mathrm{MLP}(y^{\circ 3})$, as in the original demo. Each
iteration draws ``batch_size`` windows of ``batch_time`` consecutive points, solves the model
from their first points jointly (``y0`` of shape ``(batch_size, 2)``, every window shifted to
start at ``t = 0``, which is exact for an autonomous system) and takes an Adam step on the mean
absolute error, as the original does. At the end the model is solved over the whole
trajectory from $y(0)$ and compared with the data (mean squared error).

Run it with ``torchnde run spiral``; outputs go to ``--out``: ``metrics.json``, ``model.pt``
(a checkpoint) and ``spiral.png``.

Scaling to torchrun/DDP later: wrap the model from :func:`build_model` in
``DistributedDataParallel``, sample batches with a generator seeded by ``seed + rank`` and
write the outputs on rank 0 only; :func:`train` keeps those three places separate.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import torchnde

from ..data import load_spiral
from . import (
    ExperimentConfig,
    ProgressReporter,
    _check,
    _is_int,
    _is_positive,
    seed_everything,
    write_json,
)

__all__ = ["Config", "SpiralODEFunc", "build_model", "load_model", "train"]

NAME = "spiral"


@dataclass
class Config(ExperimentConfig):
    """Options of the spiral experiment (each is a ``torchnde run spiral`` option)."""

    out: Path = field(default=Path("runs/spiral"), metadata={"help": "output folder"})
    iters: int = field(default=800, metadata={"help": "training iterations"})
    method: str = field(
        default="dopri5",
        metadata={"help": "ODE solver", "choices": tuple(torchnde.METHODS)},
    )
    rtol: float = field(default=1e-5, metadata={"help": "relative tolerance (adaptive methods)"})
    atol: float = field(default=1e-6, metadata={"help": "absolute tolerance (adaptive methods)"})
    batch_time: int = field(default=10, metadata={"help": "points per training window"})
    batch_size: int = field(default=20, metadata={"help": "windows per iteration"})
    lr: float = field(default=1e-2, metadata={"help": "initial Adam learning rate (cosine decay)"})
    hidden: int = field(default=50, metadata={"help": "hidden width of the MLP"})

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("iters", "batch_size", "hidden"):
            value = getattr(self, name)
            _check(_is_int(value) and value >= 1, name, "an int >= 1", value)
        _check(
            _is_int(self.batch_time) and 2 <= self.batch_time <= 1000,
            "batch_time",
            "an int in [2, 1000] (the data has 1000 points)",
            self.batch_time,
        )
        _check(
            self.method in torchnde.METHODS,
            "method",
            f"one of {list(torchnde.METHODS)}",
            self.method,
        )
        for name in ("rtol", "atol", "lr"):
            value = getattr(self, name)
            _check(_is_positive(value), name, "a positive number", value)


class SpiralODEFunc(nn.Module):
    r"""The vector field $f(t, y) = \mathrm{MLP}(y^{\circ 3})$ of the classic demo."""

    def __init__(self, hidden: int = 50) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, 2))
        for m in self.net.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, mean=0.0, std=0.1)
                nn.init.zeros_(m.bias)

    def forward(self, t: torch.Tensor, y: torch.Tensor, args: Any = None) -> torch.Tensor:
        return self.net(y**3)


def build_model(config: Config) -> SpiralODEFunc:
    """The untrained vector field on ``config.device`` (seed torch first for a fixed init)."""
    return SpiralODEFunc(config.hidden).to(config.device)


def _solver_setup(config: Config, dt: float) -> tuple[Any, Any, float | None]:
    """(solver, controller, dt0): PID steps for adaptive methods, the data spacing otherwise."""
    solver = torchnde.METHODS[config.method]()
    if solver.is_adaptive:
        return solver, torchnde.PIDController(rtol=config.rtol, atol=config.atol), None
    return solver, torchnde.ConstantStepSize(), dt


def _stats(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: v.tolist() if isinstance(v, torch.Tensor) else v for k, v in stats.items()}


def evaluate(
    model: nn.Module, t: torch.Tensor, y: torch.Tensor, config: Config
) -> tuple[torch.Tensor, float, dict[str, Any]]:
    """Solve the model over the whole trajectory from ``y[0]``.

    Returns the prediction (time first, ``(len(t), 2)``; NaN after a failed solve), its mean
    squared error against ``y`` and the solve's statistics.
    """
    solver, controller, dt0 = _solver_setup(config, float(t[1] - t[0]))
    with torch.no_grad():
        sol = torchnde.solve(
            torchnde.ODETerm(model),
            solver,
            t[0],
            t[-1],
            y[0],
            dt0=dt0,
            saveat=torchnde.SaveAt(ts=t),
            controller=controller,
            max_steps=20_000,
            throw=False,
        )
    pred = sol.ys
    stats = _stats(sol.stats) | {"status": torchnde.Status(int(sol.status)).name}
    return pred, float(((pred - y) ** 2).mean()), stats


def train(config: Config) -> dict[str, Any]:
    """Train the model, write ``metrics.json``, ``model.pt`` and ``spiral.png`` into
    ``config.out`` and return the metrics."""
    start = time.perf_counter()
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _train(config, start)
    finally:
        torch.set_num_threads(threads)


def _train(config: Config, start: float) -> dict[str, Any]:
    say = (lambda *a: None) if config.quiet else print
    device = torch.device(config.device)
    gen = seed_everything(config.seed)

    # --- data and model
    t, y = load_spiral()
    t, y = t.to(device), y.to(device)
    num_points = len(t)
    model = build_model(config)
    term = torchnde.ODETerm(model)
    solver, controller, dt0 = _solver_setup(config, float(t[1] - t[0]))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=config.iters, eta_min=config.lr / 20
    )
    _, mse_initial, _ = evaluate(model, t, y, config)
    batch_t = t[: config.batch_time]
    offsets = torch.arange(config.batch_time)

    # --- training
    say(
        f"{NAME}: {config.iters} iterations, {config.method} (rtol={config.rtol:g}, "
        f"atol={config.atol:g}), batches of {config.batch_size} x {config.batch_time} points, "
        f"device {device}"
    )
    losses: list[float] = []
    nfe_train = 0
    progress = ProgressReporter(config.iters, NAME, quiet=config.quiet)
    train_start = time.perf_counter()
    try:
        for _ in range(config.iters):
            first = torch.randint(
                0, num_points - config.batch_time + 1, (config.batch_size,), generator=gen
            )
            batch_y = y[(first[:, None] + offsets).to(device)].transpose(0, 1)  # (time, batch, 2)
            sol = torchnde.solve(
                term,
                solver,
                batch_t[0],
                batch_t[-1],
                batch_y[0],
                dt0=dt0,
                saveat=torchnde.SaveAt(ts=batch_t),
                controller=controller,
            )
            loss = (sol.ys - batch_y).abs().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            nfe_train += int(sol.stats["num_fevals"])
            losses.append(loss.item())
            progress.update(loss=losses[-1])
    finally:
        progress.close()
    train_time = time.perf_counter() - train_start

    # --- evaluation and outputs
    pred, mse_final, eval_stats = evaluate(model, t, y, config)
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    window = max(1, min(50, config.iters // 10))
    metrics: dict[str, Any] = {
        "experiment": NAME,
        "train_loss": _mean(losses[-window:]),
        "train_loss_first": _mean(losses[:window]),
        "train_loss_window": window,
        "train_loss_kind": "mean absolute error over a batch of windows",
        "full_trajectory_mse": mse_final,
        "initial_full_trajectory_mse": mse_initial,
        "mse_reduction": mse_initial / mse_final if mse_final > 0 else math.inf,
        "iterations": config.iters,
        "train_time_s": train_time,
        "nfe": {
            "train_forward_total": nfe_train,
            "train_forward_per_iter": nfe_train / config.iters,
            "eval": eval_stats,
        },
        "config": config.to_dict(),
        "versions": {"torchnde": torchnde.__version__, "torch": torch.__version__},
        "loss_curve": losses,
    }
    save_checkpoint(out / "model.pt", model, optimizer, config)
    files = ["metrics.json", "model.pt"]
    if config.plot:
        if _plot(out / "spiral.png", t, y, pred, losses, metrics, say):
            files.append("spiral.png")
    metrics["wall_time_s"] = time.perf_counter() - start
    write_json(out / "metrics.json", metrics)

    say(
        f"{NAME}: final train loss {metrics['train_loss']:.4g} (first {window} iterations: "
        f"{metrics['train_loss_first']:.4g}); full-trajectory MSE {mse_initial:.4g} -> "
        f"{mse_final:.4g} ({metrics['mse_reduction']:.3g}x lower); "
        f"{nfe_train / config.iters:.1f} NFE per iteration; {metrics['wall_time_s']:.1f} s"
    )
    say(f"{NAME}: wrote {', '.join(files)} to {out}")
    return metrics


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def save_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, config: Config
) -> None:
    """Save model and optimizer state with the config (loadable with ``weights_only=True``)."""
    state = {
        "experiment": NAME,
        "config": config.to_dict(),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "iteration": config.iters,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_model(path: str | Path, device: str = "cpu") -> SpiralODEFunc:
    """Rebuild the trained vector field from a ``model.pt`` checkpoint."""
    state = torch.load(path, map_location=device, weights_only=True)
    model = SpiralODEFunc(int(state["config"]["hidden"]))
    model.load_state_dict(state["model"])
    return model.to(device)


def _plot(
    path: Path,
    t: torch.Tensor,
    y: torch.Tensor,
    pred: torch.Tensor,
    losses: list[float],
    metrics: dict[str, Any],
    say: Any,
) -> bool:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        say(f"{NAME}: matplotlib is not installed, skipping the plot (pip install matplotlib)")
        return False
    t_, y_, p_ = t.cpu().numpy(), y.cpu().numpy(), pred.detach().cpu().numpy()
    # A bare Figure on the Agg canvas: no pyplot, so no global backend is touched.
    fig = Figure(figsize=(15, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax_t, ax_phase, ax_loss = fig.subplots(1, 3)

    for i, (name, colour) in enumerate((("$y_1$", "tab:blue"), ("$y_2$", "tab:orange"))):
        ax_t.plot(t_, y_[:, i], color=colour, lw=1.5, label=f"{name} true")
        ax_t.plot(t_, p_[:, i], color=colour, lw=1.5, ls="--", label=f"{name} fitted")
    ax_t.set(xlabel="t", ylabel="y", title="trajectories")
    ax_t.legend(ncols=2, fontsize="small")

    ax_phase.plot(y_[:, 0], y_[:, 1], color="k", lw=1.5, label="true")
    ax_phase.plot(p_[:, 0], p_[:, 1], color="tab:red", lw=1.5, ls="--", label="fitted")
    ax_phase.plot(y_[0, 0], y_[0, 1], "o", color="k", ms=4)
    ax_phase.set(
        xlabel="$y_1$",
        ylabel="$y_2$",
        title=f"phase space (MSE {metrics['full_trajectory_mse']:.3g})",
        aspect="equal",
    )
    ax_phase.legend(fontsize="small")

    ax_loss.plot(range(1, len(losses) + 1), losses, color="tab:gray", lw=0.6, alpha=0.6)
    w = metrics["train_loss_window"]
    if len(losses) >= w > 1:
        kernel = torch.ones(w) / w
        smooth = torch.conv1d(torch.tensor(losses)[None, None], kernel[None, None])[0, 0]
        ax_loss.plot(
            range(w, len(losses) + 1),
            smooth.numpy(),
            color="tab:blue",
            lw=1.5,
            label=f"mean of {w}",
        )
        ax_loss.legend(fontsize="small")
    ax_loss.set(xlabel="iteration", ylabel="train loss (MAE)", yscale="log", title="training loss")
    fig.suptitle("torchnde: neural ODE fitted to a spiral")
    fig.savefig(path, dpi=110)
    return True
