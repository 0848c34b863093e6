"""Kutta's fourth-order 3/8 rule."""

from __future__ import annotations

from typing import ClassVar

from ..runge_kutta import AbstractRungeKutta
from ..tableau import ButcherTableau

__all__ = ["RK38"]

_RK38_TABLEAU = ButcherTableau(
    a=[
        [1 / 3],
        [-1 / 3, 1.0],
        [1.0, -1.0, 1.0],
    ],
    b=[1 / 8, 3 / 8, 3 / 8, 1 / 8],
    c=[0.0, 1 / 3, 2 / 3, 1.0],
    order=4,
)


class RK38(AbstractRungeKutta):
    r"""Kutta's 3/8 rule, the fourth-order method with weights $(1, 3, 3, 1)/8$.

    Order 4. No embedded error estimate, so fixed steps only. 4 stages, not FSAL. Dense
    output: cubic Hermite, order 3 (min(p, 3)). Explicit.

    Use it as a fixed-step alternative to :class:`RK4`: same cost and order, with distinct
    nodes $(0, 1/3, 2/3, 1)$ and usually slightly smaller error constants (torchdiffeq's
    ``rk4`` is this rule).

    Reference:
        W. Kutta, "Beitrag zur näherungsweisen Integration totaler
        Differentialgleichungen", *Zeitschrift für Mathematik und Physik* 46:435–453, 1901.
    """

    tableau: ClassVar[ButcherTableau] = _RK38_TABLEAU
