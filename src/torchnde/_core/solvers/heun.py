"""Heun's method (explicit trapezoidal rule) with an embedded Euler error estimate."""

from __future__ import annotations

from typing import ClassVar

from ..runge_kutta import AbstractRungeKutta
from ..tableau import ButcherTableau

__all__ = ["Heun"]

_HEUN_TABLEAU = ButcherTableau(
    a=[
        [1.0],
    ],
    b=[1 / 2, 1 / 2],
    c=[0.0, 1.0],
    order=2,
    b_error=[1.0, 0.0],
    error_order=2,
)


class Heun(AbstractRungeKutta):
    r"""Heun's method (the explicit trapezoidal rule), adaptive via an embedded Euler step.

    $$k_1 = f(t_0, y_0),\quad k_2 = f(t_0 + h,\, y_0 + h k_1),\quad
    y_1 = y_0 + \tfrac h2 (k_1 + k_2),\quad \hat y_1 = y_0 + h k_1 .$$

    Order 2. Embedded solution of order 1 (forward Euler); the local error estimate is
    $O(h^2)$. 2 stages, not FSAL. Dense output: cubic Hermite, order 2 (min(p, 3)). Explicit.

    Use it as the cheapest adaptive method, for smooth problems at loose tolerances where
    step-size control matters more than accuracy per step (``adaptive_heun`` / ``heun2`` in
    torchdiffeq). Without a controller it is the classical fixed-step Heun method.

    Reference:
        K. Heun, "Neue Methoden zur approximativen Integration der Differentialgleichungen
        einer unabhängigen Veränderlichen", *Zeitschrift für Mathematik und Physik*
        45:23–38, 1900.
    """

    tableau: ClassVar[ButcherTableau] = _HEUN_TABLEAU
