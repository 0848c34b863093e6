"""The implicit midpoint rule (one-stage Gauss–Legendre)."""

from __future__ import annotations

from typing import ClassVar

from ..implicit import AbstractCollocation, CollocationTableau

__all__ = ["ImplicitMidpoint"]

_TABLEAU = CollocationTableau(a=[[0.5]], b=[1.0], c=[0.5], order=2)


class ImplicitMidpoint(AbstractCollocation):
    r"""The implicit midpoint rule, $y_1 = y_0 + h f\big(t_0 + \tfrac h2, \tfrac{y_0 + y_1}2\big)$.

    Order 2; no error estimate (constant steps); one implicit stage; linear dense output
    (its collocation polynomial); implicit, A-stable but not L-stable
    ($R(-\infty) = -1$), symplectic and symmetric: it conserves quadratic invariants
    exactly. For Hamiltonian and oscillatory problems over long times, and mildly stiff
    problems at coarse steps. Arguments as
    :class:`~torchnde._core.implicit.AbstractCollocation`.

    Reference: Hairer, Lubich & Wanner, *Geometric Numerical Integration*, Sec. II.1;
    Hairer & Wanner, *Solving ODEs II*, Sec. IV.5.
    """

    tableau: ClassVar[CollocationTableau] = _TABLEAU
