"""Grid features: the coordinates of the grid points, appended to the input channels."""

from __future__ import annotations

import torch

GRIDS = ("periodic", "closed", "none")


def coordinates(n: int, grid: str, like: torch.Tensor) -> torch.Tensor:
    """The ``n`` coordinates in [0, 1]: ``j / n`` on a periodic grid (the points of ``n`` and
    ``k * n`` coincide), ``j / (n - 1)`` on a closed grid (both ends included)."""
    j = torch.arange(n, device=like.device, dtype=like.dtype)
    return j / n if grid == "periodic" else j / max(n - 1, 1)


def append_grid(x: torch.Tensor, grid: str) -> torch.Tensor:
    """``x`` of shape ``(batch, c, *spatial)`` with ``len(spatial)`` coordinate channels added
    (none when ``grid == "none"``)."""
    if grid == "none":
        return x
    spatial = x.shape[2:]
    axes = [coordinates(n, grid, x) for n in spatial]
    mesh = torch.meshgrid(*axes, indexing="ij")
    feats = torch.stack(mesh).expand(x.shape[0], len(spatial), *spatial)
    return torch.cat([x, feats], dim=1)


def check_grid(owner: str, grid: object) -> str:
    if grid not in GRIDS:
        raise ValueError(
            f"{owner}: `grid` must be one of {', '.join(map(repr, GRIDS))}, got {grid!r}."
        )
    return str(grid)
