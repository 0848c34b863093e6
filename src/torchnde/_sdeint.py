"""``sdeint``: torchsde-style calling of the SDE solvers, a thin shim over ``solve``."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any, cast

import torch

from ._adjoint import AbstractAdjoint
from ._brownian import BrownianInterval
from ._brownian.grid import BrownianGrid
from ._core import solvers
from ._core.controllers import ConstantStepSize, PIDController
from ._core.runge_kutta import linear
from ._core.sde import AbstractSDESolver
from ._core.solution import SaveAt
from ._core.solver import AbstractSolver
from ._core.terms import NOISE_TYPES, AbstractPath, ControlTerm, MultiTerm, ODETerm
from ._solve import solve

__all__ = ["SDE_METHODS", "LastCall", "sdeint", "sde_solver_from_name"]

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
    "log_ode",
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
        "log_ode": solvers.LogODEMidpoint,
    }[method]()


# Solvers whose steps read the Brownian increment of the whole step only (never inside a
# step): with fixed steps their default Brownian motion is a BrownianGrid.
_GRID_SOLVERS: tuple[type, ...] = (
    solvers.EulerMaruyama, solvers.Euler, solvers.ReversibleHeun, solvers.EulerHeun,
)  # fmt: skip


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
    seed: int | None = None,
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
        dt: the step (required unless ``adaptive``; the first step then). Fixed steps lie
            on torchsde's grid ``ts[0] + k * dt`` (the last one cut at ``ts[-1]``) and the
            states at ``ts`` are the linear interpolation of the step states around them;
            adaptive steps also land on every time of ``ts``.
        bm: the Brownian motion; by default, for fixed steps of a method that reads the
            increment of whole steps only (``"euler"``, ``"euler_maruyama"``,
            ``"reversible_heun"``, ``"euler_heun"``) without ``adjoint``, a
            :class:`BrownianGrid` on the step grid (all increments drawn a block of steps
            per random call), otherwise a :class:`BrownianInterval` over
            ``[ts[0], ts[-1]]``; of the right shape (with space-time Lévy area when the method
            needs it), seeded by ``seed``.
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
        seed: the seed of the default ``bm`` (unused when ``bm`` is given); by default drawn
            from torch's global generator.

    Raises:
        ValueError: a drift not of ``y0``'s shape, a diffusion not of the shape ``noise``
            needs, or a ``bm`` whose shape does not match (diagonal: ``y0.shape``; scalar:
            ``(batch, 1)``; general: ``(batch, m)``): checked on the solver's first
            evaluation (``bm`` up front where ``y0`` alone decides its shape).

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
        # Adaptive steps also land on the save times. The step sizes are chosen without
        # gradients (torchsde's convention): they are functions of the Brownian increments,
        # whose derivative in time does not exist, so differentiating through them would
        # only make the times handed to `drift` / `diffusion` require grad.
        controller: Any = PIDController(
            rtol=rtol, atol=atol, step_ts=ts[1:-1] if ts.numel() > 2 else None,
            differentiate_steps=False,
        )  # fmt: skip
    else:
        if dt is None:
            raise ValueError("sdeint: `dt` is required for fixed steps, e.g. dt=1e-2.")
        # torchsde's grid: steps on t0 + k·dt (the last one cut at ts[-1]), outputs by linear
        # interpolation between the step states that bracket them.
        controller = ConstantStepSize()
    grid_ok = type(solver) in _GRID_SOLVERS  # before the linear-output subclass
    solver = _with_linear_output(solver)
    if dt is not None and (
        isinstance(dt, bool) or not isinstance(dt, numbers.Real | torch.Tensor) or not dt > 0
    ):
        raise ValueError(f"sdeint: `dt` must be a positive number, got {dt!r}.")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"sdeint: `seed` must be an int or None, got {type(seed).__name__}.")
    t0, t1 = float(ts[0]), float(ts[-1])

    if bm is None:
        with torch.no_grad():
            g0 = diffusion(ts[0].to(y0.dtype), y0)
        _check_diffusion(g0, y0, noise, None)
        levy = solver.levy_area if isinstance(solver, AbstractSDESolver) else None
        if levy == "foster" and noise != "general":
            levy = None  # the full area only enters for non-commutative (general) noise
        bm_shape = _bm_shapes(noise, tuple(y0.shape), tuple(g0.shape))[0]
        if (
            not adaptive
            and levy is None
            and adjoint is None
            and grid_ok
            and dt is not None
            and not isinstance(dt, torch.Tensor)
        ):
            # A fixed-step solve that reads the increments of its own steps only: all of them
            # are known in advance, drawn a block of steps per random call (BrownianGrid).
            bm = BrownianGrid(
                t0, t1, float(dt), bm_shape, dtype=y0.dtype, device=y0.device, seed=seed
            )
        else:
            bm = BrownianInterval(
                t0, t1, bm_shape, dtype=y0.dtype, device=y0.device, levy_area=levy, seed=seed
            )
    elif not (isinstance(bm, AbstractPath) or callable(bm)):
        raise TypeError(
            f"sdeint: `bm` must be a Brownian motion (called as bm(ta, tb)), got "
            f"{type(bm).__name__}."
        )
    elif noise in ("diagonal", "scalar"):  # the shape follows from y0 alone: check it now
        _check_bm(bm, noise, tuple(y0.shape), tuple(y0.shape))
    user_bm = bm
    drift = _first_call_checked(drift, lambda f, y: _check_drift(f, y))
    diffusion = _first_call_checked(diffusion, lambda g, y: _check_diffusion(g, y, noise, user_bm))

    def g_of(t: torch.Tensor, y: torch.Tensor, args: Any) -> torch.Tensor:
        return diffusion(t, y)

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

    g_last = LastCall(lambda t, z: diffusion(t, split(z)))

    def f_aug(t: torch.Tensor, z: torch.Tensor, args: Any) -> torch.Tensor:
        y = split(z)
        f, h, g = drift(t, y), prior_drift(t, y), g_last(t, z)
        u = (f - h) / g
        kl = 0.5 * (u * u).reshape(batch_shape + (-1,)).sum(-1, keepdim=True)
        return torch.cat([f.reshape(batch_shape + (-1,)), kl], dim=-1)

    def g_aug(t: torch.Tensor, z: torch.Tensor, args: Any) -> torch.Tensor:
        g = g_last(t, z).reshape(batch_shape + (-1,))
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


class LastCall:
    """``fn(t, y)`` remembering its last call: called again with the same ``t`` and ``y``
    objects it returns the same result. The KL term of ``logqp`` needs the diffusion where
    the drift is evaluated, and the solvers evaluate drift and diffusion at the same point:
    one diffusion evaluation per point instead of two (torchsde evaluates ``f`` and ``g``
    together)."""

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        self.fn = fn
        self.last: tuple[Any, Any, Any] = (None, None, None)

    def __call__(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t_, y_, out = self.last
        if t_ is t and y_ is y:
            return out
        out = self.fn(t, y)
        self.last = (t, y, out)
        return out


# -- torchsde's output between steps ---------------------------------------------------------

_LINEAR_OUTPUT: dict[type[AbstractSolver], type[AbstractSolver]] = {}


class _LinearOutput:
    """Mixin: outputs inside a step are the linear interpolation of the step's end states, as
    in torchsde (a Runge–Kutta method's Hermite dense output would read the Brownian increment
    as a smooth control)."""

    dense_order = 1
    dense_output = "linear"

    def step(self, terms, t0, t1, y0, args, state):  # type: ignore[no-untyped-def]
        y1, y_error, _, new_state = super().step(terms, t0, t1, y0, args, state)  # type: ignore[misc]
        return y1, y_error, (y0, y1), new_state

    def take_dense_fevals(self, dense_info: Any) -> int:
        return 0  # the end states need no evaluation

    def interpolate(self, dense_info: Any, theta: torch.Tensor, per_sample: bool) -> torch.Tensor:
        return linear(dense_info, theta, per_sample)


def _with_linear_output(solver: AbstractSolver) -> AbstractSolver:
    """``solver`` with linear output between steps: the SDE-specific solvers have it already;
    others (Runge–Kutta, reversible Heun) become an instance of a subclass that adds it, so
    the capabilities they declare (reversibility, calculus, orders) are kept."""
    if isinstance(solver, AbstractSDESolver | _LinearOutput):
        return solver
    cls = type(solver)
    sub = _LINEAR_OUTPUT.get(cls)
    if sub is None:
        sub = cast(
            "type[AbstractSolver]",
            type(cls.__name__, (_LinearOutput, cls), {"__qualname__": cls.__qualname__}),
        )
        _LINEAR_OUTPUT[cls] = sub
    out = object.__new__(sub)
    out.__dict__.update(vars(solver))
    return out


# -- shape checks, made on the first evaluation the solver makes -----------------------------


def _first_call_checked(
    fn: Callable[[torch.Tensor, torch.Tensor], Any], check: Callable[[Any, torch.Tensor], None]
) -> Callable[[torch.Tensor, torch.Tensor], Any]:
    """``fn`` that checks its first output with ``check(out, y)`` (then calls ``fn`` alone)."""
    pending = [check]

    def checked(t: torch.Tensor, y: torch.Tensor) -> Any:
        out = fn(t, y)
        if pending:
            pending[0](out, y)
            pending.clear()
        return out

    return checked


def _check_drift(f: Any, y: torch.Tensor) -> None:
    if not isinstance(f, torch.Tensor):
        raise TypeError(
            f"sdeint: `drift` must return a tensor of the state's shape {tuple(y.shape)}, got "
            f"{type(f).__name__}."
        )
    if f.shape != y.shape:
        raise ValueError(
            f"sdeint: `drift` must return a tensor of the state's shape {tuple(y.shape)} (that "
            f"of `y0`), got shape {tuple(f.shape)}; return dy/dt for every component of y."
        )


def _bm_shapes(
    noise: str, y_shape: tuple[int, ...], g_shape: tuple[int, ...]
) -> tuple[tuple[int, ...], ...]:
    """The Brownian shapes the noise layout accepts (the first is the one ``sdeint`` builds):
    diagonal: y0's shape; scalar: ``(batch, 1)``; general: ``(batch, m)`` (or
    ``y0.shape[:-1] + (m,)``); additive: as diagonal or general, by the diffusion's layout."""
    batch = y_shape[:1] if len(y_shape) >= 2 else ()
    if noise == "diagonal" or (noise == "additive" and len(g_shape) == len(y_shape)):
        return (y_shape,)
    if noise == "scalar":
        return (batch + (1,),)
    m = g_shape[-1]
    return (batch + (m,), y_shape[:-1] + (m,))


def _check_diffusion(g: Any, y: torch.Tensor, noise: str, bm: Any) -> None:
    y_shape = tuple(y.shape)
    if not isinstance(g, torch.Tensor):
        raise TypeError(f"sdeint: `diffusion` must return a tensor, got {type(g).__name__}.")
    g_shape = tuple(g.shape)
    square = g_shape == y_shape
    matrix = len(g_shape) == len(y_shape) + 1 and g_shape[:-1] == y_shape
    ok = {"diagonal": square, "scalar": square, "general": matrix}.get(noise, square or matrix)
    if not ok:
        want = {
            "diagonal": f"the state's shape {y_shape}",
            "scalar": f"the state's shape {y_shape}",
            "general": f"y0.shape + (m,) = {y_shape + ('m',)} for m Brownian channels",
        }.get(noise, f"{y_shape} or {y_shape + ('m',)}")
        hint = (
            " (a matrix per state is noise='general')"
            if matrix
            else " (one Brownian channel per component is noise='diagonal')"
            if square
            else ""
        )
        raise ValueError(
            f"sdeint: `diffusion` with noise={noise!r} must return {want}, got shape "
            f"{g_shape}{hint}."
        )
    if bm is not None:
        _check_bm(bm, noise, y_shape, g_shape)


def _check_bm(bm: Any, noise: str, y_shape: tuple[int, ...], g_shape: tuple[int, ...]) -> None:
    shape = getattr(bm, "shape", None)
    if shape is None:
        return  # a plain callable bm(ta, tb): its increments meet the diffusion in the solve
    shape = tuple(shape)
    accepted = _bm_shapes(noise, y_shape, g_shape)
    if shape in accepted:
        return
    what = {
        "diagonal": "y0's shape (one Brownian motion per component)",
        "scalar": "(batch, 1) (one Brownian motion per sample)",
        "general": f"(batch, m) with m = {g_shape[-1]}, the diffusion's last dimension",
    }.get(noise, "y0's shape or (batch, m), by the diffusion's layout")
    raise ValueError(
        f"sdeint: `bm` has shape {shape}, but noise={noise!r} with `y0` of shape {y_shape}"
        + ("" if noise in ("diagonal", "scalar") else f" and a diffusion of shape {g_shape}")
        + f" needs a Brownian motion of shape {accepted[0]}: {what}. Create it with that "
        f"shape, e.g. BrownianInterval(t0, t1, {accepted[0]}), or leave bm=None."
    )
