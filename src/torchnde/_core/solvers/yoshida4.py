"""Yoshida's fourth-order symplectic composition of leapfrog."""

from __future__ import annotations

from typing import ClassVar

from ..symplectic import AbstractSymplectic

__all__ = ["Yoshida4"]

_W1 = 1.0 / (2.0 - 2.0 ** (1.0 / 3.0))
_W0 = 1.0 - 2.0 * _W1  # = -2^(1/3) / (2 - 2^(1/3))


class Yoshida4(AbstractSymplectic):
    r"""Yoshida's fourth-order method: three leapfrog steps of sizes $w_1 h, w_0 h, w_1 h$ with
    $w_1 = 1/(2 - 2^{1/3})$, $w_0 = 1 - 2 w_1$, for a separable Hamiltonian system with state
    ``(q, p)``; adjacent half kicks are merged.

    Order 4, no error estimate (use ``ConstantStepSize``). Four vector-field evaluations per
    step. Dense output: linear, order 1. Explicit, symplectic and time-reversible.

    Use it when a symplectic method must also be accurate (orbits, long rollouts of
    Hamiltonian neural networks).

    Reference:
        H. Yoshida, "Construction of higher order symplectic integrators", *Physics Letters A*
        150(5–7):262–268, 1990.
    """

    order: ClassVar[int] = 4
    stages = (
        ("kick", _W1 / 2),
        ("drift", _W1),
        ("kick", (_W1 + _W0) / 2),
        ("drift", _W0),
        ("kick", (_W0 + _W1) / 2),
        ("drift", _W1),
        ("kick", _W1 / 2),
    )
