r"""Continuous adjoints (optimise-then-discretise): one backward solve of the adjoint system.

For $\dot y = f(\tau, y, \theta)$ on $[\tau_0, \tau_1]$ and a loss $L$ of the saved states, the
adjoint $a(\tau) = \partial L / \partial y(\tau)$ and the parameter gradient $g_\theta$ solve,
backwards in time from $a(\tau_1) = \partial L / \partial y(\tau_1)$, $g_\theta(\tau_1) = 0$,

$$ \dot a = -a^\top \frac{\partial f}{\partial y}, \qquad
   \dot g_\theta = -a^\top \frac{\partial f}{\partial \theta}, $$

with a jump $a \mathrel{+}= \partial L / \partial y(t_k)$ at every save time. Then
$\partial L/\partial y_0 = a(\tau_0)$, $\partial L/\partial\theta = g_\theta(\tau_0)$, and the
time gradients are $\partial L/\partial t_k = \langle \partial L/\partial y(t_k),
f(t_k, y(t_k)) \rangle$, $\partial L/\partial \tau_1 = \langle \partial L/\partial y(\tau_1),
f(\tau_1, y(\tau_1))\rangle$ and $\partial L/\partial \tau_0 = -\langle a(\tau_0),
f(\tau_0, y_0)\rangle$. Everything here is in the loop's internal time ($\tau = \pm t$); the
problem's internal times are differentiable functions of the user's, so autograd maps these
gradients back.

``BacksolveAdjoint`` also solves $y$ backwards (memory independent of the number of steps);
``InterpolatedAdjoint`` reads $y(\tau)$ from the forward dense solution instead.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
from torch.autograd.function import once_differentiable

from .._core.controllers import (
    AbstractAdaptiveController,
    AbstractStepSizeController,
    ConstantStepSize,
    PIDController,
)
from .._core.implicit import AbstractImplicitSolver
from .._core.loop import LoopResult
from .._core.problem import Problem
from .._core.solution import SaveAt, SolveError, Status
from .._core.solver import AbstractSolver
from .._core.solvers.auto_switch import AutoSwitch
from .._core.solvers.rk4 import RK4
from .._core.solvers.tsit5 import Tsit5
from .._core.symplectic import AbstractSymplectic
from .._core.terms import AbstractTerm, MultiTerm, ODETerm, broadcast_time
from .base import AbstractAdjoint
from .event_time import with_event_time
from .params import (
    captured_tensors,
    derived_from,
    flatten_args,
    independent_tensors,
    undeclared_leaves,
    unique_tensors,
    warn_undeclared,
)
from .stochastic import is_sde, stochastic_apply

__all__ = ["BacksolveAdjoint", "InterpolatedAdjoint"]


def _ode_vector_fields(terms: AbstractTerm, who: str) -> list[Callable[..., Any]]:
    """The user's vector fields behind the packing / time-reversal wrappers; ODEs only."""
    base = terms.base_term()
    leaves = list(base.terms) if isinstance(base, MultiTerm) else [base]
    for leaf in leaves:
        if not isinstance(leaf, ODETerm):
            raise NotImplementedError(
                f"{who} supports ODE terms (ODETerm, or a MultiTerm of ODETerms), got a "
                f"{type(leaf).__name__}. Use DirectAdjoint() for SDEs and CDEs."
            )
    return [leaf.vector_field for leaf in leaves if isinstance(leaf, ODETerm)]


def _rms(parts: Any) -> torch.Tensor:
    sq = sum(torch.linalg.vector_norm(p).square() for p in parts)
    n = sum(p.numel() for p in parts)
    return torch.sqrt(torch.as_tensor(sq) / max(n, 1))


def _adjoint_norm(k: int, seminorm: bool) -> Callable[[Any], torch.Tensor]:
    r"""The error norm of the backward solve, on the tuple ``(*first k, *gradients)``.

    The RMS over the ``k`` components that are an ODE state ($(y, a)$, or $a$ alone when $y$
    is interpolated), and, unless ``seminorm``, the maximum of that and the RMS over the
    parameter and ``args`` gradients, so that neither group dilutes the other's error
    (torchdiffeq's mixed norm does the same per tensor). The gradients are integrals,
    $g(	au_0) = \int a^	op \partial_	heta f\, d	au$: nothing in the backward solve depends
    on them, so the seminorm lets their local error go unmeasured (Kidger, Chen & Lyons 2021,
    "Hey, that's not an ODE").
    """

    def norm(x: Any) -> torch.Tensor:
        parts = tuple(x) if isinstance(x, (tuple, list)) else (x,)
        head = _rms(parts[:k])
        if seminorm or len(parts) <= k:
            return head
        return torch.maximum(head, _rms(parts[k:]))

    return norm


def _as_float(v: Any) -> float:
    """A scalar tolerance; per-component tolerance tensors give their strictest value."""
    return float(v.min()) if isinstance(v, torch.Tensor) else float(v)


class _DenseSolution:
    """The forward dense solution, evaluated at one (shared) internal time."""

    def __init__(
        self, solver: AbstractSolver, dense: list, y0: torch.Tensor, per_sample: bool
    ) -> None:
        self.solver = solver
        self.dense = dense
        self.y0 = y0
        self.per_sample = per_sample
        if dense:
            self.starts = torch.stack([d[0] for d in dense])
            self.ends = torch.stack([d[1] for d in dense])
            self.step_ends = torch.stack([d[3] for d in dense])

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        dense = self.dense
        if not dense:
            return self.y0
        t = t.to(self.ends.dtype)
        if not self.per_sample:
            j = int(torch.searchsorted(self.ends, t.reshape(1)).clamp(max=len(dense) - 1))
            tb, _, info, te = dense[j]
            theta = ((t - tb) / (te - tb)).clamp(0, 1)
            return self.solver.interpolate(info, theta.reshape(1), False)[0]
        # Per sample: records are (steps, batch); a sample's step containing t is its first
        # record of positive length that ends at or after t.
        S, E, TE = self.starts, self.ends, self.step_ends
        valid = E > S
        cond = valid & (E >= t)
        last = torch.where(valid, torch.arange(len(dense), device=S.device)[:, None], -1).amax(0)
        idx = torch.where(cond.any(0), cond.to(torch.int8).argmax(0), last.clamp_min(0))
        out = self.y0
        for j in torch.unique(idx).tolist():
            tb, te = S[j], TE[j]
            h = torch.where(te > tb, te - tb, torch.ones_like(te))
            theta = ((t - tb) / h).clamp(0, 1)
            yq = self.solver.interpolate(dense[j][2], theta, True)
            out = torch.where(broadcast_time(idx == j, out), yq, out)
        return out


class _Run:
    """One differentiated solve: the problem, what it is differentiated against, and the
    backward pass."""

    def __init__(
        self,
        adjoint: _ContinuousAdjoint,
        problem: Problem,
        arg_leaves: list[torch.Tensor],
        rebuild_args: Callable[[list[torch.Tensor]], Any],
        params: list[torch.Tensor],
        known_ids: set[int],
    ) -> None:
        self.adjoint = adjoint
        self.problem = problem
        self.arg_leaves = arg_leaves
        self.rebuild_args = rebuild_args
        self.params = params
        self.known_ids = known_ids  # undeclared tensors already warned about
        # Whether each vector-Jacobian product runs through the history of a tensor computed
        # from a parameter (and so must keep it for the next one).
        self.retain_graph = False
        self.res: LoopResult | None = None
        # The backward pass's counts, filled when it runs: Solution.stats["backward"].
        self.stats: dict[str, int] = {}

    # --- the forward pass (called inside the autograd.Function, grad disabled)
    def forward(self) -> LoopResult:
        interpolated = self.adjoint._interpolated
        res = self.problem.run(save_dense=True if interpolated else None)
        self.res = res
        return res

    # --- the backward pass
    def _backward_solver(self) -> AbstractSolver:
        """The adjoint's solver, else the forward one; a symplectic method only solves
        (q, p) systems, so RK4 (same order class, same fixed step) stands in for it, and
        implicit methods are replaced by Tsit5 (see below)."""
        adj, p = self.adjoint, self.problem
        if adj.solver is not None:
            return adj.solver
        if isinstance(p.solver, AbstractSymplectic):
            return RK4()
        if isinstance(p.solver, (AbstractImplicitSolver, AutoSwitch)):
            # The augmented system's Jacobian would need second derivatives through the
            # vector-Jacobian products of the adjoint vector field; an explicit adaptive method
            # integrates it (for stiff problems prefer CheckpointAdjoint or DirectAdjoint,
            # whose gradients follow the implicit forward solve).
            return Tsit5()
        return p.solver

    def _controller(self) -> tuple[AbstractStepSizeController, Any]:
        adj, p = self.adjoint, self.problem
        solver = self._backward_solver()
        fwd = p.controller
        k = 1 if adj._interpolated else 2
        norm = _adjoint_norm(k, adj.seminorm)
        ctrl = adj.controller
        # The backward solve runs in the forward's internal time, where the prepared forward
        # controller keeps its grids.
        step_ts, jump_ts = fwd.step_ts, fwd.jump_ts
        if ctrl is None:
            if solver.is_adaptive and isinstance(fwd, AbstractAdaptiveController):
                ctrl = PIDController(
                    rtol=_as_float(fwd.rtol),
                    atol=_as_float(fwd.atol),
                    dtmax=fwd.dtmax,
                    norm=norm,
                    step_ts=step_ts,
                    jump_ts=jump_ts,
                )
            elif solver.is_adaptive and adj.dt0 is None and p.dt0 is None:
                ctrl = PIDController(norm=norm, step_ts=step_ts, jump_ts=jump_ts)
            else:
                ctrl = ConstantStepSize(step_ts=step_ts, jump_ts=jump_ts)
        elif isinstance(ctrl, AbstractAdaptiveController) and ctrl.norm is None:
            ctrl = copy.copy(ctrl)
            ctrl.norm = norm
        dt0 = adj.dt0
        if dt0 is None and isinstance(ctrl, ConstantStepSize):
            if p.dt0 is None:
                raise ValueError(
                    f"{type(adj).__name__}: the backward solve steps with ConstantStepSize but "
                    "has no step size; pass dt0= to the adjoint."
                )
            dt0 = float(p.dt0.min())
        return ctrl, dt0

    def backward(
        self,
        needs: tuple[bool, ...],
        y0: torch.Tensor,
        y1: torch.Tensor,
        ys: torch.Tensor,
        t0: torch.Tensor,
        t1: torch.Tensor,
        ts: torch.Tensor,
        g_y1: torch.Tensor,
        g_t: torch.Tensor,
        g_ys: torch.Tensor,
    ) -> list[torch.Tensor | None]:
        """The backward pass, in named steps: check the forward solve, set up the augmented
        system, integrate it back through the save times to t0, assemble the gradients. Its
        counts go to ``self.stats`` (``Solution.stats["backward"]``)."""
        self._check_forward()
        back = _BackwardPass(self, y0, t0)
        need_y0, need_t0, need_t1, need_ts = needs[1], needs[2], needs[3], needs[4]
        grad_t1 = None
        if need_t1:
            grad_t1 = g_t + back.inner(g_y1, back.field_eval(back.tau_end, y1)).to(g_t.dtype)
        state = back.initial_state(y1, g_y1)
        state, grad_ts = back.through_save_times(state, ys, ts, g_ys, need_ts)
        state = back.integrate(state, back.t_cur, back.tau0)
        a0, acc = back.split(state)
        grad_t0 = None
        if need_t0:
            grad_t0 = -back.inner(a0, back.field_eval(back.tau0, y0)).to(t0.dtype)
            if not self.problem.per_sample:
                grad_t0 = grad_t0.reshape(t0.shape)
        if grad_t1 is not None and not self.problem.per_sample:
            grad_t1 = grad_t1.reshape(t1.shape)
        self.stats.update(back.stats)
        self.stats["num_fevals_total"] = back.stats["num_fevals"] + back.stats["num_time_fevals"]
        return [
            a0 if need_y0 else None,
            grad_t0,
            grad_t1,
            grad_ts,
            *self._leaf_grads(acc, needs[5:]),
        ]

    def _check_forward(self) -> None:
        res = self.res
        if res is None:
            raise RuntimeError("internal error: `res` is unset; please report this.")
        if bool((res.status > Status.EVENT_OCCURRED).any()):
            raise RuntimeError(
                f"{type(self.adjoint).__name__}: cannot differentiate a failed solve (status "
                f"{Status(int(res.status.max())).name}); fix the forward solve first."
            )

    def _leaf_grads(self, acc: list, need_leaves: tuple) -> list[torch.Tensor | None]:
        """The accumulated gradients in the Function's input order (args then params; the
        augmented state holds params then args), complex parameters rebuilt."""
        params = self.params
        leaf_grads: list[torch.Tensor | None] = []
        leaves = [*self.arg_leaves, *params]
        acc_by_input = acc[len(params) :] + acc[: len(params)]
        for need, leaf, g in zip(need_leaves, leaves, acc_by_input):
            if need and leaf.is_complex():
                g = torch.view_as_complex(g.to(leaf.real.dtype).clone())
            leaf_grads.append(g.to(leaf.dtype) if need else None)
        return leaf_grads

    def _warn_undeclared(self, f: torch.Tensor, declared: list[torch.Tensor], who: str) -> None:
        missed = [x for x in undeclared_leaves(f, declared) if id(x) not in self.known_ids]
        if missed:
            warn_undeclared(
                who,
                missed,
                reads="the vector field uses",
                fix="Pass them in params= or through args (as a tensor, or inside tuples, "
                "lists or dicts).",
            )


def _real_shape(x: torch.Tensor) -> torch.Size:
    """The shape of ``x``'s gradient in the (real) augmented state: a complex parameter's
    gradient travels as its real and imaginary parts (``view_as_real``), so casting it to the
    state's dtype cannot drop the imaginary part."""
    return x.shape + (2,) if x.is_complex() else x.shape


def _as_real(g: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (torch.view_as_real(g) if g.is_complex() else g).to(dtype)


class _BackwardPass:
    r"""One backward pass of a continuous adjoint: the augmented system
    $(y, a, g_\theta, g_{\mathrm{args}})$ (backsolve) or $(a, g_\theta, g_{\mathrm{args}})$
    (interpolated) and its integration from the end back to ``t0``, restarted at each save
    time."""

    def __init__(self, run: _Run, y0: torch.Tensor, t0: torch.Tensor) -> None:
        adj, p, res = run.adjoint, run.problem, run.res
        assert res is not None
        self.run, self.who = run, type(adj).__name__
        self.interpolated = adj._interpolated
        self.per_sample = per_sample = p.per_sample
        self.batch = y0.shape[0] if per_sample else 0
        self.terms, self.dtype, self.args = p.terms, y0.dtype, p.args
        self.device = y0.device
        self.solver = run._backward_solver()
        self.ctrl, self.dt0 = run._controller()
        self.max_steps = adj.max_steps if adj.max_steps is not None else p.max_steps
        # Shared (scalar) internal times: per-sample problems get here only with shared times.
        self.tau0 = t0.reshape(-1)[0].detach()
        self.tau_end = res.t.reshape(-1)[0].detach()
        self.t_cur = self.tau_end
        # dy/dτ = prod(vf, contr(0, 1)): the ODE in internal time (the sign of a reversed
        # solve and a MultiTerm's sum included), without the round-off of contr(τ, τ + 1).
        zero = self.time_arg(torch.zeros((), dtype=t0.dtype, device=t0.device))
        unit = self.terms.contr(zero, torch.ones_like(zero))
        self.unit = (
            tuple(u.to(self.dtype) for u in unit)
            if isinstance(unit, tuple)
            else unit.to(self.dtype)
        )
        self.stats = {
            "num_fevals": 0,
            "num_steps": 0,
            "num_accepted_steps": 0,
            "num_rejected_steps": 0,
            "num_intervals": 0,
            "num_time_fevals": 0,
        }
        arg_copies = [leaf.detach().requires_grad_(True) for leaf in run.arg_leaves]
        self.args_bw = run.rebuild_args(arg_copies) if arg_copies else p.args
        self.grad_inputs = [*run.params, *arg_copies]
        self.dense = None
        if self.interpolated:
            self.dense = _DenseSolution(p.solver, res.dense or [], y0, per_sample)
        self.checked = False
        # The backward solve sees every component flattened to 1-D (the tuple packing then
        # handles 0-d parameters and states alike).
        self.state_shape = y0.shape
        shapes = [_real_shape(x) for x in self.grad_inputs]
        if not self.interpolated:
            shapes = [y0.shape, *shapes]
        self.shapes = [y0.shape, *shapes]
        self.aug = ODETerm(self._aug_interpolated if self.interpolated else self._aug_backsolve)

    # --- the augmented vector field
    def time_arg(self, tau: torch.Tensor) -> torch.Tensor:
        return tau.expand(self.batch) if self.per_sample else tau

    def field(self, tau: torch.Tensor, y: torch.Tensor, args: Any) -> torch.Tensor:
        return self.terms.prod(self.terms.vf(self.time_arg(tau), y, args), self.unit)

    def inner(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.per_sample:
            return (u * v).reshape(self.batch, -1).sum(1)
        return (u * v).sum()

    def field_eval(self, tau: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The vector field for a time gradient (counted apart)."""
        self.stats["num_time_fevals"] += 1
        return self.field(tau, y, self.args)

    def vjp(self, tau: torch.Tensor, y: torch.Tensor, a: torch.Tensor) -> tuple:
        """``f(τ, y)`` and ``-aᵀ ∂f/∂(y, θ, args)`` (real, in the state's dtype)."""
        self.stats["num_fevals"] += 1
        dtype, grad_inputs = self.dtype, self.grad_inputs
        grads: tuple[torch.Tensor | None, ...]
        with torch.enable_grad():
            y_ = y.detach().requires_grad_(True)
            f = self.field(tau, y_, self.args_bw)
            if not self.checked:
                self.checked = True
                self.run._warn_undeclared(f, [y_, *grad_inputs], self.who)
            if f.requires_grad:
                grads = torch.autograd.grad(
                    f,
                    [y_, *grad_inputs],
                    grad_outputs=a,
                    allow_unused=True,
                    retain_graph=self.run.retain_graph,
                )
            else:
                grads = tuple(None for _ in range(1 + len(grad_inputs)))
        out = [
            torch.zeros(_real_shape(x), dtype=dtype, device=y.device)
            if g is None
            else -_as_real(g, dtype)
            for g, x in zip(grads, [y_, *grad_inputs])
        ]
        return f.detach(), out

    def _aug_backsolve(self, tau: torch.Tensor, state: tuple, _: Any) -> tuple:
        y, a = state[0].view(self.state_shape), state[1].view(self.state_shape)
        f, out = self.vjp(tau, y, a)
        return tuple(x.reshape(-1) for x in (f, *out))

    def _aug_interpolated(self, tau: torch.Tensor, state: tuple, _: Any) -> tuple:
        if self.dense is None:
            raise RuntimeError("internal error: `dense` is unset; please report this.")
        _, out = self.vjp(tau, self.dense(tau), state[0].view(self.state_shape))
        return tuple(x.reshape(-1) for x in out)

    # --- the integration
    def initial_state(self, y1: torch.Tensor, g_y1: torch.Tensor) -> tuple:
        a = g_y1.to(self.dtype)
        accum = [
            torch.zeros(_real_shape(x), dtype=self.dtype, device=self.device)
            for x in self.grad_inputs
        ]
        return (a, *accum) if self.interpolated else (y1, a, *accum)

    def split(self, state: tuple) -> tuple[torch.Tensor, list]:
        """The adjoint and the accumulated gradients of a state."""
        if self.interpolated:
            return state[0], list(state[1:])
        return state[1], list(state[2:])

    def integrate(self, state: tuple, t_hi: torch.Tensor, t_lo: torch.Tensor) -> tuple:
        """Solve the augmented system from ``t_hi`` back to ``t_lo``."""
        from .._solve import solve  # the public entry point; imported late (import cycle)

        if not bool(t_hi > t_lo):
            return state
        try:
            sol = solve(
                self.aug,
                self.solver,
                t_hi,
                t_lo,
                tuple(x.reshape(-1) for x in state),
                dt0=self.dt0,
                controller=self.ctrl,
                saveat=SaveAt(t1=True),
                max_steps=self.max_steps,
            )
        except SolveError as e:
            raise RuntimeError(
                f"{self.who}: the backward (adjoint) solve failed between "
                f"t={float(t_lo):.6g} and t={float(t_hi):.6g} (internal time): {e.status.name}: "
                f"{e.status.message}. Raise max_steps=, loosen the adjoint's controller, or "
                "use DirectAdjoint()."
            ) from e
        for k in ("num_steps", "num_accepted_steps", "num_rejected_steps"):
            self.stats[k] += sol.stats[k]
        self.stats["num_intervals"] += 1
        return tuple(part[0].view(shape) for part, shape in zip(sol.ys, self.shapes))

    def through_save_times(
        self, state: tuple, ys: torch.Tensor, ts: torch.Tensor, g_ys: torch.Tensor, need_ts: bool
    ) -> tuple[tuple, torch.Tensor | None]:
        """Integrate back through the save times (latest first), adding each one's incoming
        gradient to the adjoint (and, backsolve, restarting y from the saved state); the
        gradients with respect to the save times themselves."""
        p = self.run.problem
        if p.ts is None:
            return state, None
        per_sample, dtype = self.per_sample, self.dtype
        ts_shared = (ts[0] if per_sample else ts).detach()
        grad_ts = torch.zeros_like(ts) if need_ts else None
        for k in range(ts_shared.shape[0] - 1, -1, -1):
            tk = ts_shared[k]
            if bool(tk > self.tau_end):  # never reached (only after a failure)
                continue
            state = self.integrate(state, self.t_cur, tk)
            self.t_cur = tk
            gk = g_ys[:, k] if per_sample else g_ys[k]
            yk = ys[:, k] if per_sample else ys[k]
            if self.interpolated:
                state = (state[0] + gk.to(dtype), *state[1:])
            else:
                # Restart y from the forward value: the backward solve of y is unstable
                # wherever the forward one is stable, so drift is cut at every save time.
                state = (yk, state[1] + gk.to(dtype), *state[2:])
            if grad_ts is not None:
                gt = self.inner(gk, self.field_eval(tk, yk)).to(ts.dtype)
                if per_sample:
                    grad_ts[:, k] = gt
                else:
                    grad_ts[k] = gt
        return state, grad_ts


class _ContinuousAdjointFunction(torch.autograd.Function):
    """Ties the solve's outputs to its inputs with no graph through the steps."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        run: _Run,
        y0: torch.Tensor,
        t0: torch.Tensor,
        t1: torch.Tensor,
        ts: torch.Tensor,
        *leaves: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        res = run.forward()
        ys = res.ys_ts if res.ys_ts is not None else y0.new_zeros((0,))
        inputs = {id(x) for x in (y0, t0, t1, ts, *leaves)}
        # An input returned unchanged (e.g. t1 == t0) must be a new tensor for autograd.
        y1, t_end = (x.clone() if id(x) in inputs else x for x in (res.y, res.t))
        ctx.run = run
        ctx.save_for_backward(y0, y1, ys, t0, t1, ts)
        return y1, t_end, ys

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g_y1: torch.Tensor, g_t: torch.Tensor, g_ys: torch.Tensor) -> Any:
        y0, y1, ys, t0, t1, ts = ctx.saved_tensors
        with torch.no_grad():
            grads = ctx.run.backward(ctx.needs_input_grad, y0, y1, ys, t0, t1, ts, g_y1, g_t, g_ys)
        return (None, *grads)


class _ContinuousAdjoint(AbstractAdjoint):
    _interpolated: ClassVar[bool] = False

    def __init__(
        self,
        solver: AbstractSolver | None = None,
        controller: AbstractStepSizeController | None = None,
        *,
        dt0: float | None = None,
        seminorm: bool = True,
        params: Iterable[torch.Tensor] | None = None,
        max_steps: int | None = None,
    ) -> None:
        who = type(self).__name__
        if solver is not None and not isinstance(solver, AbstractSolver):
            hint = f" Use {solver.__name__}()." if isinstance(solver, type) else ""
            raise TypeError(
                f"{who}: `solver` must be a solver instance such as Dopri5() or None, got "
                f"{type(solver).__name__}.{hint}"
            )
        if controller is not None:
            if not isinstance(controller, AbstractStepSizeController):
                raise TypeError(
                    f"{who}: `controller` must be a step-size controller (PIDController(...), "
                    f"ConstantStepSize()) or None, got {type(controller).__name__}."
                )
            if controller.per_sample:
                raise ValueError(
                    f"{who}: the backward solve steps the batch jointly; pass a controller "
                    "with per_sample=False."
                )
        if dt0 is not None and (
            isinstance(dt0, bool)
            or not isinstance(dt0, numbers.Real)
            or not math.isfinite(dt0)
            or dt0 <= 0
        ):
            raise ValueError(f"{who}: `dt0` must be a positive number or None, got {dt0!r}.")
        if not isinstance(seminorm, bool):
            raise TypeError(f"{who}: `seminorm` must be a bool, got {seminorm!r}.")
        param_list: list[torch.Tensor] | None = None
        if params is not None:
            if isinstance(params, torch.Tensor):
                raise TypeError(
                    f"{who}: `params` must be a sequence of tensors, got one tensor of shape "
                    f"{tuple(params.shape)}; wrap it as params=[tensor]."
                )
            if isinstance(params, torch.nn.Module):
                raise TypeError(
                    f"{who}: `params` must be a sequence of tensors, got a Module; pass "
                    "params=list(module.parameters())."
                )
            param_list = list(params)
            bad = [type(x).__name__ for x in param_list if not isinstance(x, torch.Tensor)]
            if bad:
                raise TypeError(f"{who}: `params` must hold tensors only, got {bad}.")
        if max_steps is not None and (
            isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1
        ):
            raise ValueError(
                f"{who}: `max_steps` must be a positive int or None, got {max_steps!r}."
            )
        self.solver = solver
        self.controller = controller
        self.dt0 = None if dt0 is None else float(dt0)
        self.seminorm = seminorm
        self.params = param_list
        self.max_steps = max_steps

    def apply(self, problem: Problem) -> LoopResult:
        who = type(self).__name__
        if is_sde(problem.terms):
            return stochastic_apply(self, problem)
        if problem.event is not None:
            return with_event_time(problem, self.apply, who)
        fields = _ode_vector_fields(problem.terms, who)
        if problem.per_sample:
            shared = all(
                bool((x == x.reshape(-1)[:1]).all()) for x in (problem.t0, problem.t1)
            ) and (problem.ts is None or bool((problem.ts == problem.ts[:1]).all()))
            if not shared:
                raise NotImplementedError(
                    f"{who} with per-sample stepping needs t0, t1 and saveat.ts shared by the "
                    "batch (scalars / 1-D ts); per-sample times differ here. Use DirectAdjoint() "
                    "or share the times."
                )

        arg_leaves, rebuild = flatten_args(problem.args)
        # What the vector field can reach, and what ``args`` holds beyond plain tensors in
        # containers (an nn.Module, an object with tensor attributes).
        arg_ids = {id(x) for x in arg_leaves}
        captured = unique_tensors(
            [
                *(x for f in fields for x in captured_tensors(f)),
                *(x for x in captured_tensors(problem.args) if id(x) not in arg_ids),
            ]
        )
        if self.params is None:
            params = captured
        else:
            params = unique_tensors(x for x in self.params if x.requires_grad)
        known = {id(x) for x in (*params, *arg_leaves)}
        # A parameter computed from another one is reached through it (independent_tensors);
        # so is a captured tensor computed from a parameter (q = 2 * p with params=[p]).
        params, through = independent_tensors(params, captured)
        missed = [x for x in captured if id(x) not in known and not derived_from(x, params)]
        if missed and torch.is_grad_enabled():
            warn_undeclared(
                who,
                missed,
                fix="Pass them in params= or through args (or set requires_grad=False to "
                "silence this).",
                stacklevel=3,
            )
        ts = problem.ts if problem.ts is not None else problem.t0.new_zeros((0,))
        inputs = [problem.y0, problem.t0, problem.t1, ts, *arg_leaves, *params]
        if not torch.is_grad_enabled() or not any(x.requires_grad for x in inputs):
            with torch.no_grad():
                return problem.run()

        run = _Run(self, problem, arg_leaves, rebuild, params, known | {id(x) for x in missed})
        run.retain_graph = through
        y1, t_end, ys = _ContinuousAdjointFunction.apply(
            run, problem.y0, problem.t0, problem.t1, ts, *arg_leaves, *params
        )
        res = run.res
        if res is None:
            raise RuntimeError("internal error: `res` is unset; please report this.")
        # The backward pass needs the status, the time reached and (interpolated) the dense
        # solution; the saved states live in the Function's saved tensors.
        run.res = dataclasses.replace(
            res,
            ys_ts=None,
            steps_t=None,
            steps_y=None,
            dense=res.dense if self._interpolated else None,
        )
        return dataclasses.replace(
            res,
            y=y1,
            t=t_end,
            ys_ts=ys if problem.ts is not None else None,
            dense=res.dense if problem.saveat.dense else None,
            extra_stats={**res.extra_stats, "backward": run.stats},
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(solver={self.solver!r}, controller={self.controller!r}, "
            f"dt0={self.dt0!r}, seminorm={self.seminorm})"
        )


class BacksolveAdjoint(_ContinuousAdjoint):
    r"""The continuous adjoint with memory independent of the number of steps.

    The forward solve records nothing for autograd. The backward pass solves the augmented
    system $(y, a, g_\theta, g_{\mathrm{args}})$ backwards in time, save time to save time,
    restarting $y$ from its forward value at each save time (as torchdiffeq does) to limit the
    drift of the backward reconstruction. Gradients are those of the exact solution up to the
    backward solve's error, not those of the computed forward solution (use
    :class:`DirectAdjoint` for that); they converge to them as the tolerances tighten.

    Gradients flow to ``y0``, the parameters, the tensors requiring grad in ``args``
    (through tuples, lists and dicts), ``t0``, ``t1`` and ``saveat.ts``. Outputs of
    ``SaveAt(steps=True)`` and the dense solution (``Solution.evaluate``) carry no gradient.
    Supports ODE terms, tuple states, reverse time and per-sample stepping with times shared by
    the batch (the backward pass then steps jointly), and terminal events (the event time is
    differentiated by the implicit function theorem). Not twice differentiable.

    Args:
        solver: the backward solver; the forward one by default.
        controller: the backward step-size controller. By default a ``PIDController`` with
            the forward one's ``rtol``/``atol`` (the strictest entry of tensor tolerances), or
            ``ConstantStepSize`` with the forward ``dt0`` after a fixed-step solve. A
            ``PIDController`` with a ``norm`` receives the tuple ``(y, a, *g_params,
            *g_args)`` of scaled errors.
        dt0: the backward solve's first (or constant) step.
        seminorm: measure the backward error on $(y, a)$ only (their RMS), ignoring the
            parameter and ``args`` gradients, which are integrals nothing depends on: usually
            fewer backward steps at the same accuracy (Kidger, Chen & Lyons 2021, "Hey, that's
            not an ODE"). ``False`` takes the larger of that and the RMS over the gradients.
        params: the tensors to differentiate the vector field against. By default they are
            discovered from the vector field: ``nn.Module`` parameters (of a module or a
            bound method of one) and tensors requiring grad in its closure, the globals it
            names, its default arguments and ``functools.partial`` arguments, and from
            modules and objects passed in ``args``. A tensor
            requiring grad that the vector field uses but that is neither here nor in
            ``args`` gets no gradient and a ``UserWarning``.
        max_steps: the most steps of each backward interval; the forward ``max_steps`` by
            default.

    Statistics: ``Solution.stats["backward"]`` is a dict filled when the backward pass runs
    (empty before): ``num_fevals`` (evaluations of the augmented field, each one vector-field
    evaluation plus one vector-Jacobian product), ``num_time_fevals`` (extra evaluations for
    the time gradients), ``num_fevals_total``, ``num_steps``, ``num_accepted_steps``,
    ``num_rejected_steps`` and ``num_intervals`` (backward solves between save times). Each
    solve has its own; nothing is stored on the adjoint object, which can be shared.

    Memory: the states at the save times and the final state, whatever the number of steps.

    Example:
        >>> func = torch.nn.Linear(2, 2)
        >>> y0 = torch.randn(16, 2)
        >>> sol = solve(ODETerm(lambda t, y, args: func(y)), Tsit5(), 0.0, 1.0, y0,
        ...             adjoint=BacksolveAdjoint())
        >>> sol.ys.square().mean().backward()  # sets func.weight.grad and func.bias.grad
    """


class InterpolatedAdjoint(_ContinuousAdjoint):
    r"""The continuous adjoint that reads $y(t)$ from the forward dense solution.

    Like :class:`BacksolveAdjoint`, but the backward pass integrates only
    $(a, g_\theta, g_{\mathrm{args}})$ and evaluates $y(\tau)$ from the forward solve's dense
    output (interpolated reverse dynamics, as in adaptive-checkpoint adjoints): there is no
    error from reconstructing $y$ backwards, which can be unstable, and memory is that of the
    dense solution (a few states per forward step), with no autograd graph. ``seminorm``
    measures the backward error on $a$ only, and a controller's ``norm`` receives the tuple
    ``(a, *g_params, *g_args)``. Arguments, outputs without gradient, scope and
    ``Solution.stats["backward"]`` as for :class:`BacksolveAdjoint`.
    """

    _interpolated = True
