"""Alexander's two-stage SDIRK method, order 2."""

from __future__ import annotations

import math
from typing import ClassVar

from ..implicit import AbstractESDIRK, ESDIRKTableau

__all__ = ["SDIRK2"]

# γ = 1 - 1/√2 makes the method L-stable. The explicit first stage of the ESDIRK layout has
# weight zero: the method is really two implicit stages at c = γ, 1 (torchdiffeq's "sdirk2").
_g = 1 - math.sqrt(2) / 2
_TABLEAU = ESDIRKTableau(
    a=[[0.0, _g], [0.0, 1 - _g, _g]],
    c=[0.0, _g, 1.0],
    # Embedded first order: y0 + h f(t1, y1), so the error is h (1 - γ) (f(z1) - f(y1)).
    b_embedded=[0.0, 0.0, 1.0],
    order=2,
    error_order=2,
)


class SDIRK2(AbstractESDIRK):
    r"""Alexander's two-stage singly diagonally implicit Runge–Kutta method, $\gamma = 1 -
    \tfrac1{\sqrt2}$.

    Order 2; embedded order 1 (error order 2); two implicit stages (the first-same-as-last
    vector field is carried but has weight zero); cubic Hermite dense output; implicit, A-
    and L-stable, stiffly accurate. For stiff problems at loose tolerances where implicit
    Euler is too inaccurate; a cheap robust choice with constant steps. Arguments as
    :class:`~torchnde._core.implicit.AbstractESDIRK`.

    Reference: R. Alexander, "Diagonally implicit Runge–Kutta methods for stiff O.D.E.'s",
    *SIAM J. Numer. Anal.* 14 (1977), 1006–1021; Hairer & Wanner, *Solving ODEs II*,
    Sec. IV.6.
    """

    tableau: ClassVar[ESDIRKTableau] = _TABLEAU
