r"""Rößler's strong order 1.5 stochastic Runge–Kutta method SRI2 for diagonal and scalar noise."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..sde import AbstractSDESolver
from ..terms import ControlTerm, ODETerm, broadcast_time

__all__ = ["SRI2"]

# The SRI2 tableau (Rößler 2010, Table 5.2 "SRI2W1"-family coefficients as used for
# diagonal noise): stage times c0 (drift) and c1 (diffusion), stage matrices A0, A1
# (drift) and B0, B1 (diffusion), and the weights of the update.
_C0 = (0.0, 1.0, 0.5, 0.0)
_C1 = (0.0, 0.25, 1.0, 0.25)
_A0 = ((), (1.0,), (0.25, 0.25), (0.0, 0.0, 0.0))
_A1 = ((), (0.25,), (1.0, 0.0), (0.0, 0.0, 0.25))
_B0 = ((), (0.0,), (1.0, 0.5), (0.0, 0.0, 0.0))
_B1 = ((), (-0.5,), (1.0, 0.0), (2.0, -1.0, 0.5))
_ALPHA = (1 / 6, 1 / 6, 2 / 3, 0.0)
_BETA1 = (-1.0, 4 / 3, 2 / 3, 0.0)
_BETA2 = (1.0, -4 / 3, 1 / 3, 0.0)
_BETA3 = (2.0, -4 / 3, -2 / 3, 0.0)
_BETA4 = (-2.0, 5 / 3, -2 / 3, 1.0)


class SRI2(AbstractSDESolver):
    r"""Rößler's SRI2: a stochastic Runge–Kutta method of strong order 1.5 for Itô SDEs with
    diagonal or scalar noise.

    Four stages: drift stages $H^{(0)}_i = y_n + \sum_j A^{(0)}_{ij} f_j h +
    \sum_j B^{(0)}_{ij} g_j I_{(1,0)}/h$ and diffusion stages $H^{(1)}_i = y_n +
    \sum_j A^{(1)}_{ij} f_j h + \sum_j B^{(1)}_{ij} g_j \sqrt h$, combined as

    $$ y_{n+1} = y_n + \sum_i \alpha_i f_i h + \sum_i g_i \Big(\beta^{(1)}_i I_{(1)}
       + \beta^{(2)}_i \frac{I_{(1,1)}}{\sqrt h} + \beta^{(3)}_i \frac{I_{(1,0)}}{h}
       + \beta^{(4)}_i \frac{I_{(1,1,1)}}{h}\Big), $$

    with the iterated integrals $I_{(1)} = \Delta W$, $I_{(1,1)} = (\Delta W^2 - h)/2$,
    $I_{(1,1,1)} = (\Delta W^3 - 3h\Delta W)/6$ and $I_{(1,0)} = h(\Delta W/2 + H)$ from the
    space-time Lévy area $H$ of the Brownian motion (which must provide it).

    Strong order 1.5 (diagonal noise with $g_i$ depending on $y_i$ only, or scalar noise).
    No embedded error estimate (``adaptive=True`` estimates it by step doubling). Three drift
    and four diffusion evaluations per step. Dense output: linear. Explicit. Itô.

    Use it when pathwise accuracy matters with multiplicative diagonal or scalar noise: at a
    given accuracy it takes far fewer steps than Euler–Maruyama or Milstein.

    Reference:
        A. Rößler, "Runge–Kutta methods for the strong approximation of solutions of
        stochastic differential equations", SIAM J. Numer. Anal. 48 (2010) 922–952.
    """

    strong_order: ClassVar[float] = 1.5
    calculus: ClassVar[str] = "ito"
    noise_types: ClassVar[tuple[str, ...]] = ("diagonal", "scalar")
    num_fevals_step: ClassVar[int] = 7
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
        hw = broadcast_time(h, dw)
        sqrt_h = hw.sqrt()
        i_k0_h = 0.5 * dw + area  # I_(1,0) / h
        i_kk = 0.5 * (dw * dw - hw)
        i_kkk = (dw * dw - 3 * hw) * dw / 6
        hy = broadcast_time(h, y0)
        prod = diffusion.prod
        f_h: list[torch.Tensor] = []  # f(H0_j) h
        g: list[torch.Tensor] = []  # g(H1_j)
        y1 = y0
        for s in range(4):
            h0 = h1 = y0
            for j in range(s):
                if _A0[s][j]:
                    h0 = h0 + _A0[s][j] * f_h[j]
                if _B0[s][j]:
                    h0 = h0 + prod(g[j], _B0[s][j] * i_k0_h)
                if _A1[s][j]:
                    h1 = h1 + _A1[s][j] * f_h[j]
                if _B1[s][j]:
                    h1 = h1 + prod(g[j], _B1[s][j] * sqrt_h)
            if s < 3:  # the last stage's drift has weight 0 and feeds no later stage
                if drift is not None:
                    f_h.append(drift.vf(t0 + _C0[s] * h, h0, args) * hy)
                else:
                    f_h.append(torch.zeros_like(y0))
                y1 = y1 + _ALPHA[s] * f_h[s]
            g.append(diffusion.vf(t0 + _C1[s] * h, h1, args))
            weight = (
                _BETA1[s] * dw + _BETA2[s] * i_kk / sqrt_h + _BETA3[s] * i_k0_h
                + _BETA4[s] * i_kkk / hw
            )  # fmt: skip
            y1 = y1 + prod(g[s], weight)
        return y1
