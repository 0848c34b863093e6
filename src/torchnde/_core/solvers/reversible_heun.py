r"""The reversible Heun method (Kidger, Foster, Li & Lyons, 2021)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..runge_kutta import hermite
from ..solver import AbstractReversibleSolver
from ..terms import AbstractTerm

__all__ = ["ReversibleHeun"]


class ReversibleHeun(AbstractReversibleSolver):
    r"""The reversible Heun method: algebraically reversible, so a solve can be run backwards
    exactly (up to floating-point rounding) from its final state.

    It carries a second state $z$ beside the solution $y$:

    $$z_{n+1} = 2 y_n - z_n + f(t_n, z_n)\,h,\qquad
    y_{n+1} = y_n + \tfrac12\big(f(t_n, z_n) + f(t_{n+1}, z_{n+1})\big)\,h,$$

    and the step inverts in closed form: $z_n = 2 y_{n+1} - z_{n+1} - f(t_{n+1}, z_{n+1})\,h$,
    $y_n = y_{n+1} - \tfrac12(f(t_n, z_n) + f(t_{n+1}, z_{n+1}))\,h$.

    Order 2 for ODEs (strong order 0.5 / Stratonovich for SDEs, where it is used most).
    Error estimate $\tfrac12 (f_{n+1} - f_n) h$ of order 2. One vector-field evaluation per step
    (the one at $z_{n+1}$ is carried to the next step). Dense output: cubic Hermite with the
    carried slopes, order 2. Explicit.

    Use it with :class:`ReversibleAdjoint` for exact gradients in O(1) memory (no stored
    trajectory, no backward re-solve error), e.g. for long neural ODE/SDE trajectories.

    Reference:
        P. Kidger, J. Foster, X. Li and T. Lyons, "Efficient and Accurate Gradients for Neural
        SDEs", NeurIPS 2021.
    """

    order: ClassVar[int] = 2
    error_order: ClassVar[int | None] = 2
    dense_order: ClassVar[int] = 2
    num_fevals_init: ClassVar[int] = 1
    num_fevals_step: ClassVar[int] = 1

    def init(self, terms: AbstractTerm, t0: torch.Tensor, y0: torch.Tensor, args: Any) -> Any:
        return (y0, terms.vf(t0, y0, args))

    def vector_field_of(self, state: Any) -> Any:
        return state[1]

    def step(self, terms, t0, t1, y0, args, state):  # type: ignore[override]
        z0, vf0 = state
        control = terms.contr(t0, t1)
        k0 = terms.prod(vf0, control)
        z1 = 2 * y0 - z0 + k0
        vf1 = terms.vf(t1, z1, args)
        k1 = terms.prod(vf1, control)
        y1 = y0 + 0.5 * (k0 + k1)
        return y1, 0.5 * (k1 - k0), (y0, y1, k0, k1), (z1, vf1)

    def reverse(self, terms, t0, t1, y1, args, state):  # type: ignore[override]
        z1, vf1 = state
        control = terms.contr(t0, t1)
        k1 = terms.prod(vf1, control)
        z0 = 2 * y1 - z1 - k1
        vf0 = terms.vf(t0, z0, args)
        y0 = y1 - 0.5 * (terms.prod(vf0, control) + k1)
        return y0, (z0, vf0)

    def interpolate(self, dense_info: Any, theta: torch.Tensor, per_sample: bool) -> torch.Tensor:
        return hermite(dense_info, theta, per_sample)
