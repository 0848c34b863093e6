r"""Regularisers that make learned dynamics cheap to solve, as integral terms of the solve.

Each regulariser is a running cost $r(t, y)$ (one value per sample) integrated along the
trajectory *together with the state*, as one more component of a tuple state: the same solver,
step sizes and adjoint handle it, so it works with every adjoint (direct, checkpointed,
backsolve, interpolated, reversible). The vector field is evaluated once per stage and shared
by the state and all its regularisers.

- :class:`KineticEnergy`: $\|f(t, y)\|^2$ (RNODE, Finlay et al. 2020).
- :class:`JacobianFrobenius`: $\|\partial f/\partial y\|_F^2$, exact or by Hutchinson's
  estimator $\|\varepsilon^\top \partial f/\partial y\|^2$ (RNODE, Finlay et al. 2020).
- :class:`TaylorPenalty`: $\|d^K y/dt^K\|^2$ (Kelly et al. 2020).
- :class:`SolverHeuristic`: the solver's own local error estimates (Pal et al. 2021); not an
  integral: computed from the accepted steps after the solve (see its docstring).

References:
    C. Finlay, J.-H. Jacobsen, L. Nurbekyan, A. Oberman, "How to train your neural ODE: the
    world of Jacobian and kinetic regularization", ICML 2020.

    J. Kelly, J. Bettencourt, M. J. Johnson, D. Duvenaud, "Learning differential equations
    that are easy to solve", NeurIPS 2020.

    A. Pal, Y. Ma, V. Shah, C. Rackauckas, "Opening the blackbox: accelerating neural
    differential equations by regularizing internal solver heuristics", ICML 2021.
"""

from __future__ import annotations

import abc
import math
import typing
from collections.abc import Callable, Sequence
from typing import Any

import torch

import torchnde as tn

__all__ = [
    "AbstractRegulariser",
    "JacobianFrobenius",
    "KineticEnergy",
    "RateContext",
    "SolverHeuristic",
    "TaylorPenalty",
    "augmented_dynamics",
    "sample_noise",
]

VectorField = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def sample_noise(like: torch.Tensor, kind: str) -> torch.Tensor:
    """Hutchinson probe vectors with $E[\\varepsilon\\varepsilon^\\top] = I$, shaped like
    ``like``: standard Gaussian or Rademacher (±1)."""
    if kind == "gaussian":
        return torch.randn_like(like)
    if kind == "rademacher":
        return torch.randint_like(like, 0, 2) * 2 - 1
    raise ValueError(f"`noise` must be 'gaussian' or 'rademacher', got {kind!r}.")


def _sum_sample(x: torch.Tensor) -> torch.Tensor:
    """Sum over all but the leading (batch) dimension."""
    return x.reshape(x.shape[0], -1).sum(1)


class RateContext:
    """What a regulariser sees at one evaluation: ``t``, ``y``, ``dy = f(t, y)``, the vector
    field ``f`` itself, the Hutchinson ``noise`` of this solve, and Jacobian products of ``f``
    computed at most once per evaluation and shared between the regularisers (and the CNF
    trace)."""

    def __init__(
        self,
        t: torch.Tensor,
        y: torch.Tensor,
        dy: torch.Tensor,
        f: VectorField,
        noise: torch.Tensor | None,
        create_graph: bool,
    ) -> None:
        self.t, self.y, self.dy, self.f, self.noise = t, y, dy, f, noise
        self.create_graph = create_graph
        self._noise_vjp: torch.Tensor | None = None
        self._rows: torch.Tensor | None = None

    def vjp(self, v: torch.Tensor) -> torch.Tensor:
        r"""$v^\top \partial f/\partial y$, shaped like ``y``."""
        (g,) = torch.autograd.grad(
            self.dy, self.y, v, create_graph=self.create_graph, retain_graph=True
        )
        return g

    def noise_vjp(self) -> torch.Tensor:
        r"""$\varepsilon^\top \partial f/\partial y$ for this solve's noise."""
        if self.noise is None:
            raise RuntimeError("this regulariser needs Hutchinson noise but none was drawn.")
        if self._noise_vjp is None:
            self._noise_vjp = self.vjp(self.noise)
        return self._noise_vjp

    def jacobian_rows(self) -> torch.Tensor:
        r"""The per-sample Jacobian $\partial f_i/\partial y_j$ as ``(batch, D, D)`` (``D``
        state entries per sample), by ``D`` vector-Jacobian products: for small ``D`` only."""
        if self._rows is None:
            b = self.y.shape[0]
            flat = self.dy.reshape(b, -1)
            d = flat.shape[1]
            rows = []
            for i in range(d):
                e = torch.zeros_like(flat)
                e[:, i] = 1
                rows.append(self.vjp(e.reshape(self.dy.shape)).reshape(b, d))
            self._rows = torch.stack(rows, 1)
        return self._rows

    def exact_trace(self) -> torch.Tensor:
        return torch.diagonal(self.jacobian_rows(), dim1=1, dim2=2).sum(1)

    def hutchinson_trace(self) -> torch.Tensor:
        v = self.noise_vjp()
        return _sum_sample(v * typing.cast(torch.Tensor, self.noise))


class AbstractRegulariser(abc.ABC):
    """A running cost $r(t, y) \\ge 0$, one value per sample; integrated along the solve.

    Subclasses set ``name`` and ``needs_jacobian`` (whether ``rate`` takes Jacobian products,
    which needs autograd inside the vector field) and implement ``rate(ctx) -> (batch,)``.
    """

    name: str = ""
    needs_jacobian: bool = False
    needs_noise: bool = False

    @abc.abstractmethod
    def rate(self, ctx: RateContext) -> torch.Tensor: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class KineticEnergy(AbstractRegulariser):
    r"""$\int_{t_0}^{t_1} \|f(t, y(t))\|^2\,dt$ per sample (Finlay et al. 2020): straight
    trajectories at constant speed, which the solver steps through in few, large steps."""

    name = "kinetic_energy"

    def rate(self, ctx: RateContext) -> torch.Tensor:
        return _sum_sample(ctx.dy**2)


class JacobianFrobenius(AbstractRegulariser):
    r"""$\int_{t_0}^{t_1} \|\partial f/\partial y\|_F^2\,dt$ per sample (Finlay et al. 2020).

    Args:
        estimator: ``"hutchinson"`` (one vector-Jacobian product, unbiased:
            $E\|\varepsilon^\top J\|^2 = \|J\|_F^2$ for $E[\varepsilon\varepsilon^\top]=I$,
            the noise drawn once per solve and shared with a CNF's trace estimator) or
            ``"exact"`` (``D`` products, for small states).
        noise: ``"gaussian"`` or ``"rademacher"`` (Hutchinson only; a CNF's own noise wins).
    """

    name = "jacobian_frobenius"
    needs_jacobian = True

    def __init__(self, estimator: str = "hutchinson", noise: str = "gaussian") -> None:
        if estimator not in ("hutchinson", "exact"):
            raise ValueError(
                f"JacobianFrobenius: `estimator` must be 'hutchinson' or 'exact', got "
                f"{estimator!r}."
            )
        if noise not in ("gaussian", "rademacher"):
            raise ValueError(
                f"JacobianFrobenius: `noise` must be 'gaussian' or 'rademacher', got {noise!r}."
            )
        self.estimator, self.noise = estimator, noise
        self.needs_noise = estimator == "hutchinson"

    def rate(self, ctx: RateContext) -> torch.Tensor:
        if self.estimator == "exact":
            return ctx.jacobian_rows().pow(2).sum((1, 2))
        return _sum_sample(ctx.noise_vjp() ** 2)

    def __repr__(self) -> str:
        return f"JacobianFrobenius(estimator={self.estimator!r})"


class TaylorPenalty(AbstractRegulariser):
    r"""$\int_{t_0}^{t_1} \|d^K y/dt^K\|^2\,dt$ per sample, the squared $K$-th total time
    derivative of the solution (Kelly et al. 2020): small high derivatives make the local
    truncation error of a solver small, so an adaptive solver takes fewer steps.

    The derivatives follow the recursion $g_1 = f$, $g_{k+1} = \partial_t g_k +
    (\partial_y g_k) f$, each a forward-mode Jacobian-vector product along $(1, f)$; the
    nesting costs about $2^{K-1}$ evaluations of $f$ (Kelly et al. use Taylor-mode AD, which
    is polynomial in $K$; for the $K \le 3$ used in practice the difference is small).

    Args:
        order: $K \ge 2$ ($K = 1$ is :class:`KineticEnergy`); its name is ``f"taylor_{K}"``.
    """

    name = "taylor"

    def __init__(self, order: int = 2) -> None:
        if isinstance(order, bool) or not isinstance(order, int) or order < 2:
            raise ValueError(
                f"TaylorPenalty: `order` must be an int >= 2, got {order!r} (order 1 is "
                "KineticEnergy)."
            )
        self.order = order
        self.name = f"taylor_{order}"

    def rate(self, ctx: RateContext) -> torch.Tensor:
        f = ctx.f
        g: VectorField = f
        for _ in range(self.order - 1):
            g = _total_derivative(g, f)
        return _sum_sample(g(ctx.t, ctx.y) ** 2)

    def __repr__(self) -> str:
        return f"TaylorPenalty(order={self.order})"


def _total_derivative(g: VectorField, f: VectorField) -> VectorField:
    def dg(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.func.jvp(g, (t, y), (torch.ones_like(t), f(t, y)))[1]

    return dg


class SolverHeuristic:
    r"""The solver's local error estimates along the solve (Pal et al. 2021, "ERNODE"):

    $$R_E = \sum_j \mathrm{err}_j\,|\Delta t_j|,\qquad
    \mathrm{err}_j = \Big\|\frac{\hat e_j}{\mathrm{atol} + \mathrm{rtol}\max(|y_j|,
    |y_{j+1}|)}\Big\|_{\mathrm{RMS}},$$

    summed over the accepted steps $j$ of the forward solve, per sample. The estimates are
    those the step-size controller used: penalising them makes the controller accept larger
    steps.

    How it is computed here: the solve saves every accepted step (``SaveAt(steps=True)``);
    afterwards one call of the solver's public ``init``/``step`` on all accepted steps at
    once (stacked along the batch, per-sample times) recomputes the embedded error estimates
    $\hat e_j$ differentiably from the saved states $y_j$, which carry the gradient of the
    adjoint in use. As in Pal et al., the step times and $\Delta t_j$ are treated as
    constants (with :class:`~torchnde.DirectAdjoint`, which differentiates the controller,
    the motion of the step times is removed, but its derivative still includes how the
    accepted states depend on the controller's step-size choices, so it differs from the
    other adjoints' by about 1% in our tests). This costs one extra (parallel) step per
    accepted step. Needs an adaptive solver; tolerances come from
    the model's :class:`~torchnde.PIDController`.
    """

    name = "solver_error"

    def __repr__(self) -> str:
        return "SolverHeuristic()"

    def compute(
        self,
        solver: tn.AbstractSolver,
        controller: Any,
        f: Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor],
        ts: torch.Tensor,
        ys: torch.Tensor,
        args: Any,
    ) -> torch.Tensor:
        """``ts``: ``(n+1,)`` accepted step ends starting at ``t0``; ``ys``: ``(n+1, batch,
        ...)``. Returns ``(batch,)``."""
        n = ts.shape[0] - 1
        if n < 1:
            return ys.new_zeros(ys.shape[1])
        b = ys.shape[1]
        ta = ts[:-1].detach().repeat_interleave(b)
        tb = ts[1:].detach().repeat_interleave(b)
        y0 = ys[:-1].reshape((n * b,) + tuple(ys.shape[2:]))
        term = tn.ODETerm(f)
        state = solver.init(term, ta, y0, args)
        if ts.requires_grad:
            # The adjoint differentiated the step times too (DirectAdjoint differentiates the
            # controller): hold them constant, as the regulariser prescribes, by removing the
            # motion of y(t_j) along the flow: same value, derivative at fixed t_j.
            moved = ts[:-1] - ts[:-1].detach()
            vf = solver.vector_field_of(state)
            if vf is None:
                vf = f(ta, y0, args)
            shape = (n * b,) + (1,) * (y0.ndim - 1)
            y0 = y0 - vf * moved.repeat_interleave(b).reshape(shape).to(y0.dtype)
            state = solver.init(term, ta, y0, args)
        y1, err, _, _ = solver.step(term, ta, tb, y0, args, state)
        if err is None:
            raise ValueError(
                f"SolverHeuristic needs an adaptive solver with an error estimate, got {solver!r}."
            )
        rtol = getattr(controller, "rtol", 1e-4)
        atol = getattr(controller, "atol", 1e-6)
        scale = atol + rtol * torch.maximum(y0.abs(), y1.abs())
        e = (err / scale).reshape(n * b, -1)
        rms = torch.sqrt((e**2).mean(1) + torch.finfo(e.dtype).tiny)
        dt = (tb - ta).abs().to(rms.dtype)
        return (rms * dt).reshape(n, b).sum(0)


def augmented_dynamics(
    f: VectorField,
    regularisers: Sequence[AbstractRegulariser],
    trace: str | None = None,
    noise: torch.Tensor | None = None,
) -> Callable[[torch.Tensor, Any, Any], Any]:
    r"""The vector field of the state with its running costs: $z = (y, [\ell], r_1, \dots)$
    with $\dot y = f(t, y)$, $\dot\ell = \operatorname{tr}\partial f/\partial y$ when
    ``trace`` is ``"exact"`` or ``"hutchinson"``, and $\dot r_i = $ the regularisers' rates.
    ``f`` is evaluated once per call. Returns ``f(t, z, args)`` for :class:`torchnde.ODETerm`;
    with no trace and no regularisers, the plain ``f``."""
    needs_jac = trace is not None or any(r.needs_jacobian for r in regularisers)
    if not needs_jac and not regularisers:
        return lambda t, y, args: f(t, y)

    def vector_field(t: torch.Tensor, z: Any, args: Any) -> tuple[torch.Tensor, ...]:
        y = z[0] if isinstance(z, tuple) else z
        grad_on = torch.is_grad_enabled()
        if needs_jac:
            with torch.enable_grad():
                yg = y if y.requires_grad else y.detach().requires_grad_(True)
                dy = f(t, yg)
                ctx = RateContext(t, yg, dy, f, noise, create_graph=grad_on)
                out = _outputs(ctx, trace, regularisers)
            if not grad_on:
                out = tuple(o.detach() for o in out)
            return out
        dy = f(t, y)
        return _outputs(RateContext(t, y, dy, f, noise, grad_on), None, regularisers)

    return vector_field


def _outputs(
    ctx: RateContext, trace: str | None, regularisers: Sequence[AbstractRegulariser]
) -> tuple[torch.Tensor, ...]:
    out = [ctx.dy]
    if trace == "exact":
        out.append(ctx.exact_trace())
    elif trace == "hutchinson":
        out.append(ctx.hutchinson_trace())
    out.extend(r.rate(ctx) for r in regularisers)
    return tuple(out)


def gaussian_log_prob(z: torch.Tensor) -> torch.Tensor:
    """Standard normal log-density per sample."""
    d = z[0].numel()
    return -0.5 * _sum_sample(z**2) - 0.5 * d * math.log(2 * math.pi)
