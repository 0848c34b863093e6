"""TR-BDF2: a trapezoidal stage followed by a BDF2 stage, order 2."""

from __future__ import annotations

import math
from typing import ClassVar

from ..implicit import AbstractESDIRK, ESDIRKTableau

__all__ = ["TRBDF2"]

# γ = 2 - √2 over 2 (the trapezoidal stage ends at c = 2γ), weights β = √2/4, as an ESDIRK.
_g = 1 - math.sqrt(2) / 2
_w = math.sqrt(2) / 4
_TABLEAU = ESDIRKTableau(
    a=[[_g, _g], [_w, _w, _g]],
    c=[0.0, 2 * _g, 1.0],
    # Hosea & Shampine's third-order companion.
    b_embedded=[(1 - _w) / 3, (3 * _w + 1) / 3, _g / 3],
    order=2,
    error_order=3,
)


class TRBDF2(AbstractESDIRK):
    r"""TR-BDF2: the trapezoidal rule to $t_0 + 2\gamma h$, then BDF2 to $t_1$, written as
    an ESDIRK with $\gamma = 1 - \tfrac1{\sqrt2}$.

    Order 2; embedded order 3 (error order 3); three stages (two implicit), first same as
    last; cubic Hermite dense output; implicit, A- and L-stable, stiffly accurate. For stiff
    problems at loose tolerances (circuit and reaction problems, where it is a classic).
    Arguments as :class:`~torchnde._core.implicit.AbstractESDIRK`.

    Reference: R. E. Bank et al., "Transient simulation of silicon devices and circuits",
    *IEEE Trans. CAD* 4 (1985), 436–451; M. E. Hosea & L. F. Shampine, "Analysis and
    implementation of TR-BDF2", *Appl. Numer. Math.* 20 (1996), 21–37.
    """

    tableau: ClassVar[ESDIRKTableau] = _TABLEAU
