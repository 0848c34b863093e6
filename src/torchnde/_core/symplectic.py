r"""The engine of the symplectic methods for separable Hamiltonian systems.

The state is a tuple ``(q, p)``; the vector field returns ``(dq, dp)`` with ``dq`` depending
on ``p`` only and ``dp`` on ``q`` only (a separable Hamiltonian $H = T(p) + V(q)$). A method is
a sequence of "kicks" (update ``p`` with the force at the current ``q``) and "drifts" (update
``q`` with the velocity at the current ``p``), given as fractions of the step.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from .packing import PackedTerm, ReversedTerm
from .runge_kutta import linear
from .solver import AbstractSolver
from .terms import AbstractTerm

__all__ = ["AbstractSymplectic"]


def _split_sizes(terms: AbstractTerm, who: str) -> int:
    base = terms
    while isinstance(base, ReversedTerm):
        base = base.term
    if not isinstance(base, PackedTerm) or len(base.spec.sizes) != 2:
        raise ValueError(
            f"{who} solves separable Hamiltonian systems: `y0` must be a tuple (q, p) and the "
            "vector field must return (dq/dt, dp/dt), with dq/dt depending on p only and "
            "dp/dt on q only."
        )
    return base.spec.sizes[0]


class AbstractSymplectic(AbstractSolver):
    """Symplectic splitting methods: subclasses set ``stages``, a sequence of
    ``("kick" | "drift", fraction of the step)`` starting with a kick, and ``order``.

    Fixed step (use ``ConstantStepSize``). The force at the end of a step is carried to the
    next one when the method ends with a kick. Dense output: linear interpolation (order 1).
    """

    stages: ClassVar[tuple[tuple[str, float], ...]]
    error_order: ClassVar[int | None] = None
    dense_order: ClassVar[int] = 1
    num_fevals_init: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        stages = cls.__dict__.get("stages")
        if stages is not None:
            # A kick after a kick (or the first kick of a step) reuses the carried force.
            reused = sum(
                1 for i, (kind, _) in enumerate(stages)
                if kind == "kick" and (i == 0 or stages[i - 1][0] == "kick")
            )  # fmt: skip
            # A method ending on a drift evaluates the field once more, at the step's end.
            cls.num_fevals_step = len(stages) - reused + (stages[-1][0] == "drift")

    def init(self, terms: AbstractTerm, t0: torch.Tensor, y0: torch.Tensor, args: Any) -> Any:
        _split_sizes(terms, type(self).__name__)
        return terms.vf(t0, y0, args)

    def step(self, terms, t0, t1, y0, args, state):  # type: ignore[override]
        nq = _split_sizes(terms, type(self).__name__)
        h = t1 - t0
        # The control carries the direction of time (reverse-time solves run in τ = -t).
        control = terms.contr(t0, t1)
        q, p = y0[..., :nq], y0[..., nq:]
        vf = state  # the vector field at (t, q, p) where q is current: its dp part is valid
        t = t0
        fresh_force = True
        for kind, frac in self.stages:
            if kind == "kick":
                if not fresh_force:
                    vf = terms.vf(t, torch.cat([q, p], dim=-1), args)
                p = p + terms.prod(vf[..., nq:], control * frac)
                fresh_force = True
            else:
                vf = terms.vf(t, torch.cat([q, p], dim=-1), args)
                q = q + terms.prod(vf[..., :nq], control * frac)
                t = t + h * frac
                fresh_force = False
        y1 = torch.cat([q, p], dim=-1)
        if not fresh_force:
            vf = terms.vf(t1, y1, args)
        return y1, None, (y0, y1), vf

    def interpolate(self, dense_info: Any, theta: torch.Tensor, per_sample: bool) -> torch.Tensor:
        return linear(dense_info, theta, per_sample)

    def vector_field_of(self, state: Any) -> Any:
        return state
