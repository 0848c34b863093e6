"""The three-stage Radau IIA collocation method, order 5."""

from __future__ import annotations

import math
from typing import ClassVar

from ..implicit import AbstractCollocation, CollocationTableau

__all__ = ["RadauIIA5"]

_r = math.sqrt(6)
_TABLEAU = CollocationTableau(
    a=[
        [11 / 45 - 7 * _r / 360, 37 / 225 - 169 * _r / 1800, -2 / 225 + _r / 75],
        [37 / 225 + 169 * _r / 1800, 11 / 45 + 7 * _r / 360, -2 / 225 - _r / 75],
        [4 / 9 - _r / 36, 4 / 9 + _r / 36, 1 / 9],
    ],
    b=[4 / 9 - _r / 36, 4 / 9 + _r / 36, 1 / 9],
    c=[2 / 5 - _r / 10, 2 / 5 + _r / 10, 1.0],
    order=5,
)


class RadauIIA5(AbstractCollocation):
    r"""The three-stage Radau IIA method (collocation at the Radau points
    $\tfrac25 \mp \tfrac{\sqrt6}{10}, 1$), the method of Hairer & Wanner's RADAU5.

    Order 5 ($2s - 1$); no error estimate (constant steps); three coupled implicit stages;
    dense output of order 3 (its collocation polynomial); implicit, A- and L-stable,
    stiffly accurate. For stiff problems at tight accuracy with constant steps (for
    adaptive stiff solves, :class:`~torchnde.Kvaerno5` or :class:`~torchnde.Rodas5`).
    Arguments as :class:`~torchnde._core.implicit.AbstractCollocation`.

    Reference: Hairer & Wanner, *Solving ODEs II*, Sec. IV.5, Table 5.6, and Sec. IV.8.
    """

    tableau: ClassVar[CollocationTableau] = _TABLEAU
