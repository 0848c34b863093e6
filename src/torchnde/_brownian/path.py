r"""``BrownianPath``: the simplest exact Brownian motion: remember every queried time.

Times are kept in a sorted list with $W(t) - W(t_0)$ at each (and the space-time Lévy area of
each gap). A time past the last one extends the path with a fresh Gaussian increment; a time
inside a gap is filled in by the Brownian bridge between its neighbours. Draws come from one
generator stream, so a path is reproducible for a seed and a sequence of queries. Memory grows
with the number of distinct times queried: meant for forward solves (and small ones), where it
is the cheapest of the three.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import cast

import torch

from .base import AbstractBrownianPath, Time
from .bridge import join, split

__all__ = ["BrownianPath"]


class BrownianPath(AbstractBrownianPath):
    r"""Brownian motion on $[t_0, t_1]$ that stores every queried time: exact, cheapest for a
    forward solve, memory linear in the number of distinct query times.

    Extending the path forward costs one Gaussian draw; a query between known times is filled
    in by the Brownian bridge (also exact). The samples depend on the seed and on the order in
    which new times were first queried; repeated queries return the stored values (the
    space-time Lévy area of an interval is the join of the gaps between the times stored at
    the query, so once new times were added inside the interval it is reproduced to round-off
    rather than bit for bit).

    Args:
        t0, t1: the interval, ``t0 < t1``.
        shape: ``(batch, *noise)``.
        dtype, device, seed, levy_area: as for :class:`BrownianInterval`.
    """

    _name = "BrownianPath"

    def __init__(
        self,
        t0: Time,
        t1: Time,
        shape: Sequence[int] | torch.Size | int,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        seed: int | None = None,
        levy_area: str | None = None,
    ) -> None:
        super().__init__(t0, t1, shape, dtype=dtype, device=device, seed=seed, levy_area=levy_area)
        self._gen.manual_seed(self.seed)
        self._ts: list[float] = [self.t0]
        self._ws: list[torch.Tensor] = [
            torch.zeros(self.shape, dtype=self.dtype, device=self.device)
        ]
        self._hs: list[torch.Tensor] = []  # space-time area of each gap [ts[k], ts[k+1]]
        self._lead = () if self.levy_area is None else (2,)

    def _draw(self) -> torch.Tensor:
        return torch.randn(
            self._lead + self.shape, generator=self._gen, dtype=self.dtype, device=self.device
        )

    def _index(self, t: float) -> int:
        """Index of ``t`` in the stored times, adding it if new."""
        ts = self._ts
        k = bisect.bisect_left(ts, t)
        if k < len(ts) and ts[k] == t:
            return k
        z = self._draw()
        if k == len(ts):  # extend forward
            h = t - ts[-1]
            if self.levy_area is None:
                self._ws.append(torch.add(self._ws[-1], z, alpha=math.sqrt(h)))
            else:
                self._ws.append(torch.add(self._ws[-1], z[0], alpha=math.sqrt(h)))
                self._hs.append(z[1].mul(math.sqrt(h / 12.0)))
            ts.append(t)
            return k
        # fill in the gap (ts[k-1], ts[k]) by the bridge
        a, b = ts[k - 1], ts[k]
        W = self._ws[k] - self._ws[k - 1]
        H = self._hs[k - 1] if self.levy_area is not None else None
        W1, H1, _, H2 = split(W, H, z, t - a, b - t)
        ts.insert(k, t)
        self._ws.insert(k, self._ws[k - 1] + W1)
        if self.levy_area is not None:
            # H1, H2 exist whenever H does (the path tracks the Lévy area).
            self._hs[k - 1] = cast(torch.Tensor, H1)
            self._hs.insert(k, cast(torch.Tensor, H2))
        return k

    def _forward_increment(self, ta: float, tb: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        # tb first: extending to tb never moves ta's index the wrong way
        self._index(tb)
        i = self._index(ta)
        j = bisect.bisect_left(self._ts, tb)
        W = self._ws[j] - self._ws[i]
        if self.levy_area is None:
            return W, None
        Wk = self._ws[i + 1] - self._ws[i]
        H: torch.Tensor | None = self._hs[i].clone()
        h = self._ts[i + 1] - self._ts[i]
        for k in range(i + 1, j):
            h2 = self._ts[k + 1] - self._ts[k]
            Wk, H = join(Wk, H, h, self._ws[k + 1] - self._ws[k], self._hs[k], h2)
            h += h2
        return W, H
