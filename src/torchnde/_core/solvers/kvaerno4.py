"""Kværnø's ESDIRK 4(3)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..implicit import AbstractESDIRK, ESDIRKTableau

__all__ = ["Kvaerno4"]

# γ makes the 4th-order method L-stable (R(∞) = 0); Kværnø gives 0.5728160625, here to
# double precision.
_g = 0.57281606248213485515


def _p(*coeffs: float) -> float:
    return float(np.polyval(coeffs, _g))


_a31 = _p(144, -180, 81, -15, 1) * _g / _p(12, -6, 1) ** 2
_a32 = _p(-36, 39, -15, 2) * _g / _p(12, -6, 1) ** 2
_a41 = _p(-144, 396, -330, 117, -18, 1) / (12 * _g**2 * _p(12, -9, 2))
_a42 = _p(72, -126, 69, -15, 1) / (12 * _g**2 * _p(3, -1))
_a43 = (_p(-6, 6, -1) * _p(12, -6, 1) ** 2) / (12 * _g**2 * _p(12, -9, 2) * _p(3, -1))
_a51 = _p(288, -312, 120, -18, 1) / (48 * _g**2 * _p(12, -9, 2))
_a52 = _p(24, -12, 1) / (48 * _g**2 * _p(3, -1))
_a53 = -(_p(12, -6, 1) ** 3) / (48 * _g**2 * _p(3, -1) * _p(12, -9, 2) * _p(6, -6, 1))
_a54 = _p(-24, 36, -12, 1) / _p(24, -24, 4)

_TABLEAU = ESDIRKTableau(
    a=[
        [_g, _g],
        [_a31, _a32, _g],
        [_a41, _a42, _a43, _g],
        [_a51, _a52, _a53, _a54, _g],
    ],
    c=[0.0, 2 * _g, _a31 + _a32 + _g, 1.0, 1.0],
    # The embedded 3rd-order solution is the fourth stage (also at t1).
    b_embedded=[_a41, _a42, _a43, _g, 0.0],
    order=4,
    error_order=4,
)


class Kvaerno4(AbstractESDIRK):
    r"""Kværnø's ESDIRK 4(3) method.

    Order 4; embedded order 3 (error order 4); 5 stages (4 implicit), first same as last;
    cubic Hermite dense output; implicit, A- and L-stable, stiffly accurate. One stage is
    evaluated slightly past the step's end (``c_1 = 2γ ≈ 1.15``). For stiff problems at
    moderate to tight tolerances. Arguments as
    :class:`~torchnde._core.implicit.AbstractESDIRK`.

    Reference: A. Kværnø, "Singly diagonally implicit Runge–Kutta methods with an explicit
    first stage", *BIT Numerical Mathematics* 44 (2004), 489–502.
    """

    tableau: ClassVar[ESDIRKTableau] = _TABLEAU
