r"""Rößler's strong order 1.5 stochastic Runge–Kutta method SRI2 for diagonal and scalar noise."""

from __future__ import annotations

from typing import ClassVar

from ..srk import AbstractSRK, SRKTableau

__all__ = ["SRI2"]


class SRI2(AbstractSRK):
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

    # Rößler (2010), Table 5.2 ("SRI2W1"-family coefficients as used for diagonal noise).
    tableau: ClassVar[SRKTableau] = SRKTableau(
        c0=(0.0, 1.0, 0.5, 0.0),
        c1=(0.0, 0.25, 1.0, 0.25),
        a0=((), (1.0,), (0.25, 0.25), (0.0, 0.0, 0.0)),
        a1=((), (0.25,), (1.0, 0.0), (0.0, 0.0, 0.25)),
        b0=((), (0.0,), (1.0, 0.5), (0.0, 0.0, 0.0)),
        b1=((), (-0.5,), (1.0, 0.0), (2.0, -1.0, 0.5)),
        alpha=(1 / 6, 1 / 6, 2 / 3, 0.0),
        beta1=(-1.0, 4 / 3, 2 / 3, 0.0),
        beta2=(1.0, -4 / 3, 1 / 3, 0.0),
        beta3=(2.0, -4 / 3, -2 / 3, 0.0),
        beta4=(-2.0, 5 / 3, -2 / 3, 1.0),
    )
    strong_order: ClassVar[float] = 1.5
    calculus: ClassVar[str] = "ito"
    noise_types: ClassVar[tuple[str, ...]] = ("diagonal", "scalar")
