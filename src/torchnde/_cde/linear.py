r"""Linear and rectilinear interpolation.

Linear interpolation is the natural control for the log-ODE method and for online use (each
segment depends only on its two ends); rectilinear interpolation (Morrill et al. 2021,
*Neural Controlled Differential Equations for Online Prediction Tasks*) first moves in time
holding the last observation, then jumps the values at the new time, so the path at time
$t$ depends only on observations up to $t$ (causal).
"""

from __future__ import annotations

import torch

from ._checks import check_path, describe
from .missing import fill_forward, fill_linear
from .path import AbstractInterpolation

__all__ = ["linear_interpolation_coeffs", "rectilinear_interpolation_coeffs", "LinearInterpolation"]


def linear_interpolation_coeffs(x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
    """Coefficients of the linear interpolation of a (batch of) time series.

    Missing values (NaN) are filled per channel by linear interpolation between that
    channel's observations; NaNs before the first (after the last) observation take the first
    (last) observation; a channel never observed becomes zero. Compute once per dataset.

    Args:
        x: shape ``(..., length, channels)``.
        t: observation times, shape ``(length,)`` or per sample ``(..., length)``, strictly
            increasing; ``0, 1, ..., length - 1`` when omitted.

    Returns:
        The coefficients, shape ``(..., length, channels)`` (the filled series), for
        :class:`LinearInterpolation` with the same ``t``.

    Example:
        >>> x = torch.randn(32, 50, 3)
        >>> X = LinearInterpolation(linear_interpolation_coeffs(x))
    """
    x, t = check_path("linear_interpolation_coeffs", x, t)
    if not bool(torch.isnan(x).any()):
        return x
    tt = t if t.ndim == 1 else t.unsqueeze(-2)
    return fill_linear(x.transpose(-1, -2), tt).transpose(-1, -2)


def rectilinear_interpolation_coeffs(
    x: torch.Tensor, t: torch.Tensor | None = None, *, time_channel: int | None = None
) -> torch.Tensor:
    """Coefficients of the rectilinear (causal) interpolation of a time series.

    Time must be a channel of the path, so that holding the values while time advances is a
    movement of the path: pass ``time_channel`` when ``x`` already has one, or ``t`` (or
    neither, for ``0, 1, ..., length - 1``) and the times are prepended as channel 0. Missing
    values are filled forward (causal); NaNs before the first observation of a channel stay
    NaN and must be filled by the user (e.g. with the channel mean).

    Args:
        x: shape ``(..., length, channels)``.
        t: observation times when ``time_channel`` is not given.
        time_channel: index of the time channel of ``x``.

    Returns:
        Shape ``(..., 2 * length - 1, channels')`` (``channels + 1`` when the time channel was
        prepended), for :class:`LinearInterpolation` with its default ``t``
        (``0, 1, ..., 2 * length - 2``): observation ``i`` sits at knot ``2 i``.
    """
    who = "rectilinear_interpolation_coeffs"
    if time_channel is not None:
        if t is not None:
            raise ValueError(
                f"{who}: pass either `t` or `time_channel` (the times as a channel of `x`), "
                "not both."
            )
        x, _ = check_path(who, x, None)
        channels = x.shape[-1]
        if isinstance(time_channel, bool) or not isinstance(time_channel, int):
            raise TypeError(f"{who}: `time_channel` must be an int, got {describe(time_channel)}.")
        if not -channels <= time_channel < channels:
            raise ValueError(
                f"{who}: `time_channel` must index one of the {channels} channels of `x`, got "
                f"{time_channel}."
            )
        time_channel %= channels
        if bool(torch.isnan(x[..., time_channel]).any()):
            raise ValueError(
                f"{who}: the time channel {time_channel} of `x` has NaN values; times must be "
                "observed (fill the padding after the final time forward)."
            )
    else:
        x, t = check_path(who, x, t)
        times = t if t.ndim > 1 else t.expand(x.shape[:-1])
        x = torch.cat([times.unsqueeze(-1).to(x.dtype), x], dim=-1)
        time_channel = 0
    if bool(torch.isnan(x[..., 0, :]).any()):
        raise ValueError(
            f"{who}: `x` starts with missing values in some channels; rectilinear "
            "interpolation is causal, so fill each channel's first value yourself (e.g. with "
            "the channel mean) before calling it."
        )
    x = fill_forward(x)
    # Knot 2i: observation i; knot 2i+1: time already at t_{i+1}, values still those of i.
    rep = x.repeat_interleave(2, dim=-2)[..., :-1, :]
    lagged = rep[..., 1:, time_channel]
    times = torch.cat([lagged, rep[..., -1:, time_channel]], dim=-1)
    return torch.cat(
        [rep[..., :time_channel], times.unsqueeze(-1), rep[..., time_channel + 1 :]], dim=-1
    )


class LinearInterpolation(AbstractInterpolation):
    r"""The piecewise-linear path through a time series.

    Its derivative is piecewise constant and jumps at the knots, so a CDE solve must step to
    each knot and restart there: :func:`cdeint` passes :attr:`knots` as ``jump_ts``.

    Args:
        coeffs: from :func:`linear_interpolation_coeffs` (or
            :func:`rectilinear_interpolation_coeffs`), shape ``(..., length, channels)``.
        t: the times given to the coefficient function (default ``0, ..., length - 1``).
        extrapolate: let :meth:`evaluate`, :meth:`derivative` and solves go outside the
            interval of ``t``, extending the first and last segment; by default a time
            outside is a ``ValueError``.

    Example:
        >>> X = LinearInterpolation(linear_interpolation_coeffs(x, t), t)
        >>> X.evaluate(torch.tensor(0.5)).shape  # (..., channels)
    """

    continuous_derivative = False

    def __init__(
        self, coeffs: torch.Tensor, t: torch.Tensor | None = None, *, extrapolate: bool = False
    ) -> None:
        if not isinstance(coeffs, torch.Tensor) or coeffs.ndim < 2:
            raise TypeError(
                "LinearInterpolation: `coeffs` must be a tensor of shape (..., length, "
                f"channels) from linear_interpolation_coeffs, got {describe(coeffs)}."
            )
        _, t = check_path("LinearInterpolation", coeffs, t, allow_nan=False)
        knots = t if t.ndim == 1 else t
        self._x = coeffs
        h = (knots[..., 1:] - knots[..., :-1]).unsqueeze(-1)
        self._slopes = (coeffs[..., 1:, :] - coeffs[..., :-1, :]) / h
        super().__init__(knots, self._slopes, extrapolate)

    @property
    def coeffs(self) -> torch.Tensor:
        return self._x

    def _value(self, idx: torch.Tensor | int, s: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self._rows(self._x, idx), s, self._rows(self._slopes, idx))

    def _slope(self, idx: torch.Tensor | int, s: torch.Tensor | float) -> torch.Tensor:
        return self._rows(self._slopes, idx)
