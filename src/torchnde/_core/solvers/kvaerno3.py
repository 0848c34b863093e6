"""Kværnø's ESDIRK 3(2)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..implicit import AbstractESDIRK, ESDIRKTableau

__all__ = ["Kvaerno3"]

# γ is the root in (0, 1/2) of 6γ³ - 18γ² + 9γ - 1 = 0 (L-stability of the 3rd-order method).
_g = float(min(r.real for r in np.roots([6, -18, 9, -1]) if abs(r.imag) < 1e-12 and r.real > 0.3))
_a31 = (-4 * _g**2 + 6 * _g - 1) / (4 * _g)
_a32 = (-2 * _g + 1) / (4 * _g)
_a41 = (6 * _g - 1) / (12 * _g)
_a42 = -1 / ((24 * _g - 12) * _g)
_a43 = (-6 * _g**2 + 6 * _g - 1) / (6 * _g - 3)

_TABLEAU = ESDIRKTableau(
    a=[[_g, _g], [_a31, _a32, _g], [_a41, _a42, _a43, _g]],
    c=[0.0, 2 * _g, 1.0, 1.0],
    # The embedded 2nd-order solution is the third stage (also at t1).
    b_embedded=[_a31, _a32, _g, 0.0],
    order=3,
    error_order=3,
)


class Kvaerno3(AbstractESDIRK):
    r"""Kværnø's ESDIRK 3(2) method.

    Order 3; embedded order 2 (error order 3); 4 stages (3 implicit), first same as last;
    cubic Hermite dense output; implicit, A- and L-stable, stiffly accurate. For stiff
    problems at moderate tolerances (about 1e-3 to 1e-6). Arguments as
    :class:`~torchnde._core.implicit.AbstractESDIRK`.

    Reference: A. Kværnø, "Singly diagonally implicit Runge–Kutta methods with an explicit
    first stage", *BIT Numerical Mathematics* 44 (2004), 489–502.
    """

    tableau: ClassVar[ESDIRKTableau] = _TABLEAU
