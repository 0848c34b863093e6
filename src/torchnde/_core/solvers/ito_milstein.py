r"""The Milstein method for Itô SDEs (Milstein 1974)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..sde import AbstractSDESolver, drift_increment, milstein_correction
from ..terms import ControlTerm, ODETerm

__all__ = ["ItoMilstein"]


class ItoMilstein(AbstractSDESolver):
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

    strong_order: ClassVar[float] = 1.0
    calculus: ClassVar[str] = "ito"
    noise_types: ClassVar[tuple[str, ...]] = ("diagonal", "scalar", "additive", "general")
    num_fevals_step: ClassVar[int] = 3

    def __init__(self, *, derivative_free: bool = False, adaptive: bool = False) -> None:
        if not isinstance(derivative_free, bool):
            raise TypeError(
                f"ItoMilstein: `derivative_free` must be a bool, got {derivative_free!r}."
            )
        self.derivative_free = derivative_free
        super().__init__(adaptive=adaptive)

    def _step(
        self,
        drift: ODETerm | None,
        diffusion: ControlTerm,
        t0: torch.Tensor,
        t1: torch.Tensor,
        y0: torch.Tensor,
        args: Any,
    ) -> torch.Tensor:
        h = t1 - t0
        dw = diffusion.contr(t0, t1)
        g = diffusion.vf(t0, y0, args)
        f_h = drift_increment(drift, t0, y0, args, h)
        y1 = y0 + diffusion.prod(g, dw)
        if f_h is not None:
            y1 = y1 + f_h
        corr = milstein_correction(
            diffusion, t0, y0, g, dw, h, args,
            ito=True, derivative_free=self.derivative_free, f_h=f_h,
        )  # fmt: skip
        return y1 if corr is None else y1 + corr

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(derivative_free={self.derivative_free}, adaptive={self.adaptive})"
