"""Shared pieces of the mechanics experiments (pendulum, double-pendulum, chain): rollouts of
learned vector fields, the energy-drift and trajectory metrics, the config checks and the
"smaller than the baseline" verdicts they all use."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

import torchnde

from .config import check, is_int, is_positive

__all__ = [
    "check_ints",
    "check_positive",
    "energy_drift",
    "energy_drift_panel",
    "float64_rollout",
    "rollout",
    "smaller_verdict",
    "trajectory_mse",
    "uniform_states",
]


def rollout(
    field: Any, x0: torch.Tensor, ts: torch.Tensor, rtol: float, atol: float
) -> tuple[torch.Tensor, str]:
    """Solve ``dx/dt = field(t, x)`` from ``x0`` with ``Dopri5`` (joint steps), saving at
    ``ts``; returns ``(ys, status)`` with ``ys`` of shape ``(len(ts), batch, dim)`` (time
    first). Autograd is off; a failed solve keeps its partial solution (``throw=False``)."""
    with torch.no_grad():
        sol = torchnde.solve(
            torchnde.ODETerm(lambda t, y, args: field(t, y)),
            torchnde.Dopri5(),
            ts[0],
            ts[-1],
            x0,
            saveat=torchnde.SaveAt(ts=ts),
            controller=torchnde.PIDController(rtol=rtol, atol=atol),
            max_steps=200_000,
            throw=False,
        )
    status = torchnde.Status(int(sol.status.reshape(-1).max())).name
    ys = sol.ys
    if not bool(torch.isfinite(ys).all()):
        # A blown-up model: keep the metrics finite and say so through the status.
        ys = torch.nan_to_num(ys, nan=1e6, posinf=1e6, neginf=-1e6)
    return ys, status


def float64_rollout(
    model: nn.Module, x0: torch.Tensor, ts: torch.Tensor, rtol: float, atol: float
) -> tuple[torch.Tensor, str]:
    """:func:`rollout` of a float32-trained ``model`` in float64 on ``model``'s device (the
    model is cast back afterwards); ``x0`` and ``ts`` are float64, the result on the CPU."""
    device = next(model.parameters()).device
    ys, status = rollout(model.to(torch.float64), x0.to(device), ts.to(device), rtol, atol)
    model.to(torch.float32)
    return ys.cpu(), status


def uniform_states(num: int, angle: float, seed: int) -> torch.Tensor:
    """``num`` unseen double-pendulum states ``(theta1, theta2, omega1, omega2)``, angles in
    ``[-angle, angle]`` and angular velocities in ``[-1, 1]`` (float64; a seed apart from the
    training data's)."""
    rng = np.random.default_rng(seed + 1_000_003)
    lim = np.array([angle, angle, 1.0, 1.0])
    return torch.tensor(rng.uniform(-lim, lim, size=(num, 4)), dtype=torch.float64)


def energy_drift(energy: Any, ys: torch.Tensor, x0: torch.Tensor) -> float:
    """Mean over samples and saved times of ``|E(x(t)) - E(x0)|`` under the true energy."""
    return float((energy(ys) - energy(x0)[None]).abs().mean())


def trajectory_mse(ys: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean squared error over times, samples and coordinates."""
    return float(((ys - truth) ** 2).mean())


def smaller_verdict(ours: float, base: float, model: str, baseline: str, what: str) -> str:
    """The verdict of "``model``'s ``what`` is below ``baseline``'s": yes with the ratio, or no
    with both numbers."""
    if ours < base:
        return f"yes (criterion: {model}'s {what} below {baseline}'s): {base / ours:.3g}x smaller"
    return f"no: {model}'s {what} is not smaller ({ours:.3g} vs {base:.3g})"


def energy_drift_panel(
    ax: Any,
    ts: np.ndarray,
    rollouts: dict[str, torch.Tensor],
    energy: Callable[[torch.Tensor], torch.Tensor],
    colours: dict[str, str],
) -> None:
    """Plot ``|E(x(t)) - E(x(0))|`` (mean over states, against the truth's start) of every
    rollout on ``ax``."""
    e0 = energy(rollouts["truth"][0])
    for key, ys in rollouts.items():
        drift = (energy(ys) - e0[None]).abs().mean(1).numpy()
        ax.plot(ts, drift, color=colours[key], lw=1.2, label=key.upper())
    ax.set(xlabel="t", ylabel="|E(x(t)) - E(x(0))|, mean over states", title="true-energy drift")
    ax.legend(fontsize="small")


def check_ints(config: Any, keys: Iterable[str], minimum: int) -> None:
    """Each named field of ``config`` is an int >= ``minimum``."""
    for key in keys:
        value = getattr(config, key)
        check(is_int(value) and value >= minimum, key, f"an int >= {minimum}", value)


def check_positive(config: Any, keys: Iterable[str]) -> None:
    """Each named field of ``config`` is a positive number."""
    for key in keys:
        value = getattr(config, key)
        check(is_positive(value), key, "a positive number", value)
