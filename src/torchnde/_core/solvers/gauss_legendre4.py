"""The two-stage Gauss–Legendre collocation method, order 4."""

from __future__ import annotations

import math
from typing import ClassVar

from ..implicit import AbstractCollocation, CollocationTableau

__all__ = ["GaussLegendre4"]

_r = math.sqrt(3) / 6
_TABLEAU = CollocationTableau(
    a=[[1 / 4, 1 / 4 - _r], [1 / 4 + _r, 1 / 4]],
    b=[1 / 2, 1 / 2],
    c=[1 / 2 - _r, 1 / 2 + _r],
    order=4,
)


class GaussLegendre4(AbstractCollocation):
    r"""The two-stage Gauss–Legendre method (collocation at the Gauss points
    $\tfrac12 \mp \tfrac{\sqrt3}6$).

    Order 4 (superconvergent: $2s$); no error estimate (constant steps); two coupled
    implicit stages; dense output of order 2 (its collocation polynomial); implicit,
    A-stable but not L-stable ($|R(-\infty)| = 1$), symplectic and symmetric. For
    Hamiltonian and oscillatory problems where high order and no numerical damping
    matter. Arguments as :class:`~torchnde._core.implicit.AbstractCollocation`.

    Reference: J. C. Butcher, "Implicit Runge–Kutta processes", *Math. Comp.* 18 (1964),
    50–64; Hairer & Wanner, *Solving ODEs II*, Sec. IV.5, Table 5.1.
    """

    tableau: ClassVar[CollocationTableau] = _TABLEAU
