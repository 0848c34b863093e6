"""Ralston's second-order method."""

from __future__ import annotations

from typing import ClassVar

from ..runge_kutta import AbstractRungeKutta
from ..tableau import ButcherTableau

__all__ = ["Ralston"]

_RALSTON_TABLEAU = ButcherTableau(
    a=[
        [2 / 3],
    ],
    b=[1 / 4, 3 / 4],
    c=[0.0, 2 / 3],
    order=2,
)


class Ralston(AbstractRungeKutta):
    r"""Ralston's second-order method ($c_2 = 2/3$).

    Order 2. No embedded error estimate, so fixed steps only. 2 stages, not FSAL. Dense
    output: cubic Hermite, order 2 (min(p, 3)). Explicit.

    Use it instead of :class:`Midpoint` or :class:`Heun` for fixed-step second-order
    integration: of the two-stage second-order methods it minimises the bound on the
    leading truncation-error coefficients, at the same cost.

    Reference:
        A. Ralston, "Runge–Kutta methods with minimum error bounds", *Mathematics of
        Computation* 16(80):431–437, 1962.
    """

    tableau: ClassVar[ButcherTableau] = _RALSTON_TABLEAU
