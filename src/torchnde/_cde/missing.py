r"""Missing values (NaN) in time series, vectorised over batch and channels.

Kidger et al. (2020), *Neural Controlled Differential Equations for Irregular Time Series*,
§3.5: interpolate each channel through its own observations, fill the ends with the first and
last observation, and, so that the model can see *when* a channel was observed, append the
cumulative count of observations of each channel (the observational intensity).
"""

from __future__ import annotations

import torch

from ._checks import describe

__all__ = ["fill_forward", "add_observation_counts"]


def _check(who: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or not torch.is_floating_point(x) or x.ndim < 2:
        raise TypeError(
            f"{who}: `x` must be a floating-point tensor of shape (..., length, channels), got "
            f"{describe(x)}."
        )


def fill_forward(x: torch.Tensor) -> torch.Tensor:
    """Replace every NaN by the last observation before it, per channel (causal).

    NaNs before a channel's first observation stay NaN: there is nothing causal to fill them
    with (a common choice is the channel mean; ``linear_interpolation_coeffs`` and
    ``natural_cubic_coeffs`` fill them with the first observation).

    Args:
        x: shape ``(..., length, channels)``.

    Returns:
        A tensor of the shape of ``x``.
    """
    _check("fill_forward", x)
    observed = ~torch.isnan(x)
    length = x.shape[-2]
    pos = torch.arange(length, device=x.device).reshape((length, 1))
    last = torch.where(observed, pos, -1).cummax(dim=-2).values
    filled = x.gather(-2, last.clamp_min(0))
    return torch.where(last >= 0, filled, x)


def add_observation_counts(x: torch.Tensor) -> torch.Tensor:
    """Append, for every channel, the cumulative number of its observations so far.

    This is the observational intensity of Kidger et al. (2020), §3.5: after interpolation a
    channel that is rarely observed looks like a smooth curve; the count channels tell the
    model where the observations were.

    Args:
        x: shape ``(..., length, channels)`` with NaN for missing values.

    Returns:
        ``x`` with ``channels`` more channels, shape ``(..., length, 2 * channels)``.
    """
    _check("add_observation_counts", x)
    counts = (~torch.isnan(x)).cumsum(dim=-2).to(x.dtype)
    return torch.cat([x, counts], dim=-1)


def fill_ends(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fill NaNs before the first and after the last observation of every channel with that
    observation; a channel without observations becomes zero. Layout ``(..., length)``.

    Returns ``(x, observed)`` where ``observed`` marks observations (filled ends included).
    """
    observed = ~torch.isnan(x)
    length = x.shape[-1]
    pos = torch.arange(length, device=x.device)
    any_obs = observed.any(dim=-1, keepdim=True)
    first = torch.where(observed, pos, length).amin(dim=-1, keepdim=True)
    last = torch.where(observed, pos, -1).amax(dim=-1, keepdim=True)
    first_c, last_c = first.clamp(max=length - 1), last.clamp_min(0)
    before, after = pos < first, pos > last
    x = torch.where(before, x.gather(-1, first_c), x)
    x = torch.where(after, x.gather(-1, last_c), x)
    x = torch.where(any_obs, x, torch.zeros((), dtype=x.dtype, device=x.device))
    observed = observed | before | after | ~any_obs
    return x, observed


def fill_linear(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Layout ``(..., length)``, times broadcastable: NaNs between observations filled by
    linear interpolation in time, ends by the first/last observation."""
    x, observed = fill_ends(x)
    if bool(observed.all()):
        return x
    length = x.shape[-1]
    pos = torch.arange(length, device=x.device)
    prev = torch.where(observed, pos, -1).cummax(dim=-1).values
    nxt = torch.where(observed, pos, length).flip(-1).cummin(dim=-1).values.flip(-1)
    prev, nxt = prev.clamp(0, length - 1), nxt.clamp(0, length - 1)
    t = t.expand(x.shape)
    xp, xn = x.gather(-1, prev), x.gather(-1, nxt)
    tp, tn = t.gather(-1, prev), t.gather(-1, nxt)
    gap = torch.where(nxt > prev, tn - tp, torch.ones_like(tn))
    interp = xp + (t - tp) / gap * (xn - xp)
    return torch.where(observed, x, interp)
