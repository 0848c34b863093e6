r"""The stochastic adjoint (Li, Wong, Chen & Duvenaud 2020): ``BacksolveAdjoint`` for SDEs.

For a Stratonovich SDE $dy = f(t, y)\,dt + g(t, y) \circ dW$ and a loss $L$ of the saved
states, the adjoint $a = \partial L / \partial y$ and the parameter gradient $g_\theta$ solve,
backwards in time and on the same Brownian sample path,

$$ dy = f\,dt + g \circ dW, \qquad
   da = -a^\top \partial_y f\,dt - a^\top \partial_y g \circ dW, \qquad
   dg_\theta = -a^\top \partial_\theta f\,dt - a^\top \partial_\theta g \circ dW, $$

so one backward Stratonovich solve gives $\partial L/\partial y_0 = a(t_0)$ and
$\partial L/\partial\theta = g_\theta(t_0)$ with memory independent of the number of steps.
Each stage of the backward solve is one evaluation of $f\,h + g\,\Delta W$ and one
vector-Jacobian product of it, so no Jacobian of $g$ is ever formed, whatever the noise type.

An Itô SDE is first converted to its Stratonovich form, with drift
$f - \tfrac12 \sum_j (\partial_y g_j) g_j$ (for diagonal and scalar noise one Jacobian-vector
product; additive noise needs no correction), whose solutions are the same paths.

The backward solve steps between the times the forward solve accepted (and the save times),
querying the Brownian motion over exactly those intervals: an interval Brownian motion
(``BrownianInterval``, ``VirtualBrownianTree``) reconstructs the same increments. It uses the
midpoint method (Stratonovich, two stages per step).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from .._brownian import AbstractBrownianPath
from .._core.loop import LoopResult
from .._core.loop import run as run_loop
from .._core.problem import Problem
from .._core.sde import diagonal_derivative, jvp, solver_calculus, split_sde
from .._core.solution import Status
from .._core.terms import AbstractTerm, ControlTerm, MultiTerm, broadcast_time
from .params import (
    captured_tensors,
    derived_from,
    flatten_args,
    independent_tensors,
    unique_tensors,
    warn_undeclared,
)

__all__ = ["is_sde", "stochastic_apply"]


def is_sde(terms: AbstractTerm) -> bool:
    """Whether the (unwrapped) terms are an SDE: a ``ControlTerm`` driven by a Brownian motion
    or declaring a calculus (a CDE's controlled term is neither)."""
    inner = getattr(terms, "term", terms)
    leaves = inner.terms if isinstance(inner, MultiTerm) else (inner,)
    return any(
        isinstance(t, ControlTerm)
        and (t.calculus is not None or isinstance(t.control, AbstractBrownianPath))
        for t in leaves
    )


class _SDERun:
    def __init__(self, adjoint: Any, problem: Problem, who: str) -> None:
        self.adjoint, self.problem, self.who = adjoint, problem, who
        self.drift, self.diffusion = split_sde(problem.terms, who)
        calculus = self.diffusion.calculus or solver_calculus(problem.solver)
        self.ito = calculus == "ito" and self.diffusion.noise != "additive"
        if self.ito and self.diffusion.noise == "general":
            raise NotImplementedError(
                f"{who}: the Itô stochastic adjoint needs the Itô–Stratonovich correction, "
                "implemented for diagonal, scalar and additive noise; for general noise write "
                "the SDE in Stratonovich form (calculus='stratonovich') or use DirectAdjoint()."
            )
        self.arg_leaves, self.rebuild = flatten_args(problem.args)
        arg_ids = {id(x) for x in self.arg_leaves}
        fields = [self.diffusion.vector_field] + (
            [self.drift.vector_field] if self.drift is not None else []
        )
        captured = unique_tensors(
            [
                *(x for f in fields for x in captured_tensors(f)),
                *(x for x in captured_tensors(problem.args) if id(x) not in arg_ids),
            ]
        )
        declared = (
            captured
            if adjoint.params is None
            else unique_tensors(x for x in adjoint.params if x.requires_grad)
        )
        # A parameter computed from another one is reached through it (independent_tensors);
        # so is a captured tensor computed from a parameter (q = 2 * p with params=[p]).
        self.params, self.retain_graph = independent_tensors(declared, captured)
        if adjoint.params is not None:
            known = {id(x) for x in declared} | arg_ids
            missed = [
                x for x in captured if id(x) not in known and not derived_from(x, self.params)
            ]
            if missed and torch.is_grad_enabled():
                warn_undeclared(who, missed, reads="the drift or diffusion captures", stacklevel=4)
        self.res: LoopResult | None = None
        self.grid: list[float] = []

    def forward(self) -> LoopResult:
        res, tape = run_loop(self.problem.loop(), self.problem.y0)
        self.res = res
        self.grid = [float(self.problem.t0)] + [h.t_shown for h in tape[1:] if h.accepted]
        return res

    # --- the backward pass ---------------------------------------------------------------
    def _increment(
        self, t: torch.Tensor, y: torch.Tensor, args: Any, h: torch.Tensor, dw: torch.Tensor
    ) -> torch.Tensor:
        """``f h + g ΔW`` in Stratonovich form."""
        diffusion, drift = self.diffusion, self.drift
        if self.ito:
            # Stratonovich drift = Itô drift - ½ (∂_y g) g (g_i depends on y_i for diagonal
            # noise; one column for scalar noise).
            g_at = lambda z: diffusion.vf(t, z, args)
            if diffusion.noise == "diagonal":
                g, dg = diagonal_derivative(g_at, y)
                dgg = g * dg
            else:
                g = diffusion.vf(t, y, args)
                _, dgg = jvp(g_at, y, g)
            out = diffusion.prod(g, dw) - 0.5 * dgg * broadcast_time(h, y)
        else:
            out = diffusion.prod(diffusion.vf(t, y, args), dw)
        if drift is not None:
            out = out + drift.vf(t, y, args) * broadcast_time(h, y)
        return out

    def backward(
        self, y1: torch.Tensor, ys: torch.Tensor, g_y1: torch.Tensor, g_ys: torch.Tensor
    ) -> list[torch.Tensor | None]:
        p, res, who = self.problem, self.res, self.who
        if res is None:
            raise RuntimeError("internal error: the forward pass did not run; please report this.")
        if bool((res.status > Status.EVENT_OCCURRED).any()):
            raise RuntimeError(
                f"{who}: cannot differentiate a failed solve (status "
                f"{Status(int(res.status.max())).name}); fix the forward solve first."
            )
        dtype, device, tdtype = y1.dtype, y1.device, p.t0.dtype
        arg_copies = [leaf.detach().requires_grad_(True) for leaf in self.arg_leaves]
        args = self.rebuild(arg_copies) if arg_copies else p.args
        inputs = [*self.params, *arg_copies]

        def stage(t: torch.Tensor, y: torch.Tensor, a: torch.Tensor, h, dw) -> tuple:
            with torch.enable_grad():
                y_ = y.detach().requires_grad_(True)
                dy = self._increment(t, y_, args, h, dw)
                grads = torch.autograd.grad(
                    dy,
                    [y_, *inputs],
                    grad_outputs=a,
                    allow_unused=True,
                    retain_graph=self.retain_graph,
                )
            out = [
                torch.zeros_like(x) if gr is None else -gr for gr, x in zip(grads, [y_, *inputs])
            ]
            return dy.detach(), out[0], out[1:]

        # The backward time points: the forward steps and the save times, descending.
        grid = sorted(set(self.grid))
        on_grid = set(grid)
        saves: dict[float, list[int]] = {}
        if p.ts is not None:
            for k, tk in enumerate(p.ts.detach().tolist()):
                saves.setdefault(tk, []).append(k)
        points = sorted(on_grid | set(saves), reverse=True)
        t_end = float(res.t)
        points = [t for t in points if t <= t_end]
        y, a = y1, g_y1.to(dtype)
        acc = [torch.zeros_like(x) for x in inputs]
        bm = self.diffusion
        for i, t_hi in enumerate(points):
            if t_hi in saves:
                for k in saves[t_hi]:
                    a = a + g_ys[k].to(dtype)
                    if t_hi in on_grid:
                        y = ys[k]  # restart from the forward value (no backward drift)
            if i + 1 == len(points):
                break
            t_lo = points[i + 1]
            hi = torch.tensor(t_hi, dtype=tdtype, device=device)
            lo = torch.tensor(t_lo, dtype=tdtype, device=device)
            h = lo - hi  # negative: the step runs backwards
            dw = -bm.contr(lo, hi)
            # Midpoint method on the augmented Stratonovich SDE.
            dy1, da1, _ = stage(hi, y, a, h, dw)
            dy2, da2, dp2 = stage(hi + 0.5 * h, y + 0.5 * dy1, a + 0.5 * da1, h, dw)
            y, a = y + dy2, a + da2
            acc = [x + d for x, d in zip(acc, dp2)]
        n = len(self.params)
        # The Function's inputs are y0, then args leaves, then params.
        return [a, *acc[n:], *acc[:n]]


class _SDEAdjointFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, run: _SDERun, y0: torch.Tensor, *leaves: torch.Tensor) -> Any:  # type: ignore[override]
        res = run.forward()
        ys = res.ys_ts if res.ys_ts is not None else y0.new_zeros((0,))
        y1 = res.y.clone() if res.y is y0 else res.y
        ctx.run = run
        ctx.save_for_backward(y1, ys)
        return y1, ys

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g_y1: torch.Tensor, g_ys: torch.Tensor) -> Any:
        y1, ys = ctx.saved_tensors
        with torch.no_grad():
            grads = ctx.run.backward(y1, ys, g_y1, g_ys)
        needs = ctx.needs_input_grad[1:]
        return (None, *(g if need else None for g, need in zip(grads, needs)))


def stochastic_apply(adjoint: Any, problem: Problem) -> LoopResult:
    """Solve an SDE with gradients by the stochastic adjoint."""
    import dataclasses

    who = type(adjoint).__name__
    if adjoint._interpolated:
        raise NotImplementedError(
            f"{who} does not support SDEs (the dense output of an SDE solve is too coarse to "
            "interpolate the state); use BacksolveAdjoint() (the stochastic adjoint), "
            "ReversibleAdjoint() with ReversibleHeun(), or DirectAdjoint()."
        )
    if problem.event is not None or problem.per_sample or problem.direction < 0:
        raise NotImplementedError(
            f"{who} for SDEs supports forward-time solves with joint stepping and no events; "
            "use DirectAdjoint() otherwise."
        )
    if problem.spec is not None:
        raise NotImplementedError(f"{who} for SDEs needs a tensor state, not a tuple.")
    run = _SDERun(adjoint, problem, who)
    inputs = [problem.y0, *run.arg_leaves, *run.params]
    if not torch.is_grad_enabled() or not any(x.requires_grad for x in inputs):
        with torch.no_grad():
            return problem.run()
    if any(x.requires_grad for x in (problem.t0, problem.t1)) or (
        problem.ts is not None and problem.ts.requires_grad
    ):
        warnings.warn(
            f"{who}: gradients with respect to the times of an SDE solve are not computed by "
            "the stochastic adjoint (they get none).",
            UserWarning,
            stacklevel=3,
        )
    y1, ys = _SDEAdjointFunction.apply(run, problem.y0, *run.arg_leaves, *run.params)
    res = run.res
    if res is None:
        raise RuntimeError("internal error: the forward pass did not run; please report this.")
    run.res = dataclasses.replace(res, ys_ts=None, steps_t=None, steps_y=None, dense=None)
    return dataclasses.replace(res, y=y1, ys_ts=ys if problem.ts is not None else None)
