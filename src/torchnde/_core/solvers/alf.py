r"""The asynchronous leapfrog method of MALI (Zhuang et al., 2021)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..runge_kutta import linear
from ..solver import AbstractReversibleSolver
from ..terms import AbstractTerm, broadcast_time

__all__ = ["ALF"]


class ALF(AbstractReversibleSolver):
    r"""The asynchronous leapfrog integrator (ALF) of MALI: algebraically reversible, so
    :class:`ReversibleAdjoint` gives exact gradients without storing the trajectory.

    It carries an approximation $v$ of the derivative beside $y$; one step from $(y, v)$ is

    $$k = y + v\,\tfrac{h}{2},\quad u = f(t + \tfrac{h}{2}, k),\quad v_1 = 2u - v,\quad
    y_1 = k + v_1\,\tfrac{h}{2},$$

    and it inverts exactly: $k = y_1 - v_1 \tfrac h2$, $u = f(t + \tfrac h2, k)$,
    $v = 2u - v_1$, $y = k - v\,\tfrac h2$.

    Order 2, no error estimate (use ``ConstantStepSize``). One vector-field evaluation per
    step. Dense output: linear, order 1. Explicit. ODE terms.

    Reference:
        J. Zhuang, N. C. Dvornek, S. Tatikonda and J. S. Duncan, "MALI: A memory efficient and
        reverse accurate integrator for Neural ODEs", ICLR 2021.
    """

    order: ClassVar[int] = 2
    error_order: ClassVar[int | None] = None
    dense_order: ClassVar[int] = 1
    num_fevals_init: ClassVar[int] = 1
    num_fevals_step: ClassVar[int] = 1

    def init(self, terms: AbstractTerm, t0: torch.Tensor, y0: torch.Tensor, args: Any) -> Any:
        # v is kept as an increment over a unit of time (the vector field for an ODE).
        return terms.prod(terms.vf(t0, y0, args), terms.contr(t0, t0 + 1))

    def vector_field_of(self, state: Any) -> Any:
        return state

    def step(self, terms, t0, t1, y0, args, state):  # type: ignore[override]
        v0 = state
        half = 0.5 * (t1 - t0)
        t_mid = t0 + half
        hb = broadcast_time(half.to(y0.dtype), y0)
        k = y0 + hb * v0
        u = terms.prod(terms.vf(t_mid, k, args), terms.contr(t_mid, t_mid + 1))
        v1 = 2 * u - v0
        y1 = k + hb * v1
        return y1, None, (y0, y1), v1

    def reverse(self, terms, t0, t1, y1, args, state):  # type: ignore[override]
        v1 = state
        half = 0.5 * (t1 - t0)
        t_mid = t0 + half
        hb = broadcast_time(half.to(y1.dtype), y1)
        k = y1 - hb * v1
        u = terms.prod(terms.vf(t_mid, k, args), terms.contr(t_mid, t_mid + 1))
        v0 = 2 * u - v1
        return k - hb * v0, v0

    def interpolate(self, dense_info: Any, theta: torch.Tensor, per_sample: bool) -> torch.Tensor:
        return linear(dense_info, theta, per_sample)
