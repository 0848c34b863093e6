r"""Log-signature windows for the log-ODE method (Neural RDEs).

Morrill, Salvi, Kidger & Foster (2021), *Neural Rough Differential Equations for Long Time
Series*: summarise each window of a long series by its depth-$N$ log-signature and solve
the CDE driven by the (much shorter) piecewise-linear path through the cumulative sums of
those log-signatures. One step per window then approximates the CDE over it to order $N$.
"""

from __future__ import annotations

import math

import torch

from ._checks import check_path
from .linear import linear_interpolation_coeffs
from .lyndon import logsignature_channels
from .signature import logsignature

__all__ = ["logsig_windows"]


def logsig_windows(
    x: torch.Tensor,
    depth: int,
    window_length: float,
    t: torch.Tensor | None = None,
    *,
    mode: str = "words",
) -> torch.Tensor:
    r"""Log-signatures over consecutive time windows, as a new (shorter) path.

    The windows are $[t_0 + k w, t_0 + (k+1) w]$ (the last clipped to the final time); the
    path is linearly interpolated at the window boundaries (missing values too). Row 0 of the
    result is the first observation (padded with zeros), row $k$ adds the log-signature of
    window $k$: the cumulative sum, whose linear interpolation on times $0, 1, ...$ drives
    the CDE (torchcde's ``logsig_windows`` convention).

    Args:
        x: shape ``(..., length, channels)``.
        depth: log-signature depth (1 gives back the values at the window boundaries).
        window_length: window length, in the units of ``t``.
        t: observation times ``(length,)``; ``0, ..., length - 1`` when omitted.
        mode: Lyndon coordinates, see :func:`logsignature`.

    Returns:
        Shape ``(..., num_windows + 1, logsignature_channels(channels, depth))``.
    """
    who = "logsig_windows"
    x, t = check_path(who, x, t)
    if t.ndim != 1:
        raise ValueError(f"{who}: `t` must be 1-D (one time grid for the batch), got {t.shape}.")
    if isinstance(window_length, bool) or not isinstance(window_length, (int, float)):
        raise TypeError(f"{who}: `window_length` must be a number, got {window_length!r}.")
    if not window_length > 0 or not math.isfinite(window_length):
        raise ValueError(f"{who}: `window_length` must be positive, got {window_length!r}.")
    x = linear_interpolation_coeffs(x, t)
    channels = x.shape[-1]
    t0, t_end = float(t[0]), float(t[-1])
    num = max(1, math.ceil((t_end - t0) / window_length - 1e-9))
    bounds = torch.clamp(
        t0 + window_length * torch.arange(num + 1, dtype=t.dtype, device=t.device), max=t_end
    )
    # Merge the boundaries into the grid (boundaries within round-off of a time snap to it).
    pos = torch.searchsorted(t, bounds).clamp(max=t.numel() - 1)
    near = torch.isclose(bounds, t[pos]) | torch.isclose(bounds, t[(pos - 1).clamp(min=0)])
    new = bounds[~near]
    grid, order = torch.sort(torch.cat([t, new]))
    # Values on the merged grid: the observations, and linear interpolation at new times.
    seg = (torch.searchsorted(t, new) - 1).clamp(0, t.numel() - 2)
    frac = ((new - t[seg]) / (t[seg + 1] - t[seg])).to(x.dtype)
    x_new = x[..., seg, :] + frac.unsqueeze(-1) * (x[..., seg + 1, :] - x[..., seg, :])
    values = torch.cat([x, x_new], dim=-2)[..., order, :]
    # Window k runs over grid points [start_k, end_k]; pad each to the longest by repeating
    # its end point (zero increments leave a signature unchanged).
    ends = torch.searchsorted(grid, bounds)
    close = torch.isclose(grid[ends.clamp(max=grid.numel() - 1)], bounds)
    ends = torch.where(close, ends, ends - 1).clamp(0, grid.numel() - 1)
    start, stop = ends[:-1], ends[1:]
    width = int((stop - start).max()) + 1
    index = torch.minimum(start[:, None] + torch.arange(width, device=t.device), stop[:, None])
    windows = values[..., index.reshape(-1), :].reshape(values.shape[:-2] + (num, width, channels))
    logsigs = logsignature(windows, depth, mode=mode)
    first = torch.zeros(
        x.shape[:-2] + (1, logsignature_channels(channels, depth)), dtype=x.dtype, device=x.device
    )
    first[..., 0, :channels] = x[..., 0, :]
    return torch.cat([first, logsigs], dim=-2).cumsum(dim=-2)
