"""Shared pieces of the mechanics experiments (pendulum, double-pendulum): rollouts of
learned vector fields and the energy-drift and trajectory metrics."""

from __future__ import annotations

from typing import Any

import torch

import torchnde

__all__ = ["energy_drift", "rollout", "trajectory_mse"]


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


def energy_drift(energy: Any, ys: torch.Tensor, x0: torch.Tensor) -> float:
    """Mean over samples and saved times of ``|E(x(t)) - E(x0)|`` under the true energy."""
    return float((energy(ys) - energy(x0)[None]).abs().mean())


def trajectory_mse(ys: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean squared error over times, samples and coordinates."""
    return float(((ys - truth) ** 2).mean())
