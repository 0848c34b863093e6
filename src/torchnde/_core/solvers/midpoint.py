"""The explicit midpoint method (Runge's second-order method)."""

from __future__ import annotations

from typing import ClassVar

from ..runge_kutta import AbstractRungeKutta
from ..tableau import ButcherTableau

__all__ = ["Midpoint"]

_MIDPOINT_TABLEAU = ButcherTableau(
    a=[
        [1 / 2],
    ],
    b=[0.0, 1.0],
    c=[0.0, 1 / 2],
    order=2,
)


class Midpoint(AbstractRungeKutta):
    r"""The explicit midpoint method.

    $$k_1 = f(t_0, y_0),\quad k_2 = f\big(t_0 + \tfrac h2,\, y_0 + \tfrac h2 k_1\big),\quad
    y_1 = y_0 + h k_2 .$$

    Order 2. No embedded error estimate, so fixed steps only. 2 stages, not FSAL. Dense
    output: cubic Hermite, order 2 (min(p, 3)). Explicit.

    Use it as a cheap fixed-step second-order method, e.g. when training with a fixed grid
    where two evaluations per step are affordable but four (RK4) are not.

    Reference:
        C. Runge, "Über die numerische Auflösung von Differentialgleichungen",
        *Mathematische Annalen* 46:167–178, 1895.
    """

    tableau: ClassVar[ButcherTableau] = _MIDPOINT_TABLEAU
