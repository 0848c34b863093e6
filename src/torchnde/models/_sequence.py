"""Shared input handling of the irregular-time-series models (ODE-RNN, RNN baselines, latent
ODE): validation of ``(ts, x, mask)``, the masked GRU update and the union-of-times trick."""

from __future__ import annotations

import torch
from torch import nn

from ._config import describe

__all__ = ["check_positive_int", "check_sequence", "masked_gru_update", "union_of_times"]


def check_positive_int(owner: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: `{name}` must be a positive int, got {value!r}.")
    return value


def check_sequence(
    owner: str,
    ts: torch.Tensor,
    x: torch.Tensor,
    mask: torch.Tensor | None,
    input_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Validate an irregularly sampled batch and return ``(ts, x, mask, direction)``.

    ``ts`` is ``(T,)`` (shared) or ``(B, T)`` (per sample), monotone in one direction
    (strictly for shared times; per-sample rows may repeat a time, e.g. to pad a short series
    with fully masked entries); ``x`` is ``(B, T, C)``; ``mask`` (``1`` = observed) has the
    shape of ``x``. Unobserved values are replaced by zeros (so NaNs there are harmless) and
    the mask is returned as a float tensor of ``x``'s dtype.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 3:
        raise ValueError(
            f"{owner}: `x` must be a tensor of shape (batch, time, channels), got {describe(x)}."
        )
    if not torch.is_floating_point(x):
        raise TypeError(f"{owner}: `x` must be a floating-point tensor, got {describe(x)}.")
    b, t, c = x.shape
    if c != input_size:
        raise ValueError(
            f"{owner}: `x` has {c} channels (shape {tuple(x.shape)}) but the model was built "
            f"with input_size={input_size}; pass x of shape (batch, time, {input_size})."
        )
    if t < 1:
        raise ValueError(f"{owner}: `x` has no time points (shape {tuple(x.shape)}).")
    if not isinstance(ts, torch.Tensor):
        raise TypeError(f"{owner}: `ts` must be a tensor of shape (T,) or (B, T), got {ts!r}.")
    if ts.shape not in ((t,), (b, t)):
        raise ValueError(
            f"{owner}: `ts` must have shape ({t},) (shared times) or ({b}, {t}) (per-sample "
            f"times) to match x of shape {tuple(x.shape)}, got {describe(ts)}."
        )
    if not torch.is_floating_point(ts):
        ts = ts.to(x.dtype)
    if not bool(torch.isfinite(ts).all()):
        raise ValueError(f"{owner}: `ts` must be finite, got {ts!r}.")
    d = ts.diff(dim=-1)
    direction = -1.0 if bool((d < 0).any()) else 1.0
    ok = bool((d * direction >= 0).all()) and (ts.ndim == 2 or bool((d != 0).all()))
    if not ok:
        kind = "strictly monotone" if ts.ndim == 1 else "monotone (repeats allowed)"
        raise ValueError(
            f"{owner}: `ts` must be {kind} in one direction along time, got {ts!r}; sort the "
            "observations by time."
        )
    if mask is None:
        if bool(torch.isnan(x).any()):
            raise ValueError(
                f"{owner}: `x` has NaNs but no `mask` was given; pass mask = ~x.isnan() "
                "(1 where observed)."
            )
        m = torch.ones_like(x)
    else:
        if not isinstance(mask, torch.Tensor) or mask.shape != x.shape:
            raise ValueError(
                f"{owner}: `mask` must have the shape of x {tuple(x.shape)} (1 = observed), "
                f"got {describe(mask)}."
            )
        m = mask.to(x.dtype)
    x = torch.where(m > 0, x, torch.zeros((), dtype=x.dtype, device=x.device))
    return ts, x, m, direction


def masked_gru_update(
    cell: nn.GRUCell, h: torch.Tensor, x: torch.Tensor, m: torch.Tensor
) -> torch.Tensor:
    """The GRU update at one observation time: the cell reads ``[x * m, m]`` and only samples
    with at least one observed channel are updated (Rubanova et al. 2019, section 3.4)."""
    h_new = cell(torch.cat([x, m], dim=-1), h)
    seen = m.amax(dim=-1, keepdim=True) > 0
    return torch.where(seen, h_new, h)


def union_of_times(
    ts: torch.Tensor, x: torch.Tensor, m: torch.Tensor, direction: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample times ``(B, T)`` to one shared grid: the sorted union ``u`` of all times
    ``(K,)``, the data and mask on it ``(B, K, C)`` (a sample is masked where it has no
    observation) and ``index`` ``(B, T)`` with ``u[index[b, j]] == ts[b, j]``. Repeated
    times of one sample are merged (observed values averaged)."""
    u, inv = torch.unique(ts, sorted=True, return_inverse=True)
    if direction < 0:
        u, inv = u.flip(0), u.numel() - 1 - inv
    b, _, c = x.shape
    k = u.numel()
    idx = inv[..., None].expand(-1, -1, c)
    xs = x.new_zeros(b, k, c).scatter_add_(1, idx, x * m)
    ms = m.new_zeros(b, k, c).scatter_add_(1, idx, m)
    return u, xs / ms.clamp_min(1), ms.clamp_max(1), inv
