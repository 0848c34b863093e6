"""Shared input handling of the irregular-time-series models (ODE-RNN, RNN baselines, latent
ODE): validation of ``(ts, x, mask)``, the masked GRU update and the union-of-times trick."""

from __future__ import annotations

import math
import typing
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import nn

import torchnde as tn

from ._config import SolveConfig, describe

__all__ = [
    "LatentBatch",
    "check_positive_int",
    "check_sequence",
    "decode_at",
    "elapsed_scan",
    "gaussian_loglik",
    "latent_batch",
    "masked_gru_update",
    "prepend_t0",
    "solve_from_zero",
    "split_masks",
    "union_of_times",
]


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


def elapsed_scan(
    ts: torch.Tensor,
    x: torch.Tensor,
    m: torch.Tensor,
    hidden_size: int,
    step: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    prior: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The discrete-time recurrences of the RNN baselines: ``h = step(h, x_i, m_i, dt)`` at
    every time a sample has an observed channel, ``dt = |t_i - t_last|`` the time since its
    previous observation (0 at its first). Returns the hidden states ``(B, T, hidden)`` after
    each time and, with ``prior``, the predictive states ``prior(h, dt)`` before each."""
    b, t, _ = x.shape
    seen = m.amax(dim=-1) > 0
    h = x.new_zeros(b, hidden_size)
    ts_b = ts.expand(b, t)
    t_last = ts_b[:, 0]
    started = torch.zeros_like(seen[:, 0])
    out, before = [], []
    for i in range(t):
        ti = ts_b[:, i]
        dt = torch.where(started, (ti - t_last).abs(), torch.zeros_like(ti)).to(x.dtype)[:, None]
        if prior is not None:
            before.append(torch.where(started[:, None], prior(h, dt), torch.zeros_like(h)))
        h_new = step(h, x[:, i], m[:, i], dt)
        h = torch.where(seen[:, i, None], h_new, h)
        t_last = torch.where(seen[:, i], ti, t_last)
        started = started | seen[:, i]
        out.append(h)
    return torch.stack(out, dim=1), (torch.stack(before, dim=1) if prior is not None else None)


def _time_second(ys: Any) -> Any:
    if isinstance(ys, tuple):
        return tuple(y.movedim(0, 1) for y in ys)
    return ys.movedim(0, 1)


def solve_from_zero(config: SolveConfig, f: Callable[..., Any], y0: Any, tau: torch.Tensor) -> Any:
    """States of an autonomous ODE at the times ``tau`` measured from 0 (``(T,)`` shared or
    ``(N, T)`` per sample, each row strictly increasing), batch first: ``(N, T, ...)``
    (a tuple for a tuple state)."""
    t1 = tau[..., -1]
    if tau.ndim == 2:
        t1 = t1.clamp_min(1e-12)  # a sample with one time saves at t0 only
    elif float(t1) <= 0:
        return tuple(y[:, None] for y in y0) if isinstance(y0, tuple) else y0[:, None]
    sol = config.solve(f, 0.0, t1, y0, tn.SaveAt(ts=tau))
    return _time_second(sol.ys)


def decode_at(
    config: SolveConfig, f: Callable[..., Any], y0: Any, t0: torch.Tensor, ts: torch.Tensor
) -> Any:
    """An autonomous latent ODE from ``y0`` (batch ``N``) at ``t0`` (scalar or ``(N,)``) to
    ``ts`` (``(T,)`` or ``(N, T)``), batch first. Per-sample times are solved per sample
    with a per-sample controller (strictly increasing rows) and on the sorted union of the
    shifted times ``ts - t0`` otherwise."""
    if t0.ndim == 0 and ts.ndim == 1:
        return solve_from_zero(config, f, y0, ts - t0)
    n = (y0[0] if isinstance(y0, tuple) else y0).shape[0]
    tau = ts.expand(n, -1) - t0.reshape(-1, 1).expand(n, 1)
    if config.controller.per_sample and bool((tau.diff(dim=-1) > 0).all()):
        return solve_from_zero(config, f, y0, tau)
    u, inv = torch.unique(tau, sorted=True, return_inverse=True)
    ys = solve_from_zero(config, f, y0, u)

    def take(y: torch.Tensor) -> torch.Tensor:
        return y.gather(1, inv[..., None].expand(-1, -1, y.shape[-1]))

    return tuple(take(y) for y in ys) if isinstance(ys, tuple) else take(ys)


def split_masks(
    ts: torch.Tensor, m: torch.Tensor, mode: str, owner: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The encoder's mask, the target mask and the index where each sample's target window
    starts, for ``mode`` ``"interpolate"`` (all of it, both) or ``"extrapolate"`` (split at
    the middle of each series' time range)."""
    if mode not in ("interpolate", "extrapolate"):
        raise ValueError(f'{owner}: `mode` must be "interpolate" or "extrapolate", got {mode!r}.')
    b, t = m.shape[0], m.shape[1]
    if mode == "interpolate":
        return m, m, torch.zeros(b, dtype=torch.long, device=m.device)
    ts_b = ts.expand(b, t)
    split = 0.5 * (ts_b[:, :1] + ts_b[:, -1:])
    before = ts_b < split
    bm = before[..., None].to(m.dtype)
    return m * bm, m * (1 - bm), before.sum(-1).clamp_max(t - 1)


def gaussian_loglik(x: torch.Tensor, mean: torch.Tensor, std: float, m: torch.Tensor) -> Any:
    """``sum_{t,c} m log N(x; mean, std^2)`` over the last two dimensions."""
    var = std**2
    logn = -0.5 * ((x - mean) ** 2 / var + math.log(2 * math.pi * var))
    return (logn * m).sum(dim=(-2, -1))


class LatentBatch(NamedTuple):
    """A latent model's batch: what the encoder reads, what is scored, and the time of
    ``z0``."""

    ts: torch.Tensor
    x: torch.Tensor
    m: torch.Tensor
    ts_target: torch.Tensor
    x_target: torch.Tensor
    m_target: torch.Tensor
    start: torch.Tensor  # (B,) index of the first scored target (the Poisson integral's start)
    t0: torch.Tensor  # () or (B,)


def _first_time(ts: torch.Tensor) -> torch.Tensor:
    return ts[0] if ts.ndim == 1 else ts[:, 0]


def latent_batch(
    owner: str,
    input_size: int,
    ts: torch.Tensor,
    x: torch.Tensor,
    mask: torch.Tensor | None,
    *,
    mode: str = "interpolate",
    ts_target: torch.Tensor | None = None,
    x_target: torch.Tensor | None = None,
    target_mask: torch.Tensor | None = None,
    t0: float | torch.Tensor | None = None,
) -> LatentBatch:
    """Validate and split a latent model's inputs. Targets default to the inputs;
    ``"extrapolate"`` encodes the inputs before the middle of each series' target time range
    and scores the targets from it on. ``t0`` (the time of ``z0``) defaults to each series'
    first input time and must not come after it or after the first target."""
    ts, x, m, direction = check_sequence(owner, ts, x, mask, input_size)
    if direction < 0:
        raise ValueError(f"{owner}: `ts` must be increasing; the encoder reverses it itself.")
    if ts_target is None and x_target is None and target_mask is None:
        tt, xt, mt = ts, x, m
    else:
        if ts_target is None or x_target is None:
            raise ValueError(
                f"{owner}: pass both `ts_target` and `x_target` (and optionally "
                "`target_mask`), or none of them to score the inputs."
            )
        tt, xt, mt, d = check_sequence(owner, ts_target, x_target, target_mask, input_size)
        if xt.shape[0] != x.shape[0]:
            raise ValueError(
                f"{owner}: `x_target` has batch {xt.shape[0]} but `x` has {x.shape[0]}."
            )
        if d < 0:
            raise ValueError(f"{owner}: `ts_target` must be increasing, got {ts_target!r}.")
    tt = tt.to(ts.dtype)
    if t0 is None:
        t0_ = _first_time(ts)
    else:
        t0_ = torch.as_tensor(t0, dtype=ts.dtype, device=ts.device)
        if t0_.shape not in ((), (x.shape[0],)):
            raise ValueError(
                f"{owner}: `t0` must be a number or a tensor of shape ({x.shape[0]},), got "
                f"{describe(t0)}."
            )
        if bool((t0_ > _first_time(ts)).any()):
            raise ValueError(
                f"{owner}: `t0` (the time of z0) must not come after the first observation, "
                f"got t0={t0!r} and first times {_first_time(ts)!r}."
            )
    if bool((_first_time(tt) < t0_).any()):
        raise ValueError(
            f"{owner}: the target times start before t0 = {t0_!r}, the time of z0 (first "
            f"target times {_first_time(tt)!r}); pass t0= at or before them."
        )
    m_in, m_out, start = split_masks(tt, mt, mode, owner)
    if mode == "extrapolate":
        b = x.shape[0]
        split = 0.5 * (tt.expand(b, -1)[:, :1] + tt.expand(b, -1)[:, -1:])
        m_in = m * (ts.expand(b, -1) < split)[..., None].to(m.dtype)
    else:
        m_in = m
    return LatentBatch(ts, x, m_in, tt, xt, m_out, start, t0_)


def prepend_t0(
    ts: torch.Tensor, x: torch.Tensor, m: torch.Tensor, t0: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Put a fully masked point at ``t0`` before the series (unless every series starts
    there), so that an encoder run backwards ends at ``t0``."""
    if bool((_first_time(ts) == t0).all()):
        return ts, x, m
    b = x.shape[0]
    if ts.ndim == 1 and t0.ndim == 0:
        ts = torch.cat([t0.reshape(1), ts])
    else:
        ts = torch.cat([t0.reshape(-1, 1).expand(b, 1), ts.expand(b, -1)], dim=1)
    pad = x.new_zeros(b, 1, x.shape[-1])
    return ts, torch.cat([pad, x], 1), torch.cat([pad, m], 1)


class ElapsedRNN(nn.Module):
    """The shared call of the recurrent baselines (:class:`RNN`, :class:`RNNDecay`): a scan
    over the observations that reads the elapsed time. A subclass sets ``input_size`` and
    ``hidden_size`` and defines ``_step(h, x, m, dt)`` (the update at an observation) and
    ``_prior(h, dt)`` (the state just before it)."""

    input_size: int
    hidden_size: int

    def _step(
        self, h: torch.Tensor, x: torch.Tensor, m: torch.Tensor, dt: torch.Tensor
    ) -> torch.Tensor:
        raise NotImplementedError

    def _prior(self, h: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self, ts: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``ts`` ``(T,)`` or ``(B, T)``, ``x`` and ``mask`` ``(B, T, C)``; returns the final
        hidden state ``(B, hidden)`` and all of them ``(B, T, hidden)``."""
        ts, x, m, _ = check_sequence(type(self).__name__, ts, x, mask, self.input_size)
        hs, _ = elapsed_scan(ts, x, m, self.hidden_size, self._step)
        return hs[:, -1], hs

    def predictive_states(
        self, ts: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The state at each time *before* its observation is read, ``(B, T, hidden)``,
        from the last state and the time since it (zero before a sample's first
        observation): decode it for one-step-ahead prediction, or for forecasts at fully
        masked times after the data."""
        ts, x, m, _ = check_sequence(type(self).__name__, ts, x, mask, self.input_size)
        _, prior = elapsed_scan(ts, x, m, self.hidden_size, self._step, self._prior)
        return typing.cast(torch.Tensor, prior)

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, hidden_size={self.hidden_size}"
