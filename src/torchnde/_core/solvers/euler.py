"""The explicit (forward) Euler method."""

from __future__ import annotations

from typing import ClassVar

from ..runge_kutta import AbstractRungeKutta
from ..tableau import ButcherTableau

__all__ = ["Euler"]

_EULER_TABLEAU = ButcherTableau(
    a=[],
    b=[1.0],
    c=[0.0],
    order=1,
)


class Euler(AbstractRungeKutta):
    r"""The explicit Euler method, $y_1 = y_0 + h f(t_0, y_0)$.

    Order 1. No embedded error estimate, so fixed steps only. 1 stage, not FSAL. Dense
    output: cubic Hermite, order 1 (min(p, 3)). Explicit.

    Use it for debugging, for baselines, or when the vector field is so cheap and the step so
    small that accuracy per evaluation does not matter; for anything else a higher-order
    method reaches the same error with far fewer evaluations.

    Reference:
        L. Euler, *Institutionum calculi integralis*, vol. 1, St. Petersburg, 1768.
        See also E. Hairer, S. P. Nørsett and G. Wanner, *Solving Ordinary Differential
        Equations I*, 2nd ed., Springer, 1993, Sec. I.7.
    """

    tableau: ClassVar[ButcherTableau] = _EULER_TABLEAU
