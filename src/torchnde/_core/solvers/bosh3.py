"""The Bogacki–Shampine 3(2) pair."""

from __future__ import annotations

from typing import ClassVar

from ..runge_kutta import AbstractRungeKutta
from ..tableau import ButcherTableau

__all__ = ["Bosh3"]

_BOSH3_TABLEAU = ButcherTableau(
    a=[
        [1 / 2],
        [0.0, 3 / 4],
        [2 / 9, 1 / 3, 4 / 9],
    ],
    b=[2 / 9, 1 / 3, 4 / 9, 0.0],
    c=[0.0, 1 / 2, 3 / 4, 1.0],
    order=3,
    b_error=[7 / 24, 1 / 4, 1 / 3, 1 / 8],
    error_order=3,
    fsal=True,
)


class Bosh3(AbstractRungeKutta):
    r"""The Bogacki–Shampine 3(2) pair (MATLAB's ``ode23``, SciPy's ``RK23``).

    Order 3. Embedded solution of order 2; the local error estimate is $O(h^3)$. 4 stages,
    first-same-as-last (FSAL), so 3 new evaluations per accepted step. Dense output: cubic
    Hermite, order 3 (min(p, 3)). Explicit.

    Use it for non-stiff problems at loose tolerances (about 1e-2 to 1e-4), or when the
    vector field is rough enough that higher-order methods cannot take larger steps.

    Reference:
        P. Bogacki and L. F. Shampine, "A 3(2) pair of Runge–Kutta formulas", *Applied
        Mathematics Letters* 2(4):321–325, 1989.
    """

    tableau: ClassVar[ButcherTableau] = _BOSH3_TABLEAU
