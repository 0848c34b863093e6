"""RODAS, Hairer & Wanner's Rosenbrock 4(3) method."""

from __future__ import annotations

from typing import ClassVar

from ..rosenbrock import AbstractRosenbrock, RosenbrockTableau

__all__ = ["Rodas4"]

_M = [1.221224509226641, 6.019134481288629, 12.53708332932087, -0.6878860361058950]
_TABLEAU = RosenbrockTableau(
    a=[
        [1.544],
        [0.9466785280815826, 0.2557011698983284],
        [3.314825187068521, 2.896124015972201, 0.9986419139977817],
        _M,
        _M + [1.0],
    ],
    c=[
        [-5.6688],
        [-2.430093356833875, -0.2063599157091915],
        [-0.1073529058151375, -9.594562251023355, -20.47028614809616],
        [7.496443313967647, -10.24680431464352, -33.99990352819905, 11.70890893206160],
        [
            8.083246795921522,
            -7.981132988064893,
            -31.52159432874371,
            16.31930543123136,
            -6.058818238834054,
        ],
    ],  # fmt: skip
    alpha=[0.0, 0.386, 0.21, 0.63, 1.0, 1.0],
    gamma_sum=[0.25, -0.1043, 0.1035, -0.0362, 0.0, 0.0],
    m=_M + [1.0, 1.0],
    m_error=_M + [1.0, 0.0],  # the error estimate is the last stage
    order=4,
    error_order=4,
)


class Rodas4(AbstractRosenbrock):
    r"""RODAS, a fourth-order stiffly accurate Rosenbrock method.

    Order 4; embedded order 3 (error order 4); 6 stages, one Jacobian and one LU
    factorisation per step, no Newton iteration; cubic Hermite dense output; linearly
    implicit, L-stable, stiffly accurate. For stiff problems at moderate tolerances.
    Arguments as :class:`~torchnde._core.rosenbrock.AbstractRosenbrock`.

    Reference: E. Hairer & G. Wanner, *Solving Ordinary Differential Equations II*, 2nd ed.,
    Springer (1996), Sec. IV.7 (code RODAS).
    """

    tableau: ClassVar[RosenbrockTableau] = _TABLEAU
