"""RODAS5, Di Marzo's Rosenbrock 5(4) method."""

from __future__ import annotations

from typing import ClassVar

from ..rosenbrock import AbstractRosenbrock, RosenbrockTableau

__all__ = ["Rodas5"]

_M = [
    -14.09640773051259, 6.925207756232704, -41.47510893210728, 2.343771018586405,
    24.13215229196062,
]  # fmt: skip
_TABLEAU = RosenbrockTableau(
    a=[
        [2.0],
        [3.040894194418781, 1.041747909077569],
        [2.576417536461461, 1.622083060776640, -0.9089668560264532],
        [2.760842080225597, 1.446624659844071, -0.3036980084553738, 0.2877498600325443],
        _M,
        _M + [1.0],
        _M + [1.0, 1.0],
    ],
    c=[
        [-10.31323885133993],
        [-21.04823117650003, -7.234992135176716],
        [32.22751541853323, -4.943732386540191, 19.44922031041879],
        [-20.69865579590063, -8.816374604402768, 1.260436877740897, -0.7495647613787146],
        [
            -46.22004352711257,
            -17.49534862857472,
            -289.6389582892057,
            93.60855400400906,
            318.3822534212147,
        ],
        [
            34.20013733472935,
            -14.15535402717690,
            57.82335640988400,
            25.83362985412365,
            1.408950972071624,
            -6.551835421242162,
        ],
        [
            42.57076742291101,
            -13.80770672017997,
            93.98938432427124,
            18.77919633714503,
            -31.58359187223370,
            -6.685968952921985,
            -5.810979938412932,
        ],
    ],  # fmt: skip
    alpha=[
        0.0,
        0.38,
        0.3878509998321533,
        0.4839718937873840,
        0.4570477008819580,
        1.0,
        1.0,
        1.0,
    ],  # fmt: skip
    gamma_sum=[
        0.19,
        -0.1823079225333714636,
        -0.319231832186874912,
        0.3449828624725343,
        -0.377417564392089818,
        0.0,
        0.0,
        0.0,
    ],  # fmt: skip
    # The solution takes all eight stages; the embedded 4th-order one stops at the seventh,
    # so the error estimate is the last stage (as in Hairer's and OrdinaryDiffEq.jl's codes).
    m=_M + [1.0, 1.0, 1.0],
    m_error=_M + [1.0, 1.0, 0.0],
    order=5,
    error_order=5,
)


class Rodas5(AbstractRosenbrock):
    r"""RODAS5, a fifth-order stiffly accurate Rosenbrock method.

    Order 5; embedded order 4 (error order 5); 8 stages, one Jacobian and one LU
    factorisation per step, no Newton iteration; cubic Hermite dense output; linearly
    implicit, L-stable, stiffly accurate. The default choice for stiff problems of small to
    medium size at moderate to tight tolerances.
    Arguments as :class:`~torchnde._core.rosenbrock.AbstractRosenbrock`.

    Reference: G. A. Di Marzo, *RODAS5(4) — Méthodes de Rosenbrock d'ordre 5(4) adaptées aux
    problèmes différentiels-algébriques*, MSc thesis, Université de Genève (1993); Hairer &
    Wanner, *Solving ODEs II*, Sec. IV.7.
    """

    tableau: ClassVar[RosenbrockTableau] = _TABLEAU
    # Gustafsson's predictive controller (as Hairer's RODAS and SDIRK4 choose their steps):
    # on Van der Pol (mu = 1000) it rejects a quarter of the steps the integral one does.
    predictive_control: ClassVar[bool] = True
