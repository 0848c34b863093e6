"""Fehlberg's Runge–Kutta–Fehlberg 2(1) pair."""

from __future__ import annotations

from typing import ClassVar

from ..runge_kutta import AbstractRungeKutta
from ..tableau import ButcherTableau

__all__ = ["Fehlberg2"]

_FEHLBERG2_TABLEAU = ButcherTableau(
    a=[
        [1 / 2],
        [1 / 256, 255 / 256],
    ],
    b=[1 / 512, 255 / 256, 1 / 512],
    c=[0.0, 1 / 2, 1.0],
    order=2,
    b_error=[1 / 256, 255 / 256, 0.0],
    error_order=2,
)


class Fehlberg2(AbstractRungeKutta):
    r"""The Runge–Kutta–Fehlberg 2(1) pair, propagating the second-order solution.

    Order 2. Embedded solution of order 1; the local error estimate is $O(h^2)$. 3 stages,
    not FSAL (the last stage is evaluated at the embedded first-order solution, not at
    $y_1$). Dense output: cubic Hermite, order 2 (min(p, 3)). Explicit.

    Use it as a cheap adaptive method at loose tolerances, where its tiny error constant
    lets it take larger steps than :class:`Heun` (torchdiffeq's ``fehlberg2``).

    Reference:
        E. Fehlberg, "Low-order classical Runge–Kutta formulas with stepsize control and
        their application to some heat transfer problems", NASA Technical Report R-315,
        1969.
    """

    tableau: ClassVar[ButcherTableau] = _FEHLBERG2_TABLEAU
