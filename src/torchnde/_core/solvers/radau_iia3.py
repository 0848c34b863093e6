"""The two-stage Radau IIA collocation method, order 3."""

from __future__ import annotations

from typing import ClassVar

from ..implicit import AbstractCollocation, CollocationTableau

__all__ = ["RadauIIA3"]

_TABLEAU = CollocationTableau(
    a=[[5 / 12, -1 / 12], [3 / 4, 1 / 4]], b=[3 / 4, 1 / 4], c=[1 / 3, 1.0], order=3
)


class RadauIIA3(AbstractCollocation):
    r"""The two-stage Radau IIA method (collocation at the Radau points $\tfrac13, 1$).

    Order 3 ($2s - 1$); no error estimate (constant steps); two coupled implicit stages;
    dense output of order 2 (its collocation polynomial); implicit, A- and L-stable,
    stiffly accurate ($y_1$ is the last stage). For stiff problems at moderate accuracy
    with constant steps. Arguments as :class:`~torchnde._core.implicit.AbstractCollocation`.

    Reference: Hairer & Wanner, *Solving ODEs II*, Sec. IV.5, Table 5.5; O. Axelsson,
    "A class of A-stable methods", *BIT* 9 (1969), 185–199.
    """

    tableau: ClassVar[CollocationTableau] = _TABLEAU
