r"""The Euler–Maruyama method (Maruyama 1955)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..sde import AbstractSDESolver
from ..terms import ControlTerm, ODETerm, broadcast_time

__all__ = ["EulerMaruyama"]


class EulerMaruyama(AbstractSDESolver):
    r"""The Euler–Maruyama method for Itô SDEs,

    $$ y_{n+1} = y_n + f(t_n, y_n)\,h + g(t_n, y_n)\,\Delta W_n. $$

    Strong order 0.5 (1.0 for additive noise), weak order 1. No embedded error estimate
    (``adaptive=True`` estimates it by step doubling). One drift and one diffusion evaluation
    per step. Dense output: linear. Explicit. Itô. Every noise type.

    The cheapest method per step and the only general-noise Itô method here; use it for
    general (non-commuting) noise, for weak (distributional) accuracy, and as a baseline.
    Applied to an SDE in the control formulation, :class:`Euler` takes the same steps.

    Reference:
        G. Maruyama, "Continuous Markov processes and stochastic equations", Rendiconti del
        Circolo Matematico di Palermo 4 (1955) 48–90. P. E. Kloeden and E. Platen, *Numerical
        Solution of Stochastic Differential Equations*, Springer, 1992, Sec. 10.2.
    """

    strong_order: ClassVar[float] = 0.5
    calculus: ClassVar[str] = "ito"
    noise_types: ClassVar[tuple[str, ...]] = ("diagonal", "scalar", "additive", "general")
    num_fevals_step: ClassVar[int] = 2

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
        g = diffusion.vf(t0, y0, args)
        if drift is None:
            return y0 + diffusion.prod(g, dw)
        h = broadcast_time(t1 - t0, y0)
        y_drift = torch.addcmul(y0, drift.vf(t0, y0, args), h)
        if diffusion.noise == "diagonal":
            return torch.addcmul(y_drift, g, dw)
        return y_drift + diffusion.prod(g, dw)
