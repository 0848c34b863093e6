"""The one public entry point: ``solve``. Inputs are validated and normalised here, once."""

from __future__ import annotations

import functools
import math
import numbers
from typing import Any, NoReturn

import torch

from ._adjoint import AbstractAdjoint, DirectAdjoint
from ._core.controllers import (
    AbstractAdaptiveController,
    AbstractStepSizeController,
    ConstantStepSize,
    PIDController,
)
from ._core.delay import DelayTerm
from ._core.events import Event
from ._core.jumps import has_jumps
from ._core.loop import Cause, LoopResult, time_floor
from ._core.packing import PackedTerm, ReversedTerm, StateSpec
from ._core.problem import Problem
from ._core.progress import ProgressMeter
from ._core.sde import check_sde
from ._core.solution import SaveAt, Solution, SolveError, Status
from ._core.solver import AbstractSolver
from ._core.terms import AbstractTerm, ODETerm, broadcast_time
from ._delay import solve_delay
from ._jumps import solve_jumps

__all__ = ["solve"]

_DEFAULT_SAVEAT = SaveAt(t1=True)


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)}, dtype {x.dtype}, device {x.device}"
    return f"{type(x).__name__} {x!r}"


def _on_unpacked(fn: Any, spec: StateSpec) -> Any:
    """An event function of a tuple state, called on the packed state."""

    @functools.wraps(fn)
    def wrapped(t: torch.Tensor, y: torch.Tensor, args: Any) -> Any:
        return fn(t, spec.unpack(y), args)

    return wrapped


def _reset_unpacked(fn: Any, spec: StateSpec) -> Any:
    """An event's reset of a tuple state, on the packed state."""

    @functools.wraps(fn)
    def wrapped(t: torch.Tensor, y: torch.Tensor, args: Any) -> Any:
        return spec.pack(tuple(fn(t, spec.unpack(y), args)))

    return wrapped


def _check_state_dtype(parts: tuple[torch.Tensor, ...]) -> None:
    """float32 or float64: half precision cannot hold the error control's tolerances (nor,
    as the time dtype, resolve the steps), and fails later as a misleading underflow."""
    for p in parts:
        if not torch.is_floating_point(p):
            raise TypeError(
                f"`y0` must be floating point (float32 or float64), got {_describe(p)}; "
                "convert it with y0.float() or y0.double()."
            )
        if p.dtype in (torch.float16, torch.bfloat16):
            raise TypeError(
                f"`y0` has dtype {p.dtype}, which solves do not support: its resolution "
                f"({torch.finfo(p.dtype).eps:.1e}) is coarser than any useful tolerance and "
                "step size. Solve in float32 or float64 (y0.float()); to run the vector "
                "field's layers in half precision, use torch.autocast inside the vector field "
                "and return dy/dt as y.dtype (f(...).to(y.dtype))."
            )


def _check_norm(norm: Any, y0: torch.Tensor, per_sample: bool) -> None:
    """A user's error norm maps the (scaled) error to one value: a 0-d tensor when the batch
    steps jointly, ``(batch,)`` per sample. Checked once, on a tensor of ones."""
    with torch.no_grad():
        out = norm(torch.ones_like(y0))
    expect = f"shape ({y0.shape[0]},), one value per sample" if per_sample else "a 0-d tensor"
    if not isinstance(out, torch.Tensor) or not torch.is_floating_point(out):
        raise TypeError(
            f"PIDController `norm` must return a floating-point tensor ({expect}), got "
            f"{_describe(out)}; e.g. norm=lambda x: x.abs().max()."
        )
    if out.shape != ((y0.shape[0],) if per_sample else ()):
        fix = (
            "reduce all but the batch dimension, e.g. "
            "lambda x: x.reshape(x.shape[0], -1).abs().amax(1)"
            if per_sample
            else "reduce it to one number, e.g. lambda x: x.abs().max()"
        )
        raise ValueError(
            f"PIDController `norm` must return {expect} for the state of shape "
            f"{tuple(y0.shape)}, got shape {tuple(out.shape)}: {fix}."
        )


def _time_tensor(
    name: str, value: Any, dtype: torch.dtype, device: torch.device, per_sample: bool, batch: int
) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        if value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"`{name}` must be a real time, got {_describe(value)}.")
        if value.device != device and value.device.type != "cpu":
            raise ValueError(
                f"`{name}` is on {value.device} but `y0` is on {device}; put both on one device."
            )
        t = value.to(device=device, dtype=dtype)
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        t = torch.tensor(float(value), dtype=dtype, device=device)
    else:
        raise TypeError(f"`{name}` must be a number or a tensor, got {_describe(value)}.")
    if t.numel() == 1:
        t = t.reshape(())
    elif not (per_sample and t.shape == (batch,)):
        expect = f"a scalar or shape ({batch},) (per sample)" if per_sample else "a scalar"
        raise ValueError(
            f"`{name}` must be {expect}, got {_describe(value)}."
            + ("" if per_sample else " Per-sample times need PIDController(per_sample=True).")
        )
    # A single time on the CPU is checked on the host (`item`, no tensor operations).
    host = t.device.type == "cpu" and t.numel() == 1
    if not (math.isfinite(t.item()) if host else bool(torch.isfinite(t).all())):
        raise ValueError(f"`{name}` must be finite, got {value!r}.")
    return t


def _normalise(
    terms: Any,
    solver: Any,
    t0: Any,
    t1: Any,
    y0: Any,
    args: Any,
    dt0: Any,
    saveat: Any,
    controller: Any,
    adjoint: Any,
    event: Any,
    max_steps: Any,
    *,
    progress: bool = False,
    compile_step: bool = False,
) -> Problem:
    """Validate every input once and return the frozen :class:`Problem` the loop and the
    adjoints run; each step below checks one concern and names the argument it checks."""
    controller = _check_objects(terms, solver, controller, adjoint, event, saveat, max_steps)
    per_sample = controller.per_sample
    parts, batch = _check_state(y0, per_sample)
    dtype, device = parts[0].dtype, parts[0].device
    spec, y0_packed, terms, event = _pack_state(y0, parts, per_sample, terms, event)
    t0_, t1_, time_dtype, direction = _interval(t0, t1, dtype, device, per_sample, batch)
    terms.check_times(t0_, t1_)  # e.g. a CDE's path must cover [t0, t1]
    dt0_ = _initial_step(dt0, t0, t1, solver, controller, time_dtype, device, direction, batch)
    ts, ts_user = _save_times(
        saveat, t0, t1, t0_, t1_, time_dtype, device, direction, per_sample, batch
    )
    controller = _tolerances_on_device(controller, y0_packed, time_dtype, device)
    norm = _error_norm(controller, spec, y0_packed, per_sample)
    if direction < 0:
        terms = ReversedTerm(terms)
    t0_, t1_ = t0_ * direction, t1_ * direction
    return Problem(
        terms=terms,
        args=args,
        solver=solver,
        controller=controller.prepare(direction, time_dtype, device),
        t0=t0_,
        t1=t1_,
        y0=y0_packed,
        spec=spec,
        direction=direction,
        dt0=dt0_,
        ts=ts,
        ts_user=ts_user,
        saveat=saveat,
        event=event,
        max_steps=max_steps,
        per_sample=per_sample,
        norm=norm,
        state_shape=y0_packed.shape,
        progress=(
            ProgressMeter(float(t0_.min()), float(t1_.max()), direction) if progress else None
        ),
        compile_step=compile_step,
        check_vf=functools.partial(_check_vf, terms, y0=y0_packed),
    )


def _check_objects(
    terms: Any,
    solver: Any,
    controller: Any,
    adjoint: Any,
    event: Any,
    saveat: Any,
    max_steps: Any,
) -> AbstractStepSizeController:
    """What the equation is and how to solve it; returns the controller (the default one for
    the solver when ``controller`` is ``None``)."""
    if not isinstance(terms, AbstractTerm):
        hint = " Wrap a function f(t, y, args) as ODETerm(f)." if callable(terms) else ""
        raise TypeError(f"`terms` must be a term (ODETerm, ...), got {_describe(terms)}.{hint}")
    if isinstance(solver, type) and issubclass(solver, AbstractSolver):
        raise TypeError(f"`solver` must be a solver instance: use {solver.__name__}().")
    if not isinstance(solver, AbstractSolver):
        raise TypeError(f"`solver` must be a solver such as Dopri5(), got {_describe(solver)}.")
    if controller is None:
        controller = PIDController() if solver.is_adaptive else ConstantStepSize()
    if not isinstance(controller, AbstractStepSizeController):
        raise TypeError(
            "`controller` must be a step-size controller (PIDController(...), "
            f"ConstantStepSize()), got {_describe(controller)}."
        )
    if isinstance(controller, AbstractAdaptiveController) and not solver.is_adaptive:
        raise ValueError(
            f"`controller` is a {type(controller).__name__} but {solver!r} has no error "
            "estimate; use an adaptive solver (Dopri5(), Tsit5(), Bosh3(), ...) or "
            "controller=ConstantStepSize() with dt0=."
        )
    check_sde(terms, solver)
    if not isinstance(adjoint, AbstractAdjoint):
        raise TypeError(
            f"`adjoint` must be an adjoint such as DirectAdjoint(), got {_describe(adjoint)}."
        )
    if event is not None and not isinstance(event, Event):
        raise TypeError(f"`event` must be an Event(fn, direction=...), got {_describe(event)}.")
    if not isinstance(saveat, SaveAt):
        raise TypeError(f"`saveat` must be a SaveAt(...), got {_describe(saveat)}.")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"`max_steps` must be a positive int, got {max_steps!r}.")
    return controller


def _check_state(y0: Any, per_sample: bool) -> tuple[tuple[torch.Tensor, ...], int]:
    """``y0`` as a tuple of its tensors, and the batch size (0 when stepping jointly)."""
    if isinstance(y0, torch.Tensor):
        parts: tuple[torch.Tensor, ...] = (y0,)
    elif isinstance(y0, (tuple, list)) and y0 and all(isinstance(p, torch.Tensor) for p in y0):
        parts = tuple(y0)
    else:
        raise TypeError(f"`y0` must be a tensor or a tuple of tensors, got {_describe(y0)}.")
    _check_state_dtype(parts)
    if len({p.dtype for p in parts}) > 1 or len({p.device for p in parts}) > 1:
        raise ValueError(
            "the tensors of a tuple `y0` must share one dtype and one device, got "
            f"{[(p.dtype, str(p.device)) for p in parts]}."
        )
    if not per_sample:
        return parts, 0
    if any(p.ndim == 0 for p in parts) or len({p.shape[0] for p in parts}) > 1:
        raise ValueError(
            "per-sample stepping needs `y0` with a leading batch dimension (shared by every "
            f"tensor of a tuple state), got shapes {[tuple(p.shape) for p in parts]}."
        )
    return parts, parts[0].shape[0]


def _pack_state(
    y0: Any, parts: tuple[torch.Tensor, ...], per_sample: bool, terms: AbstractTerm, event: Any
) -> tuple[StateSpec | None, torch.Tensor, AbstractTerm, Any]:
    """A tuple state packed into one tensor, with the terms and event functions that see it
    packed; a tensor state as it is."""
    if isinstance(y0, torch.Tensor):
        return None, y0, terms, event
    spec = StateSpec(parts, per_sample)
    if event is not None:
        event = event.replace_fns(
            [_on_unpacked(f, spec) for f in event.fns],
            [None if r is None else _reset_unpacked(r, spec) for r in event.resets],
        )
    return spec, spec.pack(parts), PackedTerm(terms, spec), event


def _interval(
    t0: Any, t1: Any, dtype: torch.dtype, device: torch.device, per_sample: bool, batch: int
) -> tuple[torch.Tensor, torch.Tensor, torch.dtype, float]:
    """``t0`` and ``t1`` as tensors of the time dtype (the state's, promoted by the times'),
    the time dtype and the direction of the solve (``-1.0`` backwards in time)."""
    time_dtype = dtype
    for v in (t0, t1):
        if isinstance(v, torch.Tensor) and torch.is_floating_point(v):
            time_dtype = torch.promote_types(time_dtype, v.dtype)
    t0_ = _time_tensor("t0", t0, time_dtype, device, per_sample, batch)
    t1_ = _time_tensor("t1", t1, time_dtype, device, per_sample, batch)
    if t0_.ndim == 0 and t1_.ndim == 0 and t0_.device.type == "cpu":
        # One time each, on the CPU: the direction from the host values (exactly those of the
        # tensors; the sign of their rounded difference is that of their order).
        direction = -1.0 if t1_.item() < t0_.item() else 1.0
        if per_sample:
            t0_, t1_ = t0_.expand(batch), t1_.expand(batch)
        return t0_, t1_, time_dtype, direction
    if per_sample:
        t0_, t1_ = t0_.expand(batch), t1_.expand(batch)
    span = (t1_ - t0_).detach()
    if bool((span > 0).any()) and bool((span < 0).any()):
        raise ValueError(
            "`t0` and `t1` must run in one direction for the whole batch, got both "
            "t1 > t0 and t1 < t0."
        )
    direction = -1.0 if bool((span < 0).any()) else 1.0
    return t0_, t1_, time_dtype, direction


def _initial_step(
    dt0: Any,
    t0: Any,
    t1: Any,
    solver: AbstractSolver,
    controller: AbstractStepSizeController,
    time_dtype: torch.dtype,
    device: torch.device,
    direction: float,
    batch: int,
) -> torch.Tensor | None:
    """``dt0`` as a positive tensor (a scalar, or one per sample), or ``None`` when the
    controller chooses it."""
    if dt0 is None:
        if not solver.is_adaptive or isinstance(controller, ConstantStepSize):
            raise ValueError(
                f"`dt0` is required with {solver!r} and {controller!r}: a fixed-step solve "
                "needs a step size, e.g. dt0=0.01."
            )
        return None
    if isinstance(dt0, torch.Tensor):
        dt0_ = dt0.to(device=device, dtype=time_dtype)
    elif isinstance(dt0, numbers.Real) and not isinstance(dt0, bool):
        dt0_ = torch.tensor(float(dt0), dtype=time_dtype, device=device)
    else:
        raise TypeError(f"`dt0` must be a number or a tensor, got {_describe(dt0)}.")
    bad = not bool(torch.isfinite(dt0_).all()) or bool((dt0_ == 0).any())
    if bad or (direction > 0 and bool((dt0_ < 0).any())):
        raise ValueError(
            f"`dt0` must be finite, non-zero and point from t0 to t1, got {dt0!r} for "
            f"t0={t0!r}, t1={t1!r}."
        )
    dt0_ = dt0_.abs()
    if dt0_.numel() > 1 and not (controller.per_sample and dt0_.shape == (batch,)):
        raise ValueError(f"`dt0` must be a scalar or shape ({batch},), got {_describe(dt0)}.")
    return dt0_.reshape(()) if dt0_.numel() == 1 else dt0_


def _save_times(
    saveat: SaveAt,
    t0: Any,
    t1: Any,
    t0_: torch.Tensor,
    t1_: torch.Tensor,
    time_dtype: torch.dtype,
    device: torch.device,
    direction: float,
    per_sample: bool,
    batch: int,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``saveat.ts`` in internal time (clamped to the interval) and in the user's time;
    ``(None, None)`` without save times."""
    if saveat.ts is None:
        return None, None
    ts_user = (
        saveat.ts
        if isinstance(saveat.ts, torch.Tensor)
        else torch.as_tensor(saveat.ts, dtype=torch.float64)
    )
    if not torch.is_floating_point(ts_user) and ts_user.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"`saveat.ts` must be real times, got {_describe(saveat.ts)}.")
    ts_user = ts_user.to(device=device, dtype=time_dtype)
    if per_sample:
        if ts_user.ndim == 1:
            ts_user = ts_user.expand(batch, -1)
        if ts_user.ndim != 2 or ts_user.shape[0] != batch:
            raise ValueError(
                f"`saveat.ts` must have shape (n,) or ({batch}, n) in per-sample mode, got "
                f"{_describe(saveat.ts)}."
            )
    elif ts_user.ndim != 1:
        raise ValueError(
            f"`saveat.ts` must be 1-D, got {_describe(saveat.ts)}. Per-sample save times "
            "of shape (batch, n) need PIDController(per_sample=True) or "
            "ConstantStepSize(per_sample=True)."
        )
    if ts_user.shape[-1] == 0:
        raise ValueError("`saveat.ts` is empty; pass at least one time or leave it None.")
    host = ts_user.device.type == "cpu" and ts_user.shape[-1] <= _HOST_SAVE_TIMES
    if host and not per_sample and t0_.ndim == 0:
        return _save_times_on_host(saveat, t0, t1, t0_, t1_, ts_user, time_dtype, direction)
    ts = ts_user * direction
    if not bool(torch.isfinite(ts).all()) or bool((ts.diff(dim=-1) <= 0).any()):
        _unordered_save_times(saveat, direction)
    lo, hi = (t0_ * direction).detach(), (t1_ * direction).detach()
    first = ts[..., 0].detach()
    last = ts[..., -1].detach()
    tol = 8 * torch.finfo(time_dtype).eps * torch.maximum(lo.abs(), hi.abs()).clamp_min(1)
    if bool((first < lo - tol).any()) or bool((last > hi + tol).any()):
        _save_times_outside(saveat, t0, t1, ts_user)
    # clamp, not minimum/maximum: a save time equal to t0 or t1 keeps its whole gradient
    # (minimum/maximum split it between the two tied arguments).
    ts = ts.clamp(lo[..., None] if per_sample else lo, hi[..., None] if per_sample else hi)
    return ts, ts_user


# Save times up to which a CPU series is checked on the host (a Python pass over its values,
# against a dozen tensor operations).
_HOST_SAVE_TIMES = 1024


def _save_times_on_host(
    saveat: SaveAt,
    t0: Any,
    t1: Any,
    t0_: torch.Tensor,
    t1_: torch.Tensor,
    ts_user: torch.Tensor,
    time_dtype: torch.dtype,
    direction: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_save_times` for one series of save times on the CPU and one interval: the
    same checks on the host values (exactly the tensors'), and the tensor operations only
    where they change something (the sign flip of a backward solve; the clamp where a time
    lies outside the interval, within the tolerance)."""
    vals = ts_user.detach().tolist()
    lo, hi = t0_.item() * direction, t1_.item() * direction
    prev = -math.inf
    for v in vals:
        v *= direction
        if not (prev < v < math.inf):  # also False for NaN
            _unordered_save_times(saveat, direction)
        prev = v
    first, last = vals[0] * direction, vals[-1] * direction
    tol = 8 * torch.finfo(time_dtype).eps * max(abs(lo), abs(hi), 1.0)
    if first < lo - tol or last > hi + tol:
        _save_times_outside(saveat, t0, t1, ts_user)
    ts = ts_user if direction > 0 else ts_user * direction
    if first < lo or last > hi:
        # clamp, not minimum/maximum: a save time equal to t0 or t1 keeps its whole gradient.
        lo_t, hi_t = (t0_ * direction).detach(), (t1_ * direction).detach()
        ts = ts.clamp(lo_t, hi_t)
    return ts, ts_user


def _unordered_save_times(saveat: SaveAt, direction: float) -> NoReturn:
    order = "increasing" if direction > 0 else "decreasing (t1 < t0)"
    raise ValueError(f"`saveat.ts` must be strictly {order} and finite, got {saveat.ts!r}.")


def _save_times_outside(saveat: SaveAt, t0: Any, t1: Any, ts_user: torch.Tensor) -> NoReturn:
    raise ValueError(
        f"`saveat.ts` must lie within [t0, t1] = [{t0!r}, {t1!r}], got times from "
        f"{ts_user.min().item():.6g} to {ts_user.max().item():.6g}."
    )


def _tolerances_on_device(
    controller: AbstractStepSizeController,
    y0: torch.Tensor,
    time_dtype: torch.dtype,
    device: torch.device,
) -> AbstractStepSizeController:
    """Tensor tolerances checked against the (packed) state and moved to its device, on a
    copy of the controller (the user's is never changed)."""
    if not isinstance(controller, AbstractAdaptiveController):
        return controller
    for name in ("rtol", "atol"):
        tol_v = getattr(controller, name)
        if not isinstance(tol_v, torch.Tensor):
            continue
        try:
            torch.broadcast_shapes(tol_v.shape, y0.shape)
        except RuntimeError:
            raise ValueError(
                f"{type(controller).__name__} `{name}` of shape {tuple(tol_v.shape)} does not "
                f"broadcast against the state of shape {tuple(y0.shape)}."
            ) from None
        if tol_v.device != device:
            controller = controller.prepare(1.0, time_dtype, device)
            setattr(controller, name, tol_v.to(device))
    return controller


def _error_norm(
    controller: AbstractStepSizeController,
    spec: StateSpec | None,
    y0: torch.Tensor,
    per_sample: bool,
) -> Any:
    """The user's error norm, seeing a tuple state unpacked, checked once; ``None`` selects
    the controller's built-in RMS norm."""
    norm = controller.norm if isinstance(controller, AbstractAdaptiveController) else None
    if norm is None:
        return None
    if spec is not None:
        user_norm = norm

        def norm(x: torch.Tensor, _n: Any = user_norm, _s: StateSpec = spec) -> torch.Tensor:
            return _n(_s.unpack(x))

    _check_norm(norm, y0, per_sample)
    return norm


def _check_vf(terms: AbstractTerm, vf: Any, y0: torch.Tensor) -> None:
    if not isinstance(terms.base_term(), ODETerm):
        return
    if not isinstance(vf, torch.Tensor):
        hint = " (a missing `return`?)" if vf is None else ""
        raise TypeError(
            f"the vector field must return a tensor (or a tuple for a tuple state), got "
            f"{_describe(vf)}{hint}; f(t, y, args) must return dy/dt with the shape of y."
        )
    if vf.device != y0.device:
        raise ValueError(
            f"the vector field returned a tensor on {vf.device} for a state on {y0.device}; "
            "keep its parameters and any tensors it creates on the state's device "
            "(module.to(y0.device), torch.zeros(..., device=y.device))."
        )
    if vf.shape != y0.shape:
        raise ValueError(
            f"the vector field returned shape {tuple(vf.shape)} but the state has shape "
            f"{tuple(y0.shape)}; f(t, y, args) must return dy/dt with the shape of y."
        )
    if vf.dtype != y0.dtype:
        raise TypeError(
            f"the vector field returned dtype {vf.dtype} for a state of dtype {y0.dtype}; "
            "return dy/dt in the dtype of y (under torch.autocast: f(...).to(y.dtype))."
        )


def solve(
    terms: AbstractTerm | DelayTerm,
    solver: AbstractSolver,
    t0: float | torch.Tensor,
    t1: float | torch.Tensor,
    y0: torch.Tensor | tuple[torch.Tensor, ...],
    args: Any = None,
    *,
    dt0: float | torch.Tensor | None = None,
    saveat: SaveAt = _DEFAULT_SAVEAT,
    controller: AbstractStepSizeController | None = None,
    adjoint: AbstractAdjoint | None = None,
    event: Event | None = None,
    max_steps: int = 65536,
    throw: bool = True,
    progress: bool = False,
    compile_step: bool = False,
    integral: Any = None,
    history: Any = None,
) -> Solution:
    r"""Solve a differential equation from ``t0`` to ``t1``.

    Args:
        terms: the equation, e.g. ``ODETerm(f)`` with ``f(t, y, args)``.
        solver: the method, e.g. ``Tsit5()``.
        t0, t1: start and end times; ``t1 < t0`` solves backwards in time, ``t1 == t0``
            returns ``y0``. Per sample (shape ``(batch,)``) when the controller steps per
            sample.
        y0: the initial state: a tensor of any shape (``(batch, *state)`` when stepping per
            sample) or a tuple of tensors.
        args: passed through to the vector field.
        dt0: the initial step (required for fixed-step solves; chosen automatically by
            Hairer's algorithm for adaptive ones when ``None``).
        saveat: what to save, see :class:`SaveAt`.
        controller: the step-size controller; ``PIDController()`` for adaptive solvers,
            ``ConstantStepSize()`` otherwise.
        adjoint: how to differentiate; ``DirectAdjoint()`` by default.
        event: a terminal :class:`Event`.
        max_steps: the most steps (accepted + rejected) before failing.
        throw: raise :class:`SolveError` when a sample fails; ``False`` returns the partial
            solution with per-sample ``status``.
        progress: show a progress bar (needs tqdm).
        compile_step: compile the step (all solver stages and the controller; on a fixed
            grid, blocks of steps) with ``torch.compile`` into one graph per problem
            signature, kept only where it measures faster than eager (forward and backward
            under autograd). Pays off for small, launch-bound problems that are solved many
            times with the same shapes; the first solve pays the compilation (seconds).
        integral: a running cost ``l(t, y, args)``; ``Solution.integral`` then holds
            $\int_{t_0}^{t} l(s, y(s), \mathrm{args})\,ds$ at the saved times (time first),
            solved with the state (same solver, tolerances and adjoint), e.g. for kinetic-energy
            regularisation or optimal control. ODE terms only.
        history: for a :class:`DelayTerm`, ``phi(t)``, the state for ``t <= t0`` (the
            constant ``y0`` by default); may be an ``nn.Module`` with parameters.

    Returns:
        A :class:`Solution`; ``ys`` is time first: ``(len(ts), *y0.shape)``.

    Example:
        >>> term = ODETerm(lambda t, y, args: -y)
        >>> sol = solve(term, Tsit5(), 0.0, 1.0, torch.ones(3), saveat=SaveAt(ts=[0.5, 1.0]))
        >>> sol.ys.shape
        torch.Size([2, 3])
    """
    if isinstance(terms, DelayTerm):
        return solve_delay(
            terms,
            solver,
            t0,
            t1,
            y0,
            args,
            history=history,
            dt0=dt0,
            saveat=saveat,
            controller=controller,
            adjoint=adjoint,
            event=event,
            max_steps=max_steps,
            throw=throw,
            solve=solve,
        )
    if history is not None:
        raise TypeError(
            "`history` is for a DelayTerm, got terms of type "
            f"{type(terms).__name__}; drop `history` or use DelayTerm(f, delays)."
        )
    if adjoint is None:
        adjoint = DirectAdjoint()
    if isinstance(terms, AbstractTerm) and has_jumps(terms):
        return solve_jumps(
            solve, terms, solver, t0, t1, y0, args, dt0=dt0, saveat=saveat,
            controller=controller, adjoint=adjoint, event=event, max_steps=max_steps,
            throw=throw, progress=progress, compile_step=compile_step, integral=integral,
        )  # fmt: skip
    if integral is not None:
        terms, y0 = _with_integral(terms, y0, integral, t0, args)
    p = _normalise(
        terms,
        solver,
        t0,
        t1,
        y0,
        args,
        dt0,
        saveat,
        controller,
        adjoint,
        event,
        max_steps,
        progress=progress,
        compile_step=compile_step,
    )
    try:
        res: LoopResult = adjoint.apply(p)
    finally:
        if p.progress is not None:
            p.progress.close()
    sol = _assemble(p, res, throw)
    if integral is not None:
        sol = _split_integral(sol)
    return sol


def _with_integral(terms: Any, y0: Any, cost: Any, t0: Any, args: Any) -> tuple[Any, Any]:
    """The ODE with the running cost as one more state component, starting at zero."""
    if not callable(cost):
        raise TypeError(f"`integral` must be callable as l(t, y, args), got {_describe(cost)}.")
    if not isinstance(terms, ODETerm):
        raise NotImplementedError(
            f"`integral` is supported for ODETerm, got {type(terms).__name__}; add the cost as a "
            "state component of your own term instead."
        )
    f = terms.vector_field
    as_tuple = isinstance(y0, (tuple, list))
    first = y0[0] if as_tuple else y0
    if not isinstance(first, torch.Tensor):
        raise TypeError(f"`y0` must be a tensor or a tuple of tensors, got {_describe(y0)}.")
    t_start = torch.as_tensor(t0, dtype=first.dtype, device=first.device)
    with torch.no_grad():
        q = cost(t_start, tuple(y0) if as_tuple else y0, args)
    if not isinstance(q, torch.Tensor):
        raise TypeError(f"`integral` must return a tensor, got {_describe(q)}.")
    q0 = torch.zeros(q.shape, dtype=first.dtype, device=first.device)

    def vector_field(t: torch.Tensor, z: Any, a: Any) -> tuple:
        y = tuple(z[:-1]) if as_tuple else z[0]
        dy = f(t, y, a)
        dq = cost(t, y, a)
        return (*dy, dq) if as_tuple else (dy, dq)

    return ODETerm(vector_field), ((*y0, q0) if as_tuple else (y0, q0))


def _split_integral(sol: Solution) -> Solution:
    """Move the running cost out of ``ys`` into ``integral``."""
    ys = sol.ys
    if ys is not None:
        sol.integral = ys[-1]
        sol.ys = tuple(ys[:-1]) if len(ys) > 2 else ys[0]
    if sol._interpolate is not None:
        inner = sol._interpolate

        def evaluate(t: torch.Tensor) -> Any:
            z = inner(t)
            return tuple(z[:-1]) if len(z) > 2 else z[0]

        sol._interpolate = evaluate
    return sol


def _assemble(p: Problem, res: LoopResult, throw: bool) -> Solution:
    direction = p.direction
    failed = res.status > Status.EVENT_OCCURRED
    if throw and bool(failed.any()):
        flat = res.status.reshape(-1)
        i = int(torch.nonzero(failed.reshape(-1))[0])
        t_fail = float(res.t.detach().reshape(-1)[i]) * direction
        cause = Cause.NONE if res.cause is None else Cause(int(res.cause.reshape(-1)[i]))
        raise SolveError(
            Status(int(flat[i])),
            t_fail,
            res.num_steps,
            int(failed.sum()),
            detail=_failure_detail(p, cause, i),
        )

    ts_parts: list[torch.Tensor] = []
    ys_parts: list[torch.Tensor] = []
    per_sample = p.per_sample
    y0 = p.y0

    def add(t: torch.Tensor, y: torch.Tensor) -> None:
        # t: (k,) joint or (batch, k) per sample (user time); y: (k, *state).
        ts_parts.append(t)
        ys_parts.append(y)

    if p.saveat.t0:
        add((p.t0 * direction)[..., None], y0[None])
    if res.ys_ts is not None and p.ts_user is not None:
        add(p.ts_user, res.ys_ts.movedim(1, 0) if per_sample else res.ys_ts)
    if p.saveat.steps and res.steps_t is not None and res.steps_y is not None:
        st = res.steps_t * direction
        add(st.movedim(0, -1) if per_sample else st, res.steps_y)
    if p.saveat.t1:
        add((res.t * direction)[..., None], res.y[None])

    ts: torch.Tensor | None = None
    ys: Any = None
    if ts_parts:
        ts = torch.cat(ts_parts, dim=-1)
        ys = torch.cat(ys_parts, dim=0)
        if p.spec is not None:
            ys = p.spec.unpack(ys)

    interp = None
    if res.dense is not None:
        interp = _make_interpolator(p, res)
    # Joint stepping has one count per solve (ints); per-sample stepping one per sample.
    accepted, rejected = res.num_accepted, res.num_rejected
    stats: dict[str, Any] = {
        "num_steps": res.num_steps,
        "num_accepted_steps": accepted if per_sample else int(accepted),
        "num_rejected_steps": rejected if per_sample else int(rejected),
        "num_fevals": res.num_fevals,
        **res.extra_stats,
    }
    return Solution(
        ts=ts,
        ys=ys,
        stats=stats,
        status=res.status,
        event_mask=res.event_mask,
        event_ts=None if res.event_ts is None else res.event_ts * direction,
        event_ids=res.event_ids,
        _interpolate=interp,
    )


_FIXES = {
    Cause.Y0: "check the data or the encoder that produced `y0`",
    Cause.VF_T0: (
        "check the vector field's parameters (NaN weights after a diverged optimiser step?) "
        "and its inputs, e.g. with torch.isfinite on f(t0, y0, args)"
    ),
    Cause.NORM_T0: "a `norm` must return a finite value >= 0 for every finite input",
    Cause.NORM: "a `norm` must return a finite value >= 0 for every finite input",
    Cause.EVENT: (
        "an event function must stay finite along the solution: its sign change is the event"
    ),
    Cause.VF: "check the vector field there (a division by zero, a log or sqrt out of range?)",
    Cause.STEP: "check the vector field for a blow-up (the solution may leave every bound)",
}


def _failure_detail(p: Problem, cause: Cause, i: int) -> str:
    """What went wrong for the first failed sample (flat index ``i``), with the fix."""
    if cause in (Cause.DTMIN, Cause.RESOLUTION):
        return _underflow_detail(p, cause, i)
    if cause == Cause.NONE:
        return ""
    msg = cause.message
    if cause == Cause.Y0:
        y0 = p.y0[i] if p.per_sample else p.y0
        bad = ~torch.isfinite(y0.detach())
        where = f" for sample {i}" if p.per_sample else ""
        msg += f" ({int(bad.sum())} of {bad.numel()} elements{where})"
    fix = _FIXES.get(cause)
    return f"{msg}; {fix}" if fix else msg


def _underflow_detail(p: Problem, cause: Cause, i: int) -> str:
    """Why the step size underflowed: precision when the dtypes are the cause (tolerances at
    the state dtype's rounding, or a time dtype too coarse for the interval), and stiffness
    or a singularity only when they may not be."""
    tdtype, sdtype = p.t0.dtype, p.y0.dtype
    ctrl = p.controller
    stiff = (
        "the problem may be stiff (use an implicit solver such as Kvaerno5 or Rodas5) or "
        "singular near this time (a blow-up); for implicit solvers, Newton's method may fail "
        "even for tiny steps (check the Jacobian and the vector field's smoothness)"
    )
    if cause == Cause.DTMIN:
        return f"the step size fell below `dtmin`={ctrl.dtmin:g}: {stiff}, or `dtmin` is too large"
    k = i if p.per_sample else 0
    floor = float(time_floor(p.t0, p.t1).reshape(-1)[k])
    span = float((p.t1 - p.t0).detach().abs().reshape(-1)[k])
    head = (
        f"the step size fell below the resolution of the time dtype {tdtype}: steps shorter "
        f"than 16·eps·max(|t0|, |t1|) = {floor:.2g} are lost to rounding"
    )
    rtol = getattr(ctrl, "rtol", None)
    if rtol is not None:
        rtol = float(rtol.min()) if isinstance(rtol, torch.Tensor) else float(rtol)
        eps = torch.finfo(sdtype).eps
        if rtol < 10 * eps:
            return (
                f"{head}. rtol={rtol:g} is at the precision of the state dtype {sdtype} (eps "
                f"{eps:.1e}), so rounding alone fails the error test: use rtol >= {100 * eps:.0e}"
                + (", or solve in float64 (y0.double())" if sdtype != torch.float64 else "")
            )
    float64_time = (
        "pass t0 and t1 as float64 tensors to step in float64 time (the state keeps its dtype)"
    )
    if floor > 1e-3 * span:
        # Fewer than a thousand steps fit in the interval at this resolution: precision.
        fix = float64_time if tdtype != torch.float64 else "shift the interval to start near 0"
        return (
            f"{head}, {floor / span:.2g} of the interval [t0, t1] (large times, short "
            f"interval): {fix}"
        )
    if tdtype != torch.float64:
        return (
            f"{head}. {tdtype} time resolves only ~{torch.finfo(tdtype).eps:.0e} relative: "
            f"{float64_time}. Otherwise, {stiff}"
        )
    return f"{head}. The {stiff[4:]}"


def _make_interpolator(p: Problem, res: LoopResult) -> Any:
    dense = res.dense or []
    solver, direction, per_sample, spec = p.solver, p.direction, p.per_sample, p.spec
    t_lo, t_hi = p.t0.detach(), res.t.detach()
    y_start = p.y0
    # Built once, not per call (a delay equation evaluates the dense output at every stage).
    lo_bound = t_lo - 1e-12 * t_lo.abs().clamp_min(1)
    hi_bound = t_hi + 1e-12 * t_hi.abs().clamp_min(1)
    ends = (
        torch.stack([d[1].detach().reshape(()) for d in dense])
        if dense and not per_sample
        else None
    )

    def evaluate(t: torch.Tensor) -> Any:
        tau = t.to(device=p.t0.device, dtype=p.t0.dtype) * direction
        scalar = tau.ndim == 0
        if per_sample:
            if tau.ndim > 1 or (tau.ndim == 1 and tau.shape[0] != p.t0.shape[0]):
                raise ValueError(
                    f"Solution.evaluate: per-sample solutions take a scalar or ({p.t0.shape[0]},) "
                    f"times, got shape {tuple(t.shape)}."
                )
            tau = tau.expand(p.t0.shape)
        elif tau.ndim > 1:
            raise ValueError(
                f"Solution.evaluate: `t` must be a scalar or 1-D, got shape {tuple(t.shape)}."
            )
        tq = tau if per_sample else tau.reshape(-1)
        outside = (tq < lo_bound) | (tq > hi_bound)
        if bool(outside.any()):
            raise ValueError(
                "Solution.evaluate: `t` lies outside the solved interval "
                f"[{float(t_lo.min() * direction):.6g}, {float(t_hi.max() * direction):.6g}]."
            )
        if per_sample:
            out = y_start.clone()
            for tb, ta, info, te in dense:
                inside = (tq >= tb) & (tq <= ta) & (ta > tb)
                if not bool(inside.any()):
                    continue
                h = torch.where(te > tb, te - tb, 1)
                theta = ((tq - tb) / h).clamp(0, 1)
                yq = solver.interpolate(info, theta, True)
                out = torch.where(broadcast_time(inside, out), yq, out)
        elif ends is not None and tq.numel() == 1:  # one time: its step, no grouping
            j = min(int(torch.searchsorted(ends, tq.reshape(()))), len(dense) - 1)
            tb, ta, info, te = dense[j]
            theta = ((tq - tb) / (te - tb)).clamp(0, 1)
            out = solver.interpolate(info, theta, False)
            out = out[0] if scalar else out.reshape(tau.shape + y_start.shape)
        else:
            out = y_start.expand((tq.numel(),) + y_start.shape).clone()
            if ends is not None:
                idx = torch.searchsorted(ends, tq, right=False).clamp(max=len(dense) - 1)
                for j in torch.unique(idx).tolist():
                    sel = (idx == j).nonzero().reshape(-1)
                    tb, ta, info, te = dense[j]
                    theta = ((tq[sel] - tb) / (te - tb)).clamp(0, 1)
                    out[sel] = solver.interpolate(info, theta, False)
            if scalar:
                out = out[0]
            else:
                out = out.reshape(tau.shape + y_start.shape)
        if spec is not None:
            lead = out.shape[: out.ndim - len(p.state_shape)]
            return spec.unpack(out, tuple(lead) + tuple(p.state_shape[:-1]))
        return out

    # The step records, (t_start, t_end, info, t_end'): the method of steps evaluates each
    # once inside a checkpointed segment, so that deferred values are computed there.
    evaluate.records = dense  # type: ignore[attr-defined]
    return evaluate
