"""The classical fourth-order Runge–Kutta method."""

from __future__ import annotations

from typing import ClassVar

from ..runge_kutta import AbstractRungeKutta
from ..tableau import ButcherTableau

__all__ = ["RK4"]

_RK4_TABLEAU = ButcherTableau(
    a=[
        [1 / 2],
        [0.0, 1 / 2],
        [0.0, 0.0, 1.0],
    ],
    b=[1 / 6, 1 / 3, 1 / 3, 1 / 6],
    c=[0.0, 1 / 2, 1 / 2, 1.0],
    order=4,
)


class RK4(AbstractRungeKutta):
    r"""The classical Runge–Kutta method ("RK4").

    Order 4. No embedded error estimate, so fixed steps only. 4 stages, not FSAL. Dense
    output: cubic Hermite, order 3 (min(p, 3)). Explicit.

    Use it for fixed-step integration of smooth non-stiff problems, e.g. training a neural
    ODE on a fixed grid where a predictable cost per step matters more than adaptivity.

    Reference:
        W. Kutta, "Beitrag zur näherungsweisen Integration totaler
        Differentialgleichungen", *Zeitschrift für Mathematik und Physik* 46:435–453, 1901.
    """

    tableau: ClassVar[ButcherTableau] = _RK4_TABLEAU
    # Each step is y0 + (combination of stages): a non-finite state stays non-finite, so a
    # fixed-step solve checks finiteness once per block of steps (``_core/fixed.py``).
    nonfinite_persists: ClassVar[bool] = True
