r"""Rößler's strong order 1.5 stochastic Runge–Kutta method SRA1 for additive noise."""

from __future__ import annotations

from typing import ClassVar

from ..srk import AbstractSRK, SRKTableau

__all__ = ["SRA1"]


class SRA1(AbstractSRK):
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

    Its tableau in Rößler's SRI form: ``c0 = (0, 3/4)``, ``c1 = (1, 0)``, ``A0 = [[], [3/4]]``,
    ``B0 = [[], [3/2]]``, ``alpha = (1/3, 2/3)``, the weights of $\Delta W$ ``(1, 0)`` and of
    $I_{(1,0)}/h$ ``(-1, 1)`` (see :mod:`torchnde._core.srk`).

    Use it for additive-noise problems (Ornstein–Uhlenbeck-type, Langevin dynamics with
    constant temperature, score-based diffusion samplers with state-independent noise).

    Reference:
        A. Rößler, "Runge–Kutta methods for the strong approximation of solutions of
        stochastic differential equations", SIAM J. Numer. Anal. 48 (2010) 922–952.
    """

    tableau: ClassVar[SRKTableau] = SRKTableau(
        c0=(0.0, 0.75),
        c1=(1.0, 0.0),
        a0=((), (0.75,)),
        b0=((), (1.5,)),
        alpha=(1 / 3, 2 / 3),
        beta1=(1.0, 0.0),
        beta3=(-1.0, 1.0),  # SRA's beta^(2), the weights of I_(1,0)/h
    )
    strong_order: ClassVar[float] = 1.5
    calculus: ClassVar[str] = "both"
    noise_types: ClassVar[tuple[str, ...]] = ("additive",)
