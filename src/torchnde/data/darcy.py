r"""2-D Darcy flow with piecewise-constant coefficients: the Fourier neural operator's Darcy
benchmark (Li et al. 2021).

$$-\nabla\cdot\big(a(x)\nabla u(x)\big) = 1\quad\text{on } (0, 1)^2,\qquad u = 0\ \text{on the
boundary},$$

with $a = 12$ where $\mu \ge 0$ and $a = 3$ where $\mu < 0$, $\mu \sim \mathcal{N}(0,
(-\Delta + 9 I)^{-2})$ with zero Neumann boundary conditions; the operator to learn is
$a \mapsto u$.

**Coefficients.** The covariance is diagonal in the Neumann eigenbasis $\cos(\pi k_1 x)\cos(\pi
k_2 y)$ with eigenvalues $((\pi^2 (k_1^2 + k_2^2) + 9)^{-2}$; $\mu$ is summed over
$0 \le k_1, k_2 < s$ on the $s \times s$ grid $x_i = i / (s - 1)$ (boundary included).

**Solver.** The five-point finite-difference scheme with the coefficient averaged
arithmetically onto the cell faces, $-\frac{1}{h^2}\sum_{\pm}\,a_{i\pm 1/2, j}(u_{i\pm1,j} -
u_{ij}) + \ldots = 1$, second-order accurate for smooth $a$ (tested on $a$ constant against the
Fourier series of the Poisson problem), solved by a sparse LU factorisation
(``scipy.sparse.linalg.splu``; SciPy is part of the ``experiments`` extra).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ._cache import cached

__all__ = ["darcy", "darcy_coefficient", "darcy_solve"]


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}.")
    return value


def darcy_coefficient(
    n_samples: int,
    resolution: int,
    *,
    generator: torch.Generator | None = None,
    low: float = 3.0,
    high: float = 12.0,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    r"""``n_samples`` coefficients $a \in \{\text{low}, \text{high}\}$ (the thresholded Gaussian
    field above) on the ``resolution`` x ``resolution`` grid, shape ``(n_samples, s, s)``.
    ``generator``: a CPU ``torch.Generator`` (the draws do not depend on ``device``)."""
    _check_int("n_samples", n_samples, 1)
    s = _check_int("resolution", resolution, 3)
    k = torch.arange(s, dtype=torch.float64)
    lam = (math.pi**2 * (k[:, None] ** 2 + k[None, :] ** 2) + 9.0) ** -2
    xi = torch.randn(n_samples, s, s, generator=generator, dtype=torch.float64)
    x = torch.linspace(0, 1, s, dtype=torch.float64)
    basis = torch.cos(math.pi * x[:, None] * k[None, :])  # (points, modes)
    mu = torch.einsum("ik,bkl,jl->bij", basis, xi * lam.sqrt(), basis)
    a = torch.where(mu >= 0, torch.tensor(high, dtype=torch.float64), torch.tensor(low))
    return a.to(device=device, dtype=dtype)


def _operator(a: np.ndarray):  # type: ignore[no-untyped-def]
    """The sparse FD matrix on the interior nodes of one coefficient field ``a`` (s, s)."""
    import scipy.sparse as sp

    s = a.shape[0]
    h = 1.0 / (s - 1)
    m = s - 2
    ax = 0.5 * (a[1:, :] + a[:-1, :])  # faces between (i, j) and (i + 1, j): (s - 1, s)
    ay = 0.5 * (a[:, 1:] + a[:, :-1])  # faces between (i, j) and (i, j + 1): (s, s - 1)
    west, east = ax[:-1, 1:-1], ax[1:, 1:-1]  # (m, m): faces i-1/2 and i+1/2 of interior nodes
    south, north = ay[1:-1, :-1], ay[1:-1, 1:]
    idx = np.arange(m * m).reshape(m, m)
    rows, cols, vals = [idx.ravel()], [idx.ravel()], [(west + east + south + north).ravel()]
    for coef, di, dj in ((west, -1, 0), (east, 1, 0), (south, 0, -1), (north, 0, 1)):
        i0, i1 = max(0, -di), m - max(0, di)
        j0, j1 = max(0, -dj), m - max(0, dj)
        rows.append(idx[i0:i1, j0:j1].ravel())
        cols.append(idx[i0 + di : i1 + di, j0 + dj : j1 + dj].ravel())
        vals.append(-coef[i0:i1, j0:j1].ravel())
    mat = sp.csc_matrix(
        (np.concatenate(vals) / h**2, (np.concatenate(rows), np.concatenate(cols))),
        shape=(m * m, m * m),
    )
    return mat


def darcy_solve(a: torch.Tensor, f: float = 1.0) -> torch.Tensor:
    r"""The finite-difference solution $u$ of $-\nabla\cdot(a\nabla u) = f$ with $u = 0$ on the
    boundary, for coefficients ``a`` of shape ``(batch, s, s)`` (nodes $i/(s-1)$, boundary
    included); returns ``(batch, s, s)`` with zero boundary values, in ``a``'s dtype and device
    (solved in float64 on the CPU with SciPy)."""
    if not isinstance(a, torch.Tensor) or not a.is_floating_point():
        raise TypeError(f"`a` must be a floating torch.Tensor, got {type(a).__name__}.")
    if a.ndim != 3 or a.shape[1] != a.shape[2] or a.shape[1] < 3:
        raise ValueError(f"`a` must have shape (batch, s, s) with s >= 3, got {tuple(a.shape)}.")
    if not bool((a > 0).all()):
        raise ValueError("`a` must be positive everywhere (an elliptic problem).")
    try:
        from scipy.sparse.linalg import splu
    except ImportError:
        raise ImportError(
            "darcy_solve needs SciPy: pip install 'torchnde[experiments]' (or pip install scipy)."
        ) from None
    a64 = a.detach().to("cpu", torch.float64).numpy()
    s = a64.shape[1]
    out = np.zeros_like(a64)
    rhs = np.full((s - 2) ** 2, float(f))
    for b in range(a64.shape[0]):
        out[b, 1:-1, 1:-1] = splu(_operator(a64[b])).solve(rhs).reshape(s - 2, s - 2)
    return torch.from_numpy(out).to(device=a.device, dtype=a.dtype)


def darcy(
    n_samples: int,
    resolution: int = 64,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    cache_dir: str | Path | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The Darcy data set: ``(a, u)``, each ``(n_samples, s, s)``, coefficients drawn with seed
    ``seed`` and their finite-difference solutions at ``resolution`` $s$.

    With ``cache_dir`` the data are read from / written to
    ``cache_dir/darcy-n{n}-res{s}-seed{seed}.pt``.
    """
    _check_int("n_samples", n_samples, 1)
    _check_int("resolution", resolution, 3)
    _check_int("seed", seed, 0)

    def make() -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        a = darcy_coefficient(n_samples, resolution, generator=gen)
        return {"a": a, "u": darcy_solve(a)}

    data = cached(cache_dir, "darcy", {"n": n_samples, "res": resolution, "seed": seed}, make)
    return data["a"].to(device, dtype), data["u"].to(device, dtype)
