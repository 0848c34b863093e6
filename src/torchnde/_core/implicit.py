r"""Implicit solvers: the shared options, and the ESDIRK engine.

An ESDIRK (explicit first stage, singly diagonally implicit) Runge–Kutta method with
diagonal $\gamma$ computes, for stages $i = 1, \dots, s-1$,

$$z_i = y_0 + h \sum_{j<i} a_{ij} k_j + h\gamma\, k_i,\qquad k_i = f(t_0 + c_i h, z_i),$$

with $k_0 = f(t_0, y_0)$. Each stage is a nonlinear equation for $z_i$, solved by simplified
Newton with the matrix $I - h\gamma J$ (one LU factorisation for every stage, reused across
steps while Newton converges fast and the step size stays close). All methods here are
stiffly accurate ($y_1 = z_{s-1}$, so $k_{s-1} = f(t_1, y_1)$ is the next step's $k_0$), and
$k_i$ is recovered as $(z_i - \text{base}_i) / (h\gamma)$, which does not amplify the Newton
error by the stiffness (Hairer & Wanner, *Solving ODEs II*, Sec. IV.8).

A Newton failure rejects the step: the error estimate is infinite, so the controller
shrinks the step (after first retrying with a fresh Jacobian when the one used was stale).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from .newton import (
    INVERSE_MAX_N,
    Counts,
    FlatODE,
    attach_coupled_gradient,
    attach_implicit_gradient,
    coupled_matrix,
    is_ode,
    lu_solve,
    newton_matrix,
    newton_solve,
    records_gradient,
    simplified_newton,
    stage_values,
    unit_norm_floor,
)
from .runge_kutta import hermite
from .solver import AbstractSolver
from .terms import AbstractTerm

#: Nodes of the ESDIRK stage predictor (see ``ESDIRKTableau.predictor``).
PREDICTOR_NODES = 3

__all__ = [
    "AbstractCollocation",
    "AbstractESDIRK",
    "AbstractImplicitSolver",
    "CollocationTableau",
    "ESDIRKTableau",
]


class AbstractImplicitSolver(AbstractSolver):
    """Options shared by the solvers that need the Jacobian of the vector field.

    Args:
        jacobian: how to get $\\partial f / \\partial y$. ``"autograd"`` (default):
            ``torch.func.jacrev``, one vectorised backward pass per state component of one
            sample, exact. ``"finite_difference"``: one extra evaluation of ``f`` per state
            component of one sample (all samples perturbed at once); much cheaper for small
            systems, accurate to about ``sqrt(eps)``, what SciPy's and Hairer's stiff codes
            do by default. A callable ``jacobian(t, y, args)``: your own, returning shape
            ``(*y.shape, *y.shape)``, or ``(batch, *state, *state)`` with one block per sample
            when the Jacobian is blockwise (see ``jacobian_blocks``). Gradients of implicit
            (Newton) stages always use the exact autograd Jacobian in the backward pass.
        jacobian_blocks: whether the samples along the first dimension of the state are
            independent systems, each with its own ``(n, n)`` Jacobian block (``n`` the size of
            one sample). ``None``: blocks when stepping per sample (which already assumes
            independent samples), one full Jacobian of the whole state otherwise.
    """

    num_fevals_init: ClassVar[int] = 1
    num_fevals_step: ClassVar[int] = 0  # counted per step through take_dense_fevals

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # A method given by its tableau (ESDIRK, Rosenbrock) takes its orders from it; dense
        # output is cubic Hermite.
        super().__init_subclass__(**kwargs)
        tab = cls.__dict__.get("tableau")
        if tab is not None:
            cls.order = tab.order
            cls.error_order = tab.error_order
            cls.dense_order = 3

    def __init__(
        self,
        *,
        jacobian: Callable[..., torch.Tensor] | str | None = "autograd",
        jacobian_blocks: bool | None = None,
    ) -> None:
        if jacobian is None:
            jacobian = "autograd"
        if not callable(jacobian) and jacobian not in ("autograd", "finite_difference"):
            raise ValueError(
                f"{type(self).__name__}: `jacobian` must be 'autograd', 'finite_difference' or "
                f"a callable jacobian(t, y, args), got {jacobian!r}."
            )
        if jacobian_blocks is not None and not isinstance(jacobian_blocks, bool):
            raise TypeError(
                f"{type(self).__name__}: `jacobian_blocks` must be a bool or None, got "
                f"{jacobian_blocks!r}."
            )
        self.jacobian = jacobian
        self.jacobian_blocks = jacobian_blocks

    def _ode(self, terms: AbstractTerm, args: Any, y: torch.Tensor, t: torch.Tensor) -> FlatODE:
        if not is_ode(terms):
            raise NotImplementedError(
                f"{type(self).__name__} solves ODEs (ODETerm); got {type(terms).__name__}."
            )
        per_sample = t.ndim == 1
        blocks = self.jacobian_blocks
        if per_sample and blocks is False:
            raise ValueError(
                f"{type(self).__name__}: `jacobian_blocks=False` cannot step per sample; "
                "per-sample stepping needs one Jacobian block per sample (leave it None)."
            )
        if blocks is None:
            blocks = per_sample
        return FlatODE(terms, args, y, blocks, self.jacobian, t)

    def take_dense_fevals(self, dense_info: Any) -> int:
        return dense_info[-1].take_fevals()

    def take_stats(self, dense_info: Any) -> dict[str, int] | None:
        return dense_info[-1].take()

    def interpolate(self, dense_info: Any, theta: torch.Tensor, per_sample: bool) -> torch.Tensor:
        return hermite(dense_info[:4], theta, per_sample)

    def vector_field_of(self, state: Any) -> Any:
        return state[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@dataclass(frozen=True, eq=False)
class ESDIRKTableau:
    """A stiffly accurate ESDIRK tableau.

    Args:
        a: the implicit rows ``1 .. s-1`` of the stage matrix, each of length ``i + 1`` and
            ending with the diagonal ``gamma``.
        c: the nodes, length ``s``, ``c[0] == 0``.
        b_embedded: weights of the embedded solution (length ``s``); the error estimate is
            ``h Σ (b - b_embedded)_i k_i`` with ``b`` the last row of ``a``.
        order, error_order: order of the solution and exponent of the error estimate.
    """

    a: Sequence[Sequence[float]]
    c: Sequence[float]
    b_embedded: Sequence[float]
    order: int
    error_order: int
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        s = len(self.c)
        if len(self.a) != s - 1 or any(len(r) != i + 2 for i, r in enumerate(self.a)):
            raise ValueError("ESDIRKTableau: `a` must have rows of lengths 2, 3, ..., s.")
        gammas = {r[-1] for r in self.a}
        if len(gammas) != 1:
            raise ValueError(f"ESDIRKTableau: the diagonal must be constant, got {gammas}.")
        for i, r in enumerate(self.a):
            if abs(sum(r) - self.c[i + 1]) > 1e-10:
                raise ValueError(f"ESDIRKTableau: row {i + 1} of `a` does not sum to c.")
        if abs(self.c[-1] - 1.0) > 1e-14:
            raise ValueError("ESDIRKTableau: a stiffly accurate method needs c[-1] == 1.")

    @property
    def gamma(self) -> float:
        return float(self.a[0][-1])

    @property
    def num_stages(self) -> int:
        return len(self.c)

    def full_a(self) -> list[list[float]]:
        """The ``(s, s)`` stage matrix, zero first row."""
        s = self.num_stages
        out = [[0.0] * s for _ in range(s)]
        for i, r in enumerate(self.a):
            out[i + 1][: i + 2] = list(r)
        return out

    @property
    def b(self) -> list[float]:
        return list(self.a[-1])

    def predictor(self, order: int = PREDICTOR_NODES) -> list[list[float]]:
        """``(s, s)`` weights of the stage predictor: ``k_i ≈ Σ_{j<i} P_ij k_j``, the Lagrange
        polynomial in ``c`` through the (at most ``order``) earlier stages whose distinct nodes
        lie nearest to ``c_i`` (the latest stage at a repeated node), evaluated at ``c_i``.
        The first Newton iterate of stage ``i`` is then ``base_i + h γ Σ_j P_ij k_j``."""
        s = self.num_stages
        P = [[0.0] * s for _ in range(s)]
        for i in range(1, s):
            latest: dict[float, int] = {}
            for j in range(i):
                latest[self.c[j]] = j
            ci = self.c[i]
            if ci in latest:  # a stage at the same node: its derivative
                P[i][latest[ci]] = 1.0
                continue
            nodes = sorted(latest, key=lambda c: (abs(c - ci), -latest[c]))[:order]
            for cj in nodes:
                w = 1.0
                for cm in nodes:
                    if cm != cj:
                        w *= (ci - cm) / (cj - cm)
                P[i][latest[cj]] = w
        return P

    def cast(self, dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
        key = (dtype, device)
        hit = self._cache.get(key)
        if hit is None:
            a = torch.tensor(self.full_a(), dtype=torch.float64)
            e = a[-1] - torch.tensor(self.b_embedded, dtype=torch.float64)
            hit = {"a": a.to(dtype=dtype, device=device), "e": e.to(dtype=dtype, device=device)}
            # Row i of the explicit part as a (1, i) matrix, and of the first Newton guess
            # (a plus gamma times the stage predictor): one product each per stage.
            P = torch.tensor(self.predictor(), dtype=torch.float64)
            guess = a.clone()
            guess[:, :-1] += self.gamma * P[:, :-1]
            s = self.num_stages
            hit["rows"] = [a[i : i + 1, :i].to(dtype=dtype, device=device) for i in range(s)]
            hit["guess"] = [guess[i : i + 1, :i].to(dtype=dtype, device=device) for i in range(s)]
            self._cache[key] = hit
        return hit


class AbstractNewtonSolver(AbstractImplicitSolver):
    """The Newton options shared by ESDIRK and collocation methods (documented on each)."""

    newton_rtol: float | None
    newton_atol: float | None
    kappa: float
    max_newton_iters: int
    jacobian_theta: float
    lu_ratio: float
    #: ``kappa`` when none is given (a method may declare its own)
    default_kappa: ClassVar[float] = 0.05

    def __init__(
        self,
        *,
        jacobian: Callable[..., torch.Tensor] | str | None = "autograd",
        jacobian_blocks: bool | None = None,
        newton_rtol: float | None = None,
        newton_atol: float | None = None,
        kappa: float | None = None,
        max_newton_iters: int = 10,
        jacobian_theta: float = 0.3,
        lu_ratio: float = 0.2,
    ) -> None:
        super().__init__(jacobian=jacobian, jacobian_blocks=jacobian_blocks)
        name = type(self).__name__
        if kappa is None:
            kappa = type(self).default_kappa
        for k, v in (("newton_rtol", newton_rtol), ("newton_atol", newton_atol)):
            if v is not None and (not isinstance(v, (int, float)) or v <= 0):
                raise ValueError(f"{name}: `{k}` must be a positive number or None, got {v!r}.")
        for k, v in (("kappa", kappa), ("jacobian_theta", jacobian_theta), ("lu_ratio", lu_ratio)):
            if not isinstance(v, (int, float)) or not 0 < v < 1:
                raise ValueError(f"{name}: `{k}` must be a number in (0, 1), got {v!r}.")
        if isinstance(max_newton_iters, bool) or not isinstance(max_newton_iters, int):
            raise TypeError(f"{name}: `max_newton_iters` must be an int, got {max_newton_iters!r}.")
        if max_newton_iters < 1:
            raise ValueError(f"{name}: `max_newton_iters` must be >= 1, got {max_newton_iters}.")
        self.newton_rtol, self.newton_atol = newton_rtol, newton_atol
        self.kappa, self.max_newton_iters = float(kappa), max_newton_iters
        self.jacobian_theta, self.lu_ratio = float(jacobian_theta), float(lu_ratio)

    # the step-size controller's tolerances, set by with_tolerances on a copy
    _rtol: Any = None
    _atol: Any = None

    def with_tolerances(self, rtol: Any, atol: Any) -> AbstractSolver:
        new = copy.copy(self)
        new._rtol, new._atol = rtol, atol
        return new

    def _newton_tolerances(self, dtype: torch.dtype) -> tuple[Any, Any]:
        """The Newton iteration's ``(rtol, atol)``: ``newton_rtol`` / ``newton_atol``, else
        the controller's (:meth:`with_tolerances`), else the dtype's floor."""
        rtol = self.newton_rtol if self.newton_rtol is not None else self._rtol
        atol = self.newton_atol if self.newton_atol is not None else self._atol
        floor = unit_norm_floor(dtype)
        return (floor if rtol is None else rtol), (floor if atol is None else atol)


class AbstractESDIRK(AbstractNewtonSolver):
    """ESDIRK methods with a shared batched Newton solver; subclasses set ``tableau``.

    Args:
        jacobian, jacobian_blocks: see :class:`AbstractImplicitSolver`.
        newton_rtol, newton_atol: tolerances of the Newton iteration; ``None`` takes the
            step-size controller's ``rtol``/``atol`` (fixed-step solves use
            ``eps**(2/3)`` of the dtype).
        kappa: Newton stops when the predicted remaining error is below ``kappa`` times the
            tolerance (Hairer & Wanner recommend 0.01 to 0.1); ``None``: the method's
            ``default_kappa`` (0.05; Kvaerno5 0.1).
        max_newton_iters: iterations before a stage counts as failed (the step is then
            rejected and shrunk).
        jacobian_theta: a contraction rate above this makes the next step recompute the
            Jacobian.
        lu_ratio: the LU of ``I - h γ J`` is refactorised when ``h γ`` changed by more than
            this fraction since it was factorised.
    """

    tableau: ClassVar[ESDIRKTableau]

    def _scale_fn(
        self, g: FlatODE, dtype: torch.dtype, y0f: torch.Tensor
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        # The scale of the state at the step's start, for every stage and iteration (as
        # Hairer's SDIRK4 and RADAU5 scale their Newton corrections): five tensor operations
        # fewer per iteration than rescaling at each iterate.
        rtol, atol = self._newton_tolerances(dtype)
        s = (atol + rtol * g.unflat(y0f.detach()).abs()).reshape(g.B, g.n)

        def scale(z: torch.Tensor) -> torch.Tensor:
            return s

        return scale

    # -- state: (f0, J, LU, piv, hg_lu, eta, jac_ok, jac_fresh) ---------------------------------

    def init(self, terms: AbstractTerm, t0: torch.Tensor, y0: torch.Tensor, args: Any) -> Any:
        g = self._ode(terms, args, y0, t0)
        f0 = g.unflat(g(t0, g.flat(y0)))
        B, n = g.B, g.n
        eye = torch.eye(n, dtype=y0.dtype, device=y0.device).expand(B, n, n).contiguous()
        piv = torch.arange(1, n + 1, dtype=torch.int32, device=y0.device).expand(B, n).contiguous()
        zeros = y0.new_zeros(B)
        false = torch.zeros(B, dtype=torch.bool, device=y0.device)
        # eta = 1: the first iterate of the first solve is never taken as converged.
        return (f0, torch.zeros_like(eye), eye, piv, zeros, y0.new_ones(B), false, false)

    def rejected_state(self, state: Any, new_state: Any) -> Any:
        # A rejected attempt started from the same point: keep the Jacobian it computed (and
        # whether it was fresh), so the retry with a smaller step does not recompute it.
        return (state[0],) + tuple(new_state[1:])

    def step(
        self,
        terms: AbstractTerm,
        t0: torch.Tensor,
        t1: torch.Tensor,
        y0: torch.Tensor,
        args: Any,
        state: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None, Any, Any]:
        return self._step(terms, t0, t1, y0, args, state, None)

    def _step(self, terms, t0, t1, y0, args, state, active):
        f0, J, LU, piv, hg_lu, eta, jac_ok, fresh = state
        g = self._ode(terms, args, y0, t0)
        # Small states carry the inverse of I - h γ J in the LU slot (its start, the
        # identity, is its own inverse).
        inverse = g.n <= INVERSE_MAX_N
        tab = self.tableau
        gamma = tab.gamma
        counts = Counts()
        B = g.B
        h = (t1 - t0).to(y0.dtype)
        hB = h.expand(B) if h.ndim == 0 else h
        hg = hB * gamma
        y0f = g.flat(y0)
        if active is None:
            active = torch.ones(B, dtype=torch.bool, device=y0.device)
        scale_fn = self._scale_fn(g, y0.dtype, y0f)

        def refresh(J, LU, piv, hg_lu, fresh, need_jac):
            if bool(need_jac.any()):
                with torch.no_grad():
                    # Not the carried f0: it comes from the stage algebra, (z - base) / (h γ),
                    # which is off by the Newton error over h γ (too much for a difference).
                    Jn = g.jacobian(t0, y0f)
                if self.jacobian == "finite_difference":
                    counts.num_fevals += g.n + 1
                counts.num_jacobians += 1
                J = torch.where(need_jac[:, None, None], Jn, J)
                fresh = fresh | need_jac
            ratio = hg / torch.where(hg_lu != 0, hg_lu, torch.ones_like(hg_lu))
            # (hg_lu = 0: no factorisation yet, or one the last step found too far off.)
            refactor = need_jac | (hg_lu == 0) | ~((ratio - 1).abs() <= self.lu_ratio)
            refactor = refactor & active
            if bool(refactor.any()):
                with torch.no_grad():
                    LUn, pivn = newton_matrix(J, hg, inverse)
                counts.num_lu += 1
                LU = torch.where(refactor[:, None, None], LUn, LU)
                piv = torch.where(refactor[:, None], pivn, piv)
                hg_lu = torch.where(refactor, hg, hg_lu)
            return J, LU, piv, hg_lu, fresh

        J, LU, piv, hg_lu, fresh = refresh(J, LU, piv, hg_lu, fresh, ~jac_ok & active)
        out = self._stages(g, t0, t1, y0f, f0, h, hB, hg, LU, piv, eta, active, scale_fn, counts)
        retry = out[2] & ~fresh
        if bool(retry.any()):
            # Newton failed with a stale Jacobian: recompute it and redo those samples.
            J, LU, piv, hg_lu, fresh = refresh(J, LU, piv, hg_lu, fresh, retry)
            again = self._stages(
                g, t0, t1, y0f, f0, h, hB, hg, LU, piv, eta, retry, scale_fn, counts
            )
            out = (
                torch.where(retry[None, :, None], again[0], out[0]),
                torch.where(retry[:, None], again[1], out[1]),
                *(torch.where(retry, a, b) for a, b in zip(again[2:], out[2:])),
            )
        hK, z_last, failed, theta, eta_new = out
        e = tab.cast(y0.dtype, y0.device)["e"]
        err = torch.einsum("s,sbn->bn", e, hK)
        if self._rtol is None:
            # Fixed steps cannot be rejected: a failed solve makes the state NaN, which the
            # loop reports as NONFINITE.
            y1f = torch.where(failed[:, None], torch.full_like(z_last, float("nan")), z_last)
        else:
            # Adaptive: reject and shrink. A huge finite error rather than inf keeps the
            # controller's gradient finite (its factor is clipped there anyway).
            y1f = torch.where(failed[:, None], y0f, z_last)
            big = (y0f.detach().abs() + 1) * 1e8
            err = torch.where(failed[:, None], big, err)
        safe_h = torch.where(hB != 0, hB, torch.ones_like(hB))
        f1f = hK[-1] / safe_h[:, None]
        y1 = g.unflat(y1f)
        f1 = g.unflat(f1f)
        # The Jacobian stays usable while Newton contracts fast; after a failure with a fresh
        # one the step size is to blame, not the Jacobian.
        slow = theta > self.jacobian_theta
        # Slow with a factorisation made at another step size: its h γ is off, not
        # (necessarily) the Jacobian, so the next step refactorises with the same Jacobian.
        # (Within rounding: a held step size is t1 - t0 of a shifted interval, not bit for bit.)
        exact = (hg.detach() - hg_lu).abs() <= 1e-6 * hg.detach().abs()
        jac_ok_new = ~(slow & exact) | (failed & fresh)
        hg_lu = torch.where(slow & ~exact, torch.zeros_like(hg_lu), hg_lu)
        new_state = (f1, J, LU, piv, hg_lu, eta_new, jac_ok_new, fresh)
        dense_info = (y0, y1, g.unflat(hK[0]), g.unflat(hK[-1]), counts)
        return y1, g.unflat(err), dense_info, new_state

    def _stages(self, g, t0, t1, y0f, f0, h, hB, hg, LU, piv, eta, active, scale_fn, counts):
        """All stages of one step. Returns ``(hK (s, B, n), z_last, failed, theta, eta)``."""
        tab = self.tableau
        co = tab.cast(y0f.dtype, y0f.device)
        rows, guess = co["rows"], co["guess"]
        gamma = tab.gamma
        s = tab.num_stages
        B, n = g.B, g.n
        hK = [hB[:, None] * g.flat(f0)]
        failed = torch.zeros_like(active)
        theta = torch.zeros_like(hg)
        # Whether the stages need the implicit-function correction (one evaluation each).
        # Read from the inputs of the step: the carried vector field records a gradient when
        # the field depends on parameters, as do the state, the times and the args. (A field
        # that reaches a parameter only away from the step's start, through a Python branch,
        # would be missed; tensor operations such as ``where`` are not.)
        grad = records_gradient(y0f, f0, hB, t0, t1, g.args)
        y0row = y0f.reshape(1, B * n)
        times: dict[float, torch.Tensor] = {1.0: t1}
        z = y0f
        # One row: the Newton outcomes (failure, rates, eta) stay host numbers from stage to
        # stage, the decisions of the batched bookkeeping below without its (1,)-shaped
        # tensors; made tensors once, at the end.
        one = B == 1
        if one:
            act, fail_h, theta_h, eta_h = bool(active), False, 0.0, float(eta)
        for i in range(1, s):
            # base_i = y0 + Σ_{j<i} a_ij h k_j, one product over the stacked increments.
            Ks = torch.stack(hK).view(i, B * n)
            base = torch.addmm(y0row, rows[i], Ks).view(B, n)
            ci = tab.c[i]
            ti = times.get(ci)
            if ti is None:
                ti = times[ci] = t0 + ci * (t1 - t0)
            z0 = torch.addmm(y0row, guess[i], Ks).view(B, n)
            with torch.no_grad():
                res = newton_solve(
                    g, ti, base.detach(), z0.detach(), hg.detach(), LU, piv, scale_fn,
                    eta_h if one else eta, (act and not fail_h) if one else active & ~failed,
                    counts, kappa=self.kappa, max_iters=self.max_newton_iters,
                    inverse=g.n <= INVERSE_MAX_N, tensors=not one,
                )  # fmt: skip
            if one:
                assert res.host is not None
                f_i, eta_h, _, th_i = res.host
                fail_h = fail_h or (f_i and act)
                theta_h = max(theta_h, th_i)
            else:
                eta = res.eta
                failed = failed | (res.failed & active)
                theta = torch.maximum(theta, res.theta)
            z = res.z
            if grad:
                z = attach_implicit_gradient(g, ti, base, z, hg)
                counts.num_fevals += 1
            hK.append((z - base) / gamma)
        if one:
            failed = torch.full_like(active, fail_h)
            theta = torch.full_like(hg, theta_h)
            eta = torch.full_like(hg, eta_h)
        return torch.stack(hK), z, failed, theta, eta


@dataclass(frozen=True, eq=False)
class CollocationTableau:
    """The tableau of a fully implicit collocation Runge–Kutta method (Gauss–Legendre,
    Radau IIA, the implicit midpoint rule).

    Args:
        a: the ``(s, s)`` stage matrix, invertible.
        b: the weights, length ``s``.
        c: the collocation nodes in ``(0, 1]``, distinct.
        order: order of the solution at the step end.

    The method must be a collocation method (the simplifying condition $C(s)$:
    $\\sum_j a_{ij} c_j^{k-1} = c_i^k / k$ for $k = 1, \\dots, s$), which is what makes the
    stage polynomial its dense output; this is checked.
    """

    a: Sequence[Sequence[float]]
    b: Sequence[float]
    c: Sequence[float]
    order: int
    error_order: ClassVar[None] = None
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        import numpy as np

        s = len(self.c)
        a = np.asarray(self.a, dtype=np.float64)
        c = np.asarray(self.c, dtype=np.float64)
        if a.shape != (s, s) or len(self.b) != s:
            raise ValueError("CollocationTableau: `a` must be (s, s) and `b` of length s.")
        if not (np.all(c > 0) and np.all(c <= 1) and len(set(self.c)) == s):
            raise ValueError("CollocationTableau: the nodes `c` must be distinct, in (0, 1].")
        for k in range(1, s + 1):
            if np.abs(a @ c ** (k - 1) - c**k / k).max() > 1e-12:
                raise ValueError(
                    f"CollocationTableau: condition C(s) fails at k={k}: not a collocation method."
                )

    @property
    def num_stages(self) -> int:
        return len(self.c)

    def cast(self, dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
        key = (dtype, device)
        hit = self._cache.get(key)
        if hit is None:
            f64 = torch.float64
            a = torch.tensor(self.a, dtype=f64)
            b = torch.tensor(self.b, dtype=f64)
            c = torch.tensor(self.c, dtype=f64)
            s = self.num_stages
            # y1 = y0 + d · W with d = b A^{-1}: from the stage increments W_i = h Σ a_ij f_j,
            # without evaluating f again (and without amplifying the Newton error by the
            # stiffness, as h f_j would).
            d = torch.linalg.solve(a.T, b)
            # The collocation polynomial u(θ) through (0, 0) and (c_i, W_i), in the basis
            # θ, θ², …, θ^s: u(θ) = Σ_i Σ_m P[i, m] θ^(m+1) W_i with P^T = V^{-1},
            # V[j, m] = c_j^(m+1).
            V = c[:, None] ** torch.arange(1, s + 1, dtype=f64)
            P = torch.linalg.inv(V).T
            hit = {
                k: v.to(dtype=dtype, device=device)
                for k, v in (("a", a), ("d", d), ("c", c), ("dense", P))
            }
            self._cache[key] = hit
        return hit


class AbstractCollocation(AbstractNewtonSolver):
    """Fully implicit collocation Runge–Kutta methods; subclasses set ``tableau``.

    The ``s`` stage equations $W_i = h \\sum_j a_{ij} f(t_0 + c_j h, y_0 + W_j)$ are coupled:
    they are solved together by simplified Newton on the ``s n`` unknowns, with the matrix
    $I - h A \\otimes J$ ($J$ the Jacobian at the step start; one batched LU factorisation,
    reused while Newton contracts fast and the step size stays close). The first guess is
    the previous step's collocation polynomial extrapolated (Hairer & Wanner, *Solving ODEs
    II*, Sec. IV.8). The solution is $y_1 = y_0 + b^T A^{-1} W$ and the dense output the
    collocation polynomial. Gradients come from the implicit function theorem on the coupled
    system (exact Jacobians at each stage in the backward pass), not from the iterations.

    These methods have no error estimate: they take constant steps (``ConstantStepSize``).
    A stage system that does not converge makes the state NaN, which the loop reports as
    ``NONFINITE``.

    Args:
        jacobian, jacobian_blocks: see :class:`AbstractImplicitSolver`.
        newton_rtol, newton_atol: tolerances of the Newton iteration (``None``:
            ``eps**(2/3)`` of the dtype).
        kappa: Newton stops when the predicted remaining error is below ``kappa`` times the
            tolerance.
        max_newton_iters: iterations before a step counts as failed.
        jacobian_theta: a contraction rate above this makes the next step recompute the
            Jacobian.
        lu_ratio: the LU factorisation is redone when the step changed by more than this
            fraction since it was factorised.
    """

    tableau: ClassVar[CollocationTableau]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        tab = cls.__dict__.get("tableau")
        if tab is not None:
            cls.dense_order = tab.num_stages

    # -- state: (f0, W_prev, h_prev, J, LU, piv, h_lu, jac_ok, eta) ---------------------------

    def init(self, terms: AbstractTerm, t0: torch.Tensor, y0: torch.Tensor, args: Any) -> Any:
        g = self._ode(terms, args, y0, t0)
        f0 = g.unflat(g(t0, g.flat(y0)))
        B, n, s = g.B, g.n, self.tableau.num_stages
        sn = s * n
        eye = torch.eye(sn, dtype=y0.dtype, device=y0.device).expand(B, sn, sn).contiguous()
        piv = torch.arange(1, sn + 1, dtype=torch.int32, device=y0.device)
        piv = piv.expand(B, sn).contiguous()
        J = y0.new_zeros(B, n, n)
        zeros = y0.new_zeros(B)
        false = torch.zeros(B, dtype=torch.bool, device=y0.device)
        W = y0.new_zeros(B, s, n)
        return (f0, W, zeros, J, eye, piv, zeros, false, y0.new_ones(B))

    def step(
        self,
        terms: AbstractTerm,
        t0: torch.Tensor,
        t1: torch.Tensor,
        y0: torch.Tensor,
        args: Any,
        state: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None, Any, Any]:
        f0, W_prev, h_prev, J, LU, piv, h_lu, jac_ok, eta = state
        g = self._ode(terms, args, y0, t0)
        tab = self.tableau
        co = tab.cast(y0.dtype, y0.device)
        s, B, n = tab.num_stages, g.B, g.n
        counts = Counts()
        h = (t1 - t0).to(y0.dtype)
        hB = h.expand(B) if h.ndim == 0 else h
        hA = hB[:, None, None] * co["a"]
        ts = [t1 if ci == 1.0 else t0 + ci * (t1 - t0) for ci in tab.c]
        y0f = g.flat(y0)
        active = torch.ones(B, dtype=torch.bool, device=y0.device)

        with torch.no_grad():
            # First guess: the last step's collocation polynomial, continued to this step's
            # nodes (θ = 1 + c_i h / h_prev on the last step), minus its value at θ = 1;
            # on the first step the explicit Euler increments c_i h f0.
            have = h_prev != 0
            r = hB / torch.where(have, h_prev, torch.ones_like(h_prev))
            theta = 1 + co["c"][None, :] * r[:, None]  # (B, s)
            powers = theta[..., None] ** torch.arange(1, s + 1, device=y0.device).to(y0.dtype)
            L = powers @ co["dense"].T  # (B, s stage i, s basis j)
            extrap = torch.einsum("bij,bjn->bin", L, W_prev)
            extrap = extrap - torch.einsum("j,bjn->bn", co["d"], W_prev)[:, None]
            first = co["c"][None, :, None] * hB[:, None, None] * g.flat(f0.detach())[:, None]
            W0 = torch.where(have[:, None, None], extrap, first)

        rtol = self.newton_rtol if self.newton_rtol is not None else unit_norm_floor(y0.dtype)
        atol = self.newton_atol if self.newton_atol is not None else unit_norm_floor(y0.dtype)
        scale = (atol + rtol * y0f.detach().abs()).repeat(1, s)

        def scale_fn(z: torch.Tensor) -> torch.Tensor:
            return scale

        fresh = torch.zeros_like(active)

        def refresh(J, LU, piv, h_lu, fresh, need_jac):
            if bool(need_jac.any()):
                with torch.no_grad():
                    Jn = g.jacobian(t0, y0f.detach())
                if self.jacobian == "finite_difference":
                    counts.num_fevals += n + 1
                counts.num_jacobians += 1
                J = torch.where(need_jac[:, None, None], Jn, J)
                fresh = fresh | need_jac
            ratio = hB / torch.where(h_lu != 0, h_lu, torch.ones_like(h_lu))
            refactor = need_jac | ~((ratio - 1).abs() <= self.lu_ratio)
            if bool(refactor.any()):
                with torch.no_grad():
                    LUn, pivn, _ = torch.linalg.lu_factor_ex(coupled_matrix(J, hA.detach()))
                counts.num_lu += 1
                LU = torch.where(refactor[:, None, None], LUn, LU)
                piv = torch.where(refactor[:, None], pivn, piv)
                h_lu = torch.where(refactor, hB.detach(), h_lu)
            return J, LU, piv, h_lu, fresh

        def solve(LU, piv, rows, eta):
            hAd = hA.detach()

            def residual(z: torch.Tensor) -> torch.Tensor:
                Wz = z.view(B, s, n)
                counts.num_fevals += s
                F = stage_values(g, ts, y0f.detach(), Wz)
                return (Wz - torch.einsum("bij,bjn->bin", hAd, F)).reshape(B, s * n)

            def correction(res: torch.Tensor) -> torch.Tensor:
                return lu_solve(LU, piv, -res)

            with torch.no_grad():
                return simplified_newton(
                    W0.reshape(B, s * n), residual, correction, scale_fn, eta, rows,
                    kappa=self.kappa, max_iters=self.max_newton_iters,
                )  # fmt: skip

        J, LU, piv, h_lu, fresh = refresh(J, LU, piv, h_lu, fresh, ~jac_ok)
        res = solve(LU, piv, active, eta)
        retry = res.failed & ~fresh
        if bool(retry.any()):
            # Newton failed with a stale Jacobian: recompute it and redo those samples.
            J, LU, piv, h_lu, fresh = refresh(J, LU, piv, h_lu, fresh, retry)
            again = solve(LU, piv, retry, eta)
            res.z = torch.where(retry[:, None], again.z, res.z)
            res.failed = torch.where(retry, again.failed, res.failed)
            res.theta = torch.where(retry, again.theta, res.theta)
            res.eta = torch.where(retry, again.eta, res.eta)
        W = res.z.view(B, s, n)
        if torch.is_grad_enabled():
            W = attach_coupled_gradient(g, ts, y0f, W, hA)
            counts.num_fevals += s
        y1f = y0f + torch.einsum("s,bsn->bn", co["d"], W)
        # Constant steps cannot be rejected: a failed solve makes the state NaN, which the
        # loop reports as NONFINITE.
        y1f = torch.where(res.failed[:, None], torch.full_like(y1f, float("nan")), y1f)
        jac_ok_new = ~(res.theta > self.jacobian_theta) | (res.failed & fresh)
        new_state = (f0, W.detach(), hB.detach(), J, LU, piv, h_lu, jac_ok_new, res.eta)
        # Stage increments as (s, *y.shape) for the dense output.
        Wy = W.permute(1, 0, 2).reshape((s,) + tuple(y0.shape))
        return g.unflat(y1f), None, (y0, Wy, counts), new_state

    def interpolate(self, dense_info: Any, theta: torch.Tensor, per_sample: bool) -> torch.Tensor:
        y0, W, _ = dense_info
        P = self.tableau.cast(y0.dtype, y0.device)["dense"]
        s = P.shape[0]
        powers = theta.unsqueeze(-1).to(y0.dtype) ** torch.arange(
            1, s + 1, device=y0.device, dtype=y0.dtype
        )
        w = powers @ P.T  # (..., s)
        if per_sample:
            return y0 + torch.einsum("bs,sb...->b...", w, W)
        return y0 + (w @ W.reshape(s, -1)).view((-1,) + tuple(y0.shape))
