"""Implicit (backward) Euler."""

from __future__ import annotations

from typing import ClassVar

from ..implicit import AbstractESDIRK, ESDIRKTableau

__all__ = ["ImplicitEuler"]

# z = y0 + h f(t1, z); the embedded trapezoidal rule gives the error h/2 (f1 - f0).
_TABLEAU = ESDIRKTableau(
    a=[[0.0, 1.0]], c=[0.0, 1.0], b_embedded=[0.5, 0.5], order=1, error_order=2
)


class ImplicitEuler(AbstractESDIRK):
    r"""The implicit Euler method, $y_1 = y_0 + h f(t_1, y_1)$.

    Order 1; error estimate against the trapezoidal rule, $\tfrac h2 (f_1 - f_0)$ (error
    order 2); one implicit stage, first same as last; cubic Hermite dense output; implicit,
    A- and L-stable. For very stiff problems at loose tolerances, and as a robust baseline.
    Arguments as :class:`~torchnde._core.implicit.AbstractESDIRK` (Newton tolerances,
    ``jacobian=``, ``jacobian_blocks=``).

    Reference: Hairer & Wanner, *Solving Ordinary Differential Equations II*, Sec. IV.3.
    """

    tableau: ClassVar[ESDIRKTableau] = _TABLEAU
