r"""The explicit Runge–Kutta engine: one step for any :class:`ButcherTableau`.

Stage increments are stored already multiplied by the control (``k_i = prod(vf_i, dX)``;
``h f_i`` for an ODE) in one preallocated tensor ``K`` of shape ``(stages, *y.shape)``, so each
stage is a single fused ``y0 + K^T a_i`` (``addmv``) and the solution, the error estimate and
the dense output are each one matrix-vector product. Under autograd the increments are a list
instead, each stage reading the stack of those before it and ``K`` stacked once at the end:
copies into rows of one ``K`` would record a copy into a slice per stage, whose backward copies
all of ``K`` each time (the same values either way). The vector field at the end of an
accepted step is carried to the next step (first-same-as-last); for tableaux that are not
FSAL by construction it is one extra evaluation that replaces the next step's first stage, so
the cost per step is unchanged and every method gets a Hermite dense output for free.

With constant steps (a controller that never rejects, no jumps), a method that is not FSAL
does not carry that evaluation: each step starts with its own first stage, as torchdiffeq's
fixed-grid methods do, and the end-point evaluation is made only if the Hermite dense output
is asked for inside the step. This saves the evaluation after the last step (``N s`` instead
of ``N s + 1`` for ``N`` steps of ``s`` stages).
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar, NamedTuple

import torch
import torch.utils._pytree as pytree

from .solver import AbstractSolver, FixedStepper, HostStepper
from .tableau import ButcherTableau
from .terms import AbstractTerm, ODETerm, broadcast_time

__all__ = ["AbstractRungeKutta", "ExplicitRungeKutta", "HermiteDense", "PolynomialDense"]

_ODE_PROD_INTO = ODETerm.prod_into
# `prod_into` that writes `prod(vf, control)` and nothing else (a term's own may differ).
_PLAIN_PROD_INTO = (AbstractTerm.prod_into, _ODE_PROD_INTO)


def _increment(terms: AbstractTerm, vf: Any, control: Any, y0: torch.Tensor) -> torch.Tensor:
    """``prod(vf, control)`` as a row of ``K`` would hold it: in the state's dtype and shape
    (the copy into a row casts and broadcasts)."""
    k = terms.prod(vf, control)
    if k.dtype != y0.dtype:
        k = k.to(y0.dtype)
    return k if k.shape == y0.shape else k.expand(y0.shape)


class PolynomialDense(NamedTuple):
    """The dense output of a step of a tableau with its own interpolant (``b_dense``):
    ``y(θ) = y0 + Σ_i b_i(θ) K_i``."""

    y0: torch.Tensor
    K: torch.Tensor


class HermiteDense(NamedTuple):
    """The dense output of a step of a tableau without one: the cubic Hermite interpolant of
    ``(y0, y1, K[0] = h f0, k1 = h f1)``; ``k1`` may be evaluated on first use
    (:class:`_EndPoint`)."""

    y0: torch.Tensor
    y1: torch.Tensor
    K: torch.Tensor
    k1: Any


def _hermite_weights(theta: torch.Tensor) -> torch.Tensor:
    # Cubic Hermite basis in the form y0 + w0*(y1-y0) ... written on (y0, y1, k0, k1) with
    # k = h*f: y(θ) = (1-w)·y0 + w·y1 + θ(θ-1)[(θ-1)k0 + θ k1] with w = θ²(3-2θ).
    t2 = theta * theta
    w = t2 * (3 - 2 * theta)
    a = theta * (theta - 1)
    return torch.stack([w, a * (theta - 1), a * theta], dim=-1)


def hermite(ends: tuple, theta: torch.Tensor, per_sample: bool) -> torch.Tensor:
    """Cubic Hermite interpolation from ``(y0, y1, h f0, h f1)`` at the step fraction ``theta``
    (shapes as in :meth:`AbstractSolver.interpolate`)."""
    y0, y1, k0, k1 = ends
    w = _hermite_weights(theta.to(y0.dtype))
    if per_sample:
        w0, w1, w2 = (broadcast_time(w[..., j], y0) for j in range(3))
        return y0 + w0 * (y1 - y0) + w1 * k0 + w2 * k1
    basis = torch.stack([y1 - y0, k0, k1]).reshape(3, -1)
    return y0 + (w @ basis).view((-1,) + y0.shape)


def linear(ends: tuple, theta: torch.Tensor, per_sample: bool) -> torch.Tensor:
    """Linear interpolation between ``(y0, y1)`` at the step fraction ``theta`` (shapes as in
    :meth:`AbstractSolver.interpolate`)."""
    y0, y1 = ends
    theta = theta.to(y0.dtype)
    if per_sample:
        return y0 + theta.reshape(theta.shape + (1,) * (y0.ndim - 1)) * (y1 - y0)
    return y0 + theta.reshape((-1,) + (1,) * y0.ndim) * (y1 - y0)


class AbstractRungeKutta(AbstractSolver):
    """Explicit Runge–Kutta methods: subclasses set ``tableau`` and nothing else.

    The dense output is declared by the tableau: ``dense_output`` is ``"polynomial"`` for a
    tableau with ``b_dense`` (its steps record a :class:`PolynomialDense`) and ``"hermite"``
    otherwise (a :class:`HermiteDense`). A method with an interpolant of its own declares
    another ``dense_output`` and overrides ``step``, ``interpolate`` and
    ``take_dense_fevals`` (``Dopri8``).
    """

    tableau: ClassVar[ButcherTableau]
    dense_output: ClassVar[str] = "hermite"
    traceable_fixed_step: ClassVar[bool] = True
    # Set on the copy a constant-step loop uses (see the module docstring): the state after a
    # step is None and the next step evaluates its first stage itself.
    _defer_first_stage: bool = False
    # On that copy (one per loop): the stage tensor of `fixed_step` for a term that writes
    # its field into it, and its rows, reused step after step (see `fixed_step`).
    _stage_scratch: tuple | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        tab = cls.__dict__.get("tableau")
        if tab is not None:
            cls.order = tab.order
            cls.error_order = tab.error_order if tab.is_adaptive else None
            cls.dense_order = tab.dense_polynomial_order()
            if "dense_output" not in cls.__dict__:  # a method with its own interpolant
                cls.dense_output = _dense_output(tab)
            cls.num_fevals_step = tab.num_stages - 1 if tab.fsal else tab.num_stages

    # Per-instance access for user-built solvers (ExplicitRungeKutta(tableau)).
    def _tab(self) -> ButcherTableau:
        return self.tableau

    def init(self, terms: AbstractTerm, t0: torch.Tensor, y0: torch.Tensor, args: Any) -> Any:
        return terms.vf(t0, y0, args)

    def vector_field_of(self, state: Any) -> Any:
        return state

    def with_controller(self, controller: Any, norm: Any) -> AbstractSolver:
        solver = super().with_controller(controller, norm)
        tab = self._tab()
        # Only the engine's own step and Hermite dense output know the deferred layout.
        own = type(self).step is AbstractRungeKutta.step and (
            type(self).interpolate is AbstractRungeKutta.interpolate
        )
        # Joint stepping only: per sample, the loop selects states sample by sample.
        if (
            tab.fsal
            or tab.b_dense is not None
            or not own
            or not getattr(controller, "never_rejects", False)
            or getattr(controller, "jump_ts", None) is not None
            or getattr(controller, "per_sample", False)
        ):
            return solver
        new = copy.copy(self)  # with_tolerances is the identity for explicit methods
        new._defer_first_stage = True
        new._stage_scratch = None
        # init still evaluates f(t0, y0) (it checks the user's function) and the first step
        # uses it as its first stage: every step then costs num_fevals_step, init nothing.
        # After a step the state is a placeholder of empty tensors, which tells the next step
        # to evaluate its first stage (known from shapes alone: no host synchronisation).
        new.num_fevals_init = 0  # type: ignore[misc]
        return new

    def take_dense_fevals(self, dense_info: Any) -> int:
        if self.dense_output != "hermite":
            return 0
        if isinstance(dense_info, _LeanDense):
            dense_info = dense_info.built
            if dense_info is None:
                return 0
        last = dense_info.k1
        return last.take_fevals() if isinstance(last, _EndPoint) else 0

    def step(
        self,
        terms: AbstractTerm,
        t0: torch.Tensor,
        t1: torch.Tensor,
        y0: torch.Tensor,
        args: Any,
        state: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None, Any, Any]:
        tab = self._tab()
        coeffs = tab.cast(y0.dtype, y0.device)
        a_low = coeffs["a_low"]
        c = tab.c
        s = tab.num_stages
        control = terms.contr(t0, t1)
        # Stage times in one op, (stages, *batch), with the column of c cached per time dtype
        # and batch rank; a stage takes its row when it needs it (a view each: cheaper than
        # unbinding all of them, and the stages at t1 take t1 itself).
        t_stage = torch.addcmul(t0, _c_column(coeffs, t0), t1 - t0)
        # Every row of K is written before it is read (stage i reads rows < i through its
        # cut row of `a`, one (1, i) x (i, N) product), so K is not zero-filled: at large
        # batches the fill and the padded products were ~15% of a step outside the field.
        K = y0.new_empty((s,) + y0.shape)
        Kf = K.view(s, -1)
        # Stage slots: views made once per step when nothing is recorded for autograd (which
        # forbids in-place writes into views from `unbind`), fresh `K[i]` otherwise.
        slots = K.unbind(0) if not torch.is_grad_enabled() else None
        y0f = y0.reshape(1, -1)
        deferred = self._defer_first_stage
        if deferred and _is_placeholder(state):  # constant steps, not FSAL: see module doc
            state = terms.vf(t0, y0, args)
        # An ODE without autograd: `prod_into` is `torch.mul(vf, h, out=slot)`, made here
        # without the call, a per-sample h (batch,) viewed to broadcast once a step.
        fast = (
            slots is not None
            and type(terms).prod_into is _ODE_PROD_INTO
            and isinstance(control, torch.Tensor)
        )
        if fast and control.ndim:
            control = broadcast_time(control, y0)
        vf = state
        yi = y0
        # A first-same-as-last method's last stage is its solution: formed as one (`_plus`).
        last = s - 1 if tab.fsal else -1
        # (A graph is recorded when the state, the step or the field's first value needs
        # one; a solve under grad mode with nothing requiring it writes into K as without.)
        recorded = slots is None and (
            y0.requires_grad
            or (isinstance(control, torch.Tensor) and control.requires_grad)
            or (isinstance(state, torch.Tensor) and state.requires_grad)
        )
        if recorded and type(terms).prod_into in _PLAIN_PROD_INTO:
            # Under autograd: the increments as a list, each stage reading the stack of those
            # before it (a stack and a product recorded), K stacked once at the end; writing
            # them into rows of K records a copy into a slice per stage, whose backward
            # copies the whole of K each time.
            ks = [_increment(terms, state, control, y0)]
            for i in range(1, s):
                combine = _plus if i == last else torch.addmm
                yi = combine(y0f, a_low[i], torch.stack(ks).view(i, -1)).view_as(y0)
                vf = terms.vf(t1 if c[i] == 1.0 else t_stage[i], yi, args)
                ks.append(_increment(terms, vf, control, y0))
            K = torch.stack(ks)
            Kf = K.view(s, -1)
        else:
            if fast:
                torch.mul(state, control, out=slots[0])  # type: ignore[index]
            else:
                terms.prod_into(state, control, K[0] if slots is None else slots[0])
            for i in range(1, s):
                combine = _plus if i == last else torch.addmm
                yi = combine(y0f, a_low[i], Kf[:i]).view_as(y0)
                vf = terms.vf(t1 if c[i] == 1.0 else t_stage[i], yi, args)
                if fast:
                    torch.mul(vf, control, out=slots[i])  # type: ignore[index]
                else:
                    terms.prod_into(vf, control, K[i] if slots is None else slots[i])
        y_error = self._error_estimate(coeffs, Kf, y0)
        if tab.fsal:
            y1 = yi
            vf1 = vf
        else:
            y1 = _plus(y0f, coeffs["b_row"], Kf).view_as(y0)
            if deferred:
                end = _EndPoint(terms, t1, y1, args, control)
                return y1, y_error, HermiteDense(y0, y1, K, end), _placeholder(state)
            vf1 = terms.vf(t1, y1, args)
        dense_info: PolynomialDense | HermiteDense
        if self.dense_output == "polynomial":
            dense_info = PolynomialDense(y0, K)
        else:
            # In the state's dtype: a 0-dim state times a float64 step would promote.
            dense_info = HermiteDense(y0, y1, K, terms.prod(vf1, control).to(y1.dtype))
        return y1, y_error, dense_info, vf1

    def host_stepper(self, terms: AbstractTerm, y0: torch.Tensor, args: Any) -> HostStepper | None:
        """The steps of one solve on the host-controlled adaptive loop (``_core/adaptive.py``:
        joint steps, no dense or step output kept past a step): without autograd
        :meth:`_buffered_stepper`, under autograd (step sizes constants) :meth:`_graph_stepper`.

        ``None`` (use :meth:`step`) unless the method is this engine's, first-same-as-last,
        with its own interpolant, the term an ODE and the state a tensor."""
        tab = self._tab()
        if (
            type(self).step is not AbstractRungeKutta.step
            or type(self)._error_estimate is not AbstractRungeKutta._error_estimate
            or self.dense_output != "polynomial"
            or not tab.fsal
            or not tab.is_adaptive
            or self._defer_first_stage
            or terms.control_scale() != 1.0
            or type(terms).prod_into is not _ODE_PROD_INTO
            or not isinstance(y0, torch.Tensor)
        ):
            return None
        # The user's function itself for a plain ODE term (one call fewer per stage).
        vector_field = terms.vector_field if type(terms).vf is ODETerm.vf else terms.vf  # type: ignore[attr-defined]
        if torch.is_grad_enabled():
            return self._graph_stepper(vector_field, y0, args)
        return self._buffered_stepper(vector_field, y0, args)

    def _buffered_stepper(self, vector_field: Any, y0: torch.Tensor, args: Any) -> HostStepper:
        """:meth:`step` without autograd, with the stage increments ``K``, their views and the
        error estimate's buffer made once per solve and reused by every step (written with
        ``out=``): a step makes no view of them and allocates only the stage states. Those,
        and so every tensor the vector field sees or the loop keeps, are new at every step
        as in :meth:`step`; ``K`` and the error estimate are read only before the next step.
        The same operations in the same order as :meth:`step`: the same values bit for bit.

        Its saves (``save_into``) evaluate the interpolant's weights
        ``b_i(θ) = Σ_k P_ik θ^k`` on the host, in float64 (Horner) from the host's step
        fractions, and write ``y0 + W K`` into the output rows with one ``addmm``: no tensors
        for ``θ``, its powers or the weights but the one ``W``. The values are those of
        :meth:`interpolate` up to the rounding of ``θ`` and the weights (there float32 for
        a float32 solve, here float64 rounded once)."""
        tab = self._tab()
        coeffs = tab.cast(y0.dtype, y0.device)
        a_low, e_row, c = coeffs["a_low"], coeffs["e_row"], tab.c
        s = tab.num_stages
        shape = y0.shape
        K = y0.new_empty((s,) + shape)
        Kf = K.view(s, -1)
        slots = K.unbind(0)
        prefix = [Kf[:i] for i in range(s)]
        E = y0.new_empty((1, y0.numel()))
        E_v = E.view(shape)
        clock = _stage_clock(coeffs)
        # Per stage after the first: its combination (the last, first same as last, is the
        # solution: formed as one, `_plus`), its row of `a`, the stages it reads, its slot,
        # and its time (None: t1).
        plan = [
            (_plus if i == s - 1 else torch.addmm, a_low[i], prefix[i], slots[i],
             None if c[i] == 1.0 else i)
            for i in range(1, s)
        ]  # fmt: skip
        slot0 = slots[0]
        # A state of shape (1, n) is the stage product's own shape: no view to make.
        flat = shape == (1, y0.numel())

        def step(
            t0: torch.Tensor, t1: torch.Tensor, h: float, y: torch.Tensor, state: Any
        ) -> tuple:
            # (The step size as the 0-dim tensor: a product with a Python number wraps it
            # into a tensor at every call, measurably slower.)
            control, t_stage = clock(t0, t1)
            yf = y if flat else y.reshape(1, -1)
            torch.mul(state, control, out=slot0)
            vf = state
            yi = y
            for combine, a_i, k_i, slot, ti in plan:
                yi = combine(yf, a_i, k_i)
                if not flat:
                    yi = yi.view(shape)
                vf = vector_field(t1 if ti is None else t_stage[ti], yi, args)
                torch.mul(vf, control, out=slot)
            torch.mm(e_row, Kf, out=E)
            return yi, E_v, PolynomialDense(y, K), vf

        weights = _host_weights(tab, y0)

        def save_into(thetas: list, dense_info: PolynomialDense, out: torch.Tensor) -> None:
            W = weights(thetas)
            torch.addmm(dense_info.y0.reshape(1, -1), W, dense_info.K.view(s, -1), out=out)

        return HostStepper(step, save_into)

    def _graph_stepper(self, vector_field: Any, y0: torch.Tensor, args: Any) -> HostStepper:
        """:meth:`step` under autograd with the step size a host number (the host loop's
        steps chosen as constants), recording few nodes: a stage is ``y0 + h a_i F`` with
        ``F`` the stack of the evaluations so far (one ``stack`` and one ``addmm`` with
        ``alpha=h``, no ``K_i = h f_i`` products written into slices of a buffer, whose
        backward passes copy the whole buffer at every stage); ``K = h F`` is made once, for
        the dense output; the error estimate is computed without autograd (it only decides
        the step). The values are :meth:`step`'s up to rounding (``h`` applied after the
        combination instead of to each stage)."""
        tab = self._tab()
        coeffs = tab.cast(y0.dtype, y0.device)
        a_low, e_row, c = coeffs["a_low"], coeffs["e_row"], tab.c
        s = tab.num_stages
        shape = y0.shape
        n = y0.numel()
        clock = _stage_clock(coeffs)
        # The last stage, first same as last, is the solution: formed as one (`_plus`).
        plan = [
            (i, _plus if i == s - 1 else torch.addmm, a_low[i], None if c[i] == 1.0 else i)
            for i in range(1, s)
        ]
        flat = shape == (1, n)

        def step(
            t0: torch.Tensor, t1: torch.Tensor, h: float, y: torch.Tensor, state: Any
        ) -> tuple:
            _, t_stage = clock(t0, t1)
            yf = y.reshape(1, -1)
            fs = [state]
            vf = state
            yi = y
            for i, combine, a_i, ti in plan:
                yi = combine(yf, a_i, torch.stack(fs).view(i, n), alpha=h)
                if not flat:
                    yi = yi.view(shape)
                vf = vector_field(t1 if ti is None else t_stage[ti], yi, args)
                fs.append(vf)
            F = torch.stack(fs).view(s, n)
            with torch.no_grad():
                y_error = torch.mm(e_row, F).mul_(h).view(shape)
            return yi, y_error, PolynomialDense(y, (F * h).view((s,) + shape)), vf

        weights = _host_weights(tab, y0)

        def save_into(thetas: list, dense_info: PolynomialDense, out: torch.Tensor) -> None:
            # Recorded: one product, copied into the output's rows (as the loop's writes).
            yf, Kf = dense_info.y0.reshape(1, -1), dense_info.K.view(s, -1)
            out.copy_(torch.addmm(yf, weights(thetas), Kf))

        return HostStepper(step, save_into)

    def fixed_step(
        self,
        terms: AbstractTerm,
        t0: torch.Tensor,
        t1: torch.Tensor,
        h: float | torch.Tensor | None,
        y0: torch.Tensor,
        args: Any,
        state: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None, Any, Any]:
        """A step on a grid decided in advance, for an ODE (``terms.control_scale()``) on
        constant steps: the step size, known on the host, is folded into the coefficients,
        so a stage is one ``y0 + (h a_ij) f_j`` (``torch.add`` with ``alpha``) and the
        solution one ``addmm`` over the stacked stages; no ``K = h f`` products, no zeroed
        stage buffer, no error estimate (constant steps use none). The dense output's
        ``K[0] = h f0`` and end-point evaluation are made only when a save asks for them
        (:class:`_LeanDense`). A term that writes its field into a given tensor
        (``writes_vf_into``: a CDE's product) fills the rows of one stage tensor when no
        graph is recorded, which that ``addmm`` reads in place of the stack: the same
        values. Other cases take :meth:`step`."""
        scale = None if h is None or not self._defer_first_stage else terms.control_scale()
        if scale is None:
            return self.step(terms, t0, t1, y0, args, state)
        placeholder = _is_placeholder(state)
        plan = _lean_plan(self._tab())
        stages: torch.Tensor | None = None
        slots: tuple | None = None
        if placeholder and terms.writes_vf_into and not torch.is_grad_enabled():
            if not (isinstance(h, torch.Tensor) or torch.compiler.is_compiling()):
                stages, slots = self._stages_like(y0, plan)
        if slots is not None:
            f0 = terms.vf_into(t0, y0, args, slots[0])
        else:
            f0 = terms.vf(t0, y0, args) if placeholder else state
        # A value written into its slot has the state's shape and dtype.
        intact = slots is not None and f0 is slots[0]
        if not intact and (
            not isinstance(f0, torch.Tensor) or f0.dtype != y0.dtype or f0.shape != y0.shape
        ):
            return self.step(terms, t0, t1, y0, args, f0)
        hs = h * scale  # type: ignore[operator]
        fs = [f0]
        times: dict[float, torch.Tensor] = {}
        for i, (c_i, row) in enumerate(plan.stages, 1):
            if c_i == 1.0:
                ti = t1
            elif c_i == 0.0:
                ti = t0
            else:
                ti = times.get(c_i)  # type: ignore[assignment]
                if ti is None:
                    ti = times[c_i] = t0 + c_i * h  # type: ignore[operator]
            yi = _combine(y0, fs, row, hs)
            if slots is None:
                fs.append(terms.vf(ti, yi, args))
            else:
                fi = terms.vf_into(ti, yi, args, slots[i])
                intact = intact and fi is slots[i]
                fs.append(fi)
        if intact and plan.b_all and stages is not None and not isinstance(hs, torch.Tensor):
            # The stages are the rows of one tensor: the solution reads it as it is, with the
            # weights kept beside it (`_stages_like`).
            F, w = self._stage_scratch[2:]  # type: ignore[index]
            y1 = _plus(y0.reshape(1, -1), w, F, alpha=hs).view_as(y0)
        else:
            y1 = _combine(y0, fs, plan.b, hs, solution=True)
        new_state = state if placeholder else _placeholder(f0)
        return y1, None, _LeanDense(terms, t0, t1, y0, y1, f0, args), new_state

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
        """:meth:`fixed_step` for the steps of one fixed-grid solve, with what it works out
        at every step worked out once: the tableau's plan, each stage's time (``t_k + c_i
        h_k`` of every step in one operation per distinct node, then one view per step),
        the step sizes times the term's scale, the weights as tensors, the state that
        follows a step (one placeholder) and whether the vector field's value is the
        state's shape and dtype (on the initial state; a step's own first stage is still
        checked, as :meth:`fixed_step` checks it). A step is then its evaluations and their
        combinations: at d=2, B=1 (RK4, a tanh MLP) the work around the field fell from
        about 40 to about 20 us a step.

        The same operations on the same values as :meth:`fixed_step`, so the same results
        bit for bit: the stage times are the same additions, made for all steps at once
        (float32 / float64 times only), and for a ``(1, n)`` state the stages are joined
        with ``cat`` instead of ``stack`` and a view (the same rows). A state that is
        neither the initial one nor the placeholder (the output of a compiled block) takes
        :meth:`fixed_step`. ``None`` where :meth:`fixed_step` would take :meth:`step`, or
        the initial state is not a tensor like ``y0``."""
        cls = type(self)
        if (
            cls.fixed_step is not AbstractRungeKutta.fixed_step
            or cls.take_stats is not AbstractSolver.take_stats
            or cls.take_dense_fevals is not AbstractRungeKutta.take_dense_fevals
            or not self._defer_first_stage
            or not steps
            or steps[0] is None
            or not isinstance(y0, torch.Tensor)
            or not isinstance(state, torch.Tensor)
            or state.dtype != y0.dtype
            or state.shape != y0.shape
            or y0.numel() == 0  # an empty state is a placeholder itself
            or len(steps) != len(times)
            or ends.dtype != t0.dtype
            or t0.dtype not in (torch.float32, torch.float64)
        ):
            return None
        scale = terms.control_scale()
        if scale is None:
            return None
        plan = _lean_plan(self._tab())
        fixed_step, rk_step = self.fixed_step, self.step
        vf = terms.vector_field if type(terms).vf is ODETerm.vf else terms.vf  # type: ignore[attr-defined]
        hs = [h * scale for h in steps]
        first, hole = state, state.new_empty(0)  # (`_placeholder` of a tensor)
        # (`cat`: a stack of the 0-d times costs half a microsecond each.)
        starts = torch.cat([t0.reshape(1), ends[: len(steps) - 1]])
        nodes: dict[float, tuple] = {}
        # Per stage after the first: its times (None: the step's start), its row of `a` and,
        # for a row of one term, that term (one `torch.add`): (times, row, j, a_ij).
        stages: list[Any] = []
        for c_i, row in plan.stages:
            if c_i == 1.0:
                ts: tuple | None = times
            elif c_i == 0.0:
                ts = None
            else:
                ts = nodes.get(c_i)
                if ts is None:
                    # `t + c_i h` per step: a time plus a host number, the number cast to the
                    # time's dtype, as the addition of a tensor of them.
                    offsets = starts.new_tensor([c_i * h for h in steps])
                    ts = nodes[c_i] = torch.add(starts, offsets).unbind(0)
            stages.append((ts, row) + (row[0] if len(row) == 1 else (None, None)))
        b = plan.b
        num_b = len(b)
        shape = y0.shape
        # A (1, n) state is a row of the solution's product: the stages joined by `cat` are
        # its (stages, n) operand as they are, and the product is the new state.
        flat = y0.ndim == 2 and shape[0] == 1
        w_b = _row_tensor(b, y0) if num_b > 2 else None
        b_idx = [j for j, _ in b]
        # The solution of a (1, n) state from every stage in order: one `cat`, one `addmm`.
        whole = flat and w_b is not None and b_idx == list(range(len(stages) + 1))

        def solution(y: torch.Tensor, fs: list, h: float) -> torch.Tensor:
            if w_b is None:
                return _combine(y, fs, b, h, solution=True)
            if flat and y.shape == shape:
                return _plus(y, w_b, torch.cat([fs[j] for j in b_idx]), alpha=h)
            F = torch.stack([fs[j] for j in b_idx]).view(num_b, -1)
            return _plus(y.reshape(1, -1), w_b, F, alpha=h).view_as(y)

        if terms.writes_vf_into and not torch.is_grad_enabled():
            return self._into_stepper(
                terms, args, times, steps, hs, stages, y0, first, hole, solution
            )

        def advance(i: int, t: torch.Tensor, y: torch.Tensor, f0: torch.Tensor) -> Any:
            # Step i's new state from its first stage.
            h = hs[i]
            fs = [f0]
            for ts, row, j, a in stages:
                if j is not None:
                    yi = torch.add(y, fs[j], alpha=a * h)
                else:
                    yi = _combine(y, fs, row, h)
                fs.append(vf(t if ts is None else ts[i], yi, args))
            if whole:
                return _plus(y, w_b, torch.cat(fs), alpha=h)  # type: ignore[arg-type]
            return solution(y, fs, h)

        def step(i: int, t: torch.Tensor, y: torch.Tensor, state: Any) -> tuple:
            if state is hole:
                f0 = vf(t, y, args)
            elif state is first:
                f0 = state
            else:
                return fixed_step(terms, t, times[i], steps[i], y, args, state)
            t1 = times[i]
            if not isinstance(f0, torch.Tensor) or f0.dtype != y.dtype or f0.shape != y.shape:
                return rk_step(terms, t, t1, y, args, f0)
            y1 = advance(i, t, y, f0)
            return y1, None, _LeanDense(terms, t, t1, y, y1, f0, args), hole

        def run(i: int, j: int, t: torch.Tensor, y: torch.Tensor, state: Any) -> tuple:
            # `step` for i .. j-1 without their dense outputs (see `FixedStepper`).
            try:
                while i < j:
                    if state is hole:
                        f0 = vf(t, y, args)
                    elif state is first:
                        f0 = state
                    else:
                        y, _, _, state = fixed_step(terms, t, times[i], steps[i], y, args, state)
                        t = times[i]
                        i += 1
                        continue
                    if (
                        not isinstance(f0, torch.Tensor)
                        or f0.dtype != y.dtype
                        or f0.shape != y.shape
                    ):
                        y, _, _, state = rk_step(terms, t, times[i], y, args, f0)
                    else:
                        y, state = advance(i, t, y, f0), hole
                    t = times[i]
                    i += 1
            except Exception as err:
                return i, t, y, state, err
            return i, t, y, state, None

        return FixedStepper(step, run)

    def _into_stepper(
        self,
        terms: AbstractTerm,
        args: Any,
        times: tuple,
        steps: list,
        hs: list,
        stages: list,
        y0: torch.Tensor,
        first: torch.Tensor,
        hole: torch.Tensor,
        solution: Any,
    ) -> FixedStepper:
        """The steps of :meth:`fixed_stepper` for a term that writes its field into a given
        tensor (``writes_vf_into``), without a graph: after the first step, whose first
        stage is the initial state, the stages are written into the rows of the loop's
        stage tensor (:meth:`_stages_like`), as :meth:`fixed_step` writes them."""
        plan = _lean_plan(self._tab())
        fixed_step, rk_step = self.fixed_step, self.step
        vf, vf_into = terms.vf, terms.vf_into
        _, slots = self._stages_like(y0, plan)
        F, w = self._stage_scratch[2:]  # type: ignore[index]
        b_all = plan.b_all

        def step(i: int, t: torch.Tensor, y: torch.Tensor, state: Any) -> tuple:
            t1, h = times[i], hs[i]
            if state is first:
                fs = [state]
                for ts, row, *_ in stages:
                    yi = _combine(y, fs, row, h)
                    fs.append(vf(t if ts is None else ts[i], yi, args))
                y1 = solution(y, fs, h)
                return y1, None, _LeanDense(terms, t, t1, y, y1, state, args), hole
            if state is not hole:
                return fixed_step(terms, t, t1, steps[i], y, args, state)
            f0 = vf_into(t, y, args, slots[0])
            intact = f0 is slots[0]
            if not intact and (
                not isinstance(f0, torch.Tensor) or f0.dtype != y.dtype or f0.shape != y.shape
            ):
                return rk_step(terms, t, t1, y, args, f0)
            fs = [f0]
            for k, (ts, row, *_) in enumerate(stages, 1):
                yi = _combine(y, fs, row, h)
                fi = vf_into(t if ts is None else ts[i], yi, args, slots[k])
                intact = intact and fi is slots[k]
                fs.append(fi)
            if intact and b_all:
                y1 = _plus(y.reshape(1, -1), w, F, alpha=h).view_as(y)
            else:
                y1 = _combine(y, fs, plan.b, h, solution=True)
            return y1, None, _LeanDense(terms, t, t1, y, y1, f0, args), hole

        return FixedStepper(step)

    def _stages_like(self, y0: torch.Tensor, plan: _LeanPlan) -> tuple[torch.Tensor, tuple]:
        """A ``(stages, *y0.shape)`` tensor for the stages of :meth:`fixed_step` and its
        rows, made once per loop and reused by every step after (a new one for another
        shape, dtype or device); kept with it, its ``(stages, -1)`` view and the weights of
        the solution as a row. Reuse is safe because a step's stages are read before the
        next step writes them: by its solution, and by its dense output (the saves inside
        the step), which the fixed-step loop takes before the next step. A fresh 128 KiB
        tensor per step (RK4, batch 256, hidden 32) cost as much as the rest of the step's
        own work, in the allocator and in the memory it hands out cold."""
        scratch = self._stage_scratch
        num = len(plan.stages) + 1
        if (
            scratch is None
            or scratch[0].shape != (num,) + y0.shape
            or scratch[0].dtype != y0.dtype
            or scratch[0].device != y0.device
        ):
            stages = y0.new_empty((num,) + y0.shape)
            weights = y0.new_tensor([[w for _, w in plan.b]])
            scratch = (stages, stages.unbind(0), stages.view(num, -1), weights)
            self._stage_scratch = scratch
        return scratch[0], scratch[1]

    def _error_estimate(
        self, coeffs: dict[str, Any], Kf: torch.Tensor, y0: torch.Tensor
    ) -> torch.Tensor | None:
        """The local error estimate ``(b - b_error) · K``; methods may override."""
        e_row = coeffs.get("e_row")
        return None if e_row is None else torch.mm(e_row, Kf).view_as(y0)

    def interpolate(self, dense_info: Any, theta: torch.Tensor, per_sample: bool) -> torch.Tensor:
        if self.dense_output == "polynomial":
            y0, K = dense_info
            coeffs = self._tab().cast(y0.dtype, y0.device)
            P = coeffs["dense"]  # (s, m)
            m = P.shape[1]
            # The exponents 1..m, cached with the tableau's tensors per theta dtype.
            cached = coeffs.setdefault("powers", {})
            exps = cached.get((theta.dtype, theta.device))
            if exps is None:
                exps = torch.arange(1, m + 1, device=theta.device, dtype=theta.dtype)
                cached[(theta.dtype, theta.device)] = exps
            powers = theta.unsqueeze(-1) ** exps
            w = powers.to(P.dtype) @ P.T  # (..., s)
            if per_sample:
                # Each sample its own weights: one product and a sum over the stages
                # (`einsum`'s batched (1, s) x (s, n) products cost 1.4-4.7x this on the
                # 2-core CPU, B = 16 ... 10^5).
                ws = w.T.reshape(w.shape[::-1] + (1,) * (K.ndim - 2))
                return torch.sum(K * ws, 0).add_(y0)
            s = K.shape[0]
            return y0 + (w @ K.reshape(s, -1)).view((-1,) + y0.shape)
        if isinstance(dense_info, _LeanDense):
            dense_info = dense_info.hermite()
        y0, y1, K, k1 = dense_info
        if isinstance(k1, _EndPoint):
            if not (torch.is_grad_enabled() and theta.requires_grad) and bool(
                ((theta == 0) | (theta == 1)).all()
            ):
                # The Hermite weight of k1 vanishes at both ends: no evaluation needed (its
                # derivative in theta does not, so not when theta is differentiated).
                return hermite((y0, y1, K[0], torch.zeros_like(y1)), theta, per_sample)
            k1 = k1.value()
        return hermite((y0, y1, K[0], k1), theta, per_sample)


def _host_weights(tab: ButcherTableau, y0: torch.Tensor) -> Any:
    """``thetas -> W``: the weights ``b_i(θ) = Σ_k P_ik θ^k`` of the tableau's interpolant at
    host step fractions, evaluated on the host in float64 (Horner) and made one tensor
    ``(len(thetas), stages)`` of the state's dtype and device."""
    # The interpolant's coefficients, highest power first per stage (once per tableau).
    horner = tab._cache.get("horner")
    if horner is None:
        rows = tab.b_dense or ()
        horner = tab._cache["horner"] = [tuple(reversed([float(v) for v in r])) for r in rows]
    dtype, device = y0.dtype, y0.device

    def weights(thetas: list) -> torch.Tensor:
        rows = []
        for th in thetas:
            row = []
            for coeffs_i in horner:
                acc = 0.0
                for p in coeffs_i:
                    acc = (acc + p) * th
                row.append(acc)
            rows.append(row)
        return torch.tensor(rows, dtype=dtype, device=device)

    return weights


def _stage_clock(coeffs: dict[str, Any]) -> Any:
    """``(t0, t1) -> (t1 - t0, the stage times as 0-dim views)`` for the steps of one joint
    solve, the column of ``c`` cast for its time dtype on the first call."""
    column: list = []

    def clock(t0: torch.Tensor, t1: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        control = t1 - t0
        if not column:
            column.append(_c_column(coeffs, t0))
        return control, torch.addcmul(t0, column[0], control).unbind(0)

    return clock


def _c_column(coeffs: dict[str, Any], t0: torch.Tensor) -> torch.Tensor:
    """The nodes ``c`` as a column ``(stages, 1, ...)`` against times like ``t0``, cached with
    the tableau's tensors per time dtype and batch rank."""
    key = (t0.dtype, t0.ndim)
    column = coeffs["c_time"].get(key)
    if column is None:
        c = coeffs["c"]
        column = coeffs["c_time"][key] = c.to(t0.dtype).reshape((c.numel(),) + (1,) * t0.ndim)
    return column


def _dense_output(tab: ButcherTableau) -> str:
    return "polynomial" if tab.b_dense is not None else "hermite"


def _placeholder(state: Any) -> Any:
    """The state after a step with a deferred first stage: empty tensors of the vector
    field's structure (the loop and the checkpointing replay keep one state structure)."""
    return pytree.tree_map(lambda v: v.new_empty(0) if isinstance(v, torch.Tensor) else v, state)


def _is_placeholder(state: Any) -> bool:
    if isinstance(state, torch.Tensor):
        return state.numel() == 0
    leaves = [v for v in pytree.tree_leaves(state) if isinstance(v, torch.Tensor)]
    return bool(leaves) and all(v.numel() == 0 for v in leaves)


class _LeanPlan(NamedTuple):
    # Per stage after the first: (c_i, [(j, a_ij) for the nonzero a_ij]); then the weights,
    # and whether they take every stage, in order (the stage tensor's rows as they are).
    stages: list
    b: list
    b_all: bool


def _lean_plan(tab: ButcherTableau) -> _LeanPlan:
    plan = tab._cache.get("lean")
    if plan is None:
        rows = [[(j, float(a)) for j, a in enumerate(row) if a != 0] for row in tab.a]
        stages = [(float(tab.c[i + 1]), row) for i, row in enumerate(rows)]
        b = [(j, float(w)) for j, w in enumerate(tab.b) if w != 0]
        b_all = [j for j, _ in b] == list(range(tab.num_stages))
        plan = tab._cache["lean"] = _LeanPlan(stages, b, b_all)
    return plan


def _plus(
    y: torch.Tensor, w: torch.Tensor, F: torch.Tensor, alpha: float | torch.Tensor = 1.0
) -> torch.Tensor:
    """``y + alpha (w F)`` for a step's solution: the increment formed first, then added to
    ``y`` in one rounding. ``addmm(y, w, F)`` accumulates every term of the product into
    ``y`` and so rounds at ``|y|``'s scale once per stage: in float32 a long solve's
    round-off then drifts about ``s`` times as fast (`tests/test_fixed_grid.py`). Stages keep
    ``addmm``: their rounding reaches the solution only through the field, times ``h``.

    Under ``torch.compile`` (``compile_step=True``) inductor rewrites ``add(y, mm(w, F))``
    into that ``addmm`` (its post-grad pattern ``addmm``); the product by ``alpha`` between
    the two keeps the increment whole (``tests/test_compiled.py``), fused into the addition.
    ``alpha`` may be a 0-d tensor there (the step sizes of compiled fixed-step blocks)."""
    if torch.compiler.is_compiling():
        return y + torch.mm(w, F) * alpha
    return torch.add(y, torch.mm(w, F), alpha=alpha)  # type: ignore[arg-type]


def _combine(
    y0: torch.Tensor, fs: list, row: list, h: float | torch.Tensor, solution: bool = False
) -> torch.Tensor:
    """``y0 + h Σ_j w_j f_j`` over the nonzero ``(j, w_j)`` of ``row``: chained ``torch.add``
    with ``alpha`` for up to two terms, one ``addmm`` over the stacked stages beyond. A 0-d
    tensor ``h`` (a graph input of the compiled fixed-step blocks, ``_core/compiled.py``: one
    graph for every step size) is multiplied in, ``alpha`` taking numbers only. A
    ``solution`` adds the increment to ``y0`` once (:func:`_plus`)."""
    scaled = isinstance(h, torch.Tensor)
    if solution and len(row) == 2:
        (j, wj), (k, wk) = row
        inc = torch.add(fs[j], fs[k], alpha=wk / wj)
        return y0 + (wj * h) * inc if scaled else torch.add(y0, inc, alpha=wj * h)
    if len(row) <= 2:
        y = y0
        for j, w in row:
            y = y + (w * h) * fs[j] if scaled else torch.add(y, fs[j], alpha=w * h)
        return y
    w = _row_tensor(row, y0)
    F = torch.stack([fs[j] for j, _ in row]).view(len(row), -1)
    combine = _plus if solution else torch.addmm
    if isinstance(h, torch.Tensor):
        return combine(y0.reshape(1, -1), w * h, F).view_as(y0)
    return combine(y0.reshape(1, -1), w, F, alpha=h).view_as(y0)


def _row_tensor(row: list, y0: torch.Tensor) -> torch.Tensor:
    """The weights of ``row`` (``[(j, w_j)]`` of a cached plan) as a ``(1, len(row))`` tensor
    of ``y0``'s dtype and device, cached."""
    key = (id(row), y0.dtype, y0.device)
    w = _ROWS.get(key)
    if w is None or w[0] is not row:
        w = _ROWS[key] = (row, y0.new_tensor([[wj for _, wj in row]]))
    return w[1]


# The weight rows of `_combine` as tensors, per (row of a cached plan, dtype, device).
_ROWS: dict = {}


class _LeanDense:
    """The dense output of a :meth:`AbstractRungeKutta.fixed_step`: the step's Hermite data
    (``K[0] = h f0``, the end point evaluated on first use), built only when asked for."""

    __slots__ = ("terms", "t0", "t1", "y0", "y1", "f0", "args", "built")

    def __init__(self, terms, t0, t1, y0, y1, f0, args) -> None:
        self.terms, self.t0, self.t1, self.y0, self.y1 = terms, t0, t1, y0, y1
        self.f0, self.args = f0, args
        self.built: HermiteDense | None = None

    def hermite(self) -> HermiteDense:
        if self.built is None:
            control = self.terms.contr(self.t0, self.t1)
            k0 = self.terms.prod(self.f0, control).to(self.y0.dtype)
            end = _EndPoint(self.terms, self.t1, self.y1, self.args, control)
            self.built = HermiteDense(self.y0, self.y1, k0.unsqueeze(0), end)
        return self.built


class _EndPoint:
    """``h f(t1, y1)`` of a step with a deferred first stage, evaluated on first use (for the
    Hermite dense output inside the step) and counted once."""

    def __init__(self, terms: AbstractTerm, t1: torch.Tensor, y1: torch.Tensor, args, control):
        self.terms, self.t1, self.y1, self.args, self.control = terms, t1, y1, args, control
        self._value: torch.Tensor | None = None
        self._with_grad = False
        self._fevals = 0

    def value(self) -> torch.Tensor:
        # A value first computed without autograd (the event locator's search) has no graph:
        # recompute it once when it is needed with one.
        grad = torch.is_grad_enabled()
        if self._value is None or (grad and not self._with_grad):
            vf = self.terms.vf(self.t1, self.y1, self.args)
            self._value = self.terms.prod(vf, self.control).to(self.y1.dtype)
            self._with_grad = grad
            self._fevals += 1
        return self._value

    def take_fevals(self) -> int:
        n, self._fevals = self._fevals, 0
        return n


class ExplicitRungeKutta(AbstractRungeKutta):
    """An explicit Runge–Kutta method from any user-supplied :class:`ButcherTableau`.

    Example:
        >>> tab = ButcherTableau(a=[[0.5]], b=[0.0, 1.0], c=[0.0, 0.5], order=2)
        >>> solver = ExplicitRungeKutta(tab)
    """

    def __init__(self, tableau: ButcherTableau) -> None:
        if not isinstance(tableau, ButcherTableau):
            raise TypeError(
                f"ExplicitRungeKutta: `tableau` must be a ButcherTableau, got "
                f"{type(tableau).__name__}."
            )
        self._instance_tableau = tableau
        # Instance attributes shadow the class-level ones used by the loop and controllers.
        self.order = tableau.order  # type: ignore[misc]
        self.error_order = tableau.error_order if tableau.is_adaptive else None  # type: ignore[misc]
        self.dense_order = tableau.dense_polynomial_order()  # type: ignore[misc]
        self.dense_output = _dense_output(tableau)  # type: ignore[misc]
        self.num_fevals_step = (  # type: ignore[misc]
            tableau.num_stages - 1 if tableau.fsal else tableau.num_stages
        )

    def _tab(self) -> ButcherTableau:
        return self._instance_tableau

    def __repr__(self) -> str:
        return f"ExplicitRungeKutta(stages={self._instance_tableau.num_stages})"
