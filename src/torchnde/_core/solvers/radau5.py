r"""Hairer & Wanner's RADAU5: the adaptive three-stage Radau IIA method, order 5.

The stage increments $Z_i = h \sum_j a_{ij} f(t_0 + c_i h, y_0 + Z_j)$ (nodes
$c = \tfrac{4 - \sqrt6}{10}, \tfrac{4 + \sqrt6}{10}, 1$) are solved by simplified Newton in
the variables $W = T^{-1} Z$, where $T^{-1} A^{-1} T = \operatorname{diag}(\gamma, \alpha \pm
i\beta)$. The Newton matrix $I \otimes h^{-1} A^{-1} - I \otimes J$ then splits into one real
system $(\gamma/h - J)$ and one complex one $((\alpha - i\beta)/h - J)$ of the size of the
state: two LU factorisations (one of them complex) instead of one of three times the size.
Each iteration:

$$\Delta W_0 = (\gamma/h - J)^{-1}\big((T^{-1}F)_0 - \tfrac{\gamma}{h} W_0\big),\qquad
\Delta W_1 + i \Delta W_2 = ((\alpha - i\beta)/h - J)^{-1}
\big((T^{-1}F)_1 + i (T^{-1}F)_2 - \tfrac{\alpha - i\beta}{h}(W_1 + iW_2)\big),$$

with $F_i = f(t_0 + c_i h, y_0 + (TW)_i)$, and Hairer's convergence test (the contraction
rate $\theta$ and $\eta = \theta / (1 - \theta)$ of :mod:`torchnde._core.newton`, stopping at
$\eta \|\Delta W\| \le \kappa$, $\kappa = \max(10\,\epsilon / \text{rtol},
\min(0.03, \text{rtol}^{1/2}))$ by default). Since the method is stiffly accurate,
$y_1 = y_0 + Z_3$.

The error estimate is the embedded order-3 solution filtered by the real factorisation
(Hairer & Wanner, *Solving ODEs II*, Sec. IV.8, eq. (8.19)-(8.20); SciPy's ``radau.py``):
$\text{err} = (\gamma/h - J)^{-1}\big(f(t_0, y_0) + h^{-1}\sum_i e_i Z_i\big)$, with
$e = (-13 - 7\sqrt6, -13 + 7\sqrt6, -1)/3$. It is $O(h^4)$ (``error_order = 4``) and
bounded for stiff components. On the first step and after a rejection, an estimate above
one is refined once with $f(t_0, y_0 + \text{err})$ in place of $f(t_0, y_0)$, as RADAU5
does. The step size is chosen by the loop's controller.

Both matrices are written multiplied by $h$ ($\gamma - hJ$), so a finished sample of a
per-sample solve ($h = 0$) needs no division. The Jacobian is reused across steps while
Newton contracts faster than ``jacobian_theta`` (Hairer's 0.001 by default), and the two
factorisations while the step size stays within ``lu_ratio`` of the one they were made
with; Newton then iterates with the factorised $\gamma / h_{LU} - J$, an approximation of
the exact matrix (the residual always uses the current $h$).

Gradients of the converged stages come from the implicit function theorem on the coupled
stage equations (as for :class:`~torchnde.RadauIIA5`), not from the iterations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch

from ..implicit import AbstractNewtonSolver
from ..newton import (
    Counts,
    NewtonResult,
    attach_coupled_gradient,
    records_gradient,
    simplified_newton,
    stage_values,
)
from ..terms import AbstractTerm
from .radau_iia5 import RadauIIA5

__all__ = ["Radau5"]

_S6 = math.sqrt(6.0)
# The transformation to the real and complex eigenvalues of A^{-1} (Hairer's RADAU5,
# SciPy's radau.py): T^{-1} A^{-1} T = [[gamma, 0, 0], [0, alpha, beta], [0, -beta, alpha]],
# so the last two components, as W_1 + i W_2, are multiplied by alpha - i beta.
_T = [
    [0.09443876248897524, -0.14125529502095421, 0.03002919410514742],
    [0.25021312296533332, 0.20412935229379994, -0.38294211275726192],
    [1.0, 1.0, 0.0],
]
_TI = [
    [4.17871859155190428, 0.32768282076106237, 0.52337644549944951],
    [-4.17871859155190428, -0.32768282076106237, 0.47662355450055044],
    [0.50287263494578682, -2.57192694985560522, 0.59603920482822492],
]
_GAMMA = 3 + 3 ** (2 / 3) - 3 ** (1 / 3)
_ALPHA = 3 + 0.5 * (3 ** (1 / 3) - 3 ** (2 / 3))
_BETA = 0.5 * (3 ** (5 / 6) + 3 ** (7 / 6))
# Weights of the error estimate (the gamma-scaled difference to the embedded solution).
_E = [(-13 - 7 * _S6) / 3, (-13 + 7 * _S6) / 3, -1 / 3]

_CACHE: dict[tuple[torch.dtype, torch.device], dict[str, torch.Tensor]] = {}

#: Up to this size of one sample's state, the real and the complex system are solved as one
#: block-diagonal real system of size 3n (Λ ⊗ I - I ⊗ hJ), with its inverse computed once
#: per factorisation: each Newton iteration is one batched product (~1 us on one CPU thread,
#: against ~7 us for a triangular solve; both have forward errors of size cond(M) eps,
#: Higham, *Accuracy and Stability of Numerical Algorithms*, Sec. 14.1) instead of two
#: solves plus the complex packing. Beyond it the (3n)³ inversion costs more than those
#: launches save (n³ + 4n³ real flops otherwise).
COMBINED_MAX_N = 16


def _coefficients(dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
    key = (dtype, device)
    hit = _CACHE.get(key)
    if hit is None:
        f64 = torch.float64
        hit = {
            "T": torch.tensor(_T, dtype=f64).to(dtype=dtype, device=device),
            "TI": torch.tensor(_TI, dtype=f64).to(dtype=dtype, device=device),
            "E": torch.tensor(_E, dtype=f64).to(dtype=dtype, device=device),
            "I3": torch.eye(3, dtype=dtype, device=device),
            "LAM": torch.tensor(
                [[_GAMMA, 0.0, 0.0], [0.0, _ALPHA, _BETA], [0.0, -_BETA, _ALPHA]], dtype=f64
            ).to(dtype=dtype, device=device),
        }
        hit.update(RadauIIA5.tableau.cast(dtype, device))
        _CACHE[key] = hit
    return hit


_KRON: dict[tuple[int, torch.dtype, torch.device], torch.Tensor] = {}


def _kron_lam(lam: torch.Tensor, n: int) -> torch.Tensor:
    key = (n, lam.dtype, lam.device)
    hit = _KRON.get(key)
    if hit is None:
        hit = _KRON[key] = torch.kron(lam, torch.eye(n, dtype=lam.dtype, device=lam.device))
    return hit


def _complex_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


# -- The decisions of a step (reuse the Jacobian, refactorise, retry Newton, refine the error
# estimate, a failure). Each is a (B,) bool mask, every sample its own, or, for one row (a
# joint solve with one full Jacobian, or one sample) when nothing records a gradient, a host
# bool: `Radau5.step` then reads the step sizes and flags it decides on in one transfer and
# takes each decision without (1,)-shaped masks and selections or a transfer per `any`. The
# arithmetic is the same either way. (Typed Any: the helpers take either form.)


def _any(m: Any) -> bool:
    """Whether the decision holds for some row."""
    return m if isinstance(m, bool) else bool(m.any())


def _not(m: Any) -> Any:
    return (not m) if isinstance(m, bool) else ~m


def _count(m: Any) -> int:
    return int(m) if isinstance(m, bool) else int(m.sum())


def _where(m: Any, new: Any, old: Any) -> Any:
    """``new`` on the rows where the decision holds, ``old`` elsewhere; for a host decision,
    the one chosen as it is (tensors, or host numbers)."""
    if isinstance(m, bool):
        return new if m else old
    return torch.where(m.reshape(m.shape + (1,) * (new.ndim - 1)), new, old)


def _ratio(a: Any, b: Any, m: Any) -> Any:
    """``a / b`` where the decision holds, one elsewhere (where ``b`` may be zero)."""
    if isinstance(m, bool):
        if m:
            return a / b
        return torch.ones_like(b) if isinstance(b, torch.Tensor) else 1.0
    return torch.where(m, a / torch.where(m, b, torch.ones_like(b)), 1.0)


def _merge(m: Any, new: NewtonResult, old: NewtonResult) -> NewtonResult:
    """The Newton result of ``new`` on the rows where the decision holds."""
    if isinstance(m, bool):
        return new if m else old
    assert new.iters is not None and old.iters is not None
    return NewtonResult(
        z=_where(m, new.z, old.z), failed=_where(m, new.failed, old.failed),
        theta=_where(m, new.theta, old.theta), eta=_where(m, new.eta, old.eta),
        iters=_where(m, new.iters, old.iters),
    )  # fmt: skip


def _state_flags(jac_ok: Any, fresh: Any, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``(jac_ok, fresh, redo = False)`` as the state's (B,) masks (host decisions made
    tensors in one transfer)."""
    if isinstance(jac_ok, bool):
        flags = torch.tensor([jac_ok, fresh, False], device=like.device)
        return flags[0:1], flags[1:2], flags[2:3]
    return jac_ok, fresh, torch.zeros_like(like)


class Radau5(AbstractNewtonSolver):
    r"""The adaptive Radau IIA method of order 5 (Hairer & Wanner's RADAU5, SciPy's
    ``Radau``).

    Order 5; error estimate of order 3 (``error_order = 4``, error $\sim h^4$); three coupled
    implicit stages at $c = \tfrac{4 \mp \sqrt6}{10}, 1$, solved through one real and one
    complex linear system of the state's size (module docstring); dense output of order 3
    (the collocation polynomial); implicit, A- and L-stable, stiffly accurate. For stiff
    problems at moderate to tight tolerances (1e-5 and below), the method SciPy and Hairer
    recommend there. A Newton failure rejects the step (the controller shrinks it), after
    first retrying with a fresh Jacobian when the one used was stale.

    Args:
        jacobian, jacobian_blocks: see :class:`~torchnde.AbstractImplicitSolver`.
        newton_rtol, newton_atol: tolerances that scale the Newton corrections; ``None``
            takes the step-size controller's ``rtol``/``atol`` (fixed-step solves use
            ``eps**(2/3)`` of the dtype).
        kappa: Newton stops when the predicted remaining error is below ``kappa`` (in the
            scaled norm). ``None``: Hairer's $\max(10\,\epsilon/\text{rtol},
            \min(0.03, \sqrt{\text{rtol}}))$ of the controller's ``rtol``; 0.05 with
            constant steps.
        max_newton_iters: iterations before a step counts as failed.
        jacobian_theta: the next step recomputes the Jacobian when Newton took more than
            two iterations and its last contraction rate was above this (SciPy's rule, with
            Hairer's threshold).
        lu_ratio: the two factorisations are redone when the step size changed by more than
            this fraction since they were made.

    Reference: E. Hairer & G. Wanner, *Solving Ordinary Differential Equations II*, 2nd ed.,
    Springer 1996, Sec. IV.8.
    """

    order: ClassVar[int] = 5
    error_order: ClassVar[int | None] = 4
    dense_order: ClassVar[int] = 3
    # Hairer's RADAU5: Gustafsson's predictive controller, and the step size kept while the
    # proposed factor is in [1, 1.2] (QUOT1, QUOT2), so the factorisations stay exact.
    predictive_control: ClassVar[bool] = True
    hold_step: ClassVar[tuple[float, float] | None] = (1.0, 1.2)

    def __init__(
        self,
        *,
        jacobian: Callable[..., torch.Tensor] | str | None = "autograd",
        jacobian_blocks: bool | None = None,
        newton_rtol: float | None = None,
        newton_atol: float | None = None,
        kappa: float | None = None,
        max_newton_iters: int = 7,
        jacobian_theta: float = 0.001,
        lu_ratio: float = 0.2,
    ) -> None:
        super().__init__(
            jacobian=jacobian, jacobian_blocks=jacobian_blocks, newton_rtol=newton_rtol,
            newton_atol=newton_atol, kappa=0.05 if kappa is None else kappa,
            max_newton_iters=max_newton_iters, jacobian_theta=jacobian_theta,
            lu_ratio=lu_ratio,
        )  # fmt: skip
        self._kappa_given = kappa is not None

    def _tolerances(self, dtype: torch.dtype) -> tuple[Any, Any, float]:
        rtol, atol = self._newton_tolerances(dtype)
        if self._kappa_given or self._rtol is None:
            # (Constant steps: no controller tolerance for Hairer's formula.)
            kappa = self.kappa
        else:
            # Hairer's FNEWT, from the smallest relative tolerance.
            r = float(torch.as_tensor(rtol).min())
            eps = float(torch.finfo(dtype).eps)
            kappa = max(10 * eps / r, min(0.03, r**0.5))
        return rtol, atol, kappa

    # -- state: (f0, Z_prev, h_prev, J, LUr, pivr, LUc, pivc, h_lu, jac_ok, fresh, eta, redo) --
    # ``fresh``: J was computed at this step's start (only kept over a rejection); ``redo``:
    # the first step or a retry after a rejection (where the error estimate is refined).

    def init(self, terms: AbstractTerm, t0: torch.Tensor, y0: torch.Tensor, args: Any) -> Any:
        g = self._ode(terms, args, y0, t0)
        f0 = g.unflat(g(t0, g.flat(y0)))
        B, n = g.B, g.n
        dev, dt = y0.device, y0.dtype
        m = 3 * n if n <= COMBINED_MAX_N else n  # the size of the real system

        def eye_piv(m: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
            eye = torch.eye(m, dtype=dtype, device=dev).expand(B, m, m).contiguous()
            piv = torch.arange(1, m + 1, dtype=torch.int32, device=dev).expand(B, m)
            return eye, piv.contiguous()

        LUr, pivr = eye_piv(m, dt)
        # (The complex factorisation is unused with the combined system: a placeholder.)
        LUc, pivc = eye_piv(n if m == n else 1, _complex_dtype(dt))
        zeros = y0.new_zeros(B)
        false = torch.zeros(B, dtype=torch.bool, device=dev)
        return (
            f0, y0.new_zeros(B, 3, n), zeros, y0.new_zeros(B, n, n), LUr, pivr, LUc, pivc,
            zeros, false, false, y0.new_ones(B), ~false,
        )  # fmt: skip

    def rejected_state(self, state: Any, new_state: Any) -> Any:
        # The retry starts from the same point: keep the Jacobian and factorisations the
        # rejected attempt made there (and whether the Jacobian is fresh), the previous
        # accepted step's polynomial for the first guess, and refine the error estimate.
        # A Jacobian computed at this point is as good as it gets here: not recomputed.
        redo = torch.ones_like(state[12])
        jac_ok = new_state[9] | new_state[10]
        return (
            tuple(state[:3]) + tuple(new_state[3:9]) + (jac_ok,) + tuple(new_state[10:12]) + (redo,)
        )

    def step(
        self,
        terms: AbstractTerm,
        t0: torch.Tensor,
        t1: torch.Tensor,
        y0: torch.Tensor,
        args: Any,
        state: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None, Any, Any]:
        f0, Z_prev, h_prev, J, LUr, pivr, LUc, pivc, h_lu, jac_ok, fresh, eta, redo = state
        g = self._ode(terms, args, y0, t0)
        co = _coefficients(y0.dtype, y0.device)
        B, n = g.B, g.n
        dt, dev = y0.dtype, y0.device
        counts = Counts()
        h = (t1 - t0).to(dt)
        hB = h.expand(B) if h.ndim == 0 else h
        hd = hB.detach()
        y0f, f0f = g.flat(y0), g.flat(f0)
        y0d = y0f.detach()
        grad = records_gradient(y0f, f0f, t0, t1, g.args)
        # The decisions' inputs (`hx*` for the step sizes): the (B,) tensors themselves, or
        # for one row without a gradient their host numbers, read in one transfer (the
        # helpers above the class).
        one = B == 1 and not grad
        if one:
            flags = torch.cat([hd, h_prev, h_lu, jac_ok.to(dt), fresh.to(dt), redo.to(dt), eta])
            hx, hx_prev, hx_lu, ok, fr, rd, eta = flags.tolist()
            jac_ok, fresh, redo = bool(ok), bool(fr), bool(rd)
        else:
            hx, hx_prev, hx_lu = hd, h_prev, h_lu
        fresh = fresh & redo
        ts = [t1 if ci == 1.0 else t0 + ci * (t1 - t0) for ci in RadauIIA5.tableau.c]
        tsd = [t.detach() for t in ts] if grad else ts
        rtol, atol, kappa = self._tolerances(dt)
        cdtype = _complex_dtype(dt)
        T, TI, LAM = co["T"], co["TI"], co["LAM"]

        # (In the state's shape first: tolerances may be tensors of that shape.)
        scale = g.flat(atol + rtol * y0.detach().abs()).repeat(1, 3)

        def scale_fn(z: torch.Tensor) -> torch.Tensor:
            return scale

        combined = n <= COMBINED_MAX_N

        # (refresh and solve run under no_grad.)
        def refresh(J, LUr, pivr, LUc, pivc, h_lu, hx_lu, fresh, need_jac):
            if _any(need_jac):
                # The carried f0 is f(t0, y0) itself (evaluated at the last step's end, not
                # recovered from the stages): the finite difference's base point.
                Jn = g.jacobian(t0.detach(), y0d, f0f.detach())
                if self.jacobian == "finite_difference":
                    counts.num_fevals += n
                counts.num_jacobians += 1
                J = _where(need_jac, Jn, J)
                fresh = fresh | need_jac
            # (h_lu = 0: no factorisation yet, or one the last step found too far off.)
            ratio = _ratio(hx, hx_lu, hx_lu != 0)
            refactor = need_jac | (hx_lu == 0) | _not(abs(ratio - 1) <= self.lu_ratio)
            if _any(refactor):
                hJ = hd[:, None, None] * J
                if combined:
                    # Λ ⊗ I - I ⊗ hJ, stage-major like W flattened from (B, 3, n).
                    blocks = torch.einsum("ij,bkl->bikjl", co["I3"], hJ)
                    M = _kron_lam(LAM, n) - blocks.reshape(B, 3 * n, 3 * n)
                    LUr = _where(refactor, torch.linalg.inv_ex(M)[0], LUr)  # (module docstring)
                else:
                    eye = torch.eye(n, dtype=dt, device=dev)
                    Mc = torch.complex(_ALPHA * eye - hJ, -_BETA * eye.expand_as(hJ))
                    LUrn, pivrn, _ = torch.linalg.lu_factor_ex(_GAMMA * eye - hJ)
                    LUcn, pivcn, _ = torch.linalg.lu_factor_ex(Mc.to(cdtype))
                    LUr, pivr = _where(refactor, LUrn, LUr), _where(refactor, pivrn, pivr)
                    LUc, pivc = _where(refactor, LUcn, LUc), _where(refactor, pivcn, pivc)
                # One real and one complex factorisation (SciPy's nlu counts them so), or one
                # of the combined system.
                counts.num_lu += 1 if combined else 2
                h_lu = _where(refactor, hd, h_lu)
                hx_lu = hx if one else h_lu
            return J, LUr, pivr, LUc, pivc, h_lu, hx_lu, fresh

        def solve(LUr, pivr, LUc, pivc, h_lu, rows):
            # The factorisations hold gamma - h_lu J = h_lu (gamma / h_lu - J): multiplying
            # the right-hand side by q = h_lu / h makes the correction that of the matrix
            # gamma / h_lu - J applied to the residual of the current h.
            q = _ratio(h_lu, hd, hx != 0)
            qc3 = q[:, None, None]
            hc3 = hd[:, None, None]

            def residual(w: torch.Tensor) -> torch.Tensor:
                Wz = w.view(B, 3, n)
                counts.num_fevals += 3
                F = stage_values(g, tsd, y0d, torch.matmul(T, Wz))
                # q (h T^{-1} F - Λ W), Λ = T^{-1} A^{-1} T block diagonal.
                r = torch.matmul(TI, F).mul_(hc3).sub_(torch.matmul(LAM, Wz)).mul_(qc3)
                return r.reshape(B, 3 * n)

            def correction(res: torch.Tensor) -> torch.Tensor:
                if combined:
                    return torch.bmm(LUr, res[..., None]).squeeze(-1)
                rr = res.view(B, 3, n)
                d0 = torch.linalg.lu_solve(LUr, pivr, rr[:, 0, :, None]).squeeze(-1)
                rc = torch.complex(rr[:, 1], rr[:, 2]).to(cdtype)
                dc = torch.linalg.lu_solve(LUc, pivc, rc[..., None]).squeeze(-1)
                return torch.stack([d0, dc.real, dc.imag], 1).reshape(B, 3 * n)

            # (One row: Newton's outcome as host numbers only, no (1,)-shaped tensors.)
            out = simplified_newton(
                W0.reshape(B, 3 * n), residual, correction, scale_fn, eta, rows,
                kappa=kappa, max_iters=self.max_newton_iters, tensors=not one,
            )  # fmt: skip
            return out, q

        def outcome(res: NewtonResult) -> tuple[Any, Any, Any]:
            # Newton's failure, last eta and iterations, as the decisions read them.
            if one:
                assert res.host is not None
                return res.host[:3]
            return res.failed, res.eta, res.iters

        with torch.no_grad():
            # First guess: the last accepted step's collocation polynomial continued to this
            # step's nodes, minus its value at the step start; zero on the first step.
            have = hx_prev != 0
            if _any(have):
                r = _ratio(hd, h_prev, have)
                theta = 1 + co["c"][None, :] * r[:, None]  # (B, 3)
                powers = theta[..., None] ** torch.arange(1, 4, device=dev).to(dt)
                L = powers @ co["dense"].T  # (B, stage i, basis j)
                extrap = torch.matmul(L, Z_prev) - Z_prev[:, 2:3]
                W0 = torch.matmul(TI, _where(have, extrap, 0.0))  # (a host `have` holds here)
            else:
                W0 = y0d.new_zeros(B, 3, n)
            active = True if one else torch.ones(B, dtype=torch.bool, device=dev)
            J, LUr, pivr, LUc, pivc, h_lu, hx_lu, fresh = refresh(
                J, LUr, pivr, LUc, pivc, h_lu, hx_lu, fresh, _not(jac_ok)
            )
            res, q = solve(LUr, pivr, LUc, pivc, h_lu, active)
            retry = outcome(res)[0] & _not(fresh)
            if _any(retry):
                # Newton failed with a stale Jacobian: recompute it and redo those samples.
                J, LUr, pivr, LUc, pivc, h_lu, hx_lu, fresh = refresh(
                    J, LUr, pivr, LUc, pivc, h_lu, hx_lu, fresh, retry
                )
                again, q = solve(LUr, pivr, LUc, pivc, h_lu, retry)
                res = _merge(retry, again, res)
        failed, eta_x, iters = outcome(res)
        counts.extra["num_newton_failures"] = _count(failed)
        Z = Zd = torch.matmul(T, res.z.view(B, 3, n))
        # Only when something records a gradient (as in the ESDIRK engine: the carried field
        # records one when the field depends on parameters): the check costs 3 evaluations.
        if grad:
            Z = attach_coupled_gradient(g, ts, y0f, Z, hB[:, None, None] * co["a"])
            counts.num_fevals += 3
        y1f = y0f + Z[:, 2]

        # The error estimate, through the real factorisation (module docstring).
        ZE = torch.matmul(co["E"], Z)
        qc = q[:, None]

        def filtered(f: torch.Tensor) -> torch.Tensor:
            rhs = qc * (hB[:, None] * f + ZE)
            if combined:  # the first block of the block-diagonal inverse is the real one
                return torch.bmm(LUr[:, :n, :n], rhs[..., None]).squeeze(-1)
            return torch.linalg.lu_solve(LUr, pivr, rhs[..., None]).squeeze(-1)

        err = filtered(f0f)
        may_refine = redo & _not(failed)
        if self._rtol is not None and _any(may_refine):
            with torch.no_grad():
                big_y = g.unflat(torch.maximum(y0d.abs(), y1f.detach().abs()))
                sc = g.flat(self._atol + self._rtol * big_y)
                big = (err.detach() / sc).square().mean(1).sqrt() > 1  # (the RMS above one)
            refine = may_refine & (bool(big) if one else big)
            if _any(refine):
                counts.num_fevals += 1
                err = _where(refine, filtered(g(t0, y0f + err)), err)

        if _any(failed):
            if self._rtol is None:
                # Fixed steps cannot be rejected: a failed solve makes the state NaN, which
                # the loop reports as NONFINITE.
                y1f = _where(failed, torch.full_like(y1f, float("nan")), y1f)
            else:
                # Adaptive: reject and shrink. A huge finite error rather than inf keeps the
                # controller's gradient finite.
                y1f = _where(failed, y0f, y1f)
                err = _where(failed, (y0d.abs() + 1) * 1e8, err)
        y1 = g.unflat(y1f)
        counts.num_fevals += 1
        f1 = g.unflat(g(t1, y1f))
        # SciPy's rule: a new Jacobian when Newton needed more than two iterations at a last
        # contraction rate above jacobian_theta (eta = theta / (1 - theta) of the last rate);
        # after a failure with a fresh one, the step size is to blame, not the Jacobian.
        last_rate = eta_x / (1 + eta_x)
        # Slow with factorisations made at another step size: the matrix's h is off, not
        # (necessarily) the Jacobian, so the next step refactorises with the same Jacobian.
        slow = (iters > 2) & (last_rate > self.jacobian_theta)
        # (Within rounding: a held step size is t1 - t0 of a shifted interval, not bit for bit.)
        exact = abs(hx - hx_lu) <= 1e-6 * abs(hx)
        jac_ok_new = _not((slow & exact) | (failed & _not(fresh)))
        off = slow & _not(exact)
        if _any(off):
            h_lu = _where(off, torch.zeros_like(h_lu), h_lu)
        jac_ok_s, fresh_s, redo_s = _state_flags(jac_ok_new, fresh, state[12])
        eta_s = torch.tensor([eta_x], dtype=dt, device=dev) if one else eta_x
        new_state = (
            f1, Zd, hd, J, LUr, pivr, LUc, pivc, h_lu, jac_ok_s, fresh_s, eta_s, redo_s,
        )  # fmt: skip
        # Stage increments as (3, *y.shape) for the dense output.
        Zy = Z.permute(1, 0, 2).reshape((3,) + tuple(y0.shape))
        return y1, g.unflat(err), (y0, Zy, counts), new_state

    def interpolate(self, dense_info: Any, theta: torch.Tensor, per_sample: bool) -> torch.Tensor:
        # The collocation polynomial through (0, 0) and (c_i, Z_i).
        y0, Z, _ = dense_info
        P = _coefficients(y0.dtype, y0.device)["dense"]
        powers = theta.unsqueeze(-1).to(y0.dtype) ** torch.arange(
            1, 4, device=y0.device, dtype=y0.dtype
        )
        w = powers @ P.T  # (..., 3)
        if per_sample:
            return y0 + torch.einsum("bs,sb...->b...", w, Z)
        return y0 + (w @ Z.reshape(3, -1)).view((-1,) + tuple(y0.shape))

    def __repr__(self) -> str:
        return "Radau5()"
