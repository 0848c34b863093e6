"""The solver contract shared by every numerical method."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import torch

from .terms import AbstractTerm

__all__ = ["AbstractReversibleSolver", "AbstractSolver", "FixedStepper", "HostStepper"]


class HostStepper(NamedTuple):
    """A solver's steps for one solve on the host-controlled adaptive loop
    (:meth:`AbstractSolver.host_stepper`).

    - ``step(t0, t1, h, y, state) -> (y1, y_error, dense_info, new_state)``, as
      :meth:`AbstractSolver.step`, with ``h`` the step size ``t1 - t0`` as a host number;
    - ``save_into(thetas, dense_info, out)``, or ``None``: writes the dense output of the step
      just taken at the step fractions ``thetas`` (host numbers in ``[0, 1)``, computed in
      float64 from the host's times) into the rows of ``out`` (``(len(thetas), y.numel())``,
      a view of the solve's output), without tensors for the fractions.
    """

    step: Callable[..., tuple]
    save_into: Callable[[list, Any, torch.Tensor], None] | None = None


class FixedStepper(NamedTuple):
    """A solver's steps for one fixed-grid solve (:meth:`AbstractSolver.fixed_stepper`).

    - ``step(i, t, y, state) -> (y1, y_error, dense_info, new_state)``: step ``i`` of the grid
      from ``(t, y, state)``;
    - ``run(i, j, t, y, state) -> (k, t, y, state, error)``, or ``None``: steps ``i .. j-1``
      back to back, as ``step`` takes them, when nothing reads their dense outputs;
      ``k = j`` and ``error = None`` after the last, else ``k`` is the step that raised
      ``error``, ``(t, y, state)`` where it started.
    """

    step: Callable[[int, Any, Any, Any], tuple]
    run: Callable[[int, int, Any, Any, Any], tuple] | None = None


class AbstractSolver(abc.ABC):
    """Base class of all solvers. Solvers are stateless and immutable; the loop owns state.

    How to write a solver:

    1. Set the class attributes ``order`` (order of the propagated solution),
       ``error_order`` (exponent ``k`` of the local error estimate, error ~ h^k, or ``None``
       for a method without one, which then needs a constant step size) and
       ``dense_order``.
    2. ``init(terms, t0, y0, args)`` returns the solver state carried between steps (e.g. the
       first-same-as-last vector field), a tensor or tuple of tensors, or ``None``.
    3. ``step(terms, t0, t1, y0, args, state)`` takes one step from ``t0`` to ``t1`` (shapes
       ``()`` for joint stepping or ``(batch,)`` per sample) and returns
       ``(y1, y_error, dense_info, new_state)``. ``y_error`` is ``None`` without an error
       estimate. It must not decide acceptance: the loop selects ``new_state`` or keeps
       ``state`` per sample.
    4. ``interpolate(dense_info, theta, per_sample)`` evaluates the dense output at the
       fraction ``theta`` of the step: with ``per_sample=False``, ``theta`` has shape ``(n,)``
       and the result ``(n, *y.shape)``; with ``per_sample=True``, ``theta`` has shape
       ``(batch,)`` and the result the shape of ``y``.
    5. ``num_fevals_init`` and ``num_fevals_step`` count vector-field evaluations for stats;
       ``take_dense_fevals`` reports extra ones made lazily by the dense output (or, for
       methods whose cost varies per step, all of them); ``take_stats`` any other counts.
    6. Optional hooks: ``error_order_of(state)`` gives the error order of the next step (a
       tensor of the batch shape may vary per sample, for variable-order methods);
       ``with_controller(controller, norm)`` returns the instance a loop should use (by
       default, ``with_tolerances`` told a PID controller's tolerances, which implicit methods
       use for their Newton iterations; Adams measures its candidate error estimates in the
       controller's norm); ``rejected_state`` what to carry after a rejected step.
    7. ``constant_error_order`` declares that ``error_order_of`` is ``error_order`` at every
       step; a method whose order changes from step to step (``Adams``) sets it ``False``,
       and its solves then take the general loop, which reads the order of every step.
    8. ``predictive_control`` and ``hold_step`` declare how the method likes its steps
       chosen (read by :class:`~torchnde.PIDController` at the start of a solve, when its
       own ``predictive`` / ``hold`` are left ``None``): ``predictive_control`` asks for
       Gustafsson's predictive controller (Hairer's RADAU5 and RODAS use it); ``hold_step``
       is a band ``(lo, hi)`` of proposed factors for which the step size is kept exactly,
       for a method that reuses its Jacobian and factorisations while the step size does not
       change.
    9. ``nonfinite_persists`` declares that a step's new state is the old one plus an
       increment (``y1 = y0 + g``), so a non-finite component stays non-finite in every later
       state: the fixed-grid path then checks finiteness on the last state of a block of
       steps only (``_core/fixed.py``).
    10. ``traceable_fixed_step`` declares that ``fixed_step`` is tensor work only, its
       evaluations ``num_fevals_step`` and nothing else counted (``take_stats``,
       ``take_dense_fevals`` report only what its dense output made): under
       ``compile_step=True`` the fixed-grid path compiles blocks of such steps.
    """

    order: ClassVar[int]
    error_order: ClassVar[int | None] = None
    dense_order: ClassVar[int]
    num_fevals_init: ClassVar[int] = 1
    num_fevals_step: ClassVar[int] = 1
    #: whether the error order is ``error_order`` at every step (read once per solve by the
    #: host control, ``_core/adaptive.py``, instead of asking ``error_order_of`` every step)
    constant_error_order: ClassVar[bool] = True
    #: whether the step sizes should come from Gustafsson's predictive controller (see 8.)
    predictive_control: ClassVar[bool] = False
    #: proposed step-size factors ``(lo, hi)`` that keep the step size unchanged, or ``None``
    #: (see 8.)
    hold_step: ClassVar[tuple[float, float] | None] = None
    #: whether a non-finite state stays non-finite in every later state (see 9. above)
    nonfinite_persists: ClassVar[bool] = False
    #: whether ``fixed_step`` may be traced into a compiled block of steps (see 10. above)
    traceable_fixed_step: ClassVar[bool] = False

    @abc.abstractmethod
    def init(self, terms: AbstractTerm, t0: torch.Tensor, y0: torch.Tensor, args: Any) -> Any: ...

    @abc.abstractmethod
    def step(
        self,
        terms: AbstractTerm,
        t0: torch.Tensor,
        t1: torch.Tensor,
        y0: torch.Tensor,
        args: Any,
        state: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None, Any, Any]: ...

    @abc.abstractmethod
    def interpolate(
        self, dense_info: Any, theta: torch.Tensor, per_sample: bool
    ) -> torch.Tensor: ...

    def vector_field_of(self, state: Any) -> Any:
        """The vector field at the current point held in the solver state, if any (used to
        check the user's function once, at the start); ``None`` when there is none."""
        return None

    def fixed_step(
        self,
        terms: AbstractTerm,
        t0: torch.Tensor,
        t1: torch.Tensor,
        h: float | None,
        y0: torch.Tensor,
        args: Any,
        state: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None, Any, Any]:
        """``step`` on a grid decided in advance (``_core/fixed.py``): ``h`` is the step size
        on the host (``t1 - t0`` as a Python float) when no time carries a gradient, else
        ``None``. Methods may use it to save tensor operations; by default this is ``step``."""
        return self.step(terms, t0, t1, y0, args, state)

    def fixed_stepper(
        self,
        terms: AbstractTerm,
        t0: torch.Tensor,
        ends: torch.Tensor,
        times: tuple,
        steps: list,
        y0: torch.Tensor,
        args: Any,
        state: Any,
    ) -> FixedStepper | None:
        """Optional: the steps of one fixed-grid solve (``_core/fixed.py``) prepared once, a
        :class:`FixedStepper` whose ``step(i, t, y, state)`` returns what :meth:`fixed_step`
        returns for ``(terms, t, times[i], steps[i], y, args, state)``, bit for bit, whatever
        the state (e.g. the replay of a block of steps). ``t0`` and ``state`` are the solve's
        start and initial solver state, ``ends`` the step ends as one tensor and ``times``
        its rows (0-d tensors, the very objects the path passes on as the next step's
        ``t``), ``steps`` the step sizes on the host (``None`` each when a time carries a
        gradient).

        A prepared step reports nothing to :meth:`take_stats` and, unless its dense output
        is interpolated, nothing to :meth:`take_dense_fevals`: the path skips both for the
        steps that save nothing. ``None`` (the default) makes the path call
        :meth:`fixed_step`."""
        return None

    def host_stepper(self, terms: AbstractTerm, y0: torch.Tensor, args: Any) -> HostStepper | None:
        """Optional: a :class:`HostStepper` for one solve on the host-controlled adaptive loop
        (``_core/adaptive.py``: joint steps, nothing of a step kept past the next; under
        autograd only with the step sizes as constants), whose steps may reuse buffers
        across steps (without autograd) and whose saves may be written straight into the
        output; ``None`` (the default) makes that loop call :meth:`step` and
        :meth:`interpolate`."""
        return None

    def take_dense_fevals(self, dense_info: Any) -> int:
        """Vector-field evaluations the dense output of a step made since last asked (for
        stats; only methods whose interpolant needs extra stages make any)."""
        return 0

    def take_stats(self, dense_info: Any) -> dict[str, int] | None:
        """Counts beyond vector-field evaluations made by a step since last asked (e.g.
        ``num_jacobians``, ``num_lu_factorisations`` of implicit methods), summed into
        ``Solution.stats``; ``None`` when there are none."""
        return None

    def rejected_state(self, state: Any, new_state: Any) -> Any:
        """The state to carry after a rejected step (default: the state before it). Implicit
        methods keep the Jacobian the rejected attempt computed at the same point."""
        return state

    def error_order_of(self, state: Any) -> Any:
        """The error order of the step taken from ``state`` (``error_order`` unless the method
        changes its order from step to step)."""
        return self.error_order

    def with_controller(self, controller: Any, norm: Any) -> AbstractSolver:
        """The solver a loop with this controller and error norm uses: by default this solver
        told the controller's tolerances, if it has any."""
        rtol = getattr(controller, "rtol", None)
        if rtol is None:
            return self
        return self.with_tolerances(rtol, controller.atol)

    def with_tolerances(self, rtol: Any, atol: Any) -> AbstractSolver:
        """This solver told the step-size controller's tolerances (implicit methods use them
        for their Newton iterations); solvers are immutable, so this returns a copy or
        ``self``."""
        return self

    @property
    def is_adaptive(self) -> bool:
        return self.error_order is not None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class AbstractReversibleSolver(AbstractSolver):
    """A solver whose step can be inverted exactly: ``reverse(terms, t0, t1, y1, args,
    state1)`` returns ``(y0, state0)`` such that ``step`` from ``(t0, y0, state0)`` to ``t1``
    gives back ``(y1, state1)``. :class:`ReversibleAdjoint` needs this."""

    @abc.abstractmethod
    def reverse(
        self,
        terms: AbstractTerm,
        t0: torch.Tensor,
        t1: torch.Tensor,
        y1: torch.Tensor,
        args: Any,
        state: Any,
    ) -> tuple[torch.Tensor, Any]: ...
