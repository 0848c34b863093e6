r"""Hermite cubic interpolation with backward differences (online-safe).

Morrill et al. (2021), *Neural Controlled Differential Equations for Online Prediction
Tasks*: on segment $[t_i, t_{i+1}]$ the cubic matches the observations at both ends, the
slope of the previous segment at $t_i$ and the slope of this segment at $t_{i+1}$ (the
backward differences); the first segment uses its own slope at both ends (it is linear).
The path is continuously differentiable, and segment $i$ depends only on $x_{i-1}, x_i,
x_{i+1}$: new observations never change the past, so it suits online prediction and
:class:`~torchnde.CDEStream`.
"""

from __future__ import annotations

import torch

from ._checks import check_path
from .linear import linear_interpolation_coeffs

__all__ = ["hermite_cubic_coeffs", "hermite_segment"]


def hermite_segment(
    x0: torch.Tensor, x1: torch.Tensor, h: torch.Tensor, m0: torch.Tensor
) -> torch.Tensor:
    r"""``(a, b, 2c, 3d)`` of the cubic on ``[0, h]`` with ``p(0) = x0``, ``p(h) = x1``,
    ``p'(0) = m0`` and ``p'(h) = (x1 - x0) / h``, concatenated along the last dimension."""
    slope = (x1 - x0) / h
    two_c = 4 * (slope - m0) / h  # c = 2 (slope - m0) / h
    three_d = 3 * (m0 - slope) / (h * h)  # d = (m0 - slope) / h²
    return torch.cat([x0, m0, two_c, three_d], dim=-1)


def hermite_cubic_coeffs(x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
    """Coefficients of the Hermite cubic with backward differences through a time series.

    Missing values are handled as in :func:`linear_interpolation_coeffs` (linear in between,
    constant at the ends).

    Args:
        x: shape ``(..., length, channels)``.
        t: observation times, ``(length,)`` or per sample ``(..., length)``.

    Returns:
        Shape ``(..., length - 1, 4 * channels)``, for :class:`CubicSpline` with the same
        ``t``.
    """
    x, t = check_path("hermite_cubic_coeffs", x, t)
    if bool(torch.isnan(x.sum())):  # one reduction: NaN propagates through the sum
        x = linear_interpolation_coeffs(x, t)
    h_inv = (1 / (t[..., 1:] - t[..., :-1])).unsqueeze(-1)
    x0 = x[..., :-1, :]
    slope = (x[..., 1:, :] - x0) * h_inv
    m0 = torch.cat([slope[..., :1, :], slope[..., :-1, :]], dim=-2)
    diff = slope - m0
    # c = 2 (slope - m0) / h, d = (m0 - slope) / h²  (see hermite_segment)
    two_c = diff * (4 * h_inv)
    three_d = diff * (-3 * h_inv * h_inv)
    return torch.cat([x0, m0, two_c, three_d], dim=-1)
