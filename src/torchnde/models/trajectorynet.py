r"""TrajectoryNet (Tong, Huang, Wolf, van Dijk, Krishnaswamy 2020): a continuous normalising
flow over time snapshots, regularised towards dynamic optimal transport."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

import torchnde as tn

from ._config import describe
from .cnf import CNF
from .regularisers import KineticEnergy, gaussian_log_prob

__all__ = ["TrajectoryNet"]


class TrajectoryNet(nn.Module):
    r"""One continuous normalising flow through a sequence of population snapshots
    (Tong et al. 2020).

    Cells (points) move by $\dot x = f_\theta(t, x)$ in physical time. The density at the
    base time $t_b$ (before the first snapshot) is the standard normal prior, and the
    density at every later time is its push-forward, so the density of snapshot time $t_k$ is

    $$\log p_{t_k}(x) = \log\mathcal N(z(t_b); 0, I) + \int_{t_k}^{t_b}
    \operatorname{tr}\frac{\partial f_\theta}{\partial z}(t, z(t))\,dt,\qquad z(t_k) = x,$$

    one :class:`CNF` solve backwards from $t_k$. Training maximises $\sum_k \mathbb
    E_{x\sim\text{snapshot }k}\log p_{t_k}(x)$ plus the RNODE kinetic energy
    $\lambda\int\lVert f\rVert^2dt$ along the same solves (:meth:`forward` returns both), which
    makes the flow approximate the dynamic (Benamou-Brenier) optimal transport between
    consecutive snapshots: the trajectories, and so the densities between the snapshots, are
    the most economical ones consistent with the data. A held-out time is predicted by
    :meth:`transport` of the previous snapshot's points, or by :meth:`sample`.

    Args:
        vector_field: ``f(t, x)`` in physical time (e.g. ``DepthCat(net)``).
        event_shape: the shape of one point.
        base_time: $t_b$, strictly before every time passed later.
        trace, noise, solver, adjoint, rtol, atol, controller, dt0, max_steps: as for
            :class:`CNF`.

    Reference:
        A. Tong, J. Huang, G. Wolf, D. van Dijk, S. Krishnaswamy, "TrajectoryNet: a dynamic
        optimal transport network for modeling cellular dynamics", ICML 2020.
    """

    _cnf: CNF

    def __init__(
        self,
        vector_field: Any,
        event_shape: int | Sequence[int],
        *,
        base_time: float = 0.0,
        trace: str = "exact",
        noise: str = "gaussian",
        solver: tn.AbstractSolver | None = None,
        adjoint: tn.AbstractAdjoint | None = None,
        rtol: float | None = None,
        atol: float | None = None,
        controller: tn.AbstractStepSizeController | None = None,
        dt0: float | None = None,
        max_steps: int = 65536,
    ) -> None:
        super().__init__()
        if isinstance(base_time, bool) or not isinstance(base_time, (int, float)):
            raise TypeError(
                f"TrajectoryNet: `base_time` must be a number, got {describe(base_time)}."
            )
        self.vector_field = vector_field
        self.base_time = float(base_time)
        kw: dict[str, Any] = dict(
            trace=trace, noise=noise, solver=solver, adjoint=adjoint, rtol=rtol, atol=atol,
            controller=controller, dt0=dt0, max_steps=max_steps,
        )  # fmt: skip
        # The flow to the base with the kinetic energy; its t0 is set per call. Kept out of the
        # module tree: it only holds the field, registered above.
        cnf = CNF(
            vector_field, event_shape, regularisers=[KineticEnergy()], t0=base_time + 1.0,
            t1=base_time, **kw,
        )  # fmt: skip
        object.__setattr__(self, "_cnf", cnf)
        self.event_shape = self._cnf.event_shape
        self.nfe = 0
        self.last_stats: dict[str, Any] = {}

    def _time(self, name: str, t: Any) -> float:
        if isinstance(t, bool) or not isinstance(t, (int, float)):
            raise TypeError(f"TrajectoryNet: `{name}` must be a number, got {describe(t)}.")
        return float(t)

    def forward(self, x: torch.Tensor, time: float) -> tuple[torch.Tensor, torch.Tensor]:
        r"""``(log p_time(x), kinetic energy)``, each ``(batch,)``: the log-density of the
        points ``x`` at ``time`` and $\int_{t_b}^{\text{time}}\lVert f\rVert^2dt$ along their
        trajectories back to the base (one solve)."""
        t = self._time("time", time)
        if not t > self.base_time:
            raise ValueError(
                f"TrajectoryNet: `time` must be after base_time={self.base_time}, got {time!r}."
            )
        cnf: CNF = self._cnf
        cnf.t0 = t
        z, delta, regs = cnf.flow(x)
        self.nfe, self.last_stats = cnf.nfe, cnf.last_stats
        # The solve runs backwards in time, so the integral of |f|^2 dt comes out negative.
        return gaussian_log_prob(z) + delta, -regs["kinetic_energy"]

    def log_prob(self, x: torch.Tensor, time: float) -> torch.Tensor:
        """The log-density ``(batch,)`` of the points ``x`` at ``time``."""
        return self.forward(x, time)[0]

    def transport(self, x: torch.Tensor, time: float, to_time: float) -> torch.Tensor:
        """Move the points ``x`` from ``time`` to ``to_time`` along the flow (either
        direction): the points of a snapshot predicted at another time."""
        t0, t1 = self._time("time", time), self._time("to_time", to_time)
        cnf: CNF = self._cnf
        cnf._check(x)
        if t0 == t1:
            return x
        vf = self.vector_field
        sol = cnf.config.solve(lambda t, y, a: vf(t, y), t0, t1, x, tn.SaveAt(t1=True))
        self.last_stats = dict(sol.stats)
        return sol.ys[-1]

    def sample(
        self,
        n: int,
        time: float,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``n`` points of the modelled density at ``time``: prior noise at the base time
        transported to ``time``."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"TrajectoryNet.sample: `n` must be a positive int, got {n!r}.")
        p = next(iter(self.parameters()), None)
        dtype = dtype or (p.dtype if p is not None else torch.get_default_dtype())
        device = device or (p.device if p is not None else None)
        z = torch.randn((n, *self.event_shape), dtype=dtype, device=device, generator=generator)
        return self.transport(z, self.base_time, time)

    def extra_repr(self) -> str:
        return f"event_shape={self.event_shape}, base_time={self.base_time}"
