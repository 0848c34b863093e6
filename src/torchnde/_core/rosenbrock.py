r"""The Rosenbrock engine: linearly implicit Runge–Kutta methods.

In the transformed form of Hairer & Wanner (*Solving ODEs II*, Sec. IV.7, eq. (7.25)) a
Rosenbrock method with diagonal $\gamma$ solves one linear system per stage, all with the
matrix $M = I - h\gamma J$ of the Jacobian $J = \partial f/\partial y(t_0, y_0)$:

$$M U_i = h\gamma\Big(f\big(t_0 + \alpha_i h,\; y_0 + \textstyle\sum_{j<i} a_{ij} U_j\big)
+ \sum_{j<i} \tfrac{c_{ij}}{h} U_j + \gamma_i h\, \partial_t f(t_0, y_0)\Big),$$

$$y_1 = y_0 + \sum_i m_i U_i,\qquad \hat e = \sum_i (m_i - \hat m_i) U_i.$$

No Newton iteration: one Jacobian, one time derivative (a central difference, stopped after
its first evaluation when that shows no change; skipped for a term declared
``autonomous``) and one LU factorisation per step, and no host synchronisation but that
check. The step is an explicit function of its inputs (through the linear solves), so
autograd differentiates it exactly; the linear solves' backward passes solve with $M^\top$,
which is the implicit function theorem for these linear stage equations. The vector field
at the end of the step is evaluated for the Hermite dense output and reused as the next
step's first stage.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from .implicit import AbstractImplicitSolver
from .newton import Counts, FlatODE, _eye
from .runge_kutta import hermite
from .terms import AbstractTerm, broadcast_time

__all__ = ["AbstractRosenbrock", "RosenbrockTableau"]

#: Up to this size of one sample's state, the stage systems are solved with the inverse of
#: ``M`` (one factorisation and inversion, then one batched product per stage: ~1 us against
#: ~7 us for a triangular solve of a 3 x 3 system on one CPU thread). Its forward error is
#: of the size of the triangular solves' (both ``cond(M) eps``, Higham, *Accuracy and
#: Stability of Numerical Algorithms*, Sec. 14.1); larger systems keep the LU factors.
INVERSE_MAX_N = 16


@dataclass(frozen=True, eq=False)
class RosenbrockTableau:
    """Coefficients in Hairer & Wanner's transformed form (see the module docstring).

    Args:
        a, c: strictly lower rows ``1 .. s-1`` (row ``i`` has length ``i``).
        alpha: stage times, length ``s``.
        gamma_sum: $\\gamma_i = \\sum_j \\gamma_{ij}$, length ``s``; ``gamma_sum[0]`` is the
            diagonal $\\gamma$.
        m, m_error: weights of the solution and of the embedded one.
        order, error_order: order of the solution and exponent of the error estimate.
    """

    a: Sequence[Sequence[float]]
    c: Sequence[Sequence[float]]
    alpha: Sequence[float]
    gamma_sum: Sequence[float]
    m: Sequence[float]
    m_error: Sequence[float]
    order: int
    error_order: int
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        s = len(self.m)
        for name, rows in (("a", self.a), ("c", self.c)):
            if len(rows) != s - 1 or any(len(r) != i + 1 for i, r in enumerate(rows)):
                raise ValueError(f"RosenbrockTableau: `{name}` must have rows of length 1..s-1.")
        for name in ("alpha", "gamma_sum", "m_error"):
            if len(getattr(self, name)) != s:
                raise ValueError(f"RosenbrockTableau: `{name}` must have length {s}.")

    @property
    def gamma(self) -> float:
        return float(self.gamma_sum[0])

    @property
    def num_stages(self) -> int:
        return len(self.m)

    @property
    def inner_nodes(self) -> tuple[float, ...]:
        """The distinct stage times strictly inside the step (``alpha`` not 0 or 1)."""
        return tuple(dict.fromkeys(a for a in self.alpha if a not in (0.0, 1.0)))

    def node_tensor(
        self, dtype: torch.dtype, device: torch.device, per_sample: bool
    ) -> torch.Tensor:
        """:attr:`inner_nodes` as a tensor of the time dtype, ``(k,)``, or ``(k, 1)`` to
        broadcast against per-sample times; built once per pair."""
        key = ("nodes", dtype, device)
        hit = self._cache.get(key)
        if hit is None:
            flat = torch.tensor(self.inner_nodes, dtype=dtype, device=device)
            hit = self._cache[key] = (flat, flat[:, None])
        return hit[per_sample]

    def cast(self, dtype: torch.dtype, device: torch.device) -> dict[str, Any]:
        """The coefficients as tensors of ``dtype`` on ``device``, built once per pair.

        ``"stage"[i - 1]`` is the ``(i, 2)`` matrix ``[a_i; γ c_i]^T`` of stage ``i``: one
        matrix product of the stacked columns ``U_0 .. U_{i-1}`` with it gives both the stage
        point's increment and the ``Σ c_ij U_j`` term of its right-hand side. ``"weights"``
        is the ``(s, 2)`` matrix ``[m; m - m̂]^T`` (solution and error in one product).
        (Both are kept as transposed views of the ``(2, ·)`` rows, the layout of the products'
        operands: no transposition per stage.) ``"stage_rows"`` and ``"weights_rows"`` are
        those rows, for the stages of one system stacked as rows: ``(2, i) @ (i, n)``.
        """
        key = (dtype, device)
        hit = self._cache.get(key)
        if hit is None:
            s = self.num_stages
            a = torch.zeros(s, s, dtype=torch.float64)
            c = torch.zeros(s, s, dtype=torch.float64)
            for i in range(1, s):
                a[i, :i] = torch.tensor(self.a[i - 1], dtype=torch.float64)
                c[i, :i] = torch.tensor(self.c[i - 1], dtype=torch.float64)
            m = torch.tensor(self.m, dtype=torch.float64)
            e = m - torch.tensor(self.m_error, dtype=torch.float64)
            hit = {
                k: v.to(dtype=dtype, device=device)
                for k, v in (("a", a), ("c", c * self.gamma), ("m", m), ("e", e))
            }
            hit["stage"] = [
                torch.stack([a[i, :i], c[i, :i] * self.gamma]).to(dtype=dtype, device=device).T
                for i in range(1, s)
            ]
            hit["weights"] = torch.stack([m, e]).to(dtype=dtype, device=device).T
            # The same as (2, ·) rows, for stages stacked as rows (one system, a vector).
            hit["stage_rows"] = [w.T for w in hit["stage"]]
            hit["weights_rows"] = hit["weights"].T
            self._cache[key] = hit
        return hit


def _time_derivative(
    g: FlatODE,
    t: torch.Tensor,
    z: torch.Tensor,
    f: torch.Tensor,
    h: torch.Tensor,
    central: bool,
) -> tuple[torch.Tensor | None, int]:
    """``∂g/∂t`` at ``(t, z)``, ``(B, n)``, and the evaluations it took, by a finite
    difference (a forward-mode product costs several evaluations). ``central``: two
    evaluations, relative error about
    ``eps^(2/3)``. Otherwise a forward difference from ``f = g(t, z)``: one evaluation,
    relative error about ``sqrt(eps)``, as in Hairer's RODAS; used with the
    finite-difference Jacobian, whose error is of that size already (either enters the
    stages multiplied by ``h``, so it bounds the global error near ``h sqrt(eps)``). For an
    autonomous field both are exactly zero, and the central one stops after its first
    evaluation when that equals ``f`` bit for bit (returned as ``None``: the stages then
    skip the term)."""
    eps = torch.finfo(z.dtype).eps ** (1.0 / 3.0 if central else 0.5)
    dt = eps * torch.maximum(t.abs(), h.abs().to(t.dtype)).clamp_min(eps)
    tp = t + dt
    fp = g(tp, z)
    if central:
        if torch.equal(fp, f):
            # The field did not change at all over dt (an autonomous field, or one whose
            # time dependence is below its rounding there): the derivative is zero to
            # working precision, and the second evaluation is saved.
            return None, 1
        tm = t - dt
        width = (tp - tm).to(z.dtype)
        diff = fp - g(tm, z)
        evals = 2
    else:
        width = (tp - t).to(z.dtype)  # the step actually taken (rounding)
        diff = fp - f
        evals = 1
    return diff / broadcast_time(width, diff), evals


class AbstractRosenbrock(AbstractImplicitSolver):
    """Rosenbrock methods; subclasses set ``tableau``.

    Args:
        jacobian, jacobian_blocks: see :class:`~torchnde._core.implicit.AbstractImplicitSolver`.
    """

    tableau: ClassVar[RosenbrockTableau]

    def init(self, terms: AbstractTerm, t0: torch.Tensor, y0: torch.Tensor, args: Any) -> Any:
        g = self._ode(terms, args, y0, t0)
        f0 = g.unflat(g(t0, g.flat(y0)))
        # The state carries the last Jacobian too (AutoSwitch reads its spectral radius).
        return (f0, y0.new_zeros(g.B, g.n, g.n))

    def step(
        self,
        terms: AbstractTerm,
        t0: torch.Tensor,
        t1: torch.Tensor,
        y0: torch.Tensor,
        args: Any,
        state: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None, Any, Any]:
        f0 = state[0]
        g = self._ode(terms, args, y0, t0)
        tab = self.tableau
        co = tab.cast(y0.dtype, y0.device)
        s = tab.num_stages
        gamma = tab.gamma
        counts = Counts()
        B, n = g.B, g.n
        dt = t1 - t0
        h = dt.to(y0.dtype)
        # One system (B = 1: a joint solve, or a batch of one) is stepped as a vector (n,):
        # the field then sees a state of shape (n,) without reshapes (two per evaluation
        # otherwise), each stage's solve is one matrix-vector product and the stage products
        # (2, i) @ (i, n) ones, with no reshapes either. Blocks are stepped as (B, n) rows,
        # their stages as (B, n, 1) columns (the shape the batched solves take and return).
        vector = B == 1
        if vector:
            y0f, f0f = g.vector(y0), g.vector(f0)
            hgc = h * gamma  # () or (1,): broadcasts against (n,)
        else:
            y0f, f0f = g.flat(y0), g.flat(f0)
            hgc = (h.expand(B) if h.ndim == 0 else h)[:, None] * gamma
        J = g.jacobian(t0, y0f, f0f)  # (n, n) for a vector, else (B, n, n)
        # A central difference even with the finite-difference Jacobian: a forward one (one
        # evaluation less, Hairer's RODAS) doubled to quadrupled the error floor of Rodas5
        # (near 1e-10 on tests/test_stiff_costs.py's problem, against 3e-11). A term declared
        # autonomous skips it: the difference would be exactly zero (None) after one
        # evaluation, so the steps are the same.
        ft: torch.Tensor | None = None
        ft_evals = 0
        if not g.autonomous:
            ft, ft_evals = _time_derivative(g, t0, y0f, f0f, h, central=True)
        eye = _eye(n, J.dtype, J.device)
        M = torch.addcmul(eye, hgc if vector else hgc[:, :, None], J, value=-1)
        # Small systems: the inverse of M, each stage's solve one (batched) product.
        inverse = n <= INVERSE_MAX_N
        Minv = torch.linalg.inv_ex(M)[0] if inverse else None
        LU, piv = (None, None) if inverse else torch.linalg.lu_factor_ex(M)[:2]
        solve: Callable[[torch.Tensor], torch.Tensor]
        combine: Callable[[list[torch.Tensor], torch.Tensor], tuple[torch.Tensor, ...]]
        if vector:
            if Minv is not None:
                solve = functools.partial(torch.mv, Minv)
            else:

                def solve(r: torch.Tensor) -> torch.Tensor:
                    return torch.linalg.lu_solve(LU, piv, r.unsqueeze(-1)).squeeze(-1)

            def combine(U: list[torch.Tensor], rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
                return torch.mm(rows, torch.stack(U)).unbind(0)  # (2, i) @ (i, n)

            stage_co, weights = co["stage_rows"], co["weights_rows"]
            J = J.unsqueeze(0)  # the state keeps (B, n, n) blocks
        else:
            column: Callable[[torch.Tensor], torch.Tensor] = (
                functools.partial(torch.bmm, Minv)
                if Minv is not None
                else functools.partial(torch.linalg.lu_solve, LU, piv)
            )

            def solve(r: torch.Tensor) -> torch.Tensor:
                return column(r.unsqueeze(-1))  # (B, n, 1)

            def combine(U: list[torch.Tensor], cols: torch.Tensor) -> tuple[torch.Tensor, ...]:
                Us = torch.cat(U, dim=-1) if len(U) > 1 else U[0]  # (B, n, i)
                return torch.matmul(Us, cols).unbind(-1)

            stage_co, weights = co["stage"], co["weights"]

        counts.num_jacobians, counts.num_lu = 1, 1
        # Stages 1..s-1, f(t1, y1) and the time derivative (two evaluations, one, or none).
        counts.num_fevals = s + ft_evals
        if self.jacobian == "finite_difference":
            counts.num_fevals += n
        # h² γ γ_i ∂f/∂t and γ Σ c_ij U_j: no division by h (finished samples have h = 0).
        h2ft = None if ft is None else (h[:, None] if h.ndim and not vector else h) * hgc * ft
        # Stage times, one tensor per distinct node, those inside the step in one product
        # (t0 + alpha dt for every alpha at once: three operations instead of two each).
        times: dict[float, torch.Tensor] = {0.0: t0, 1.0: t1}
        nodes = tab.inner_nodes
        if nodes:
            nt = tab.node_tensor(dt.dtype, dt.device, dt.ndim > 0)
            times.update(zip(nodes, (t0 + nt * dt).unbind(0)))
        U: list[torch.Tensor] = []
        for i in range(s):
            gs = tab.gamma_sum[i]
            if i == 0:
                rhs = hgc * f0f
            else:
                # One product gives the stage increment Σ a_ij U_j and Σ γ c_ij U_j.
                wa, wc = combine(U, stage_co[i - 1])
                fi = g(times[tab.alpha[i]], y0f + wa)
                rhs = torch.addcmul(wc, hgc, fi)
            if gs != 0.0 and h2ft is not None:
                rhs = torch.add(rhs, h2ft, alpha=gs)
            U.append(solve(rhs))
        dy, err = combine(U, weights)
        y1f = y0f + dy
        y1 = g.unflat(y1f)
        f1 = g.unflat(g(t1, y1f))
        # (h f0, h f1 of the Hermite output are formed when it is evaluated: most steps are
        # never interpolated.)
        dense_info = (y0, y1, f0, f1, h, counts)
        return y1, g.unflat(err), dense_info, (f1, J)

    def interpolate(self, dense_info: Any, theta: torch.Tensor, per_sample: bool) -> torch.Tensor:
        y0, y1, f0, f1, h, _ = dense_info
        hb = broadcast_time(h, f0)
        return hermite((y0, y1, f0 * hb, f1 * hb), theta, per_sample)
