"""Tsitouras' 5(4) pair with its fourth-order interpolant."""

from __future__ import annotations

from typing import ClassVar

from ..runge_kutta import AbstractRungeKutta
from ..tableau import ButcherTableau

__all__ = ["Tsit5"]

# The coefficients are not rational: Tsitouras derives them numerically and publishes them
# as decimals, here to double precision. The pair is FSAL, so the last row of `a` is `b`.
_B = (
    0.09646076681806523,
    0.01,
    0.4798896504144996,
    1.379008574103742,
    -3.290069515436081,
    2.324710524099774,
)
# b_i - b̂_i for the embedded fourth-order solution b̂, with b̂_7 = 1/66 (Tsitouras, Table 1).
# The sign convention varies between sources (OrdinaryDiffEq's ``btilde`` is the negative);
# both b ∓ these weights are fourth order and give the same error estimate up to sign.
_B_MINUS_BHAT = (
    0.00178001105222577714,
    0.0008164344596567469,
    -0.007880878010261995,
    0.1447110071732629,
    -0.5823571654525552,
    0.45808210592918697,
    -1 / 66,
)

_TSIT5_TABLEAU = ButcherTableau(
    a=[
        [0.161],
        [-0.008480655492356989, 0.335480655492357],
        [2.8971530571054935, -6.359448489975075, 4.3622954328695815],
        [5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525],
        [
            5.86145544294642,
            -12.92096931784711,
            8.159367898576159,
            -0.071584973281401,
            -0.028269050394068383,
        ],
        list(_B),
    ],
    b=[*_B, 0.0],
    c=[0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0],
    order=5,
    b_error=[b - e for b, e in zip((*_B, 0.0), _B_MINUS_BHAT, strict=True)],
    error_order=5,
    # b_i(θ) = Σ_m b_dense[i][m] θ^(m+1): Tsitouras' interpolant in monomial form.
    b_dense=[
        [1.0, -2.763706197274826, 2.9132554618219126, -1.0530884977290216],
        [0.0, 0.1317, -0.2234, 0.1017],
        [0.0, 3.9302962368947516, -5.941033872131505, 2.490627285651253],
        [0.0, -12.411077166933676, 30.33818863028232, -16.548102889244902],
        [0.0, 37.50931341651104, -88.1789048947664, 47.37952196281928],
        [0.0, -27.896526289197286, 65.09189467479366, -34.87065786149661],
        [0.0, 1.5, -4.0, 2.5],
    ],
    dense_order=4,
    fsal=True,
)


class Tsit5(AbstractRungeKutta):
    r"""Tsitouras' 5(4) pair.

    Order 5, propagating the fifth-order solution. Embedded solution of order 4; the local
    error estimate is $O(h^5)$. 7 stages, first-same-as-last (FSAL), so 6 new evaluations
    per accepted step. Dense output: Tsitouras' interpolant, order 4, free of extra
    evaluations. Explicit.

    Use it where you would use :class:`Dopri5`: non-stiff problems at moderate tolerances.
    It drops the row simplifying assumptions Dormand–Prince rely on and, at the same cost,
    has smaller principal error coefficients, so it usually takes somewhat fewer steps.

    Reference:
        Ch. Tsitouras, "Runge–Kutta pairs of order 5(4) satisfying only the first column
        simplifying assumption", *Computers & Mathematics with Applications* 62(2):770–775,
        2011.
    """

    tableau: ClassVar[ButcherTableau] = _TSIT5_TABLEAU
