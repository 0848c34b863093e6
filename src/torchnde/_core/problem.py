"""A normalised solve: everything the loop and the adjoints need, in internal time."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from .controllers import AbstractStepSizeController
from .events import Event
from .loop import Loop, LoopResult, run
from .packing import StateSpec
from .solution import SaveAt
from .solver import AbstractSolver
from .terms import AbstractTerm

__all__ = ["Problem"]


@dataclass(frozen=True)
class Problem:
    """A validated, normalised solve; frozen (assigning a field raises
    ``dataclasses.FrozenInstanceError``), so what ``solve`` validated is what every adjoint
    runs. Derive a changed problem with :meth:`replace`.

    Times are internal (``τ = direction·t``, always increasing) with the batch shape of the
    solve; the state is one packed tensor. Adjoints receive a ``Problem`` and call
    :meth:`run`, overriding what they change (the initial state, ``args``, whether to keep the
    dense solution, ...).
    """

    terms: AbstractTerm
    solver: AbstractSolver
    controller: AbstractStepSizeController
    t0: torch.Tensor
    t1: torch.Tensor
    y0: torch.Tensor
    args: Any
    spec: StateSpec | None
    direction: float
    dt0: torch.Tensor | None
    ts: torch.Tensor | None
    ts_user: torch.Tensor | None
    saveat: SaveAt
    event: Event | None
    max_steps: int
    per_sample: bool
    norm: Any
    state_shape: torch.Size
    progress: Any = None
    compile_step: bool = False
    check_vf: Any = field(default=None, repr=False)

    def to_user_time(self, tau: torch.Tensor) -> torch.Tensor:
        return tau if self.direction > 0 else -tau

    def replace(self, **changes: Any) -> Problem:
        return dataclasses.replace(self, **changes)

    def loop(self, *, save_dense: bool | None = None) -> Loop:
        """The loop for this problem."""
        return Loop(
            self.terms,
            self.solver,
            self.controller,
            self.t0,
            self.t1,
            self.args,
            self.dt0,
            self.norm,
            ts=self.ts,
            save_steps=self.saveat.steps,
            save_dense=self.saveat.dense if save_dense is None else save_dense,
            event=self.event,
            max_steps=self.max_steps,
            progress=self.progress,
            to_user_time=self.to_user_time,
            check_vf=self.check_vf,
            compile_step=self.compile_step,
        )

    def run(self, *, save_dense: bool | None = None) -> LoopResult:
        """Run the loop on this problem (with autograd recording whatever is enabled)."""
        return run(self.loop(save_dense=save_dense), self.y0)[0]
