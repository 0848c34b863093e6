"""``sdeint``: torchsde-style calling of the SDE solvers, a thin shim over ``solve``."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import torch

from ._adjoint import AbstractAdjoint
from ._brownian import BrownianInterval
from ._core import solvers
from ._core.controllers import ConstantStepSize, PIDController
from ._core.sde import AbstractSDESolver
from ._core.solution import SaveAt
from ._core.solver import AbstractSolver
from ._core.terms import NOISE_TYPES, AbstractPath, ControlTerm, MultiTerm, ODETerm
from ._solve import solve

__all__ = ["SDE_METHODS", "sdeint", "sde_solver_from_name"]

#: Method names accepted by :func:`sdeint` (torchsde's, plus the class names in lower case).
SDE_METHODS: tuple[str, ...] = (
    "euler",
    "euler_maruyama",
    "milstein",
    "milstein_derivative_free",
    "srk",
    "sri2",
    "sra1",
    "euler_heun",
    "heun",
    "midpoint",
    "reversible_heun",
)


def sde_solver_from_name(method: str, noise: str, calculus: str) -> AbstractSolver:
    """The solver for a method name, given the noise type and calculus (``"milstein"`` and
    ``"srk"`` depend on them); ``ValueError`` lists the valid names."""
    if method not in SDE_METHODS:
        raise ValueError(f"sdeint: `method` must be one of {list(SDE_METHODS)}, got {method!r}.")
    ito = calculus == "ito"
    if method in ("euler", "euler_maruyama"):
        return solvers.EulerMaruyama() if ito else solvers.Euler()
    if method in ("milstein", "milstein_derivative_free"):
        free = method == "milstein_derivative_free"
        if ito:
            return solvers.ItoMilstein(derivative_free=free)
        return solvers.StratonovichMilstein(derivative_free=free)
    if method == "srk":
        return solvers.SRA1() if noise == "additive" else solvers.SRI2()
    return {
        "sri2": solvers.SRI2,
        "sra1": solvers.SRA1,
        "euler_heun": solvers.EulerHeun,
        "heun": solvers.Heun,
        "midpoint": solvers.Midpoint,
        "reversible_heun": solvers.ReversibleHeun,
    }[method]()


def _default_method(noise: str, calculus: str) -> str:
    # torchsde's defaults: SRK for Itô with diagonal, scalar or additive noise, Euler–Maruyama
    # for general noise, midpoint for Stratonovich.
    if calculus == "stratonovich":
        return "midpoint"
    return "euler" if noise == "general" else "srk"


class _KLPadded(AbstractPath):
    """The Brownian motion of the state with one extra zero channel for the KL component."""

    def __init__(self, bm: Any, batch_shape: tuple[int, ...]) -> None:
        self.bm = bm
        self.batch_shape = batch_shape

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(self.batch_shape + (-1,))
        return torch.cat([flat, flat.new_zeros(self.batch_shape + (1,))], dim=-1)

    def evaluate(self, t0: torch.Tensor, t1: torch.Tensor | None = None) -> torch.Tensor:
        return self._pad(self.bm.evaluate(t0, t1))

    def __call__(self, t0: Any, t1: Any = None, *, return_levy_area: bool = False) -> Any:
        if not return_levy_area:
            return self.evaluate(t0, t1)
        inc = self.bm(t0, t1, return_levy_area=True)
        return self._pad(inc[0]), (None if inc[1] is None else self._pad(inc[1]))


def sdeint(
    drift: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    diffusion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    y0: torch.Tensor,
    ts: torch.Tensor | Any,
    *,
    noise: str = "diagonal",
    calculus: str = "ito",
    method: str | AbstractSolver | None = None,
    dt: float | None = None,
    bm: AbstractPath | None = None,
    adjoint: AbstractAdjoint | None = None,
    logqp: bool = False,
    prior_drift: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    adaptive: bool = False,
    rtol: float = 1e-3,
    atol: float = 1e-4,
    max_steps: int = 2**20,
    throw: bool = True,
) -> Any:
    r"""Solve the SDE $dy = f(t, y)\,dt + g(t, y)\,dW$ and return the states at the times
    ``ts`` (torchsde's convention, but any state shape).

    Args:
        drift: ``f(t, y)``, the shape of ``y``.
        diffusion: ``g(t, y)``; its shape depends on ``noise`` (see :class:`ControlTerm`):
            the shape of ``y`` for ``"diagonal"`` and ``"scalar"``, ``y.shape + (m,)`` for
            ``"general"``, either for ``"additive"``.
        y0: the initial state at ``ts[0]``, shape ``(batch, *state)``.
        ts: increasing 1-D times; the first is the initial time.
        noise: ``"diagonal"``, ``"scalar"``, ``"additive"`` or ``"general"``.
        calculus: ``"ito"`` or ``"stratonovich"``: the sense of $g\,dW$, checked against the
            solver.
        method: a name from :data:`SDE_METHODS` or a solver instance. By default ``"srk"``
            (SRI2 / SRA1) for Itô with diagonal, scalar or additive noise, ``"euler"`` for
            Itô with general noise and ``"midpoint"`` for Stratonovich (torchsde's defaults).
        dt: the step (required unless ``adaptive``; the first step then). Steps also land on
            every time of ``ts``.
        bm: the Brownian motion; by default a :class:`BrownianInterval` over
            ``[ts[0], ts[-1]]`` of the right shape (with space-time Lévy area when the method
            needs it), seeded from torch's global generator.
        adjoint: how to differentiate: ``DirectAdjoint()`` by default,
            ``BacksolveAdjoint()`` for the stochastic adjoint, ``ReversibleAdjoint()`` with
            ``method="reversible_heun"``.
        logqp: also return the KL divergence between the path measures of this SDE (the
            posterior) and of the prior SDE with drift ``prior_drift`` and the same diffusion,
            $\int \tfrac12 \lVert (f - h) / g \rVert^2 dt$ accumulated from ``ts[0]``
            (diagonal noise); the latent SDE's KL term (Li et al. 2020).
        prior_drift: ``h(t, y)``, required with ``logqp=True``.
        adaptive: choose the steps with a ``PIDController(rtol, atol)`` (Runge–Kutta error
            estimates, or step doubling for the SDE-specific solvers).
        max_steps: the most steps before failing.
        throw: raise on failure (else return the partial result).

    Returns:
        ``ys`` of shape ``(len(ts), *y0.shape)`` (time first); with ``logqp=True`` the pair
        ``(ys, kl)``, ``kl`` of shape ``(len(ts), batch)``.

    Example:
        >>> ys = sdeint(lambda t, y: -y, lambda t, y: 0.1 * torch.ones_like(y),
        ...             torch.ones(16, 3), torch.linspace(0, 1, 11), dt=0.01)
        >>> ys.shape
        torch.Size([11, 16, 3])
    """
    if not callable(drift) or not callable(diffusion):
        raise TypeError(
            "sdeint: `drift` and `diffusion` must be callables f(t, y) and g(t, y), got "
            f"{type(drift).__name__} and {type(diffusion).__name__}."
        )
    if not isinstance(y0, torch.Tensor) or not torch.is_floating_point(y0):
        raise TypeError(f"sdeint: `y0` must be a floating-point tensor, got {y0!r:.80}.")
    if noise not in NOISE_TYPES:
        raise ValueError(f"sdeint: `noise` must be one of {list(NOISE_TYPES)}, got {noise!r}.")
    if calculus not in ("ito", "stratonovich"):
        raise ValueError(f"sdeint: `calculus` must be 'ito' or 'stratonovich', got {calculus!r}.")
    ts = ts if isinstance(ts, torch.Tensor) else torch.as_tensor(ts, dtype=torch.float64)
    if ts.ndim != 1 or ts.numel() < 2:
        raise ValueError(
            f"sdeint: `ts` must be 1-D with at least two times, got shape {tuple(ts.shape)}."
        )
    if bool((ts.diff() <= 0).any()):
        raise ValueError("sdeint: `ts` must be strictly increasing.")
    # Steps land on the save times (the ends are the interval's anyway).
    step_ts = ts[1:-1] if ts.numel() > 2 else None
    if isinstance(method, AbstractSolver):
        solver = method
    else:
        solver = sde_solver_from_name(method or _default_method(noise, calculus), noise, calculus)
    if adaptive:
        if isinstance(solver, AbstractSDESolver) and not solver.is_adaptive:
            solver = type(solver)(**{**_options(solver), "adaptive": True})
        if not solver.is_adaptive:
            raise ValueError(
                f"sdeint: adaptive=True needs an error estimate, which {solver!r} lacks; use "
                "'heun', 'euler_heun', 'milstein', 'srk', ... or a fixed dt."
            )
        controller: Any = PIDController(rtol=rtol, atol=atol, step_ts=step_ts)
    else:
        if dt is None:
            raise ValueError("sdeint: `dt` is required for fixed steps, e.g. dt=1e-2.")
        controller = ConstantStepSize(step_ts=step_ts)
    if dt is not None and (
        isinstance(dt, bool) or not isinstance(dt, numbers.Real | torch.Tensor) or not dt > 0
    ):
        raise ValueError(f"sdeint: `dt` must be a positive number, got {dt!r}.")
    t0, t1 = float(ts[0]), float(ts[-1])

    def g_of(t: torch.Tensor, y: torch.Tensor, args: Any) -> torch.Tensor:
        return diffusion(t, y)

    if bm is None:
        with torch.no_grad():
            g0 = diffusion(ts[0].to(y0.dtype), y0)
        if noise == "diagonal" or (noise == "additive" and g0.ndim == y0.ndim):
            shape: tuple[int, ...] = tuple(y0.shape)
        elif noise == "scalar":
            shape = tuple(y0.shape[:1]) + (1,)
        else:
            shape = (tuple(y0.shape[:1]) if y0.ndim >= 2 else ()) + (int(g0.shape[-1]),)
        needs_area = isinstance(solver, (solvers.SRI2, solvers.SRA1))
        bm = BrownianInterval(
            t0, t1, shape, dtype=y0.dtype, device=y0.device,
            levy_area="space-time" if needs_area else None,
        )  # fmt: skip
    elif not (isinstance(bm, AbstractPath) or callable(bm)):
        raise TypeError(
            f"sdeint: `bm` must be a Brownian motion (called as bm(ta, tb)), got "
            f"{type(bm).__name__}."
        )

    if not logqp:
        terms = MultiTerm(
            ODETerm(lambda t, y, args: drift(t, y)), ControlTerm(g_of, bm, noise, calculus)
        )
        sol = solve(
            terms, solver, ts[0], ts[-1], y0, dt0=dt, saveat=SaveAt(ts=ts),
            controller=controller, adjoint=adjoint, max_steps=max_steps, throw=throw,
        )  # fmt: skip
        return sol.ys

    if prior_drift is None or not callable(prior_drift):
        raise ValueError("sdeint: logqp=True needs `prior_drift=h(t, y)`, the prior's drift.")
    if noise != "diagonal":
        raise NotImplementedError(
            f"sdeint: logqp=True supports diagonal noise (u = (f - h) / g), got noise={noise!r}."
        )
    if y0.ndim < 2:
        raise ValueError(
            f"sdeint: logqp=True needs `y0` of shape (batch, *state), got {tuple(y0.shape)}."
        )
    batch_shape = tuple(y0.shape[:1])
    state_shape = tuple(y0.shape)

    def split(z: torch.Tensor) -> torch.Tensor:
        return z[..., :-1].reshape(state_shape)

    def f_aug(t: torch.Tensor, z: torch.Tensor, args: Any) -> torch.Tensor:
        y = split(z)
        f, h, g = drift(t, y), prior_drift(t, y), diffusion(t, y)
        u = (f - h) / g
        kl = 0.5 * (u * u).reshape(batch_shape + (-1,)).sum(-1, keepdim=True)
        return torch.cat([f.reshape(batch_shape + (-1,)), kl], dim=-1)

    def g_aug(t: torch.Tensor, z: torch.Tensor, args: Any) -> torch.Tensor:
        g = diffusion(t, split(z)).reshape(batch_shape + (-1,))
        return torch.cat([g, g.new_zeros(batch_shape + (1,))], dim=-1)

    z0 = torch.cat([y0.reshape(batch_shape + (-1,)), y0.new_zeros(batch_shape + (1,))], dim=-1)
    terms = MultiTerm(
        ODETerm(f_aug), ControlTerm(g_aug, _KLPadded(bm, batch_shape), "diagonal", calculus)
    )
    sol = solve(
        terms, solver, ts[0], ts[-1], z0, dt0=dt, saveat=SaveAt(ts=ts),
        controller=controller, adjoint=adjoint, max_steps=max_steps, throw=throw,
    )  # fmt: skip
    zs = sol.ys
    ys = zs[..., :-1].reshape((zs.shape[0],) + state_shape)
    return ys, zs[..., -1]


def _options(solver: AbstractSDESolver) -> dict[str, Any]:
    if isinstance(solver, (solvers.ItoMilstein, solvers.StratonovichMilstein)):
        return {"derivative_free": solver.derivative_free}
    return {}
