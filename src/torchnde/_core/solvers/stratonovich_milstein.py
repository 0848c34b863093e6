r"""The Milstein method for Stratonovich SDEs (Milstein 1974)."""

from __future__ import annotations

from typing import ClassVar

from ..sde import AbstractMilstein

__all__ = ["StratonovichMilstein"]


class StratonovichMilstein(AbstractMilstein):
    r"""The Milstein method for Stratonovich SDEs,

    $$ y_{n+1} = y_n + f(t_n, y_n)\,h + g(t_n, y_n)\,\Delta W_n + \tfrac12 (L g)\,\Delta W_n^2, $$

    with $L g = (g \cdot \nabla_y) g$ (per component for diagonal noise, where $g_i$ must
    depend on $y_i$ only; summed over channel pairs for general noise, which must be
    commutative: $L^j g_k = L^k g_j$, so no Lévy area is needed).

    Strong order 1.0 (for commutative noise). No embedded error estimate (``adaptive=True``
    estimates it by step doubling). Per step one drift and one diffusion evaluation plus one
    Jacobian-vector product of the diffusion (forward-mode autodiff); with
    ``derivative_free=True`` two more diffusion evaluations replace it. Dense output: linear.
    Explicit. Stratonovich. Noise: diagonal, scalar, additive (where it is Euler–Maruyama) and
    general commutative (not derivative-free).

    Use it for strong (pathwise) accuracy with multiplicative diagonal or scalar noise when
    :class:`SRI2` is too expensive per step.

    Args:
        derivative_free: replace the derivative by a finite difference,
            the central difference $2 (L g)\sqrt{h} \approx g(y_n + g\sqrt h) - g(y_n - g\sqrt h)$
            (a one-sided one, as in Kloeden & Platen 1992, Sec. 11.1, leaves an $O(\sqrt h)$
            bias that limits the strong order to 0.5 for nonlinear $g$).
        adaptive: estimate the local error by step doubling.

    Reference:
        G. N. Milstein, "Approximate integration of stochastic differential equations",
        Theory of Probability and its Applications 19 (1974) 557–562. P. E. Kloeden and
        E. Platen, *Numerical Solution of Stochastic Differential Equations*, Springer, 1992,
        Sec. 10.3 and 11.1.
    """

    calculus: ClassVar[str] = "stratonovich"
