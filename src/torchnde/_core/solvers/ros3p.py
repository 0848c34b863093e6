"""ROS3P, Lang & Verwer's third-order Rosenbrock method."""

from __future__ import annotations

from typing import ClassVar

from ..rosenbrock import AbstractRosenbrock, RosenbrockTableau

__all__ = ["Ros3p"]

_TABLEAU = RosenbrockTableau(
    a=[[1.267949192431123], [1.267949192431123, 0.0]],
    c=[[-1.607695154586736], [-3.464101615137755, -1.732050807568877]],
    alpha=[0.0, 1.0, 1.0],
    gamma_sum=[0.7886751345948129, -0.2113248654051871, -1.0773502691896260],
    m=[2.0, 0.5773502691896258, 0.4226497308103742],
    m_error=[2.113248654051871, 1.0, 0.4226497308103742],
    order=3,
    error_order=3,
)


class Ros3p(AbstractRosenbrock):
    r"""ROS3P, a third-order Rosenbrock method.

    Order 3; embedded order 2 (error order 3); 3 stages, one Jacobian and one LU
    factorisation per step, no Newton iteration; cubic Hermite dense output; linearly
    implicit, A-stable, designed to keep its order on parabolic PDEs (no order reduction).
    For moderately stiff problems at loose tolerances, and when Newton's method is the
    bottleneck. Arguments as :class:`~torchnde._core.rosenbrock.AbstractRosenbrock`.

    Reference: J. Lang & J. Verwer, "ROS3P — an accurate third-order Rosenbrock solver
    designed for parabolic problems", *BIT Numerical Mathematics* 41 (2001), 731–738.
    """

    tableau: ClassVar[RosenbrockTableau] = _TABLEAU
