r"""Continuous normalising flows (CNF / FFJORD)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

import torchnde as tn

from ._config import SolveConfig, check_vector_field, describe
from .regularisers import (
    AbstractRegulariser,
    augmented_dynamics,
    gaussian_log_prob,
    sample_noise,
)

__all__ = ["CNF"]


class CNF(nn.Module):
    r"""A continuous normalising flow with a standard normal base (Chen et al. 2018;
    FFJORD, Grathwohl et al. 2019).

    Data $x$ flows to the base by $\dot z = f_\theta(t, z)$, $z(t_0) = x$, and the
    instantaneous change of variables gives

    $$\log p(x) = \log \mathcal{N}(z(t_1); 0, I) + \int_{t_0}^{t_1}
    \operatorname{tr}\frac{\partial f_\theta}{\partial z}(t, z(t))\,dt,$$

    integrated together with $z$ (and the regularisers) in one solve. ``sample`` draws
    $z \sim \mathcal{N}(0, I)$ and solves backwards from $t_1$ to $t_0$.

    The trace is ``"exact"`` ($D$ vector-Jacobian products per evaluation, small $D$) or
    Hutchinson's unbiased estimate $\varepsilon^\top (\partial f/\partial z)\,\varepsilon$
    (FFJORD) with one noise draw per solve, held fixed along the trajectory so the
    integrand is a smooth function of time for the adaptive solver.

    Args:
        vector_field: ``f(t, z)`` (or ``f(t, z, args)``).
        event_shape: the shape of one sample (e.g. ``2`` or ``(2,)`` for 2-D data).
        trace: ``"exact"`` or ``"hutchinson"``.
        noise: ``"gaussian"`` or ``"rademacher"`` Hutchinson noise.
        regularisers: RNODE's :class:`KineticEnergy` and :class:`JacobianFrobenius`
            (Finlay et al. 2020; Hutchinson estimates share the trace's noise) or
            :class:`TaylorPenalty`; after ``log_prob``, ``self.regularisation`` holds their
            batch means, to add (weighted) to the loss.
        solver, adjoint, t0, t1, rtol, atol, controller, dt0, max_steps: as for
            :class:`NeuralODE`; every adjoint works.

    After each solve ``self.last_stats`` holds the solve's stats and ``self.nfe`` the number
    of vector-field calls since it began.

    References:
        W. Grathwohl, R. T. Q. Chen, J. Bettencourt, I. Sutskever, D. Duvenaud, "FFJORD:
        free-form continuous dynamics for scalable reversible generative models", ICLR 2019.

        C. Finlay, J.-H. Jacobsen, L. Nurbekyan, A. Oberman, "How to train your neural ODE",
        ICML 2020.
    """

    def __init__(
        self,
        vector_field: Any,
        event_shape: int | Sequence[int],
        *,
        trace: str = "exact",
        noise: str = "gaussian",
        regularisers: Sequence[AbstractRegulariser] = (),
        solver: tn.AbstractSolver | None = None,
        adjoint: tn.AbstractAdjoint | None = None,
        t0: float = 0.0,
        t1: float = 1.0,
        rtol: float | None = None,
        atol: float | None = None,
        controller: tn.AbstractStepSizeController | None = None,
        dt0: float | None = None,
        max_steps: int = 65536,
    ) -> None:
        super().__init__()
        check_vector_field("CNF", vector_field)
        if trace not in ("exact", "hutchinson"):
            raise ValueError(f"CNF: `trace` must be 'exact' or 'hutchinson', got {trace!r}.")
        if noise not in ("gaussian", "rademacher"):
            raise ValueError(f"CNF: `noise` must be 'gaussian' or 'rademacher', got {noise!r}.")
        shape = (event_shape,) if isinstance(event_shape, int) else tuple(event_shape)
        if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
            raise ValueError(
                "CNF: `event_shape` must be a positive int or a tuple of them, got "
                f"{event_shape!r}."
            )
        for r in regularisers:
            if not isinstance(r, AbstractRegulariser):
                raise TypeError(
                    "CNF: `regularisers` must hold KineticEnergy(), JacobianFrobenius() or "
                    f"TaylorPenalty(...), got {describe(r)}."
                )
        if float(t1) == float(t0):
            raise ValueError(f"CNF: need t1 != t0, got t0={t0!r}, t1={t1!r}.")
        self.vector_field = vector_field
        self.event_shape = shape
        self.trace, self.noise = trace, noise
        self.regularisers = list(regularisers)
        self.config = SolveConfig("CNF", solver, adjoint, rtol, atol, controller, dt0, max_steps)
        self.t0, self.t1 = t0, t1
        self.nfe = 0
        self.last_stats: dict[str, Any] = {}
        self.regularisation: dict[str, torch.Tensor] = {}

    def _f(self, args: Any) -> Any:
        vf = self.vector_field

        def f(t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            self.nfe += 1
            return vf(t, z) if args is None else vf(t, z, args)

        return f

    def _check(self, x: Any) -> None:
        if not isinstance(x, torch.Tensor) or tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(
                f"CNF: `x` must have shape (batch, *{self.event_shape}), got {describe(x)}."
            )

    def flow(
        self, x: torch.Tensor, args: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        r"""Push data to the base: returns $z(t_1)$, $\int \operatorname{tr}\,\partial f/\partial
        z\,dt$ per sample, and the per-sample regulariser integrals by name."""
        self._check(x)
        self.nfe = 0
        noise = sample_noise(x, self.noise) if self.trace == "hutchinson" else None
        if noise is None and any(r.needs_noise for r in self.regularisers):
            noise = sample_noise(x, self.noise)
        dyn = augmented_dynamics(self._f(args), self.regularisers, self.trace, noise)
        zeros = [x.new_zeros(x.shape[0]) for _ in range(1 + len(self.regularisers))]
        sol = self.config.solve(dyn, self.t0, self.t1, (x, *zeros), tn.SaveAt(t1=True), args)
        self.last_stats = dict(sol.stats)
        z, delta, *regs = (c[-1] for c in sol.ys)
        return z, delta, {r.name: v for r, v in zip(self.regularisers, regs)}

    def log_prob(self, x: torch.Tensor, args: Any = None) -> torch.Tensor:
        """Log-density of each sample of ``x`` (``(batch, *event_shape)``): ``(batch,)``.
        Sets ``self.regularisation`` to the batch means of the regularisers."""
        z, delta, regs = self.flow(x, args)
        self.regularisation = {k: v.mean() for k, v in regs.items()}
        return gaussian_log_prob(z) + delta

    def forward(self, x: torch.Tensor, args: Any = None) -> torch.Tensor:
        """Same as :meth:`log_prob`."""
        return self.log_prob(x, args)

    def sample(
        self,
        n: int,
        args: Any = None,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Draw ``n`` samples ``(n, *event_shape)``: base noise solved from ``t1`` back to
        ``t0`` (differentiable through the configured adjoint)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"CNF.sample: `n` must be a positive int, got {n!r}.")
        p = next(iter(self.parameters()), None)
        dtype = dtype or (p.dtype if p is not None else torch.get_default_dtype())
        device = device or (p.device if p is not None else None)
        z = torch.randn((n, *self.event_shape), dtype=dtype, device=device, generator=generator)
        self.nfe = 0
        f = self._f(args)
        sol = self.config.solve(
            lambda t, y, a: f(t, y), self.t1, self.t0, z, tn.SaveAt(t1=True), args
        )
        self.last_stats = dict(sol.stats)
        return sol.ys[-1]

    def extra_repr(self) -> str:
        return f"event_shape={self.event_shape}, trace={self.trace!r}, {self.config!r}"
