r"""The midpoint method for Stratonovich SDEs as an SDE solver (step-doubling error estimate).

torchsde's ``method="midpoint"`` with ``adaptive=True`` (``torchnde.compat.torchsde`` uses it):
torchnde's :class:`~torchnde.Midpoint` (a Runge–Kutta method without an embedded error
estimate) gives the fixed-step solution; this class computes the same step and takes
:class:`~torchnde.AbstractSDESolver`'s step-doubling error estimate, as torchsde does for every
method. Not exported: ``Midpoint`` is the method users reach for.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..sde import AbstractSDESolver
from ..terms import ControlTerm, ODETerm, broadcast_time

__all__ = ["SDEMidpoint"]


class SDEMidpoint(AbstractSDESolver):
    r"""The midpoint method for Stratonovich SDEs,

    $$ \tilde y = y_n + \tfrac12\big(f(t_n, y_n)\,h + g(t_n, y_n)\,\Delta W_n\big),\qquad
       y_{n+1} = y_n + f(t_n + \tfrac h2, \tilde y)\,h + g(t_n + \tfrac h2, \tilde y)\,\Delta W_n.
    $$

    Strong order 0.5 (1.0 for commutative noise). Two drift and two diffusion evaluations
    per step. Stratonovich; every noise type.

    Reference:
        P. E. Kloeden and E. Platen, *Numerical Solution of Stochastic Differential
        Equations*, Springer, 1992; the form used by torchsde's ``midpoint``.
    """

    strong_order: ClassVar[float] = 0.5
    calculus: ClassVar[str] = "stratonovich"
    noise_types: ClassVar[tuple[str, ...]] = ("diagonal", "scalar", "additive", "general")
    num_fevals_step: ClassVar[int] = 4

    def _step(
        self,
        drift: ODETerm | None,
        diffusion: ControlTerm,
        t0: torch.Tensor,
        t1: torch.Tensor,
        y0: torch.Tensor,
        args: Any,
    ) -> torch.Tensor:
        dw = diffusion.contr(t0, t1)
        h = broadcast_time(t1 - t0, y0)
        tm = t0 + 0.5 * (t1 - t0)
        y_mid = y0 + 0.5 * diffusion.prod(diffusion.vf(t0, y0, args), dw)
        if drift is not None:
            y_mid = torch.addcmul(y_mid, drift.vf(t0, y0, args), 0.5 * h)
        y1 = y0 + diffusion.prod(diffusion.vf(tm, y_mid, args), dw)
        if drift is not None:
            y1 = torch.addcmul(y1, drift.vf(tm, y_mid, args), h)
        return y1
