"""The semi-implicit (symplectic) Euler method."""

from __future__ import annotations

from typing import ClassVar

from ..symplectic import AbstractSymplectic

__all__ = ["SemiImplicitEuler"]


class SemiImplicitEuler(AbstractSymplectic):
    r"""Symplectic Euler for a separable Hamiltonian system with state ``(q, p)``:
    $p_{n+1} = p_n + h\,F(q_n)$, $q_{n+1} = q_n + h\,G(p_{n+1})$.

    Order 1, no error estimate (use ``ConstantStepSize``). Two vector-field evaluations per
    step (the field returns both components). Dense output: linear, order 1. Explicit,
    symplectic: the energy error stays bounded over long times instead of drifting.

    Use it as the cheapest structure-preserving method, e.g. for Hamiltonian neural networks
    trained on long rollouts.

    Reference:
        E. Hairer, C. Lubich and G. Wanner, *Geometric Numerical Integration*, 2nd ed.,
        Springer, 2006, Sec. VI.3.
    """

    order: ClassVar[int] = 1
    stages = (("kick", 1.0), ("drift", 1.0))
