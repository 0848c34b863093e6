r"""Shared machinery of the SDE-specific solvers.

An SDE is ``MultiTerm(ODETerm(f), ControlTerm(g, brownian, noise=...))``:

$$ dy = f(t, y)\,dt + g(t, y)\,dW_t. $$

The Runge–Kutta solvers treat it through the control formulation (every stage uses the
increment $\Delta W$ of the step), which converges to the Stratonovich solution. The solvers
here need the drift and the diffusion separately (Milstein's derivative term, the stochastic
Runge–Kutta stage weights), so they take the two terms apart; each declares the calculus it
converges in and the noise types it supports, and ``solve`` checks both once, up front.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, NoReturn

import torch
import torch.autograd.forward_ad as fwAD

from .runge_kutta import AbstractRungeKutta, linear
from .solver import AbstractSolver
from .terms import AbstractTerm, ControlTerm, MultiTerm, ODETerm, broadcast_time

__all__ = ["AbstractSDESolver", "check_sde", "split_sde", "solver_calculus"]


def split_sde(terms: AbstractTerm, who: object) -> tuple[ODETerm | None, ControlTerm]:
    """The drift and diffusion terms of ``MultiTerm(ODETerm(f), ControlTerm(g, bm))`` (in
    either order; a lone ``ControlTerm`` has no drift), as the term declared them when it was
    built (:meth:`AbstractTerm.sde_parts`). ``who`` names the caller in errors (a string, or
    an object whose ``repr`` is taken only then: this runs every step)."""
    parts = terms.sde_parts()
    if parts is None:
        _not_an_sde(terms, who if isinstance(who, str) else repr(who))
    return parts


def _not_an_sde(terms: AbstractTerm, who: str) -> NoReturn:
    from .packing import PackedTerm, ReversedTerm  # packing imports terms only

    if isinstance(terms, ReversedTerm):
        raise NotImplementedError(
            f"{who} solves forward in time only (t1 > t0); got t1 < t0. Swap the times and "
            "reverse the Brownian motion yourself, or use a Runge–Kutta solver."
        )
    if isinstance(terms, PackedTerm):
        raise NotImplementedError(f"{who} needs a tensor state; stack tuple states into one.")
    raise TypeError(
        f"{who} solves SDEs given as MultiTerm(ODETerm(drift), ControlTerm(diffusion, "
        f"brownian, noise=...)), got {terms!r}."
    )


def solver_calculus(solver: AbstractSolver) -> str | None:
    """The calculus a solver's solutions converge to on an SDE in the control formulation:
    Euler's method is Euler–Maruyama (Itô), the other explicit Runge–Kutta methods and the
    reversible Heun method converge to the Stratonovich solution; ``None`` for solvers that do
    not solve SDEs."""
    if isinstance(solver, AbstractSDESolver):
        return solver.calculus
    if isinstance(solver, AbstractRungeKutta):
        return "ito" if solver._tab().num_stages == 1 else "stratonovich"
    from .solvers.reversible_heun import ReversibleHeun

    if isinstance(solver, ReversibleHeun):
        return "stratonovich"
    return None


def _leaves(terms: AbstractTerm) -> list[AbstractTerm]:
    return list(terms.terms) if isinstance(terms, MultiTerm) else [terms]


def check_sde(terms: AbstractTerm, solver: AbstractSolver) -> None:
    """Check the noise type and the declared calculus against the solver (called by ``solve``
    before any wrapping of the terms)."""
    who = repr(solver)
    if isinstance(solver, AbstractSDESolver):
        _, diffusion = split_sde(terms, who)
        if diffusion.noise not in solver.noise_types:
            raise NotImplementedError(
                f"{who} supports noise types {list(solver.noise_types)}, but the ControlTerm has "
                f"noise={diffusion.noise!r}. Use "
                + (
                    "EulerMaruyama() (Itô) or Heun()/Midpoint() (Stratonovich)"
                    if diffusion.noise == "general"
                    else "a solver that lists it"
                )
                + ", or declare a more specific noise type if it applies."
            )
    calculus = solver_calculus(solver)
    for term in _leaves(terms):
        if not isinstance(term, ControlTerm) or term.calculus is None:
            continue
        if calculus is None:
            raise NotImplementedError(
                f"{who} does not solve SDEs (the ControlTerm declares calculus="
                f"{term.calculus!r}); use EulerMaruyama(), SRI2(), Heun(), ReversibleHeun(), ..."
            )
        if (
            term.noise == "additive"
            or isinstance(solver, AbstractSDESolver)
            and (solver.calculus == "both")
        ):
            continue  # Itô and Stratonovich solutions coincide for additive noise
        if term.calculus != calculus:
            hint = (
                "EulerMaruyama(), ItoMilstein(), SRI2()"
                if term.calculus == "ito"
                else "Heun(), Midpoint(), EulerHeun(), ReversibleHeun(), StratonovichMilstein()"
            )
            raise ValueError(
                f"the ControlTerm declares calculus={term.calculus!r} but {who} converges to "
                f"the {calculus.capitalize()} solution; use {hint}, or convert the drift "
                "(Itô drift = Stratonovich drift + ½ Σ_j (∂g_j/∂y) g_j)."
            )


class AbstractSDESolver(AbstractSolver):
    """Base class of the SDE-specific solvers.

    How to write one:

    1. Set ``strong_order``, ``calculus`` (``"ito"``, ``"stratonovich"`` or ``"both"`` for
       additive-noise methods), ``noise_types`` and ``num_fevals_step`` (drift plus diffusion
       evaluations of one step), and ``levy_area`` if the method reads Lévy areas of the
       Brownian motion (``"space-time"`` for $H$, ``"foster"`` for the full area $A$; the
       Brownian motion ``sdeint`` builds by default then provides them).
    2. Implement ``_step(drift, diffusion, t0, t1, y0, args)`` returning ``y1``; ``drift`` is
       the ``ODETerm`` (or ``None``), ``diffusion`` the ``ControlTerm``.

    The base class adds the optional step-doubling error estimate (``adaptive=True``), linear
    dense output and the solver contract. The carried solver state is empty.

    Args:
        adaptive: estimate the local error by step doubling on the same Brownian path (one
            full step against two half steps, the half steps giving the solution), so a
            ``PIDController`` can choose the steps; 3× the work per step. The Brownian motion
            must answer queries in any order (``BrownianInterval``, ``VirtualBrownianTree``).
            Step sizes chosen from the Brownian increments are not previsible, which can bias
            low-order Itô methods: adaptive Euler–Maruyama converges slowly (measured: the
            strong error barely improves from rtol 1e-3 to 1e-4 on geometric Brownian motion),
            while Milstein, SRI2 and the Stratonovich solvers converge as expected
            (Gaines & Lyons 1997, "Variable step size control in the numerical solution of
            stochastic differential equations").
    """

    strong_order: ClassVar[float]
    calculus: ClassVar[str]
    noise_types: ClassVar[tuple[str, ...]]
    levy_area: ClassVar[str | None] = None
    order: ClassVar[int] = 1
    dense_order: ClassVar[int] = 1
    num_fevals_init: ClassVar[int] = 0

    def __init__(self, *, adaptive: bool = False) -> None:
        if not isinstance(adaptive, bool):
            raise TypeError(f"{type(self).__name__}: `adaptive` must be a bool, got {adaptive!r}.")
        self.adaptive = adaptive
        if adaptive:
            # Local error of a strong-order-p method ~ h^(p + 1/2); the controller's exponent
            # takes an integer order, so round up (a slightly cautious step-size update).
            self.error_order = int(self.strong_order + 1)  # type: ignore[misc]
            self.num_fevals_step = 3 * type(self).num_fevals_step  # type: ignore[misc]

    def init(self, terms: AbstractTerm, t0: torch.Tensor, y0: torch.Tensor, args: Any) -> Any:
        split_sde(terms, self)
        return None

    @abc.abstractmethod
    def _step(
        self,
        drift: ODETerm | None,
        diffusion: ControlTerm,
        t0: torch.Tensor,
        t1: torch.Tensor,
        y0: torch.Tensor,
        args: Any,
    ) -> torch.Tensor: ...

    def step(self, terms, t0, t1, y0, args, state):  # type: ignore[override]
        drift, diffusion = split_sde(terms, self)
        if not self.adaptive:
            y1 = self._step(drift, diffusion, t0, t1, y0, args)
            return y1, None, (y0, y1), None
        tm = t0 + 0.5 * (t1 - t0)
        y_full = self._step(drift, diffusion, t0, t1, y0, args)
        y_half = self._step(drift, diffusion, t0, tm, y0, args)
        y1 = self._step(drift, diffusion, tm, t1, y_half, args)
        return y1, y1 - y_full, (y0, y1), None

    def interpolate(self, dense_info: Any, theta: torch.Tensor, per_sample: bool) -> torch.Tensor:
        return linear(dense_info, theta, per_sample)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(adaptive=True)" if self.adaptive else super().__repr__()


def drift_increment(
    drift: ODETerm | None, t: torch.Tensor, y: torch.Tensor, args: Any, h: torch.Tensor
) -> torch.Tensor | None:
    """``f(t, y) h`` (``None`` without a drift)."""
    if drift is None:
        return None
    return drift.vf(t, y, args) * broadcast_time(h, y)


def diagonal_derivative(fn: Any, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(fn(y), fn'(y))`` (the Jacobian's diagonal) for an ``fn`` acting componentwise
    (``fn_i`` depends on ``y_i`` only, as diagonal noise requires): the diagonal is one
    vector-Jacobian product with ones (cheaper than forward mode, whose formulas for some
    activations fall back to slow decompositions). Differentiable in turn when autograd
    is recording."""
    recording = torch.is_grad_enabled()
    if recording and not y.requires_grad:
        # Record only if fn reads tensors requiring grad (parameters); otherwise the graph
        # through a fresh leaf would make the solution require grad for nothing.
        plain = fn(y)
        if not plain.requires_grad:
            with torch.no_grad():
                return diagonal_derivative(fn, y)
    with torch.enable_grad():
        y_ = y if recording and y.requires_grad else y.detach().requires_grad_(True)
        out = fn(y_)
        if not out.requires_grad:
            return out, torch.zeros_like(out)
        (d,) = torch.autograd.grad(
            out, y_, torch.ones_like(out), create_graph=recording, allow_unused=True
        )
    if d is None:
        d = torch.zeros_like(out)
    if not recording:
        return out.detach(), d
    return out, d


def jvp(fn: Any, y: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(fn(y), J_fn(y) v)`` by forward-mode differentiation (differentiable in turn by
    backpropagation; a third of the overhead of ``torch.func.jvp``)."""
    with fwAD.dual_level():
        out = fwAD.unpack_dual(fn(fwAD.make_dual(y, v)))
        tangent = out.tangent if out.tangent is not None else torch.zeros_like(out.primal)
        return out.primal, tangent


def milstein_correction(
    diffusion: ControlTerm,
    t: torch.Tensor,
    y: torch.Tensor,
    g: torch.Tensor,
    dw: torch.Tensor,
    h: torch.Tensor,
    args: Any,
    *,
    ito: bool,
    derivative_free: bool,
    f_h: torch.Tensor | None,
) -> torch.Tensor | None:
    r"""Milstein's term $\tfrac12 \sum_{j,k} (L^j g_k) (\Delta W_j \Delta W_k - \delta_{jk} h)$
    (Itô) or without the $h$ (Stratonovich), for commutative noise, where
    $L^j = g_j \cdot \nabla_y$. ``None`` for additive noise (the term vanishes)."""
    noise = diffusion.noise
    if noise == "additive":
        return None
    h = broadcast_time(h, y)
    if noise in ("diagonal", "scalar"):
        if derivative_free:
            sqrt_h = h.sqrt()
            if ito:
                # Kloeden & Platen (1992), Sec. 11.1: g g' ≈ (g(Υ) - g(y)) / √h with
                # Υ = y + f h + g √h. Its O(√h) error multiplies ΔW² - h, which has mean
                # zero, so it does not accumulate beyond the scheme's order.
                upsilon = y + g * sqrt_h if f_h is None else y + f_h + g * sqrt_h
                gg = (diffusion.vf(t, upsilon, args) - g) / sqrt_h
            else:
                # Stratonovich: the term multiplies ΔW² (mean h), so a one-sided difference's
                # O(√h) error would build up a bias of order h^½; the central difference is
                # O(h) accurate.
                g_plus = diffusion.vf(t, y + g * sqrt_h, args)
                g_minus = diffusion.vf(t, y - g * sqrt_h, args)
                gg = (g_plus - g_minus) / (2 * sqrt_h)
        elif noise == "diagonal":
            # Diagonal noise: g_i depends on y_i only, so J_g g = g' ⊙ g.
            # (g is recomputed with the derivative's graph: g(y) itself is cheap next to it.)
            g_, dg = diagonal_derivative(lambda z: diffusion.vf(t, z, args), y)
            gg = g_ * dg
        else:
            # Scalar noise: the one column's directional derivative along itself.
            _, gg = jvp(lambda z: diffusion.vf(t, z, args), y, g)
        w = dw * dw
        if ito:
            w = w - broadcast_time(h.reshape(h.shape[:1]) if h.ndim else h, dw)
        return 0.5 * diffusion.prod(gg, w)
    if derivative_free:
        raise NotImplementedError(
            "the derivative-free Milstein variant supports diagonal, scalar and additive noise; "
            "for general commutative noise use derivative_free=False."
        )
    # General commutative noise: Σ_{j,k} (L^j g_k) ΔW_j ΔW_k is the derivative of y ↦ g(y)ΔW
    # along g(y)ΔW (ΔW held fixed): one Jacobian-vector product.
    g_dw = diffusion.prod(g, dw)
    _, a = jvp(lambda z: diffusion.prod(diffusion.vf(t, z, args), dw), y, g_dw)
    out = 0.5 * a
    if ito:
        # - ½ h Σ_j L^j g_j: one product per Brownian channel.
        for j in range(g.shape[-1]):
            _, c = jvp(lambda z, j=j: diffusion.vf(t, z, args)[..., j], y, g[..., j])
            out = out - 0.5 * h * c
    return out


class AbstractMilstein(AbstractSDESolver):
    """The Milstein step shared by :class:`ItoMilstein` and :class:`StratonovichMilstein`;
    the subclass's ``calculus`` picks the correction term."""

    strong_order: ClassVar[float] = 1.0
    noise_types: ClassVar[tuple[str, ...]] = ("diagonal", "scalar", "additive", "general")
    num_fevals_step: ClassVar[int] = 3

    def __init__(self, *, derivative_free: bool = False, adaptive: bool = False) -> None:
        if not isinstance(derivative_free, bool):
            raise TypeError(
                f"{type(self).__name__}: `derivative_free` must be a bool, got {derivative_free!r}."
            )
        self.derivative_free = derivative_free
        super().__init__(adaptive=adaptive)

    def _step(
        self,
        drift: ODETerm | None,
        diffusion: ControlTerm,
        t0: torch.Tensor,
        t1: torch.Tensor,
        y0: torch.Tensor,
        args: Any,
    ) -> torch.Tensor:
        h = t1 - t0
        dw = diffusion.contr(t0, t1)
        g = diffusion.vf(t0, y0, args)
        f_h = drift_increment(drift, t0, y0, args, h)
        y1 = y0 + diffusion.prod(g, dw)
        if f_h is not None:
            y1 = y1 + f_h
        corr = milstein_correction(
            diffusion, t0, y0, g, dw, h, args,
            ito=self.calculus == "ito", derivative_free=self.derivative_free, f_h=f_h,
        )  # fmt: skip
        return y1 if corr is None else y1 + corr

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(derivative_free={self.derivative_free}, adaptive={self.adaptive})"
