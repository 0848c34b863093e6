r"""Rößler's strong order 1.5 stochastic Runge–Kutta method SRA1 for additive noise."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..sde import AbstractSDESolver
from ..terms import ControlTerm, ODETerm, broadcast_time

__all__ = ["SRA1"]


class SRA1(AbstractSDESolver):
    r"""Rößler's SRA1: a stochastic Runge–Kutta method of strong order 1.5 for SDEs with
    additive noise, $dy = f(t, y)\,dt + g(t)\,dW$.

    With $I_{(1,0)}/h = \Delta W/2 + H$ from the space-time Lévy area $H$,

    $$ \begin{aligned}
       f_0 &= f(t_n, y_n), \qquad
       H_1 = y_n + \tfrac34 f_0 h + \tfrac32\, g(t_{n+1})\, I_{(1,0)}/h, \\
       y_{n+1} &= y_n + \big(\tfrac13 f_0 + \tfrac23 f(t_n + \tfrac34 h, H_1)\big) h
         + g(t_{n+1}) \big(\Delta W - I_{(1,0)}/h\big) + g(t_n)\, I_{(1,0)}/h.
       \end{aligned} $$

    Strong order 1.5 (weak order 2). No embedded error estimate (``adaptive=True`` estimates
    it by step doubling). Two drift and two diffusion evaluations per step. Dense output:
    linear. Explicit. Itô and Stratonovich alike (they coincide for additive noise).
    Additive noise only; the Brownian motion must provide the space-time Lévy area.

    Use it for additive-noise problems (Ornstein–Uhlenbeck-type, Langevin dynamics with
    constant temperature, score-based diffusion samplers with state-independent noise).

    Reference:
        A. Rößler, "Runge–Kutta methods for the strong approximation of solutions of
        stochastic differential equations", SIAM J. Numer. Anal. 48 (2010) 922–952.
    """

    strong_order: ClassVar[float] = 1.5
    calculus: ClassVar[str] = "both"
    noise_types: ClassVar[tuple[str, ...]] = ("additive",)
    num_fevals_step: ClassVar[int] = 4
    levy_area: ClassVar[str | None] = "space-time"

    def _step(
        self,
        drift: ODETerm | None,
        diffusion: ControlTerm,
        t0: torch.Tensor,
        t1: torch.Tensor,
        y0: torch.Tensor,
        args: Any,
    ) -> torch.Tensor:
        h = t1 - t0
        dw, area = diffusion.contr_levy(t0, t1)
        i_k0_h = 0.5 * dw + area
        g0 = diffusion.vf(t0, y0, args)
        g1 = diffusion.vf(t1, y0, args)
        prod = diffusion.prod
        noise = prod(g1, dw - i_k0_h) + prod(g0, i_k0_h)
        if drift is None:
            return y0 + noise
        hy = broadcast_time(h, y0)
        f0 = drift.vf(t0, y0, args)
        h1 = y0 + 0.75 * f0 * hy + prod(g1, 1.5 * i_k0_h)
        f1 = drift.vf(t0 + 0.75 * h, h1, args)
        return y0 + (f0 / 3 + (2 / 3) * f1) * hy + noise
