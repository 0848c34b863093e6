r"""The toy periodic series of the latent ODE paper (Rubanova, Chen & Duvenaud 2019).

Every series is a sine wave with its own frequency and offset, on one set of irregular
times shared by the data set:

$$ x(t) = \sin(2\pi f t) + c, \qquad f \sim U(0.4, 0.8), \qquad c \sim \mathcal N(1, 0.1^2), $$

at $t_0 = 0$ and ``num_points - 1`` times drawn uniformly on $(0, t_1]$ and sorted, with
noise ``noise * U(0, 1)`` added to every point but the first, as in the paper's generator
(amplitude 1, frequency constant in time, the settings of its periodic experiments).
"""

from __future__ import annotations

import math

import torch

__all__ = ["generate_periodic", "subsample_points"]


def generate_periodic(
    num_series: int,
    num_points: int = 100,
    t1: float = 5.0,
    *,
    noise: float = 0.01,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample the toy periodic data set.

    Args:
        num_series: number of series ``N``.
        num_points: number of (shared, irregular) times ``T``, the first at 0.
        t1: the end of the time range.
        noise: weight of the additive ``U(0, 1)`` noise.
        seed: seed of the generator (times, frequencies, offsets, noise).

    Returns:
        ``(ts, x)``: times ``(T,)`` and values ``(N, T, 1)``, float32.
    """
    if isinstance(num_series, bool) or not isinstance(num_series, int) or num_series < 1:
        raise ValueError(
            f"generate_periodic: `num_series` must be a positive int, got {num_series!r}."
        )
    if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 2:
        raise ValueError(
            f"generate_periodic: `num_points` must be an int >= 2, got {num_points!r}."
        )
    if not t1 > 0:
        raise ValueError(f"generate_periodic: `t1` must be positive, got {t1!r}.")
    g = torch.Generator().manual_seed(seed)
    rest = torch.sort(torch.rand(num_points - 1, generator=g, dtype=torch.float64) * t1).values
    ts = torch.cat([torch.zeros(1, dtype=torch.float64), rest])
    freq = 0.4 + 0.4 * torch.rand(num_series, 1, generator=g, dtype=torch.float64)
    offset = 1.0 + 0.1 * torch.randn(num_series, 1, generator=g, dtype=torch.float64)
    x = torch.sin(2 * math.pi * freq * ts) + offset
    x[:, 1:] += noise * torch.rand(num_series, num_points - 1, generator=g, dtype=torch.float64)
    return ts.float(), x.float()[..., None]


def subsample_points(
    num_series: int, num_points: int, fraction: float, *, seed: int = 0
) -> torch.Tensor:
    """Indices ``(N, k)`` of a random subset of ``k = max(1, round(fraction * num_points))``
    points of each series, sorted (each series its own subset)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"subsample_points: `fraction` must be in (0, 1], got {fraction!r}.")
    k = max(1, round(fraction * num_points))
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(num_series, num_points, generator=g)
    return torch.sort(scores.argsort(dim=1)[:, :k], dim=1).values
