r"""The Milstein method for Itô SDEs (Milstein 1974)."""

from __future__ import annotations

from typing import ClassVar

from ..sde import AbstractMilstein

__all__ = ["ItoMilstein"]


class ItoMilstein(AbstractMilstein):
    r"""The Milstein method for Itô SDEs,

    $$ y_{n+1} = y_n + f(t_n, y_n)\,h + g(t_n, y_n)\,\Delta W_n
       + \tfrac12 (L g)\,(\Delta W_n^2 - h), $$

    with $L g = (g \cdot \nabla_y) g$ (per component for diagonal noise, where $g_i$ must
    depend on $y_i$ only; summed over channel pairs for general noise, which must be
    commutative: $L^j g_k = L^k g_j$, so no Lévy area is needed).

    Strong order 1.0 (for commutative noise). No embedded error estimate (``adaptive=True``
    estimates it by step doubling). Per step one drift and one diffusion evaluation plus one
    Jacobian-vector product of the diffusion (forward-mode autodiff; general noise: one more
    per channel); with
    ``derivative_free=True`` a second diffusion evaluation replaces it. Dense output: linear.
    Explicit. Itô. Noise: diagonal, scalar, additive (where it is Euler–Maruyama) and
    general commutative (not derivative-free).

    Use it for strong (pathwise) accuracy with multiplicative diagonal or scalar noise when
    :class:`SRI2` is too expensive per step.

    Args:
        derivative_free: replace the derivative by a finite difference,
            $(L g)\sqrt{h} \approx g(\Upsilon) - g(y_n)$ with
            $\Upsilon = y_n + f h + g \sqrt{h}$ (Kloeden & Platen 1992, Sec. 11.1).
        adaptive: estimate the local error by step doubling.

    Reference:
        G. N. Milstein, "Approximate integration of stochastic differential equations",
        Theory of Probability and its Applications 19 (1974) 557–562. P. E. Kloeden and
        E. Platen, *Numerical Solution of Stochastic Differential Equations*, Springer, 1992,
        Sec. 10.3.
    """

    calculus: ClassVar[str] = "ito"
