r"""Sample generators: where the residual is evaluated (neurodiffeq's names and methods).

Each generator's :meth:`~BaseGenerator.get_examples` returns a tuple of coordinate columns,
each of shape ``(size, 1)``, drawn afresh on every call from torch's global random state (so a
seeded run is reproducible).

- :class:`Generator1D` on $[t_{\min}, t_{\max}]$: ``"uniform"`` (i.i.d.), ``"equally-spaced"``,
  ``"equally-spaced-noisy"`` (the grid plus Gaussian noise of std ``noise_std``, default a
  quarter of the spacing, folded back into the interval), ``"log-spaced"``,
  ``"log-spaced-noisy"``, ``"chebyshev1"`` (``"chebyshev"``: Chebyshev-Gauss points
  $\cos\frac{(2k - 1)\pi}{2n}$) and ``"chebyshev2"`` (Chebyshev-Lobatto points
  $\cos\frac{k\pi}{n - 1}$, the ends included), mapped to the interval.
- :class:`Generator2D` on a rectangle: the tensor grid of two 1-D methods (or ``"uniform"``).
- :class:`ResidualResampler`: residual-based adaptive distribution (RAD, Wu et al. 2023): from
  a pool of candidates, ``size`` points are drawn without replacement with probability
  $\propto |r|^k / \overline{|r|^k} + c$; the solver binds its residual to it.
- :class:`StaticGenerator`: one draw, kept (for validation sets);
  :class:`PredefinedGenerator`: points you give.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = [
    "BaseGenerator",
    "Generator1D",
    "Generator2D",
    "PredefinedGenerator",
    "ResidualResampler",
    "StaticGenerator",
]

METHODS_1D = (
    "uniform",
    "equally-spaced",
    "equally-spaced-noisy",
    "log-spaced",
    "log-spaced-noisy",
    "chebyshev",
    "chebyshev1",
    "chebyshev2",
)


def _size(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}.")
    return value


def _range(name: str, lo: Any, hi: Any) -> tuple[float, float]:
    for v in (lo, hi):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise TypeError(f"`{name}` must be finite numbers, got ({lo!r}, {hi!r}).")
    if not hi > lo:
        raise ValueError(f"`{name}` must be an increasing pair (min, max), got ({lo}, {hi}).")
    return float(lo), float(hi)


class BaseGenerator(abc.ABC):
    """Something that yields collocation points: ``get_examples() -> (coord, ...)``, each
    coordinate ``(size, 1)``."""

    size: int

    @abc.abstractmethod
    def get_examples(self) -> tuple[torch.Tensor, ...]:
        """A fresh tuple of coordinate columns, each ``(size, 1)``."""


def _points_1d(
    size: int, lo: float, hi: float, method: str, noise_std: float | None, dtype: torch.dtype
) -> torch.Tensor:
    if method == "uniform":
        return lo + (hi - lo) * torch.rand(size, dtype=dtype)
    if method.startswith("equally-spaced"):
        x = torch.linspace(lo, hi, size, dtype=dtype)
        if method.endswith("noisy"):
            std = noise_std if noise_std is not None else (hi - lo) / max(size - 1, 1) / 4
            x = x + std * torch.randn(size, dtype=dtype)
            # Fold back into [lo, hi] so that no point leaves the domain.
            x = torch.where(x < lo, 2 * lo - x, x)
            x = torch.where(x > hi, 2 * hi - x, x).clamp(lo, hi)
        return x
    if method.startswith("log-spaced"):
        if lo <= 0:
            raise ValueError(
                f"method {method!r} needs a positive lower bound, got {lo}; use "
                "'equally-spaced' or shift the interval."
            )
        e = torch.linspace(math.log(lo), math.log(hi), size, dtype=dtype)
        if method.endswith("noisy"):
            std = (
                noise_std if noise_std is not None else (e[-1] - e[0]).item() / max(size - 1, 1) / 4
            )
            e = (e + std * torch.randn(size, dtype=dtype)).clamp(math.log(lo), math.log(hi))
        return torch.exp(e)
    k = torch.arange(1, size + 1, dtype=dtype)
    if method in ("chebyshev", "chebyshev1"):
        c = torch.cos((2 * k - 1) * math.pi / (2 * size))
    else:  # chebyshev2
        c = torch.cos((k - 1) * math.pi / max(size - 1, 1)) if size > 1 else torch.zeros(1)
    return (lo + hi) / 2 + (hi - lo) / 2 * c.flip(0).to(dtype)


def _check_method(method: Any, allowed: Sequence[str]) -> str:
    if method not in allowed:
        raise ValueError(f"`method` must be one of {', '.join(allowed)}, got {method!r}.")
    return str(method)


class Generator1D(BaseGenerator):
    """``size`` points on ``[t_min, t_max]`` by ``method`` (see the module docstring)."""

    def __init__(
        self,
        size: int,
        t_min: float = 0.0,
        t_max: float = 1.0,
        method: str = "uniform",
        noise_std: float | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.size = _size("size", size)
        self.t_min, self.t_max = _range("(t_min, t_max)", t_min, t_max)
        self.method = _check_method(method, METHODS_1D)
        self.noise_std = noise_std
        self.dtype = dtype or torch.get_default_dtype()

    def get_examples(self) -> tuple[torch.Tensor, ...]:
        x = _points_1d(self.size, self.t_min, self.t_max, self.method, self.noise_std, self.dtype)
        return (x.reshape(-1, 1),)


class Generator2D(BaseGenerator):
    """Points on ``[xy_min[0], xy_max[0]] x [xy_min[1], xy_max[1]]``: the tensor grid
    ``grid = (nx, ny)`` of the 1-D ``method`` in each direction, or ``nx * ny`` i.i.d.
    points for ``"uniform"``."""

    def __init__(
        self,
        grid: tuple[int, int] = (10, 10),
        xy_min: tuple[float, float] = (0.0, 0.0),
        xy_max: tuple[float, float] = (1.0, 1.0),
        method: str = "equally-spaced-noisy",
        xy_noise_std: tuple[float, float] | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if not (isinstance(grid, (tuple, list)) and len(grid) == 2):
            raise ValueError(f"`grid` must be a pair (nx, ny), got {grid!r}.")
        self.grid = (_size("grid[0]", grid[0]), _size("grid[1]", grid[1]))
        self.size = self.grid[0] * self.grid[1]
        self.x_range = _range("(xy_min[0], xy_max[0])", xy_min[0], xy_max[0])
        self.y_range = _range("(xy_min[1], xy_max[1])", xy_min[1], xy_max[1])
        self.method = _check_method(method, METHODS_1D)
        self.noise = xy_noise_std or (None, None)
        self.dtype = dtype or torch.get_default_dtype()

    def get_examples(self) -> tuple[torch.Tensor, ...]:
        if self.method == "uniform":
            x = _points_1d(self.size, *self.x_range, "uniform", None, self.dtype)
            y = _points_1d(self.size, *self.y_range, "uniform", None, self.dtype)
            return x.reshape(-1, 1), y.reshape(-1, 1)
        if self.method.endswith("noisy"):
            # Noise on each point (not on the grid lines), as neurodiffeq does.
            base = self.method[: -len("-noisy")]
            x = _points_1d(self.grid[0], *self.x_range, base, None, self.dtype)
            y = _points_1d(self.grid[1], *self.y_range, base, None, self.dtype)
            gx, gy = torch.meshgrid(x, y, indexing="ij")
            sx = self.noise[0] or (self.x_range[1] - self.x_range[0]) / max(self.grid[0] - 1, 1) / 4
            sy = self.noise[1] or (self.y_range[1] - self.y_range[0]) / max(self.grid[1] - 1, 1) / 4
            gx = gx + sx * torch.randn_like(gx)
            gy = gy + sy * torch.randn_like(gy)
            gx = gx.clamp(*self.x_range)
            gy = gy.clamp(*self.y_range)
            return gx.reshape(-1, 1), gy.reshape(-1, 1)
        x = _points_1d(self.grid[0], *self.x_range, self.method, None, self.dtype)
        y = _points_1d(self.grid[1], *self.y_range, self.method, None, self.dtype)
        gx, gy = torch.meshgrid(x, y, indexing="ij")
        return gx.reshape(-1, 1), gy.reshape(-1, 1)


class StaticGenerator(BaseGenerator):
    """One draw of ``generator``, returned on every call (a fixed validation set)."""

    def __init__(self, generator: BaseGenerator) -> None:
        if not isinstance(generator, BaseGenerator):
            raise TypeError(f"`generator` must be a generator, got {type(generator).__name__}.")
        self.examples = generator.get_examples()
        self.size = generator.size

    def get_examples(self) -> tuple[torch.Tensor, ...]:
        return self.examples


class PredefinedGenerator(BaseGenerator):
    """Fixed points given as tensors (or arrays) of equal length, returned as ``(n, 1)``
    columns on every call."""

    def __init__(self, *xs: Any) -> None:
        if not xs:
            raise ValueError("`PredefinedGenerator` needs at least one coordinate tensor.")
        cols = [torch.as_tensor(x).reshape(-1, 1) for x in xs]
        if len({len(c) for c in cols}) != 1:
            raise ValueError(
                f"the coordinate tensors must have equal lengths, got {[len(c) for c in cols]}."
            )
        self.examples = tuple(cols)
        self.size = len(cols[0])

    def get_examples(self) -> tuple[torch.Tensor, ...]:
        return self.examples


ResidualFn = Callable[..., torch.Tensor]


class ResidualResampler(BaseGenerator):
    r"""Residual-based adaptive sampling (RAD; Wu, Zhu, Tan, Kartha, Lu 2023).

    Each call draws a pool from ``pool`` (a generator of more points than ``size``), evaluates
    the bound residual $r$ there (the squared residuals summed over equations, per point) and
    keeps ``size`` points, without replacement, with probability

    $$p(x) \propto \frac{|r(x)|^k}{\mathbb{E}|r|^k} + c.$$

    $k = 1, c = 1$ (the default) is the paper's recommendation; $c \to \infty$ is uniform.
    The :class:`~torchnde.pinn.Solver` binds its residual on construction.
    """

    def __init__(self, pool: BaseGenerator, size: int, k: float = 1.0, c: float = 1.0) -> None:
        if not isinstance(pool, BaseGenerator):
            raise TypeError(f"`pool` must be a generator, got {type(pool).__name__}.")
        self.pool = pool
        self.size = _size("size", size)
        if self.size > pool.size:
            raise ValueError(
                f"`size` ({size}) must not exceed the pool's size ({pool.size}); draw a larger "
                "pool."
            )
        if not (k >= 0 and c >= 0 and k + c > 0):
            raise ValueError(f"`k` and `c` must be >= 0, not both 0, got k={k}, c={c}.")
        self.k, self.c = float(k), float(c)
        self.residual: ResidualFn | None = None

    def bind(self, residual: ResidualFn) -> None:
        """Set the per-point residual: ``residual(*coords) -> (n,)`` (non-negative)."""
        self.residual = residual

    def get_examples(self) -> tuple[torch.Tensor, ...]:
        coords = self.pool.get_examples()
        if self.residual is None:
            raise RuntimeError(
                "ResidualResampler has no residual: pass it as a solver's train_generator "
                "(which binds it) or call .bind(residual) first."
            )
        with torch.enable_grad():
            r = self.residual(*coords).detach().abs() ** self.k
        w = r / r.mean().clamp_min(torch.finfo(r.dtype).tiny) + self.c
        if not bool(torch.isfinite(w).all()):
            w = torch.ones_like(w)
        idx = torch.multinomial(w.to(torch.float64), self.size, replacement=False)
        return tuple(c[idx] for c in coords)
