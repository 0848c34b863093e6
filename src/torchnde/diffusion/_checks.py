"""Shared validation of the diffusion package (one place, at the API boundary)."""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["check_positive", "check_score", "check_sde", "check_steps", "describe"]


def describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)}, dtype {x.dtype}"
    return f"{type(x).__name__} {x!r}"


def check_positive(owner: str, name: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{owner}: `{name}` must be a positive number, got {value!r}.")
    return float(value)


def check_sde(owner: str, sde: Any) -> None:
    from .base import AbstractForwardSDE

    if not isinstance(sde, AbstractForwardSDE):
        raise TypeError(
            f"{owner}: `sde` must be a forward SDE such as VPSDE(), VESDE() or SubVPSDE(), got "
            f"{describe(sde)}."
        )


def check_score(owner: str, score: Any) -> None:
    if not callable(score):
        raise TypeError(
            f"{owner}: `score` must be callable as score(x, t) with t of shape (batch,), got "
            f"{describe(score)}."
        )


def check_steps(owner: str, steps: Any, minimum: int = 1) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < minimum:
        raise ValueError(f"{owner}: `steps` must be an int >= {minimum}, got {steps!r}.")
    return steps
