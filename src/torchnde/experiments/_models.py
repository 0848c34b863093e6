"""Small helpers for the experiments' networks (the models come from :mod:`torchnde.models`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn

import torchnde

__all__ = ["finite_mse", "mlp", "reference_solve"]


def mlp(sizes: Sequence[int], act: type[nn.Module] = nn.Softplus) -> nn.Sequential:
    """Linear layers of the given sizes with ``act`` between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


def reference_solve(vector_field: Any, y0: Sequence[float], ts: torch.Tensor) -> torch.Tensor:
    """The noise-free truth of a synthetic experiment: ``dy/dt = vector_field(t, y, args)``
    from ``y0`` (float64) saved at ``ts``, by ``Dopri5`` at rtol 1e-10 / atol 1e-12; shape
    ``(len(ts), len(y0))``."""
    sol = torchnde.solve(
        torchnde.ODETerm(vector_field),
        torchnde.Dopri5(),
        0.0,
        float(ts[-1]),
        torch.tensor(y0, dtype=torch.float64),
        saveat=torchnde.SaveAt(ts=ts),
        controller=torchnde.PIDController(rtol=1e-10, atol=1e-12),
    )
    return cast(torch.Tensor, sol.ys)


def finite_mse(pred: torch.Tensor | None, truth: torch.Tensor) -> float:
    """The MSE, or ``1e300`` when the model's solve failed or diverged (JSON has no inf)."""
    if pred is None or pred.shape != truth.shape or not bool(torch.isfinite(pred).all()):
        return 1e300
    return min(float(((pred - truth) ** 2).mean()), 1e300)
