r"""Batched tridiagonal solves for spline coefficients.

Two routes, chosen by the caller:

- :func:`thomas`: the Thomas algorithm (Gaussian elimination without pivoting, stable for the
  diagonally dominant systems of splines), vectorised over every series: one Python
  iteration per row, each a few tensor operations on all ``batch × channels`` series at once.
  Used when the system differs per series (per-sample times, missing values).
- :func:`shared_inverse`: when every series shares one system (one time grid, no missing
  values) the solve is a fixed linear map; its dense inverse, computed once in float64, turns
  the whole batch into a single matrix product (for moderate lengths, where that is cheaper
  than ``length`` sequential elimination steps).
"""

from __future__ import annotations

import torch

__all__ = ["thomas", "shared_inverse"]


def thomas(
    lower: torch.Tensor, diag: torch.Tensor, upper: torch.Tensor, rhs: torch.Tensor
) -> torch.Tensor:
    r"""Solve $l_i x_{i-1} + d_i x_i + u_i x_{i+1} = r_i$ for every series.

    Rows run along dimension 0; every other dimension is a batch of independent systems.
    ``lower[0]`` and ``upper[-1]`` are ignored. All four broadcast against each other.
    Differentiable (no in-place updates).
    """
    n = rhs.shape[0]
    lower, diag, upper, rhs = torch.broadcast_tensors(lower, diag, upper, rhs)
    cp = []  # modified super-diagonal
    dp = []  # modified right-hand side
    inv = 1 / diag[0]
    cp.append(upper[0] * inv)
    dp.append(rhs[0] * inv)
    for i in range(1, n):
        inv = 1 / (diag[i] - lower[i] * cp[i - 1])
        cp.append(upper[i] * inv)
        dp.append((rhs[i] - lower[i] * dp[i - 1]) * inv)
    out = [dp[-1]]
    for i in range(n - 2, -1, -1):
        out.append(dp[i] - cp[i] * out[-1])
    return torch.stack(out[::-1])


_CACHE: dict[tuple, torch.Tensor] = {}
_CACHE_SIZE = 8


def shared_inverse(lower: torch.Tensor, diag: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """The dense inverse of one tridiagonal matrix (1-D diagonals of length n), in float64.

    The last few inverses are cached by value (a dataset reuses one time grid for every
    batch), unless the diagonals require gradients.
    """
    key = None
    if not (lower.requires_grad or diag.requires_grad or upper.requires_grad):
        key = (str(diag.device), diag.dtype, tuple(torch.cat([lower, diag, upper]).tolist()))
        hit = _CACHE.get(key)
        if hit is not None:
            return hit
    inv = _inverse(lower, diag, upper)
    if key is not None:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = inv
    return inv


def _inverse(lower: torch.Tensor, diag: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    dt = torch.float64
    m = torch.diag(diag.to(dt))
    if diag.shape[0] > 1:
        m = m + torch.diag(lower[1:].to(dt), -1) + torch.diag(upper[:-1].to(dt), 1)
    return torch.linalg.inv(m)
