"""Input checks shared by the coefficient functions: one place that validates ``(x, t)``."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["describe", "check_path", "as_batch_first"]


def describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)}, dtype {x.dtype}"
    return f"{type(x).__name__} {x!r}"


def check_path(who: str, x: Any, t: Any, *, allow_nan: bool = True) -> tuple[torch.Tensor, Any]:
    """Validate ``x`` of shape ``(..., length, channels)`` and times ``t``.

    ``t`` defaults to ``0, 1, ..., length - 1``; it is either shared, shape ``(length,)``, or
    per sample, shape ``(..., length)`` broadcastable against ``x.shape[:-1]`` (then it is
    expanded to ``x.shape[:-1]``). Returns ``(x, t)``.
    """
    if not isinstance(x, torch.Tensor) or not torch.is_floating_point(x):
        raise TypeError(
            f"{who}: `x` must be a floating-point tensor of shape (..., length, channels), "
            f"got {describe(x)}."
        )
    if x.ndim < 2:
        raise ValueError(
            f"{who}: `x` must have shape (..., length, channels), got shape {tuple(x.shape)}; "
            "for one channel add a trailing dimension with x.unsqueeze(-1)."
        )
    length = x.shape[-2]
    if length < 2:
        raise ValueError(
            f"{who}: `x` needs at least 2 observations along dimension -2 (time), got shape "
            f"{tuple(x.shape)}, meaning {length} observation(s) of {x.shape[-1]} channel(s)."
        )
    if not allow_nan and bool(torch.isnan(x).any()):
        raise ValueError(f"{who}: `x` has NaN values; fill them first (e.g. fill_forward).")
    if t is None:
        return x, torch.arange(length, dtype=x.dtype, device=x.device)
    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if not torch.is_floating_point(t) or t.dtype != torch.promote_types(t.dtype, x.dtype):
        t = t.to(torch.promote_types(t.dtype, x.dtype) if torch.is_floating_point(t) else x.dtype)
    if t.ndim == 0 or t.shape[-1] != length:
        raise ValueError(
            f"{who}: `t` must have shape ({length},) (or (..., {length}) per sample) to match "
            f"`x` of shape {tuple(x.shape)}, meaning {length} observations; got {describe(t)}."
        )
    if t.ndim > 1:
        try:
            shape = torch.broadcast_shapes(t.shape, x.shape[:-1])
        except RuntimeError:
            raise ValueError(
                f"{who}: per-sample `t` of shape {tuple(t.shape)} does not broadcast against "
                f"the batch and time dimensions {tuple(x.shape[:-1])} of `x`."
            ) from None
        if shape != x.shape[:-1]:
            raise ValueError(
                f"{who}: per-sample `t` of shape {tuple(t.shape)} would broadcast `x` to "
                f"{tuple(shape)}; give `x` every batch dimension of `t`."
            )
        t = t.expand(x.shape[:-1])
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{who}: `t` must be finite (no NaN times); got {describe(t)}.")
    if bool((t.diff(dim=-1) <= 0).any()):
        raise ValueError(f"{who}: `t` must be strictly increasing along its last dimension.")
    return x, t.to(device=x.device)


def as_batch_first(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Times broadcastable against ``x.shape[:-1]``: ``(length,)`` stays as it is."""
    return t if t.ndim == 1 else t.expand(x.shape[:-1])
