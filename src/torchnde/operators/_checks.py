"""Argument checks shared by the neural operators (clear errors naming the argument)."""

from __future__ import annotations

from typing import Any

import torch


def positive_int(owner: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: `{name}` must be an int >= 1, got {value!r}.")
    return value


def nonnegative_int(owner: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{owner}: `{name}` must be an int >= 0, got {value!r}.")
    return value


def check_input(owner: str, x: Any, channels: int, ndim: int, name: str = "x") -> None:
    """``x`` must be a floating tensor of shape ``(batch, channels, *spatial)``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{owner}: `{name}` must be a torch.Tensor, got {type(x).__name__}.")
    if not x.is_floating_point():
        raise TypeError(f"{owner}: `{name}` must be a floating tensor, got dtype {x.dtype}.")
    spatial = ", ".join(f"n{i + 1}" for i in range(ndim))
    if x.ndim != ndim + 2 or x.shape[1] != channels:
        raise ValueError(
            f"{owner}: `{name}` must have shape (batch, {channels}, {spatial}) (channels first), "
            f"got {tuple(x.shape)}."
        )
