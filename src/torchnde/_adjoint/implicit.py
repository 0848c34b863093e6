r"""Gradients of a steady state by the implicit function theorem."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch

from .._core.loop import LoopResult
from .._core.problem import Problem
from .._core.terms import ODETerm
from .base import AbstractAdjoint
from .params import differentiable_leaves

__all__ = ["ImplicitAdjoint"]


class ImplicitAdjoint(AbstractAdjoint):
    r"""Differentiate an equilibrium $y^*$ with $f(t_1, y^*, \theta) = 0$ reached by the solve,
    without backpropagating through the solve (deep equilibrium models, steady states).

    By the implicit function theorem $\partial y^*/\partial\theta = -J^{-1}\,\partial f/\partial
    \theta$ with $J = \partial f/\partial y$ at $y^*$, so for a loss $L(y^*)$

    $$\frac{dL}{d\theta} = -\lambda^\top \frac{\partial f}{\partial \theta},\qquad
    J^\top \lambda = \frac{\partial L}{\partial y^*},$$

    where the linear system is solved matrix-free with BiCGSTAB on vector-Jacobian products.
    Memory and backward cost do not depend on how many steps the forward solve took. The
    equilibrium does not depend on ``y0``, ``t0`` or ``t1``, whose gradients are zero.

    Args:
        rtol: relative residual at which the linear solve stops.
        max_iters: the most BiCGSTAB iterations; not converging raises ``RuntimeError``.
        params: as for :class:`CheckpointAdjoint`.
        residual_tol: warn when $\|f(t_1, y^*)\| > $ ``residual_tol`` $\cdot(1 + \|y^*\|)$
            (RMS norms): the solve has not reached an equilibrium and the gradient is not the
            gradient of the solution.

    Only the final state can be differentiated: use ``SaveAt(t1=True)``. ODE terms only.
    """

    def __init__(
        self,
        rtol: float = 1e-8,
        max_iters: int = 500,
        *,
        params: Any = None,
        residual_tol: float = 1e-3,
    ) -> None:
        if not rtol > 0 or not isinstance(max_iters, int) or max_iters < 1:
            raise ValueError(
                f"ImplicitAdjoint: need rtol > 0 and a positive int max_iters, got rtol={rtol!r}, "
                f"max_iters={max_iters!r}."
            )
        self.rtol, self.max_iters, self.params = rtol, max_iters, params
        self.residual_tol = residual_tol

    def apply(self, problem: Problem) -> LoopResult:
        base = problem.terms.base_term()
        if not isinstance(base, ODETerm):
            raise NotImplementedError(
                f"ImplicitAdjoint supports ODE terms, got {type(base).__name__}."
            )
        saveat = problem.saveat
        if saveat.ts is not None or saveat.steps or saveat.t0 or not saveat.t1:
            raise ValueError(
                "ImplicitAdjoint differentiates the final state only: use saveat=SaveAt(t1=True)."
            )
        with torch.no_grad():
            res = problem.run()
        if not torch.is_grad_enabled():
            return res
        leaves = [x for x in differentiable_leaves(problem, self.params) if x.requires_grad]
        y_star = res.y

        def f(y: torch.Tensor) -> torch.Tensor:
            return problem.terms.vf(res.t, y, problem.args)

        with torch.no_grad():
            residual = _rms(f(y_star)) / (1 + _rms(y_star))
        if residual > self.residual_tol:
            warnings.warn(
                f"ImplicitAdjoint: the solve ended at a state with |f(t1, y)| / (1 + |y|) = "
                f"{residual:.3g} > {self.residual_tol:g}, not at an equilibrium, so the implicit "
                "gradient is not the gradient of the solution; integrate for longer or use "
                "another adjoint.",
                stacklevel=4,
            )
        anchors = [problem.y0] if problem.y0.requires_grad else []
        y = _Equilibrium.apply(self, f, y_star, len(anchors), *anchors, *leaves)
        res.y = y
        return res

    def __repr__(self) -> str:
        return f"ImplicitAdjoint(rtol={self.rtol!r}, max_iters={self.max_iters!r})"


def _rms(x: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(x)) / math.sqrt(max(x.numel(), 1))


def bicgstab(
    matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, rtol: float, max_iters: int
) -> torch.Tensor:
    """Solve ``A x = b`` for a matrix-free ``A`` (van der Vorst's BiCGSTAB)."""
    x = torch.zeros_like(b)
    r = b.clone()
    b_norm = float(torch.linalg.vector_norm(b))
    if b_norm == 0:
        return x
    r_hat = r.clone()
    rho = alpha = omega = 1.0
    v = torch.zeros_like(b)
    p = torch.zeros_like(b)
    for _ in range(max_iters):
        rho_new = float(torch.vdot(r_hat.flatten(), r.flatten()))
        if rho_new == 0:
            break
        beta = (rho_new / rho) * (alpha / omega)
        p = r + beta * (p - omega * v)
        v = matvec(p)
        alpha = rho_new / float(torch.vdot(r_hat.flatten(), v.flatten()))
        s = r - alpha * v
        if float(torch.linalg.vector_norm(s)) <= rtol * b_norm:
            return x + alpha * p
        t = matvec(s)
        tt = float(torch.vdot(t.flatten(), t.flatten()))
        omega = float(torch.vdot(t.flatten(), s.flatten())) / tt if tt > 0 else 0.0
        x = x + alpha * p + omega * s
        r = s - omega * t
        rho = rho_new
        if float(torch.linalg.vector_norm(r)) <= rtol * b_norm:
            return x
        if omega == 0:
            break
    raise RuntimeError(
        f"ImplicitAdjoint: the linear solve J^T x = dL/dy did not reach rtol={rtol:g} in "
        f"{max_iters} iterations (residual {float(torch.linalg.vector_norm(r)) / b_norm:.3g}); "
        "the equilibrium may be unstable or J singular."
    )


class _Equilibrium(torch.autograd.Function):
    """Identity on the equilibrium; its backward is the implicit-function-theorem gradient."""

    @staticmethod
    def forward(
        ctx: Any,
        adjoint: ImplicitAdjoint,
        f: Any,
        y_star: torch.Tensor,  # type: ignore[override]
        n_anchor: int,
        *inputs: torch.Tensor,
    ) -> torch.Tensor:
        ctx.adjoint, ctx.f, ctx.n_anchor = adjoint, f, n_anchor
        ctx.leaves = inputs[n_anchor:]
        ctx.y_star = y_star
        return y_star.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:  # type: ignore[override]
        adjoint: ImplicitAdjoint = ctx.adjoint
        leaves = list(ctx.leaves)
        with torch.enable_grad():
            y = ctx.y_star.detach().requires_grad_(True)
            fy = ctx.f(y)

            def jt(v: torch.Tensor) -> torch.Tensor:
                (out,) = torch.autograd.grad(fy, y, v, retain_graph=True)
                return out

            lam = bicgstab(jt, grad, adjoint.rtol, adjoint.max_iters)
            got = torch.autograd.grad(fy, leaves, -lam, allow_unused=True) if leaves else ()
        anchors = [None] * ctx.n_anchor  # the equilibrium does not depend on y0
        return (None, None, None, None, *anchors, *got)
