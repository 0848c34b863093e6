"""Shared pieces of the neural-operator experiments (burgers, darcy)."""

from __future__ import annotations

import torch


def rel_l2(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample relative L2 error ``||pred - target|| / ||target||`` (Li et al.'s metric)."""
    dims = tuple(range(1, pred.ndim))
    diff = torch.linalg.vector_norm(pred - target, dim=dims)
    return diff / torch.linalg.vector_norm(target, dim=dims)


def batched(model: torch.nn.Module, x: torch.Tensor, batch: int = 50) -> torch.Tensor:
    """``model(x)`` without gradients, in chunks of ``batch`` samples."""
    with torch.no_grad():
        return torch.cat([model(x[i : i + batch]) for i in range(0, len(x), batch)])


def verdict_error(value: float, paper: float, baseline: float, baseline_name: str) -> str:
    """Verdict on an error against the paper's number (criterion: at most 1.25 x it) and the
    best baseline."""
    if value <= 1.25 * paper:
        return f"yes (criterion <= 1.25 x the paper's {paper:g}): {value:.3g}"
    if value < baseline:
        return (
            f"partly: {baseline / value:.3g}x below {baseline_name} ({baseline:.3g}), but "
            f"{value / paper:.3g}x the paper's {paper:g} (criterion <= 1.25x; this run is "
            "smaller than the paper's)"
        )
    return f"no: not below {baseline_name} ({baseline:.3g})"
