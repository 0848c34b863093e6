r"""Hypersolvers: a fixed-step solver with a learned correction of its local error."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

import torchnde as tn

from ._config import check_vector_field, describe
from ._rk import rk_solver, rk_step

__all__ = ["HyperSolver"]


class HyperSolver(nn.Module):
    r"""A base fixed-step method $\psi$ (Euler, Heun, RK4, ... of order $p$) plus a learned
    correction of its local truncation error (Poli et al. 2020):

    $$x_{k+1} = x_k + h\,\psi(t_k, x_k) + h^{p+1} g_\omega(t_k, x_k, \psi(t_k, x_k)).$$

    The one-step error of the base method is $h^{p+1}$ times a smooth function of
    $(t_k, x_k)$; $g_\omega$ is trained to predict it by the residual-fitting loss
    (:meth:`residual_loss`) on reference trajectories, after which the hypersolver is more
    accurate than its base method at the same number of vector-field evaluations (plus one
    evaluation of the small correction network per step).

    Args:
        vector_field: ``f(t, x)`` (or ``f(t, x, args)``), the (trained) dynamics.
        correction: $g_\omega$, called as ``g(t, x, dx)`` with ``dx`` $= \psi(t, x)$ the base
            method's slope; returns a tensor of the shape of ``x``.
        base: an explicit Runge–Kutta solver used with fixed steps (``Euler()``, ``Heun()``,
            ``Midpoint()``, ``RK4()``, ``ExplicitRungeKutta(tab)``, ...) or a
            :class:`~torchnde.ButcherTableau`; its ``order`` gives $p$. Its steps are the
            core solver's constant steps: $s$ evaluations of ``f`` per step.

    References:
        M. Poli, S. Massaroli, A. Yamashita, H. Asama, J. Park, "Hypersolvers: toward fast
        continuous-depth models", NeurIPS 2020.
    """

    def __init__(
        self, vector_field: Any, correction: Any, base: tn.AbstractRungeKutta | tn.ButcherTableau
    ) -> None:
        super().__init__()
        check_vector_field("HyperSolver", vector_field)
        if not callable(correction):
            raise TypeError(
                f"HyperSolver: `correction` must be a module g(t, x, dx), got "
                f"{describe(correction)}."
            )
        self.vector_field, self.correction = vector_field, correction
        self.base = rk_solver("HyperSolver", "base", base)
        self.order = self.base.order
        self.nfe = 0

    def _f(self, args: Any) -> Any:
        vf = self.vector_field

        def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            self.nfe += 1
            return vf(t, y) if args is None else vf(t, y, args)

        return f

    def _base_step(
        self, f: Any, t: torch.Tensor, h: torch.Tensor, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The base method's step ``x + h psi`` and its slope ``psi``."""
        x1 = rk_step(f, self.base, t, h, x)
        return x1, (x1 - x) / tn.broadcast_time(h, x)

    def step(
        self, t: torch.Tensor, h: torch.Tensor, x: torch.Tensor, args: Any = None
    ) -> torch.Tensor:
        """One corrected step from ``(t, x)`` of size ``h``; ``t``, ``h`` scalar or per
        sample ``(batch,)``."""
        x1, dx = self._base_step(self._f(args), t, h, x)
        return x1 + tn.broadcast_time(h, x) ** (self.order + 1) * self.correction(t, x, dx)

    def forward(
        self,
        x: torch.Tensor,
        ts: Sequence[float] | torch.Tensor,
        args: Any = None,
        *,
        corrected: bool = True,
    ) -> torch.Tensor:
        """Step through the grid ``ts`` (one step per interval) from ``x`` at ``ts[0]``;
        returns the trajectory ``(len(ts), *x.shape)``, time first. ``corrected=False`` runs
        the base method alone (for comparison)."""
        ts_ = torch.as_tensor(ts, dtype=x.dtype, device=x.device)
        if ts_.ndim != 1 or ts_.numel() < 2:
            raise ValueError(f"HyperSolver: `ts` must be 1-D with >= 2 times, got {describe(ts)}.")
        self.nfe = 0
        f = self._f(args)
        out, y = [x], x
        for k in range(ts_.numel() - 1):
            t, h = ts_[k], ts_[k + 1] - ts_[k]
            y_next, dx = self._base_step(f, t, h, y)
            if corrected:
                y_next = y_next + h ** (self.order + 1) * self.correction(t, y, dx)
            y = y_next
            out.append(y)
        return torch.stack(out)

    def residual_loss(
        self, ts: Sequence[float] | torch.Tensor, ys: torch.Tensor, args: Any = None
    ) -> torch.Tensor:
        r"""The residual-fitting loss of Poli et al.: on a reference trajectory ``ys``
        (``(len(ts), batch, ...)``, accurate solutions at ``ts``),

        $$\frac1K\sum_k \Big\| \frac{x_{k+1} - x_k - h_k\psi(t_k, x_k)}{h_k^{p+1}} -
        g_\omega(t_k, x_k, \psi(t_k, x_k)) \Big\|^2,$$

        all steps evaluated at once (stacked along the batch)."""
        ts_ = torch.as_tensor(ts, dtype=ys.dtype, device=ys.device)
        if ts_.ndim != 1 or ys.shape[0] != ts_.numel() or ts_.numel() < 2:
            raise ValueError(
                f"HyperSolver.residual_loss: `ys` must be (len(ts), batch, ...) with "
                f"len(ts) >= 2, got ts {describe(ts)} and ys {describe(ys)}."
            )
        n, b = ts_.numel() - 1, ys.shape[1]
        t = ts_[:-1].repeat_interleave(b)
        h = ts_.diff().repeat_interleave(b)
        x0 = ys[:-1].reshape((n * b,) + tuple(ys.shape[2:]))
        x1 = ys[1:].reshape(x0.shape)
        with torch.no_grad():
            x1_base, dx = self._base_step(self._f(args), t, h, x0)
            target = (x1 - x1_base) / tn.broadcast_time(h, x0) ** (self.order + 1)
        return (self.correction(t, x0, dx) - target).pow(2).mean()
