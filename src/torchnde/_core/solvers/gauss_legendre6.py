"""The three-stage Gauss–Legendre collocation method, order 6."""

from __future__ import annotations

import math
from typing import ClassVar

from ..implicit import AbstractCollocation, CollocationTableau

__all__ = ["GaussLegendre6"]

_r = math.sqrt(15)
_TABLEAU = CollocationTableau(
    a=[
        [5 / 36, 2 / 9 - _r / 15, 5 / 36 - _r / 30],
        [5 / 36 + _r / 24, 2 / 9, 5 / 36 - _r / 24],
        [5 / 36 + _r / 30, 2 / 9 + _r / 15, 5 / 36],
    ],
    b=[5 / 18, 4 / 9, 5 / 18],
    c=[1 / 2 - _r / 10, 1 / 2, 1 / 2 + _r / 10],
    order=6,
)


class GaussLegendre6(AbstractCollocation):
    r"""The three-stage Gauss–Legendre method (collocation at the Gauss points
    $\tfrac12 - \tfrac{\sqrt{15}}{10}, \tfrac12, \tfrac12 + \tfrac{\sqrt{15}}{10}$).

    Order 6 (superconvergent: $2s$); no error estimate (constant steps); three coupled
    implicit stages; dense output of order 3 (its collocation polynomial); implicit,
    A-stable but not L-stable, symplectic and symmetric. For smooth Hamiltonian or
    oscillatory problems at tight accuracy with few, large steps. Arguments as
    :class:`~torchnde._core.implicit.AbstractCollocation`.

    Reference: J. C. Butcher, "Implicit Runge–Kutta processes", *Math. Comp.* 18 (1964),
    50–64; Hairer & Wanner, *Solving ODEs II*, Sec. IV.5, Table 5.2.
    """

    tableau: ClassVar[CollocationTableau] = _TABLEAU
