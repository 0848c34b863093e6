"""torchdiffeq's API on torchnde: ``import torchnde.compat.torchdiffeq as torchdiffeq``.

``odeint``, ``odeint_adjoint``, ``odeint_event`` and ``odeint_dense`` take torchdiffeq 0.2.5's
arguments, defaults (``rtol=1e-7``, ``atol=1e-9``, ``method="dopri5"``), method names and
``options`` keys, and return what it returns (states time first; tuples for tuple states;
``(event_t, states)`` with ``event_fn``). Underneath each call is one :func:`torchnde.solve`.

Every option accepted either behaves as in torchdiffeq or raises ``NotImplementedError``
naming it. Known differences (see ``docs/usage/from-torchdiffeq.md``): a failed solve raises
:class:`torchnde.SolveError` instead of an ``AssertionError``; the fixed-step Adams methods
use a fixed order (at most 8) where torchdiffeq raises the order up to ``max_order`` as the
history grows, and always make ``max_iters`` corrector iterations (torchdiffeq stops once the
iteration has converged to ``rtol``/``atol``); ``odeint_dense`` accepts every method (torchdiffeq
only ``dopri5``); the event time carries its implicit-function-theorem gradient in ``odeint``
too (torchdiffeq only in ``odeint_event``).
"""

from __future__ import annotations

import copy
import math
import typing
import warnings
from collections.abc import Callable
from typing import Any

import torch

import torchnde as _tn

from .._core.solution import Status
from .._core.solver import AbstractSolver

__all__ = ["SOLVERS", "odeint", "odeint_adjoint", "odeint_dense", "odeint_event"]

_ADAPTIVE_OPTIONS = frozenset(
    {"first_step", "safety", "ifactor", "dfactor", "max_num_steps", "step_t", "jump_t", "dtype"}
    | {"norm"}
)
_FIXED_OPTIONS = frozenset({"step_size", "grid_constructor", "interp", "perturb", "norm"})
_DEPRECATED = {"grid_points": "step_t or jump_t", "eps": "step_t or jump_t"}
_CALLBACKS = ("callback_step", "callback_accept_step", "callback_reject_step")


def _heun3() -> AbstractSolver:
    # Heun's third-order method, torchdiffeq's "heun3".
    tableau = _tn.ButcherTableau(
        a=[[1 / 3], [0.0, 2 / 3]], b=[1 / 4, 0.0, 3 / 4], c=[0.0, 1 / 3, 2 / 3], order=3
    )
    return _tn.ExplicitRungeKutta(tableau)


def _adams_order(options: dict, implicit: bool) -> int:
    # torchdiffeq: predictor of order up to max_order - 1 and corrector of order max_order.
    if "max_order" not in options:
        return 8
    max_order = options["max_order"]
    order = int(max_order) if implicit else int(max_order) - 1
    if not 1 <= order <= 8:
        raise NotImplementedError(
            f"option max_order={max_order!r}: torchnde's fixed-step Adams methods have orders "
            "1 to 8 (max_order <= 8 for implicit_adams, <= 9 for explicit_adams)."
        )
    return order


def _explicit_adams(options: dict) -> AbstractSolver:
    return _tn.FixedAdams(order=_adams_order(options, False), corrector_iterations=0)


def _implicit_adams(options: dict) -> AbstractSolver:
    iters = int(options.get("max_iters", 4))
    return _tn.FixedAdams(order=_adams_order(options, True), corrector_iterations=iters)


def _plain(cls: type) -> Callable[[dict], AbstractSolver]:
    return lambda options: cls()


# name -> (factory(options) -> solver, adaptive, extra option keys)
_METHODS: dict[str, tuple[Callable[[dict], AbstractSolver] | None, bool, frozenset]] = {
    "dopri8": (_plain(_tn.Dopri8), True, frozenset()),
    # torchdiffeq's dopri5 estimates its error with Shampine's embedded solution: its steps.
    "dopri5": (lambda options: _tn.Dopri5(error_estimate="shampine"), True, frozenset()),
    "bosh3": (_plain(_tn.Bosh3), True, frozenset()),
    "fehlberg2": (_plain(_tn.Fehlberg2), True, frozenset()),
    "adaptive_heun": (_plain(_tn.Heun), True, frozenset()),
    "tsit5": (_plain(_tn.Tsit5), True, frozenset()),
    # Not in torchdiffeq 0.2.5 (older versions had a variable-order "adams"): torchnde's Adams.
    "adams": (_plain(_tn.Adams), True, frozenset()),
    "euler": (_plain(_tn.Euler), False, frozenset()),
    "midpoint": (_plain(_tn.Midpoint), False, frozenset()),
    "heun2": (_plain(_tn.Heun), False, frozenset()),
    "heun3": (lambda options: _heun3(), False, frozenset()),
    # torchdiffeq's "rk4" is Kutta's 3/8 rule.
    "rk4": (_plain(_tn.RK38), False, frozenset()),
    "explicit_adams": (_explicit_adams, False, frozenset({"max_order"})),
    "implicit_adams": (_implicit_adams, False, frozenset({"max_order", "max_iters"})),
    "fixed_adams": (_implicit_adams, False, frozenset({"max_order", "max_iters"})),
    # torchdiffeq's fixed-grid implicit methods solve their stages by Broyden's method; torchnde
    # by simplified Newton with the exact Jacobian (`max_iters` is accepted and unused).
    "implicit_euler": (_plain(_tn.ImplicitEuler), False, frozenset({"max_iters"})),
    "trapezoid": (_plain(_tn.Trapezoid), False, frozenset({"max_iters"})),
    "implicit_midpoint": (_plain(_tn.ImplicitMidpoint), False, frozenset({"max_iters"})),
    "gl4": (_plain(_tn.GaussLegendre4), False, frozenset({"max_iters"})),
    "gl6": (_plain(_tn.GaussLegendre6), False, frozenset({"max_iters"})),
    "radauIIA3": (_plain(_tn.RadauIIA3), False, frozenset({"max_iters"})),
    "radauIIA5": (_plain(_tn.RadauIIA5), False, frozenset({"max_iters"})),
    "sdirk2": (_plain(_tn.SDIRK2), False, frozenset({"max_iters"})),
    "trbdf2": (_plain(_tn.TRBDF2), False, frozenset({"max_iters"})),
    "scipy_solver": (None, True, frozenset({"solver"})),
}

#: The method names accepted (torchdiffeq 0.2.5's, plus tsit5 and implicit methods).
SOLVERS = tuple(_METHODS)


def _check_method(method: Any) -> str:
    if method is None:
        return "dopri5"
    if method not in _METHODS:
        raise ValueError(
            'Invalid method "{}". Must be one of {}'.format(
                method, '{"' + '", "'.join(_METHODS) + '"}.'
            )
        )
    return method


def _mixed_norm(parts: tuple) -> torch.Tensor:
    # torchdiffeq's default norm for tuple states: the largest RMS over the tensors.
    # vector_norm rather than sqrt(mean(x^2)): its gradient at a zero error is 0, not NaN.
    return torch.stack(
        [torch.linalg.vector_norm(p) / math.sqrt(max(p.numel(), 1)) for p in parts]
    ).max()


def _tol(name: str, value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        if value.requires_grad:
            raise ValueError(f"{name} cannot require gradient")
        return value if value.numel() > 1 else float(value)
    if isinstance(value, (tuple, list)):
        raise NotImplementedError(
            f"per-tensor `{name}` for tuple states: pass one number (or one tensor matching the "
            "concatenated state) instead."
        )
    return float(value)


def _check_inputs(func: Any, y0: Any, t: Any) -> tuple[bool, torch.Tensor]:
    if not isinstance(y0, torch.Tensor) and not (
        isinstance(y0, tuple) and all(isinstance(p, torch.Tensor) for p in y0)
    ):
        raise TypeError(f"y0 must be either a torch.Tensor or a tuple, got {type(y0).__name__}.")
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"t must be a torch.Tensor, got {type(t).__name__}.")
    if t.ndim != 1:
        raise ValueError(f"t must be one dimensional, got shape {tuple(t.shape)}.")
    if not torch.is_floating_point(t):
        raise TypeError(f"t must be a floating point Tensor, got dtype {t.dtype}.")
    if len(t) > 1:
        d = (t[1:] - t[:-1]).detach()
        if not (bool((d > 0).all()) or bool((d < 0).all())):
            raise ValueError("t must be strictly increasing or decreasing.")
    for name in _CALLBACKS + tuple(n + "_adjoint" for n in _CALLBACKS):
        if callable(getattr(func, name, None)):
            raise NotImplementedError(
                f"`func.{name}`: torchdiffeq's callbacks are not supported by "
                "torchnde.compat.torchdiffeq; compute what the callback records from the "
                "returned states, or use torchnde.solve(..., progress=True) for progress."
            )
    return isinstance(y0, tuple), t


class _Plan:
    """One solve's configuration, from torchdiffeq's arguments."""

    def __init__(self, func, y0, t, rtol, atol, method, options, event_fn):
        self.method = _check_method(method)
        factory, self.adaptive, extra = _METHODS[self.method]
        self.is_tuple, t = _check_inputs(func, y0, t)
        options = {} if options is None else dict(options)
        for key in _DEPRECATED:
            if key in options:
                raise NotImplementedError(
                    f"option `{key}` (deprecated in torchdiffeq): use {_DEPRECATED[key]}."
                )
        known = (_ADAPTIVE_OPTIONS if self.adaptive else _FIXED_OPTIONS) | extra
        unused = {k: v for k, v in options.items() if k not in known}
        if unused:
            # torchdiffeq warns about (and then ignores) options its solver does not take.
            warnings.warn(f"{self.method}: Unexpected arguments {unused}", stacklevel=3)
        self.options = options
        self.func, self.y0, self.t = func, y0, t
        self.event_fn = event_fn
        if event_fn is not None and len(t) != 2:
            raise ValueError(
                f"We require len(t) == 2 when in event handling mode, but got len(t)={len(t)}."
            )
        self.rtol, self.atol = _tol("rtol", rtol), _tol("atol", atol)
        self.solver = None if factory is None else factory(options)
        if options.get("perturb", False):
            raise NotImplementedError(
                "option `perturb=True`: torchnde's steps evaluate the vector field at the step "
                "ends themselves; mark discontinuities with options=dict(jump_t=...) on an "
                "adaptive method instead (or torchnde's ConstantStepSize(jump_ts=...))."
            )

    def with_y0_t(self, y0: Any, t: torch.Tensor) -> _Plan:
        """This plan on other (detached) initial values and times."""
        new = copy.copy(self)
        new.y0, new.t = y0, t
        return new

    # -- the pieces of a solve ------------------------------------------------------------

    def term(self) -> _tn.ODETerm:
        func = self.func
        dtype = _first(self.y0).dtype
        jumps = self.options.get("jump_t") if self.adaptive else None
        if jumps is None:
            # torchdiffeq calls func with t in the state's dtype (time may be float64).
            return _tn.ODETerm(lambda t, y, args: func(t.to(dtype), y))
        jumps = torch.as_tensor(jumps).reshape(-1)

        last: list[torch.Tensor | None] = [None]

        def left_limit(t: torch.Tensor, y: Any, args: Any) -> Any:
            # A step that ends on a jump sees the vector field's limit from the side it came
            # from, as with torchdiffeq's perturbation towards the previous float (the restart
            # after the jump already evaluates just beyond it). The side is that of the last
            # time evaluated off the jump: the earlier stages of the same step, in either
            # direction (the backward solve of odeint_adjoint comes from the right).
            at = torch.isin(t.detach(), jumps.to(t.device, t.dtype))
            prev = last[0]
            if prev is None or prev.shape != t.shape:
                prev = torch.full_like(t.detach(), -torch.inf)
            last[0] = torch.where(at, prev, t.detach())
            toward = torch.where(prev > t.detach(), torch.inf, -torch.inf).to(dtype)
            # In the dtype func sees (torchdiffeq perturbs in the state's dtype too): the
            # float64 neighbour of 0.5 rounds back to 0.5 in float32.
            t = t.to(dtype)
            return func(torch.where(at, torch.nextafter(t, toward), t), y)

        return _tn.ODETerm(left_limit)

    def norm(self) -> Any:
        norm = self.options.get("norm")
        if norm is None and self.is_tuple:
            return _mixed_norm
        return norm

    def time_dtype(self) -> torch.dtype:
        # torchdiffeq's adaptive solvers keep time in float64 (option `dtype`); fixed-grid
        # ones in the state's dtype.
        if self.adaptive:
            return self.options.get("dtype", torch.float64)
        first = self.y0[0] if self.is_tuple else self.y0
        return first.dtype

    def grid(self) -> torch.Tensor | None:
        """The fixed-step grid when it is not ``t0 + k * step_size`` (built once)."""
        if not hasattr(self, "_grid"):
            self._grid = self._make_grid()
        return self._grid

    def _make_grid(self) -> torch.Tensor | None:
        opts = self.options
        if "step_size" in opts and "grid_constructor" in opts:
            raise ValueError("step_size and grid_constructor are mutually exclusive arguments.")
        if "step_size" in opts:
            return None
        make = opts.get("grid_constructor")
        if make is None:
            return self.t
        grid = make(self.func, self.y0, self.t)
        if not (bool(grid[0] == self.t[0]) and bool(grid[-1] == self.t[-1])):
            raise ValueError(
                "options['grid_constructor'] must return a grid that starts at t[0] and ends at "
                f"t[-1]; got {float(grid[0])} .. {float(grid[-1])} for t from {float(self.t[0])} "
                f"to {float(self.t[-1])}."
            )
        return grid

    def controller(self) -> tuple[Any, Any, int]:
        """``(controller, dt0, max_steps)``."""
        opts = self.options
        if self.adaptive:
            dfactor = float(opts.get("dfactor", 0.2))
            ctrl = _tn.PIDController(
                rtol=self.rtol,
                atol=self.atol,
                safety=float(opts.get("safety", 0.9)),
                factormin=dfactor,
                factormax=float(opts.get("ifactor", 10.0)),
                # torchdiffeq never shrinks the step after an accepted one (its `dfactor` is 1
                # there): a factor in [dfactor, 1] keeps the step size.
                hold=(dfactor, 1.0) if 0 < dfactor <= 1 else False,
                norm=self.norm(),
                step_ts=opts.get("step_t"),
                jump_ts=opts.get("jump_t"),
            )
            first = opts.get("first_step")
            dt0 = None if first is None else abs(float(first))
            return ctrl, dt0, int(opts.get("max_num_steps", 2**31 - 1))
        if "step_size" in opts:
            return _tn.ConstantStepSize(), abs(float(opts["step_size"])), 2**31 - 1
        if self.event_fn is not None:
            raise ValueError(
                "Event handling for fixed step solvers currently requires `step_size` to be "
                "provided in options."
            )
        grid = typing.cast(torch.Tensor, self.grid())  # not None without step_size
        span = abs(float((self.t[-1] - self.t[0]).detach())) or 1.0
        return _tn.ConstantStepSize(step_ts=grid), span, 2**31 - 1


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        a, b = torch.as_tensor(a), torch.as_tensor(b)
        return a.shape == b.shape and bool((a == b).all())
    return bool(a == b)


def _first(x: Any) -> torch.Tensor:
    return x[0] if isinstance(x, tuple) else x


def _lerp_outputs(sol: Any, t: torch.Tensor, is_tuple: bool) -> Any:
    """torchdiffeq's ``interp="linear"``: the states at ``t`` interpolated linearly between
    the step ends of a fixed-grid solve."""
    ts = sol.ts
    sign = 1.0 if bool(t[-1] >= t[0]) else -1.0
    key = (ts * sign).detach()
    q = (t.to(ts.dtype) * sign).detach()
    idx = torch.searchsorted(key, q).clamp(1, len(key) - 1)
    ta, tb = ts[idx - 1], ts[idx]
    w = ((t.to(ts.dtype) - ta) / (tb - ta)).clamp(0, 1)

    def one(ys: torch.Tensor) -> torch.Tensor:
        ww = w.to(ys.dtype).reshape((-1,) + (1,) * (ys.ndim - 1))
        return ys[idx - 1] + ww * (ys[idx] - ys[idx - 1])

    ys = sol.ys
    return tuple(one(y) for y in ys) if is_tuple else one(ys)


def _initial_only(y0: Any, is_tuple: bool) -> Any:
    if is_tuple:
        return tuple(p[None] for p in y0)
    return y0[None]


def _scipy(plan: _Plan) -> Any:
    import numpy as np
    from scipy.integrate import solve_ivp

    y0, t = plan.y0, plan.t
    parts = y0 if plan.is_tuple else (y0,)
    shapes = [p.shape for p in parts]
    flat0 = torch.cat([p.detach().reshape(-1) for p in parts])

    def unflat(v: torch.Tensor) -> Any:
        out, k = [], 0
        for s in shapes:
            n = int(np.prod(s)) if len(s) else 1
            out.append(v[..., k : k + n].reshape(v.shape[:-1] + tuple(s)))
            k += n
        return tuple(out) if plan.is_tuple else out[0]

    def fun(tt: float, yy: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            y = unflat(torch.as_tensor(yy, dtype=flat0.dtype, device=flat0.device))
            dy = plan.func(torch.tensor(tt, dtype=t.dtype, device=t.device), y)
            dy = dy if plan.is_tuple else (dy,)
            return torch.cat([d.reshape(-1) for d in dy]).cpu().numpy()

    tn = t.detach().cpu().numpy().astype(np.float64)
    if len(tn) == 1 and plan.event_fn is None:
        return _initial_only(y0, plan.is_tuple)
    kw: dict[str, Any] = dict(
        method=plan.options.get("solver", "LSODA"),
        rtol=float(plan.rtol) if not isinstance(plan.rtol, torch.Tensor) else plan.rtol.numpy(),
        atol=float(plan.atol) if not isinstance(plan.atol, torch.Tensor) else plan.atol.numpy(),
    )
    y0n = flat0.cpu().numpy().astype(np.float64)
    if plan.event_fn is not None:
        fn = plan.event_fn

        def event(tt: float, yy: np.ndarray) -> float:
            with torch.no_grad():
                y = unflat(torch.as_tensor(yy, dtype=flat0.dtype, device=flat0.device))
                return float(fn(torch.tensor(tt, dtype=t.dtype, device=t.device), y))

        event.terminal = True  # type: ignore[attr-defined]
        horizon = 1e4 * (1.0 + abs(tn[0]))
        end = tn[0] - horizon if tn[1] < tn[0] else tn[0] + horizon
        res = solve_ivp(fun, (tn[0], end), y0n, events=event, **kw)
        if not res.success or len(res.t_events[0]) == 0:
            raise RuntimeError(f"scipy_solver: no event found ({res.message}).")
        both = np.stack([y0n, res.y_events[0][0]])
        ys = torch.as_tensor(both, dtype=flat0.dtype, device=flat0.device)
        event_t = torch.tensor(res.t_events[0][0], dtype=t.dtype, device=t.device)
        return event_t, unflat(ys)
    res = solve_ivp(fun, (tn[0], tn[-1]), y0n, t_eval=tn, **kw)
    if not res.success:
        raise RuntimeError(f"scipy_solver: {res.message}")
    ys = torch.as_tensor(res.y.T, dtype=flat0.dtype, device=flat0.device)
    return unflat(ys)


class _ScipyAdjoint(torch.autograd.Function):
    """``odeint_adjoint`` with ``scipy_solver``: SciPy forward, and the continuous adjoint
    solved backward by SciPy too (as torchdiffeq): on each interval between output times,
    ``(y, a, g)`` with ``y' = f``, ``a' = -a^T df/dy``, ``g' = -a^T df/dθ``; the gradient of
    an output time ``t_i`` is ``dL/dy_i · f(t_i, y_i)``, that of ``t_0`` is ``-a(t_0) ·
    f(t_0, y_0)``."""

    @staticmethod
    def forward(ctx: Any, plan: _Plan, back_kw: dict, y0, t, *params):  # type: ignore[override]
        ctx.plan, ctx.back_kw = plan, back_kw
        with torch.no_grad():
            ys = _scipy(plan.with_y0_t(y0, t))
        ctx.save_for_backward(t, ys, *params)
        return ys

    @staticmethod
    def backward(ctx: Any, grad_ys: torch.Tensor) -> Any:  # type: ignore[override]
        import numpy as np
        from scipy.integrate import solve_ivp

        t, ys, *params = ctx.saved_tensors
        func = ctx.plan.func
        shape, dtype, device = ys.shape[1:], ys.dtype, ys.device
        n = int(np.prod(shape)) if len(shape) else 1
        sizes = [p.numel() for p in params]

        def f_and_vjp(tt: float, y: torch.Tensor, a: torch.Tensor):
            with torch.enable_grad():
                y = y.detach().requires_grad_(True)
                tq = torch.tensor(tt, dtype=t.dtype, device=device)
                f = func(tq, y)
                grads = torch.autograd.grad(
                    f, (y, *params), -a, allow_unused=True, retain_graph=False
                )
            vjps = [torch.zeros_like(x) if g is None else g for g, x in zip(grads, (y, *params))]
            return f.detach(), vjps

        def rhs(tt: float, z: np.ndarray) -> np.ndarray:
            zt = torch.as_tensor(z, dtype=dtype, device=device)
            y, a = zt[:n].reshape(shape), zt[n : 2 * n].reshape(shape)
            f, vjps = f_and_vjp(tt, y, a)
            return torch.cat([f.reshape(-1)] + [v.reshape(-1) for v in vjps]).cpu().numpy()

        a = grad_ys[-1].clone()
        g_params = [torch.zeros_like(p) for p in params]
        g_t = torch.zeros_like(t)
        tn = t.detach().cpu().numpy().astype(np.float64)
        for i in range(len(tn) - 1, 0, -1):
            # An output time moves only its own output.
            f_i, _ = f_and_vjp(float(tn[i]), ys[i], a)
            g_t[i] = (grad_ys[i] * f_i).sum()
            z0 = torch.cat([ys[i].reshape(-1), a.reshape(-1)] + [g.reshape(-1) for g in g_params])
            res = solve_ivp(rhs, (tn[i], tn[i - 1]), z0.cpu().numpy().astype(np.float64),
                            **ctx.back_kw)  # fmt: skip
            if not res.success:
                raise RuntimeError(f"scipy_solver (adjoint): {res.message}")
            zt = torch.as_tensor(res.y[:, -1], dtype=dtype, device=device)
            a = zt[n : 2 * n].reshape(shape)
            if i == 1:
                # t0 moves the start of the solve, not the output at t0 (which is y0).
                f_0, _ = f_and_vjp(float(tn[0]), ys[0], a)
                g_t[0] = -(a * f_0).sum()
            a = a + grad_ys[i - 1]
            k = 2 * n
            for j, size in enumerate(sizes):
                g_params[j] = zt[k : k + size].reshape(params[j].shape)
                k += size
        return (None, None, a, g_t, *g_params)


def _scipy_adjoint(plan: _Plan, params: tuple, back_kw: dict) -> Any:
    if plan.is_tuple:
        raise NotImplementedError(
            "odeint_adjoint with method='scipy_solver' and a tuple state: stack the state "
            "into one tensor."
        )
    if len(plan.t) == 1:
        return _initial_only(plan.y0, False)
    return _ScipyAdjoint.apply(plan, back_kw, plan.y0, plan.t, *params)


def _run(plan: _Plan, adjoint: Any) -> Any:
    t, y0 = plan.t, plan.y0
    if plan.method == "scipy_solver":
        return _scipy(plan)
    if plan.event_fn is None and len(t) == 1:
        return _initial_only(y0, plan.is_tuple)
    time = t.to(plan.time_dtype())
    t0 = time[0]
    controller, dt0, max_steps = plan.controller()
    kw: dict[str, Any] = dict(dt0=dt0, controller=controller, adjoint=adjoint, max_steps=max_steps)
    if plan.event_fn is not None:
        fn = plan.event_fn
        backwards = bool(t[1] < t[0])
        # torchdiffeq integrates until the event, with no end time: a long horizon here.
        horizon = 1e4 * (1.0 + abs(float(t0.detach())))
        t1 = t0.detach() + (-horizon if backwards else horizon)
        sol = _tn.solve(
            plan.term(),
            plan.solver,
            t0,
            t1,
            y0,
            saveat=_tn.SaveAt(t0=True, t1=True),
            event=_tn.Event(lambda tt, y, args: fn(tt, y)),
            **kw,
        )
        if int(sol.status) != int(Status.EVENT_OCCURRED):
            raise RuntimeError(
                f"odeint: event_fn did not cross zero between t={float(t0)} and "
                f"t={float(t1)} (torchnde integrates event problems over a finite horizon)."
            )
        ts = typing.cast(torch.Tensor, sol.ts)  # SaveAt(t0=True, t1=True) saves times
        return ts[-1].to(t.dtype), sol.ys
    interp = plan.options.get("interp", "linear")
    if interp not in ("linear", "cubic"):
        raise ValueError(f"Unknown interpolation method {interp}")
    grid = None if plan.adaptive else plan.grid()
    on_grid = plan.adaptive or (
        grid is not None and set(time.detach().tolist()) <= set(grid.detach().tolist())
    )
    if on_grid or interp == "cubic":
        sol = _tn.solve(
            plan.term(), plan.solver, t0, time[-1], y0, saveat=_tn.SaveAt(ts=time), **kw
        )
        return sol.ys
    sol = _tn.solve(
        plan.term(), plan.solver, t0, time[-1], y0, saveat=_tn.SaveAt(t0=True, steps=True), **kw
    )
    return _lerp_outputs(sol, time, plan.is_tuple)


def odeint(
    func: Callable,
    y0: Any,
    t: torch.Tensor,
    *,
    rtol: Any = 1e-7,
    atol: Any = 1e-9,
    method: str | None = None,
    options: dict | None = None,
    event_fn: Callable | None = None,
) -> Any:
    """Integrate ``dy/dt = func(t, y)``, ``y(t[0]) = y0``: torchdiffeq's ``odeint``.

    Args:
        func: ``func(t, y)`` returning dy/dt (a tensor, or a tuple for a tuple state).
        y0: the initial state: a tensor of any shape or a tuple of tensors.
        t: 1-D increasing or decreasing times; the first is the initial time.
        rtol, atol: tolerances of the adaptive methods.
        method: a name from :data:`SOLVERS` (``"dopri5"`` by default).
        options: torchdiffeq's options for the method (``first_step``, ``step_t``,
            ``jump_t``, ``norm``, ``dtype``, ``max_num_steps``, ``safety``, ``ifactor``,
            ``dfactor`` for adaptive methods; ``step_size``, ``grid_constructor``,
            ``interp`` for fixed-grid ones; ``max_order``, ``max_iters`` for Adams).
        event_fn: ``event_fn(t, y)``; the solve stops where it crosses zero and only ``t[0]``
            is used.

    Returns:
        The states at ``t``, time first (``(len(t), *y0.shape)``, a tuple for a tuple
        state); with ``event_fn``, ``(event_t, states at (t[0], event_t))``.
    """
    plan = _Plan(func, y0, t, rtol, atol, method, options, event_fn)
    return _run(plan, None)


def odeint_adjoint(
    func: Callable,
    y0: Any,
    t: torch.Tensor,
    *,
    rtol: Any = 1e-7,
    atol: Any = 1e-9,
    method: str | None = None,
    options: dict | None = None,
    event_fn: Callable | None = None,
    adjoint_rtol: Any = None,
    adjoint_atol: Any = None,
    adjoint_method: str | None = None,
    adjoint_options: dict | None = None,
    adjoint_params: Any = None,
) -> Any:
    """``odeint`` with gradients by the continuous adjoint (torchdiffeq's ``odeint_adjoint``):
    :class:`torchnde.BacksolveAdjoint` underneath, memory independent of the number of steps.

    ``adjoint_options=dict(norm="seminorm")`` measures the backward error on the state and
    its adjoint only. The other arguments are those of :func:`odeint`, plus the backward
    solve's tolerances, method and options and the parameters to differentiate
    (``adjoint_params``; the parameters of ``func`` when it is an ``nn.Module``).
    """
    if adjoint_params is None and not isinstance(func, torch.nn.Module):
        raise ValueError(
            "func must be an instance of nn.Module to specify the adjoint parameters; "
            "alternatively they can be specified explicitly via the `adjoint_params` argument. "
            "If there are no parameters then it is allowable to set `adjoint_params=()`."
        )
    if adjoint_rtol is None:
        adjoint_rtol = rtol
    if adjoint_atol is None:
        adjoint_atol = atol
    if adjoint_method is None:
        adjoint_method = method
    if adjoint_method != method and options is not None and adjoint_options is None:
        raise ValueError(
            "If `adjoint_method != method` then we cannot infer `adjoint_options` from "
            "`options`. So as `options` has been passed then `adjoint_options` must be passed "
            "as well."
        )
    if adjoint_options is None:
        adjoint_options = {k: v for k, v in (options or {}).items() if k != "norm"}
    else:
        adjoint_options = dict(adjoint_options)
    norm = adjoint_options.pop("norm", None)
    if norm is not None and norm != "seminorm":
        raise NotImplementedError(
            "adjoint_options['norm'] as a function: torchnde's backward norm takes the "
            "augmented state in its own layout; use norm='seminorm' or leave it out."
        )
    if adjoint_params is None:
        params = tuple(typing.cast(torch.nn.Module, func).parameters())
    else:
        params = tuple(adjoint_params)
    params = tuple(p for p in params if p.requires_grad)

    plan = _Plan(func, y0, t, rtol, atol, method, options, event_fn)
    if plan.method == "scipy_solver":
        if event_fn is not None:
            raise NotImplementedError("odeint_adjoint with method='scipy_solver' and event_fn.")
        back_kw = dict(
            method=(adjoint_options or {}).get("solver", plan.options.get("solver", "LSODA")),
            rtol=float(_tol("adjoint_rtol", adjoint_rtol)),
            atol=float(_tol("adjoint_atol", adjoint_atol)),
        )
        return _scipy_adjoint(plan, params, back_kw)
    back = _Plan(func, y0, t, adjoint_rtol, adjoint_atol, adjoint_method, adjoint_options, None)
    same = (
        back.method == plan.method
        and adjoint_options == {k: v for k, v in (options or {}).items() if k != "norm"}
        and _same_value(adjoint_rtol, rtol)
        and _same_value(adjoint_atol, atol)
    )
    solver = controller = dt0 = None
    if not same:
        solver = back.solver
        if back.adaptive:
            controller, dt0, _ = back.controller()
        elif "step_size" in adjoint_options:
            controller, dt0 = _tn.ConstantStepSize(), abs(float(adjoint_options["step_size"]))
    adjoint = _tn.BacksolveAdjoint(
        solver=solver,
        controller=controller,
        dt0=dt0,
        seminorm=norm == "seminorm",
        params=params,
    )
    return _run(plan, adjoint)


def odeint_event(
    func: Callable,
    y0: Any,
    t0: torch.Tensor,
    *,
    event_fn: Callable,
    reverse_time: bool = False,
    odeint_interface: Callable = odeint,
    **kwargs: Any,
) -> tuple[torch.Tensor, Any]:
    """Solve from ``t0`` until ``event_fn(t, y)`` crosses zero (torchdiffeq's
    ``odeint_event``); the event time and state carry gradients by the implicit function
    theorem. Returns ``(event_t, states at (t0, event_t))``."""
    t0 = torch.as_tensor(t0)
    step = -1.0 if reverse_time else 1.0
    t = torch.cat([t0.reshape(-1), t0.reshape(-1).detach() + step])
    return odeint_interface(func, y0, t, event_fn=event_fn, **kwargs)


def odeint_dense(
    func: Callable,
    y0: torch.Tensor,
    t0: torch.Tensor,
    t1: torch.Tensor,
    *,
    rtol: Any = 1e-7,
    atol: Any = 1e-9,
    method: str | None = None,
    options: dict | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Solve from ``t0`` to ``t1`` and return the dense solution ``t -> y(t)`` (torchdiffeq's
    ``odeint_dense``; any method here, not only dopri5)."""
    if not isinstance(y0, torch.Tensor):
        raise TypeError("odeint_dense: y0 must be a tensor (as in torchdiffeq).")
    t = torch.stack([torch.as_tensor(t0), torch.as_tensor(t1)]).to(y0.device)
    if not torch.is_floating_point(t):
        t = t.to(torch.float64)
    plan = _Plan(func, y0, t, rtol, atol, method, options, None)
    if plan.method == "scipy_solver":
        raise NotImplementedError("odeint_dense with method='scipy_solver'.")
    time = t.to(plan.time_dtype())
    controller, dt0, max_steps = plan.controller()
    sol = _tn.solve(
        plan.term(),
        plan.solver,
        time[0],
        time[1],
        y0,
        dt0=dt0,
        controller=controller,
        max_steps=max_steps,
        saveat=_tn.SaveAt(t1=True, dense=True),
    )
    return sol.evaluate
