"""The trapezoidal rule (Crank–Nicolson)."""

from __future__ import annotations

from typing import ClassVar

from ..implicit import AbstractESDIRK, ESDIRKTableau

__all__ = ["Trapezoid"]

# z = y0 + h/2 (f0 + f(t1, z)); embedded implicit Euler gives the error h/2 (f0 - f1).
_TABLEAU = ESDIRKTableau(
    a=[[0.5, 0.5]], c=[0.0, 1.0], b_embedded=[0.0, 1.0], order=2, error_order=2
)


class Trapezoid(AbstractESDIRK):
    r"""The trapezoidal rule (Crank–Nicolson), $y_1 = y_0 + \tfrac h2 (f(t_0, y_0) +
    f(t_1, y_1))$.

    Order 2; error estimate against implicit Euler (error order 2); one implicit stage,
    first same as last; cubic Hermite dense output; implicit, A-stable but not L-stable
    (stiff components are not damped: they flip sign each step). For mildly stiff or
    oscillatory problems (diffusion, wave equations) where energy should not be damped.
    Arguments as :class:`~torchnde._core.implicit.AbstractESDIRK`.

    Reference: Crank & Nicolson, *Proc. Camb. Phil. Soc.* 43 (1947); Hairer & Wanner,
    *Solving ODEs II*, Sec. IV.3.
    """

    tableau: ClassVar[ESDIRKTableau] = _TABLEAU
