r"""Batched Newton machinery shared by the implicit and Rosenbrock solvers.

Everything works on the state flattened to ``(B, n)``: ``B`` independent systems of size
``n`` (one block per sample), or ``B = 1`` with ``n`` the whole state (one full Jacobian).
Jacobians are ``(B, n, n)`` and so are the LU factorisations of the Newton matrix
$M = I - h\gamma J$, which ``torch.linalg.lu_factor`` / ``lu_solve`` handle in one batched
call.

Convergence of the simplified Newton iteration follows Hairer & Wanner, *Solving ODEs II*,
Sec. IV.8: with the contraction rate $\theta_k = \|\Delta_k\| / \|\Delta_{k-1}\|$ and
$\eta_k = \theta_k / (1 - \theta_k)$ the iteration stops when $\eta_k \|\Delta_k\| \le \kappa$
(norms scaled by the tolerances), fails when $\theta_k \ge 1$ (divergence), a value is not
finite, or after ``max_iters`` iterations.

Gradients of a converged stage value $z^*$ (root of $F(z) = z - b - h\gamma f(t, z)$) come
from the implicit function theorem, not from the iterations: :func:`attach_implicit_gradient`
returns $z^* + C(F(z^*))$ where $C$ is zero in the forward pass and $-(\partial F/\partial
z)^{-\top}$ in the backward pass, with the exact Jacobian at $z^*$.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .packing import PackedTerm, ReversedTerm
from .terms import AbstractTerm, ODETerm

__all__ = [
    "Counts",
    "FlatODE",
    "attach_coupled_gradient",
    "attach_implicit_gradient",
    "coupled_matrix",
    "jacobian",
    "lu_factor",
    "lu_solve",
    "newton_solve",
    "records_gradient",
    "simplified_newton",
    "stage_values",
]


@dataclass
class Counts:
    """Work done by one step, read (and reset) by the loop through the solver's hooks."""

    num_fevals: int = 0
    num_jacobians: int = 0
    num_lu: int = 0
    extra: dict = field(default_factory=dict)

    def take(self) -> dict[str, int]:
        out = {"num_jacobians": self.num_jacobians, "num_lu_factorisations": self.num_lu}
        out.update(self.extra)
        self.num_jacobians = self.num_lu = 0
        self.extra = {}
        return out

    def take_fevals(self) -> int:
        n, self.num_fevals = self.num_fevals, 0
        return n


def _user_time_map(terms: AbstractTerm) -> tuple[float, Any]:
    """The sign of the internal time and the user's ODE term, for a user Jacobian."""
    sign = 1.0
    base = terms
    while True:
        if isinstance(base, ReversedTerm):
            sign = -sign
            base = base.term
        elif isinstance(base, PackedTerm):
            raise NotImplementedError(
                "a user-supplied `jacobian` needs a single-tensor state; for a tuple state "
                "leave `jacobian=None` (autograd) or stack the state into one tensor."
            )
        else:
            return sign, base


class FlatODE:
    """The ODE ``dy/dt = g(t, y)`` of a term, seen on the state flattened to ``(B, n)``.

    Args:
        terms: an ODE term (possibly wrapped for reverse time or a tuple state).
        args: the user's args.
        like: the state (shape, dtype).
        blocks: one Jacobian block per leading-dimension sample (``True``) or one full one.
        user_jacobian: ``jacobian(t, y, args)``, ``"autograd"``/``None`` or
            ``"finite_difference"``.
    """

    def __init__(
        self,
        terms: AbstractTerm,
        args: Any,
        like: torch.Tensor,
        blocks: bool,
        user_jacobian: Any,
        t_like: torch.Tensor,
    ) -> None:
        self.terms, self.args, self.shape = terms, args, like.shape
        if blocks and like.ndim == 0:
            blocks = False
        self.B = like.shape[0] if blocks else 1
        self.n = like.numel() // self.B
        self.blocks = blocks
        self.user_jacobian = user_jacobian
        # An ODE term's product with a unit control is the vector field itself (or its
        # negative in reverse time): skip the multiplication by a one.
        self.sign = terms.control_scale()
        self.unit = terms.contr(t_like, t_like + 1) if self.sign not in (1.0, -1.0) else None
        #: declared by the user's term (``ODETerm(..., autonomous=True)``): ∂g/∂t = 0
        self.autonomous = terms.base_term().autonomous
        self._flat_shape = (self.B, self.n)  # compared with a torch.Size, a tuple
        self._vector_shape = (self.n,)
        # Reshapes take the sizes as ints: a torch.Size argument costs ~1.3 us against ~0.5.
        self._dims = tuple(like.shape)

    # The reshapes are skipped where the shapes already agree (a state of shape (B, n), or a
    # vector with ``vector``): each is a tensor operation, two per evaluation.
    def flat(self, y: torch.Tensor) -> torch.Tensor:
        return y if y.shape == self._flat_shape else y.reshape(self.B, self.n)

    def vector(self, y: torch.Tensor) -> torch.Tensor:
        """The state of one system (``B = 1``) as a vector ``(n,)``."""
        return y if y.shape == self._vector_shape else y.reshape(self.n)

    def unflat(self, z: torch.Tensor) -> torch.Tensor:
        if z.shape == self.shape:
            return z
        return z.reshape(*self._dims) if self._dims else z.reshape(())

    def __call__(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``g(t, z)`` in the layout of ``z``: ``(B, n)``, or ``(n,)`` for one system."""
        zs = z.shape
        vf = self.terms.vf(t, self.unflat(z), self.args)
        if self.sign == 1.0:
            out = vf
        elif self.sign == -1.0:
            out = -vf
        else:
            out = self.terms.prod(vf, self.unit)
        return out if out.shape == zs else out.reshape(*zs)

    def jacobian(self, t: torch.Tensor, z: torch.Tensor, f: torch.Tensor | None = None):
        """``(B, n, n)``: ``J[b, i, j] = ∂g_{b,i} / ∂z_{b,j}`` (``f = g(t, z)`` if known);
        ``(n, n)`` for a vector ``z``."""
        if self.user_jacobian == "finite_difference":
            return fd_jacobian(self, t, z, f)
        if self.user_jacobian is not None and self.user_jacobian != "autograd":
            return self._user(t, z)
        return jacobian(self, t, z, f)

    def _user(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        sign, _ = _user_time_map(self.terms)
        J = self.user_jacobian(t * sign, self.unflat(z), self.args)  # type: ignore[misc]
        if not isinstance(J, torch.Tensor):
            raise TypeError(f"`jacobian` must return a tensor, got {type(J).__name__}.")
        want = (*z.shape[:-1], self.n, self.n)
        if J.numel() != self.B * self.n * self.n:
            shape = (
                f"({self.B}, *state, *state) = {want} flattened"
                if self.blocks
                else f"(*y.shape, *y.shape) with {self.n}x{self.n} entries"
            )
            raise ValueError(
                f"`jacobian` returned shape {tuple(J.shape)}; it must return df/dy of shape "
                f"{shape}."
            )
        return J.reshape(want).to(z.dtype) * sign


def jacobian(
    g: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], t, z, f: torch.Tensor | None = None
) -> torch.Tensor:
    """Block Jacobians ``(B, n, n)`` of ``g(t, ·)`` at ``z`` of shape ``(B, n)`` (``(n, n)`` at
    a vector ``z``).

    The samples are independent, so the Jacobian of ``Σ_b g_b`` with respect to ``z`` holds
    every block: one forward evaluation and ``n`` vector-Jacobian products, vectorised over
    the ``n`` cotangents (``autograd.grad(..., is_grads_batched=True)``, 2-3x cheaper than
    ``torch.func.jacrev`` for small systems; falls back to a loop of ``autograd.grad`` when
    the backward pass cannot be vmapped). While autograd records (Rosenbrock gradients), the
    Jacobian keeps its graph. ``f = g(t, z)``, if known, tells whether anything but ``z``
    records a gradient (else one extra evaluation finds out, while recording only).
    """
    create = torch.is_grad_enabled()
    if not create:
        z = z.detach()
    elif not z.requires_grad:
        # The graph is kept only for what truly records a gradient (parameters, t): the
        # leaf made for the state below would otherwise make every Jacobian require one.
        if f is None:
            f = g(t, z)
        create = f.requires_grad
    n = z.shape[-1]
    with torch.enable_grad():
        zz = z if z.requires_grad else z.detach().requires_grad_(True)
        out = g(t, zz)  # (B, n)
        if not out.requires_grad:  # the field does not depend on the state
            return torch.zeros(*z.shape, z.shape[-1], dtype=z.dtype, device=z.device)
        # Cotangent i is e_i in every block: row i of each block's Jacobian.
        eye = torch.eye(n, dtype=out.dtype, device=out.device)
        eye = eye.reshape(n, *(1,) * (out.ndim - 1), n).expand(n, *out.shape)
        try:
            (J,) = torch.autograd.grad(
                out, zz, eye, retain_graph=create, create_graph=create,
                is_grads_batched=True, allow_unused=True,
            )  # fmt: skip
        except (RuntimeError, NotImplementedError):
            J = None
            rows = []
            for i in range(n):
                (gi,) = torch.autograd.grad(
                    out, zz, eye[i], retain_graph=True, create_graph=create, allow_unused=True
                )
                rows.append(torch.zeros_like(z) if gi is None else gi)
            J = torch.stack(rows)
        if J is None:  # the field does not depend on the state
            J = torch.zeros(n, *z.shape, dtype=z.dtype, device=z.device)
    return J.permute(1, 0, 2) if J.ndim == 3 else J  # (n, B, n) -> (B, n, n)


def fd_jacobian(g: FlatODE, t: torch.Tensor, z: torch.Tensor, f: torch.Tensor | None):
    """Forward-difference block Jacobians ``(B, n, n)`` (``(n, n)`` at a vector ``z``): ``n``
    evaluations, each perturbing one component of every sample (steps
    ``sqrt(eps) max(|z_j|, 1e-3)``, as in Hairer's codes).

    The ``n`` perturbed states are built in one operation and the quotients taken in one; the
    evaluations stay separate calls (stacking them into the batch would change the shape the
    user's function sees)."""
    if f is None:
        f = g(t, z)
    eps = torch.finfo(z.dtype).eps ** 0.5
    delta = eps * z.abs().clamp_min(1e-3)
    Z = z.unsqueeze(-2) + torch.diag_embed(delta)  # (B, n, n): row j perturbs component j
    # The steps actually taken (rounding), so the quotients are consistent.
    dz = Z.diagonal(dim1=-2, dim2=-1) - z
    cols = torch.stack([g(t, zj) for zj in Z.unbind(-2)], dim=-1)
    return (cols - f.unsqueeze(-1)) / dz.unsqueeze(-2)


_EYES: dict[tuple[int, torch.dtype, torch.device], torch.Tensor] = {}


def _eye(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    key = (n, dtype, device)
    eye = _EYES.get(key)
    if eye is None:
        eye = _EYES[key] = torch.eye(n, dtype=dtype, device=device)
    return eye


def lu_factor(J: torch.Tensor, hg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """LU factors of ``I - hg J`` (``hg`` of shape ``(B,)``)."""
    M = torch.addcmul(_eye(J.shape[-1], J.dtype, J.device), hg[:, None, None], J, value=-1)
    LU, piv, _ = torch.linalg.lu_factor_ex(M)
    return LU, piv


#: Up to this size of one sample's state, Newton's linear systems are solved with the inverse
#: of their matrix: one batched product per iteration (~1 us) instead of a triangular solve
#: (~7 us on one CPU thread for 3 x 3). Its forward error is of the size of the triangular
#: solves' (both ``cond(M) eps``, Higham, *Accuracy and Stability of Numerical Algorithms*,
#: Sec. 14.1), and Newton iterates on it anyway.
INVERSE_MAX_N = 16


def newton_matrix(
    J: torch.Tensor, hg: torch.Tensor, inverse: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``I - hg J`` ready to solve with: its inverse (and placeholder pivots) with
    ``inverse``, else its LU factors and pivots."""
    if not inverse:
        return lu_factor(J, hg)
    n = J.shape[-1]
    M = torch.addcmul(_eye(n, J.dtype, J.device), hg[:, None, None], J, value=-1)
    piv = torch.arange(1, n + 1, dtype=torch.int32, device=J.device).expand(J.shape[0], n)
    return torch.linalg.inv_ex(M)[0], piv


def lu_solve(LU: torch.Tensor, piv: torch.Tensor, r: torch.Tensor, adjoint: bool = False):
    return torch.linalg.lu_solve(LU, piv, r.unsqueeze(-1), adjoint=adjoint).squeeze(-1)


def scaled_rms(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """RMS of ``x / scale`` per row: ``(B,)``."""
    return (x / scale).square().mean(1).sqrt()


@dataclass
class NewtonResult:
    z: torch.Tensor
    failed: torch.Tensor  # (B,) bool
    theta: torch.Tensor  # (B,) the slowest contraction rate seen
    eta: torch.Tensor  # (B,) carried to the next solve
    #: (B,) int64: the iterations that changed each row (its corrections applied)
    iters: torch.Tensor | None = None
    #: one row (``B = 1``): ``(failed, eta, iters, theta)`` of the row as host numbers
    host: tuple[bool, float, int, float] | None = None


def newton_solve(
    g: FlatODE,
    t: torch.Tensor,
    base: torch.Tensor,
    z0: torch.Tensor,
    hg: torch.Tensor,
    LU: torch.Tensor,
    piv: torch.Tensor,
    scale_fn: Callable[[torch.Tensor], torch.Tensor],
    eta: torch.Tensor,
    active: torch.Tensor,
    counts: Counts,
    *,
    kappa: float,
    max_iters: int,
    g0: torch.Tensor | None = None,
    inverse: bool = False,
    tensors: bool = True,
) -> NewtonResult:
    """Simplified Newton for ``z = base + hg g(t, z)`` on the rows where ``active``.
    ``LU`` holds the factors of ``I - hg J`` with pivots ``piv``, or with ``inverse`` the
    inverse of that matrix (``piv`` unused): see :func:`newton_matrix`.

    Converged rows are frozen (so a sample's result does not depend on its batch mates);
    the host learns once per iteration whether any row is still iterating. ``g0``, if given,
    is ``g(t, z0)`` already evaluated (and counted) by the caller.
    """
    hgc = hg[:, None]
    first = [g0]

    def residual(z: torch.Tensor) -> torch.Tensor:
        gz = first.pop() if first else None
        if gz is None:
            counts.num_fevals += 1
            gz = g(t, z)
        # The negated residual, base + hg g(z) - z, so the correction needs no negation.
        return torch.addcmul(base - z, hgc, gz)

    def correction(r: torch.Tensor) -> torch.Tensor:
        if inverse:
            return torch.bmm(LU, r.unsqueeze(-1)).squeeze(-1)
        return lu_solve(LU, piv, r)

    return simplified_newton(
        z0, residual, correction, scale_fn, eta, active, kappa=kappa, max_iters=max_iters,
        tensors=tensors,
    )  # fmt: skip


def simplified_newton(
    z0: torch.Tensor,
    residual: Callable[[torch.Tensor], torch.Tensor],
    correction: Callable[[torch.Tensor], torch.Tensor],
    scale_fn: Callable[[torch.Tensor], torch.Tensor],
    eta: torch.Tensor,
    active: torch.Tensor,
    *,
    kappa: float,
    max_iters: int,
    tensors: bool = True,
) -> NewtonResult:
    """The simplified Newton iteration ``z += correction(residual(z))`` on rows ``(B, m)``,
    with Hairer & Wanner's convergence test (module docstring); shared by the one-stage
    solves of diagonally implicit methods and the coupled stages of fully implicit ones.

    One row (``B = 1``) may take ``eta`` and ``active`` as host numbers; with ``tensors=False``
    its result is then only ``z`` and ``host`` (no ``(1,)``-shaped tensors are made)."""
    if z0.shape[0] == 1:
        return _simplified_newton_one(
            z0, residual, correction, scale_fn, eta, active, kappa=kappa, max_iters=max_iters,
            tensors=tensors,
        )  # fmt: skip
    eps = torch.finfo(z0.dtype).eps
    uround = max(eps, 1e-16)
    z = z0
    running = active.clone()
    failed = torch.zeros_like(active)
    theta_max = torch.zeros_like(eta)
    eta = eta.clamp_min(uround).pow(0.8)
    dn_prev = torch.ones_like(eta)
    iters = torch.zeros(active.shape, dtype=torch.int64, device=active.device)
    for k in range(max_iters):
        delta = correction(residual(z))
        scale = scale_fn(z)
        dn = scaled_rms(delta, scale)
        finite = torch.isfinite(dn)
        diverging = torch.zeros_like(finite)
        if k > 0:
            theta = dn / dn_prev
            diverging = theta >= 1.0
            theta_c = theta.clamp(max=0.999).nan_to_num(0.999)
            theta_max = torch.where(running, torch.maximum(theta_max, theta_c), theta_max)
            eta = torch.where(running, theta_c / (1 - theta_c), eta)
        # Converged: the predicted remaining error is below kappa, or the correction is at
        # the round-off of the state (where the rate is noise, so it may look divergent).
        tiny = (delta.abs() <= 8 * eps * z.abs()).all(1)
        conv = finite & ((eta * dn <= kappa) | tiny)
        bad = ~finite | (diverging & ~conv)
        moved = running & ~bad
        z = torch.where(moved[:, None], z + delta, z)
        iters += moved
        done = running & conv
        failed = failed | (running & bad)
        running = running & ~done & ~bad
        dn_prev = torch.where(dn > 0, dn, torch.ones_like(dn))
        if not bool(running.any()):
            break
    failed = failed | running
    return NewtonResult(z=z, failed=failed, theta=theta_max, eta=eta, iters=iters)


def _simplified_newton_one(
    z0: torch.Tensor,
    residual: Callable[[torch.Tensor], torch.Tensor],
    correction: Callable[[torch.Tensor], torch.Tensor],
    scale_fn: Callable[[torch.Tensor], torch.Tensor],
    eta_in: torch.Tensor,
    active: torch.Tensor,
    *,
    kappa: float,
    max_iters: int,
    tensors: bool = True,
) -> NewtonResult:
    """:func:`simplified_newton` for one row (``B = 1``: a joint solve with one full
    Jacobian), the same decisions taken on host scalars: one transfer per iteration (the
    batched version needs one too, to stop) instead of some twenty tensor operations on
    ``(1,)``-shaped masks and rates."""
    eps = float(torch.finfo(z0.dtype).eps)
    uround = max(eps, 1e-16)
    z = z0
    theta_max = 0.0
    eta = max(float(eta_in), uround) ** 0.8
    failed = False
    moved = 0
    if bool(active):
        dn_prev = 1.0
        failed = True  # until it converges
        for k in range(max_iters):
            delta = correction(residual(z))
            scale = scale_fn(z)
            dn = math.sqrt(float((delta / scale).square().mean()))
            if not math.isfinite(dn):
                break
            diverging = False
            if k > 0:
                theta = dn / dn_prev
                diverging = theta >= 1.0
                theta_c = min(theta, 0.999)
                theta_max = max(theta_max, theta_c)
                eta = theta_c / (1 - theta_c)
            # As in the batched version: converged when the predicted remaining error is
            # below kappa, or the correction is at the round-off of the state.
            conv = eta * dn <= kappa or bool((delta.abs() <= 8 * eps * z.abs()).all())
            if diverging and not conv:
                break
            z = z + delta
            moved += 1
            if conv:
                failed = False
                break
            dn_prev = dn if dn > 0 else 1.0
    if not tensors:
        host = (failed, eta, moved, theta_max)  # one row: the tensors are not made
        return NewtonResult(z=z, failed=None, theta=None, eta=None, host=host)  # type: ignore[arg-type]
    like = eta_in
    return NewtonResult(
        z=z,
        failed=torch.full_like(active, failed),
        theta=torch.full_like(like, theta_max),
        eta=torch.full_like(like, eta),
        iters=torch.full(active.shape, moved, dtype=torch.int64, device=active.device),
        host=(failed, eta, moved, theta_max),
    )


class _ImplicitCorrection(torch.autograd.Function):
    """Zero forward; backward ``-(I - hg J(t, z*))^{-T} grad`` (implicit function theorem)."""

    @staticmethod
    def forward(ctx: Any, r: torch.Tensor, g: Any, t: torch.Tensor, z: torch.Tensor, hg):  # type: ignore[override]
        ctx.g, ctx.t, ctx.hg = g, t, hg
        ctx.save_for_backward(z)
        return torch.zeros_like(r)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:  # type: ignore[override]
        (z,) = ctx.saved_tensors
        with torch.no_grad():
            g = ctx.g
            # Exact: autograd, or the user's own Jacobian (never finite differences).
            J = g._user(ctx.t, z) if callable(g.user_jacobian) else jacobian(g, ctx.t, z)
            LU, piv = lu_factor(J, ctx.hg)
            lam = lu_solve(LU, piv, grad, adjoint=True)
        return -lam, None, None, None, None


def attach_implicit_gradient(
    g: FlatODE, t: torch.Tensor, base: torch.Tensor, z_star: torch.Tensor, hg: torch.Tensor
) -> torch.Tensor:
    """``z*`` carrying the implicit-function-theorem gradient of ``z = base + hg g(t, z)``
    with respect to ``base``, ``hg``, ``t`` and whatever ``g`` closes over."""
    z_star = z_star.detach()
    r = z_star - base - hg[:, None] * g(t, z_star)
    if not r.requires_grad:
        return z_star
    return z_star + _ImplicitCorrection.apply(r, g, t.detach(), z_star, hg.detach())


def coupled_matrix(J: torch.Tensor, hA: torch.Tensor) -> torch.Tensor:
    """The Newton matrix ``I - (hA) ⊗ J`` of coupled stages, ``(B, s n, s n)``.

    ``hA`` is ``(B, s, s)`` (the stage matrix times each sample's step); ``J`` is ``(B, n, n)``
    (one Jacobian for every stage, simplified Newton) or ``(s, B, n, n)`` (the exact Jacobian
    at each stage, for the backward pass). Rows and columns are ordered stage-major, as the
    stage increments flattened from ``(B, s, n)``.
    """
    B, s = hA.shape[0], hA.shape[1]
    if J.ndim == 3:
        J = J.expand(s, *J.shape)
    n = J.shape[-1]
    # Block (i, j) of the matrix is h a_ij J_j.
    blocks = torch.einsum("bij,jbkl->bikjl", hA, J).reshape(B, s * n, s * n)
    eye = torch.eye(s * n, dtype=J.dtype, device=J.device)
    return eye - blocks


def stage_values(
    g: FlatODE, ts: list[torch.Tensor], y0: torch.Tensor, W: torch.Tensor
) -> torch.Tensor:
    """``(B, s, n)``: the vector field at each stage, ``g(t_i, y0 + W_i)``."""
    return torch.stack([g(ti, y0 + W[:, i]) for i, ti in enumerate(ts)], dim=1)


class _CoupledCorrection(torch.autograd.Function):
    """Zero forward; backward ``-(I - hA ⊗ J_j)^{-T} grad`` with the exact Jacobian at each
    stage (the implicit function theorem for the coupled stage equations)."""

    @staticmethod
    def forward(ctx: Any, r: torch.Tensor, g: Any, ts: list, y0: torch.Tensor, W, hA):  # type: ignore[override]
        ctx.g, ctx.ts, ctx.hA = g, ts, hA
        ctx.save_for_backward(y0, W)
        return torch.zeros_like(r)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:  # type: ignore[override]
        y0, W = ctx.saved_tensors
        g = ctx.g
        with torch.no_grad():
            Js = []
            for i, ti in enumerate(ctx.ts):
                z = y0 + W[:, i]
                Js.append(g._user(ti, z) if callable(g.user_jacobian) else jacobian(g, ti, z))
            M = coupled_matrix(torch.stack(Js), ctx.hA)
            LU, piv, _ = torch.linalg.lu_factor_ex(M)
            B = grad.shape[0]
            lam = lu_solve(LU, piv, grad.reshape(B, -1), adjoint=True).reshape(grad.shape)
        return -lam, None, None, None, None, None


def attach_coupled_gradient(
    g: FlatODE, ts: list[torch.Tensor], y0: torch.Tensor, W_star: torch.Tensor, hA: torch.Tensor
) -> torch.Tensor:
    """The converged stage increments ``W*`` (``(B, s, n)``) of ``W = hA g(t, y0 + W)``,
    carrying their implicit-function-theorem gradient with respect to ``y0``, ``hA``, the
    stage times and whatever ``g`` closes over. Costs ``s`` evaluations when recording."""
    W_star = W_star.detach()
    r = W_star - torch.einsum("bij,bjn->bin", hA, stage_values(g, ts, y0, W_star))
    if not r.requires_grad:
        return W_star
    ts_d = [t.detach() for t in ts]
    return W_star + _CoupledCorrection.apply(r, g, ts_d, y0.detach(), W_star, hA.detach())


def records_gradient(*objs: Any) -> bool:
    """Whether autograd records and any tensor among ``objs`` (nested in tuples, lists and
    dicts, as the user's ``args``) requires a gradient."""
    if not torch.is_grad_enabled():
        return False
    stack = list(objs)
    while stack:
        o = stack.pop()
        if isinstance(o, torch.Tensor):
            if o.requires_grad:
                return True
        elif isinstance(o, (tuple, list)):
            stack.extend(o)
        elif isinstance(o, dict):
            stack.extend(o.values())
    return False


def unit_norm_floor(dtype: torch.dtype) -> float:
    """Default Newton tolerance of fixed-step solves (no controller tolerances to use)."""
    return float(torch.finfo(dtype).eps) ** (2.0 / 3.0)


def is_ode(terms: AbstractTerm) -> bool:
    return isinstance(terms.base_term(), ODETerm)
