"""The leapfrog / velocity Verlet method."""

from __future__ import annotations

from typing import ClassVar

from ..symplectic import AbstractSymplectic

__all__ = ["Leapfrog"]


class Leapfrog(AbstractSymplectic):
    r"""Leapfrog (velocity Verlet, Störmer–Verlet) for a separable Hamiltonian system with
    state ``(q, p)``: half kick, drift, half kick.

    Order 2, no error estimate (use ``ConstantStepSize``). Two vector-field evaluations per
    step (the last force is carried to the next step). Dense output: linear, order 1.
    Explicit, symplectic and time-reversible.

    Use it for molecular-dynamics-like and Hamiltonian systems over long times.

    Reference:
        E. Hairer, C. Lubich and G. Wanner, "Geometric numerical integration illustrated by
        the Störmer–Verlet method", *Acta Numerica* 12:399–450, 2003.
    """

    order: ClassVar[int] = 2
    stages = (("kick", 0.5), ("drift", 1.0), ("kick", 0.5))
