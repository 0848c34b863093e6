"""The Dormand–Prince 5(4) pair with Shampine's dense output."""

from __future__ import annotations

from typing import Any, ClassVar

from ..runge_kutta import AbstractRungeKutta
from ..tableau import ButcherTableau

__all__ = ["Dopri5"]

# b_dense[i] = (p1, p2, p3, p4) with b_i(θ) = p1 θ + p2 θ² + p3 θ³ + p4 θ⁴: Shampine's
# continuous extension, expanded into monomials (b_i(1) = b_i).
_DOPRI5: dict[str, Any] = dict(
    a=[
        [1 / 5],
        [3 / 40, 9 / 40],
        [44 / 45, -56 / 15, 32 / 9],
        [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
        [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
        [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84],
    ],
    b=[35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0],
    c=[0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0],
    order=5,
    error_order=5,
    b_dense=[
        [1.0, -8048581381 / 2820520608, 8663915743 / 2820520608, -12715105075 / 11282082432],
        [0.0, 0.0, 0.0, 0.0],
        [
            0.0,
            131558114200 / 32700410799,
            -68118460800 / 10900136933,
            87487479700 / 32700410799,
        ],
        [0.0, -1754552775 / 470086768, 14199869525 / 1410260304, -10690763975 / 1880347072],
        [
            0.0,
            127303824393 / 49829197408,
            -318862633887 / 49829197408,
            701980252875 / 199316789632,
        ],
        [0.0, -282668133 / 205662961, 2019193451 / 616988883, -1453857185 / 822651844],
        [0.0, 40617522 / 29380423, -110615467 / 29380423, 69997945 / 29380423],
    ],
    dense_order=4,
    fsal=True,
)
# The embedded weights b̂: Dormand and Prince's fourth-order solution (Hairer's DOPRI5, SciPy's
# RK45), and Shampine's (1986) other fourth-order solution on the same stages (torchdiffeq's
# and diffrax's `dopri5`). Shampine's estimate b - b̂ is exactly 2/3 of Dormand and Prince's:
# the same controller then accepts the same step at a 1.5x larger error, and takes
# (3/2)^(1/5) = 1.084x longer steps.
_EMBEDDED = {
    "dormand-prince": [5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100,
                       1 / 40],
    "shampine": [1951 / 21600, 0.0, 22642 / 50085, 451 / 720, -12231 / 42400, 649 / 6300, 1 / 60],
}  # fmt: skip
_TABLEAUX = {name: ButcherTableau(b_error=b_hat, **_DOPRI5) for name, b_hat in _EMBEDDED.items()}


class Dopri5(AbstractRungeKutta):
    r"""The Dormand–Prince 5(4) pair (``dopri5``; MATLAB's ``ode45``, SciPy's ``RK45``).

    Order 5, propagating the fifth-order solution (local extrapolation). Embedded solution
    of order 4; the local error estimate is $O(h^5)$. 7 stages, first-same-as-last (FSAL),
    so 6 new evaluations per accepted step. Dense output: Shampine's continuous extension,
    order 4, free of extra evaluations. Explicit.

    Use it as the default for non-stiff problems at moderate tolerances (about 1e-3 to
    1e-8). For tighter tolerances prefer :class:`Dopri8`; :class:`Tsit5` is a drop-in
    alternative with slightly smaller error constants.

    Args:
        error_estimate: the embedded solution the error is estimated with:
            ``"dormand-prince"`` (Dormand and Prince's, as Hairer's DOPRI5 and SciPy's
            ``RK45``) or ``"shampine"`` (Shampine's, as torchdiffeq's and diffrax's
            ``dopri5``: the steps those libraries take). Shampine's estimate is exactly 2/3
            of Dormand and Prince's, so at the same tolerances it takes about 8% longer steps
            to a correspondingly larger error: ``"shampine"`` at ``rtol``, ``atol`` steps as
            ``"dormand-prince"`` at ``1.5 rtol``, ``1.5 atol``.

    Example:
        >>> solver = Dopri5(error_estimate="shampine")  # torchdiffeq's / diffrax's steps

    Reference:
        J. R. Dormand and P. J. Prince, "A family of embedded Runge–Kutta formulae",
        *Journal of Computational and Applied Mathematics* 6(1):19–26, 1980.
        Dense output: L. F. Shampine, "Some practical Runge–Kutta formulas", *Mathematics of
        Computation* 46(173):135–150, 1986.
    """

    tableau: ClassVar[ButcherTableau] = _TABLEAUX["dormand-prince"]

    def __init__(self, error_estimate: str = "dormand-prince") -> None:
        if error_estimate not in _TABLEAUX:
            raise ValueError(
                f"Dopri5: `error_estimate` must be one of {sorted(_TABLEAUX)}, got "
                f"{error_estimate!r}."
            )
        self.error_estimate = error_estimate

    def _tab(self) -> ButcherTableau:
        return _TABLEAUX[self.error_estimate]

    def __repr__(self) -> str:
        if self.error_estimate == "dormand-prince":
            return "Dopri5()"
        return f"Dopri5(error_estimate={self.error_estimate!r})"
