"""A test-only Brownian motion on a fixed fine grid, with exact space-time Lévy areas.

The increments ``dW_k ~ N(0, h)`` and space-time Lévy areas ``H_k ~ N(0, h/12)`` of the fine
steps are drawn once; queries on any coarser grid of the same origin are answered exactly
(sums of the fine values), so solves with different step sizes share one Brownian sample path,
as strong-order tests need.
"""

from __future__ import annotations

import torch

from torchnde import AbstractPath


class GridBrownian(AbstractPath):
    def __init__(
        self,
        t0: float,
        t1: float,
        shape: tuple[int, ...],
        num_steps: int,
        *,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.t0, self.hf, self.num_steps, self.dtype = t0, (t1 - t0) / num_steps, num_steps, dtype
        dw = torch.randn((num_steps,) + tuple(shape), generator=gen, dtype=torch.float64)
        dw *= self.hf**0.5
        area = torch.randn((num_steps,) + tuple(shape), generator=gen, dtype=torch.float64)
        area *= (self.hf / 12) ** 0.5
        zero = torch.zeros((1,) + tuple(shape), dtype=torch.float64)
        self.w = torch.cat([zero, dw.cumsum(0)])  # W at the grid points
        # ∫_{t0}^{t_k} W(u) du, with ∫ over a fine step = h W_k + h (dW_k / 2 + H_k).
        pieces = self.hf * (self.w[:-1] + 0.5 * dw + area)
        self.integral = torch.cat([zero, pieces.cumsum(0)])
        self.num_queries = 0

    def _index(self, t: torch.Tensor | float) -> int:
        t = t.detach() if isinstance(t, torch.Tensor) else t
        x = (float(t) - self.t0) / self.hf
        k = round(x)
        if abs(x - k) > 1e-6 or not 0 <= k <= self.num_steps:
            raise ValueError(f"GridBrownian: time {float(t)} is not on the grid.")
        return k

    def evaluate(self, t0, t1=None, *, return_levy_area=False):  # type: ignore[override]
        self.num_queries += 1
        if t1 is None:
            t0, t1 = self.t0, t0
        a, b = self._index(t0), self._index(t1)
        dw = self.w[b] - self.w[a]
        if not return_levy_area:
            return dw.to(self.dtype)
        h = (b - a) * self.hf
        area = (self.integral[b] - self.integral[a] - h * self.w[a]) / h - 0.5 * dw
        return dw.to(self.dtype), area.to(self.dtype)

    def __call__(self, t0, t1=None, *, return_levy_area=False):  # type: ignore[no-untyped-def]
        return self.evaluate(t0, t1, return_levy_area=return_levy_area)

    def at(self, t: float) -> torch.Tensor:
        """W(t) - W(t0)."""
        return self.w[self._index(t)].to(self.dtype)

    def stochastic_integral(self, weight) -> torch.Tensor:  # type: ignore[no-untyped-def]
        """∫ w(s) dW_s over the whole interval for a smooth deterministic w, to second order in
        the fine step: w(s) ≈ w(t_k) + w'(t_k)(s - t_k) and ∫ (s - t_k) dW = h(dW/2 - H)."""
        k = torch.arange(self.num_steps, dtype=torch.float64)
        t = self.t0 + k * self.hf
        w, dw_dt = weight(t)
        dw = self.w[1:] - self.w[:-1]
        area = (self.integral[1:] - self.integral[:-1] - self.hf * self.w[:-1]) / self.hf
        area = area - 0.5 * dw
        shape = (-1,) + (1,) * (dw.ndim - 1)
        terms = w.reshape(shape) * dw + dw_dt.reshape(shape) * self.hf * (0.5 * dw - area)
        return terms.sum(0).to(self.dtype)


class BridgeBrownian(AbstractPath):
    """A test-only Brownian motion answering queries at any times, in any order: new points
    are drawn from the Brownian bridge between the nearest known ones, so every answer is
    consistent with all earlier ones (as rejected adaptive steps need). No Lévy area."""

    def __init__(self, t0: float, t1: float, shape: tuple[int, ...], *, seed: int = 0) -> None:
        self.gen = torch.Generator().manual_seed(seed)
        self.shape = tuple(shape)
        w1 = torch.randn(self.shape, generator=self.gen, dtype=torch.float64) * (t1 - t0) ** 0.5
        self.points: dict[float, torch.Tensor] = {t0: torch.zeros(self.shape, dtype=torch.float64)}
        self.points[t1] = w1
        self.t0 = t0

    def at(self, t) -> torch.Tensor:  # type: ignore[no-untyped-def]
        t = float(t.detach()) if isinstance(t, torch.Tensor) else float(t)
        if t in self.points:
            return self.points[t]
        keys = sorted(self.points)
        if not keys[0] <= t <= keys[-1]:
            raise ValueError(f"BridgeBrownian: time {t} outside [{keys[0]}, {keys[-1]}].")
        i = next(k for k, s in enumerate(keys) if s > t)
        s, u = keys[i - 1], keys[i]
        ws, wu = self.points[s], self.points[u]
        mean = ws + (t - s) / (u - s) * (wu - ws)
        std = ((t - s) * (u - t) / (u - s)) ** 0.5
        self.points[t] = mean + std * torch.randn(
            self.shape, generator=self.gen, dtype=torch.float64
        )
        return self.points[t]

    def evaluate(self, t0, t1=None):  # type: ignore[no-untyped-def, override]
        if t1 is None:
            t0, t1 = self.t0, t0
        return self.at(t1) - self.at(t0)
