r"""Step-size controllers: constant steps and the PID controller.

Controllers work in the loop's internal time, which always increases (a reverse-time solve
runs in $\tau = -t$). They decide acceptance and the next step; clipping to ``step_ts`` and
``jump_ts`` happens here, clipping to the end of the interval in the loop.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .solver import AbstractSolver
from .terms import AbstractTerm, broadcast_time

__all__ = [
    "AbstractAdaptiveController",
    "AbstractStepSizeController",
    "ConstantStepSize",
    "PIDController",
]

Norm = Callable[[torch.Tensor], torch.Tensor]


def _as_time_grid(name: str, value: Any) -> torch.Tensor | None:
    if value is None:
        return None
    grid = value if isinstance(value, torch.Tensor) else torch.as_tensor(value, dtype=torch.float64)
    if (
        grid.ndim != 1
        or not torch.is_floating_point(grid)
        and grid.dtype
        not in (
            torch.int32,
            torch.int64,
        )
    ):
        raise ValueError(
            f"`{name}` must be a 1-D sequence of times, got shape {tuple(grid.shape)} and "
            f"dtype {grid.dtype}."
        )
    return grid


def _host_numbers(values: list[torch.Tensor]) -> list[float]:
    """A few 0-dim tensors as host numbers, in one transfer off an accelerator."""
    if values[0].device.type == "cpu":
        return [v.item() for v in values]
    return torch.stack([v.to(torch.float64) for v in values]).tolist()


def _nan_min(a: float, b: float) -> float:
    """``min`` that propagates NaN from either argument (as ``torch.minimum``)."""
    return a if a != a or a <= b else b


def _nan_max(a: float, b: float) -> float:
    """``max`` that propagates NaN from either argument (as ``torch.maximum``)."""
    return a if a != a or a >= b else b


class AbstractStepSizeController(abc.ABC):
    """Base class of step-size controllers.

    How to write a controller:

    1. ``init(...)`` returns the end of the first step and the controller state.
    2. ``adapt(t0, t1, y0, y1, y_error, error_order, state)`` returns
       ``(accept, next_t0, next_t1, made_jump, state)``; every time has the batch shape of the
       solve (``()`` joint, ``(batch,)`` per sample).
    3. ``per_sample`` says whether each sample steps on its own.
    4. ``never_rejects = True`` promises that ``accept`` is always true, so the loop skips
       selecting between the old and the new state.
    """

    per_sample: bool = False
    never_rejects: bool = False
    #: whether :meth:`host_state` / :meth:`host_adapt` implement ``adapt`` for joint steps
    #: on host numbers (``_core/adaptive.py``)
    host_control: bool = False
    #: whether gradients flow through the choice of the step sizes; ``False``: the steps
    #: are chosen as constants (torchdiffeq's convention), so under autograd a joint solve
    #: with ``host_control`` may take them with the control on the host too
    differentiate_steps: bool = True
    dtmin: float | None = None
    step_ts: torch.Tensor | None = None
    jump_ts: torch.Tensor | None = None

    @abc.abstractmethod
    def init(
        self,
        terms: AbstractTerm,
        t0: torch.Tensor,
        t1: torch.Tensor,
        y0: torch.Tensor,
        dt0: torch.Tensor | None,
        args: Any,
        solver: AbstractSolver,
        vf0: Any,
        norm: Norm,
    ) -> tuple[torch.Tensor, Any, int]:
        """Return ``(end of the first step, state, vector-field evaluations used)``."""

    @abc.abstractmethod
    def adapt(
        self,
        t0: torch.Tensor,
        t1: torch.Tensor,
        y0: torch.Tensor,
        y1: torch.Tensor,
        y_error: torch.Tensor | None,
        error_order: int | None,
        state: Any,
        norm: Norm,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, Any]: ...

    def error_ratio(
        self, y0: torch.Tensor, y1: torch.Tensor, y_error: torch.Tensor | None, norm: Norm
    ) -> torch.Tensor | None:
        """The error ratio a step is accepted by (``<= 1``), batch shape; used to explain a
        failed solve and by the host control (``_core/adaptive.py``). ``None`` for controllers
        that measure no error."""
        return None

    def error_ratio_of(
        self, y0: torch.Tensor, norm: Norm
    ) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor | None]:
        """:meth:`error_ratio` as a function ``(y0, y1, y_error)`` for the steps of one solve
        whose states are like ``y0`` (the host control's, once per solve); a controller may
        prepare there what does not change from step to step."""
        return lambda a, b, e: self.error_ratio(a, b, e, norm)

    def host_state(self) -> Any:
        """The controller state of :meth:`host_adapt` at the start (``host_control``)."""
        raise NotImplementedError(f"{type(self).__name__} has no host control.")

    def host_adapt(
        self, ratio: float, h: float, error_order: float, state: Any
    ) -> tuple[bool, float, Any]:
        """``adapt`` for one joint step on host numbers: from the step's error ratio (NaN
        given as inf) and size, ``(accept, size of the next step, state)``; the next step
        starts at the end of an accepted step, at its start otherwise, and is clipped to the
        end of the interval by the loop."""
        raise NotImplementedError(f"{type(self).__name__} has no host control.")

    def fixed_grid(self, t0: torch.Tensor, dt0: torch.Tensor | None, num: int) -> Any:
        """The ends of the first ``num`` steps, a tensor of shape ``(num,)``, when they are
        known before the solve (joint constant steps: ``t0 + k dt0``, the values ``adapt``
        would give, bit for bit, before clipping to ``t1``); ``None`` otherwise. The loop
        then takes the steps on a grid decided on the host in advance (``_core/fixed.py``)."""
        return None

    def prepare(
        self, direction: float, dtype: torch.dtype, device: torch.device
    ) -> AbstractStepSizeController:
        """A copy whose grids live in the loop's internal time ``τ = direction·t``, cast once."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        for name in ("step_ts", "jump_ts"):
            grid = getattr(self, name)
            if grid is not None:
                grid = torch.sort(grid.to(dtype=dtype, device=device) * direction).values
            setattr(new, name, grid)
        return new

    def _clip(self, t0: torch.Tensor, t1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clip a proposed step [t0, t1] to the next step_ts / jump_ts point after t0.

        Returns the end of the step and whether it ends on a jump.
        """
        at_jump = torch.zeros_like(t0, dtype=torch.bool)
        for grid, is_jump in ((self.step_ts, False), (self.jump_ts, True)):
            if grid is None:
                continue
            idx = torch.searchsorted(grid, t0.detach().reshape(-1), right=True).reshape(t0.shape)
            nxt = grid[idx.clamp(max=grid.numel() - 1)]
            hit = (idx < grid.numel()) & (nxt <= t1)
            t1 = torch.where(hit, nxt, t1)
            if is_jump:
                at_jump = hit
            elif self.jump_ts is not None:
                at_jump = at_jump & ~hit
        return t1, at_jump


class AbstractAdaptiveController(AbstractStepSizeController):
    """Base class of controllers that accept or reject steps by the solver's error estimate,
    measured against tolerances.

    It declares what solves and adjoints read from an adaptive controller, so none of them
    asks for a particular class:

    - ``rtol``, ``atol``: the tolerances (numbers, or tensors broadcastable to the state);
    - ``norm``: the user's error norm, or ``None`` for the RMS norm;
    - ``dtmax``: the largest step, or ``None``;
    - :meth:`scaled_norm`: the error ratio of an error estimate, the quantity steps are
      accepted by (a solver that compares several estimates, like ``Adams``, uses it to
      measure them the same way).

    A solver with no error estimate (``solver.is_adaptive`` false) cannot be used with one.
    """

    rtol: float | torch.Tensor
    atol: float | torch.Tensor
    norm: Norm | None = None
    dtmax: float | None = None

    def scaled_norm(
        self, e: torch.Tensor, y0: torch.Tensor, y1: torch.Tensor | None, norm: Norm | None
    ) -> torch.Tensor:
        """``norm(e / (atol + rtol max(|y0|, |y1|)))``, batch shape; ``norm=None`` is the RMS
        norm. A step is accepted when this is at most 1."""
        scale = y0.abs() if y1 is None else torch.maximum(y0.abs(), y1.abs())
        if norm is not None:
            return norm(e / (scale * self.rtol + self.atol))
        # RMS with the 1/sqrt(n) folded into the tolerances: one reduction, no extra division.
        per_sample = self.per_sample
        n = e[0].numel() if per_sample else e.numel()
        root = math.sqrt(max(n, 1))
        rtol, atol = self.rtol, self.atol
        if isinstance(rtol, float) and isinstance(atol, float) and not torch.is_grad_enabled():
            # The same `scale * (rtol root) + atol root`, in place on the fresh `scale`, with
            # the two factors as cached 0-dim tensors of its dtype (a Python number is rounded
            # to that dtype too, so the values are bit for bit the same; a fused `addcmul`
            # would round once and differ): no scalar wrapping, one allocation fewer.
            key = (scale.dtype, scale.device, n)
            cache = self.__dict__.setdefault("_tolerance_tensors", {})
            tt = cache.get(key)
            if tt is None:
                tt = cache[key] = (
                    torch.tensor(rtol * root, dtype=scale.dtype, device=scale.device),
                    torch.tensor(atol * root, dtype=scale.dtype, device=scale.device),
                )
            x = e / scale.mul_(tt[0]).add_(tt[1])
        else:
            x = e / (scale * (rtol * root) + atol * root)
        if per_sample:
            return torch.linalg.vector_norm(x.reshape(x.shape[0], -1), dim=1)
        return torch.linalg.vector_norm(x)

    def error_ratio(self, y0, y1, y_error, norm):  # type: ignore[override]
        return None if y_error is None else self.scaled_norm(y_error, y0, y1, norm)

    def error_ratio_of(self, y0, norm):  # type: ignore[override]
        rtol, atol = self.rtol, self.atol
        if (
            norm is not None
            or self.per_sample
            or not (isinstance(rtol, float) and isinstance(atol, float))
            or not y0.is_floating_point()
            or torch.is_grad_enabled()
        ):
            return super().error_ratio_of(y0, norm)
        # `scaled_norm`'s RMS without autograd, its factors made once: the same operations.
        # A step starts from the state the last one attempted from (rejected) or reached
        # (accepted): its |y| is the one computed then, kept with the tensor it belongs to.
        root = math.sqrt(max(y0.numel(), 1))
        r_t = torch.tensor(rtol * root, dtype=y0.dtype, device=y0.device)
        a_t = torch.tensor(atol * root, dtype=y0.dtype, device=y0.device)
        maximum, vector_norm = torch.maximum, torch.linalg.vector_norm
        last: list = [None, None, None, None]  # (start, |start|, end, |end|) of the last step

        def ratio(a: torch.Tensor, b: torch.Tensor, e: torch.Tensor | None) -> Any:
            if e is None:
                return None
            if a is last[2]:
                a_abs = last[3]
            elif a is last[0]:
                a_abs = last[1]
            else:
                a_abs = a.abs()
            b_abs = b.abs()
            last[:] = (a, a_abs, b, b_abs)
            return vector_norm(e / maximum(a_abs, b_abs).mul_(r_t).add_(a_t))

        return ratio


class ConstantStepSize(AbstractStepSizeController):
    """Steps of a constant size ``dt0`` (given to ``solve``), never rejected.

    Steps are shortened to land on ``step_ts`` and ``jump_ts`` and on the end of the interval.

    Args:
        step_ts: times the solver must step to exactly.
        jump_ts: discontinuities of the vector field: stepped to exactly, and the
            first-same-as-last evaluation is redone after them.
        per_sample: step each sample on its own clock (for per-sample ``t0``/``t1``/``ts``).
    """

    never_rejects = True

    def __init__(
        self,
        *,
        step_ts: Sequence[float] | torch.Tensor | None = None,
        jump_ts: Sequence[float] | torch.Tensor | None = None,
        per_sample: bool = False,
    ) -> None:
        self.step_ts = _as_time_grid("step_ts", step_ts)
        self.jump_ts = _as_time_grid("jump_ts", jump_ts)
        self.per_sample = bool(per_sample)

    def init(self, terms, t0, t1, y0, dt0, args, solver, vf0, norm):  # type: ignore[override]
        if dt0 is None:
            raise ValueError(
                "ConstantStepSize needs a step size: pass `dt0=` to solve (e.g. dt0=0.01)."
            )
        end, at_jump = self._clip(t0, t0 + dt0)
        # Step ends are origin + k·dt0, not sums of dt0, so rounding does not accumulate (n
        # steps of 1/n end on t1, not a hair before it with a tiny extra step).
        one = torch.ones_like(t0)
        return end, (dt0, at_jump, t0, one), 0

    def fixed_grid(self, t0: torch.Tensor, dt0: torch.Tensor | None, num: int) -> Any:
        if self.jump_ts is not None or self.per_sample or dt0 is None:
            return None
        if self.step_ts is None:
            # k·dt0 with k counted in t0's dtype, as `adapt` counts it (1·dt0 is dt0 exactly).
            k = torch.arange(1, num + 1, dtype=t0.dtype, device=t0.device)
            return t0 + k * dt0
        return self._grid_with_step_ts(t0, dt0, num)

    def _grid_with_step_ts(self, t0: torch.Tensor, dt0: torch.Tensor, num: int) -> Any:
        """The steps ``init`` and ``adapt`` take with ``step_ts``, replayed on the host in the
        time dtype (numpy scalars round ``origin + k·dt0`` as the tensors do): the count
        restarts at every step shortened to a ``step_ts`` point. Not for times with a
        gradient (the grid is built from host values)."""
        import bisect

        import numpy as np

        T: Any = {torch.float32: np.float32, torch.float64: np.float64}.get(t0.dtype)
        if T is None or t0.requires_grad or dt0.requires_grad or self.step_ts is None:
            return None
        grid = self.step_ts.tolist()

        def clip(a: Any, b: Any) -> Any:
            i = bisect.bisect_right(grid, float(a))
            return T(grid[i]) if i < len(grid) and T(grid[i]) <= b else b

        origin: Any = T(float(t0))
        k: Any = T(1)
        h: Any = T(float(dt0))
        end = clip(origin, origin + h)
        ends = [end]
        while len(ends) < num:
            if end == origin + k * h:
                k = k + T(1)
            else:
                origin, k = end, T(1)
            end = clip(end, origin + k * h)
            ends.append(end)
        return torch.tensor(np.array(ends, dtype=T), device=t0.device)

    def adapt(self, t0, t1, y0, y1, y_error, error_order, state, norm):  # type: ignore[override]
        dt0, made_jump, origin, k = state
        accept = torch.ones_like(t0, dtype=torch.bool)
        if self.step_ts is None and self.jump_ts is None:
            # Only the last step (clipped to the end of the interval) can be shortened.
            k = k + 1
            return accept, t1, origin + k * dt0, made_jump, (dt0, made_jump, origin, k)
        # A step shortened to a grid point restarts the count from there.
        regular = t1 == origin + k * dt0
        origin = torch.where(regular, origin, t1)
        k = torch.where(regular, k + 1, 1.0)
        next_t1 = origin + k * dt0
        if self.step_ts is not None or self.jump_ts is not None:
            next_t1, at_jump = self._clip(t1, next_t1)
        else:
            at_jump = made_jump
        return accept, t1, next_t1, made_jump, (dt0, at_jump, origin, k)

    def __repr__(self) -> str:
        return f"ConstantStepSize(per_sample={self.per_sample})"


def _band(hold: Any) -> tuple[float, float] | None:
    """A hold band, or ``None`` for ``None`` / ``False``."""
    if hold is None or hold is False:
        return None
    lo, hi = hold
    return (float(lo), float(hi))


def _positive(name: str, value: Any) -> Any:
    """A finite, positive number or tensor of them (``rtol``, ``atol``, ``dtmin``, ``dtmax``).

    ``inf`` is refused: an infinite tolerance accepts every step however wrong (and
    ``rtol=inf`` makes the error ratio NaN where the state is 0), so the solve "succeeds"
    with an arbitrary error."""
    if isinstance(value, torch.Tensor):
        if (
            not torch.is_floating_point(value)
            or value.numel() == 0
            or not bool((value > 0).all())
            or not bool(torch.isfinite(value).all())
        ):
            raise ValueError(
                f"PIDController: `{name}` must be positive and finite, got a tensor of shape "
                f"{tuple(value.shape)} and dtype {value.dtype} with min "
                f"{value.min().item() if value.numel() else 'n/a'} and max "
                f"{value.max().item() if value.numel() else 'n/a'}."
            )
        return value
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not value > 0
        or not math.isfinite(value)
    ):
        raise ValueError(
            f"PIDController: `{name}` must be a positive, finite number or tensor, got {value!r}. "
            f"Use e.g. {name}=1e-6."
        )
    return float(value)


class PIDController(AbstractAdaptiveController):
    r"""Adaptive steps from an embedded error estimate, with a PID controller.

    The error of a step is $\varepsilon = \| e / (\mathrm{atol} + \mathrm{rtol}\,
    \max(|y_0|, |y_1|)) \|$ (root mean square by default); the step is accepted when
    $\varepsilon \le 1$ and the next step is
    $h \cdot \mathrm{safety}\cdot \varepsilon_n^{-\beta_1}\varepsilon_{n-1}^{-\beta_2}
    \varepsilon_{n-2}^{-\beta_3}$ with $\beta_1 = (p+i+d)/k$, $\beta_2 = -(p+2d)/k$,
    $\beta_3 = d/k$ and $k$ the solver's error order; the factor is clipped to
    ``[factormin, factormax]`` (at most 1 after a rejection). ``pcoeff=0, icoeff=1,
    dcoeff=0`` is the classical integral controller.

    With ``predictive``, an accepted step after an accepted one takes the smaller of that
    factor and Gustafsson's predictive one, $\mathrm{safety}\,(h_n / h_{n-1})\,
    \varepsilon_n^{-1/k} (\varepsilon_{n-1} / \varepsilon_n)^{1/k}$ (with
    $\varepsilon_{n-1} \ge 10^{-2}$), and the step after a rejection does not grow (Hairer's
    RADAU5 and RODAS). With ``hold = (lo, hi)``, an accepted step whose factor (safety
    included) lies in ``[lo, hi]`` keeps the step size, so a method that reuses its
    factorisations can keep them (RADAU5's ``QUOT1, QUOT2 = 1, 1.2``).

    Args:
        rtol, atol: relative and absolute tolerances: numbers, or tensors broadcastable to the
            state for per-component tolerances.
        pcoeff, icoeff, dcoeff: PID coefficients (e.g. 0.4, 0.3, 0 for a smoother controller).
        dtmin: a step smaller than this ends the solve with ``DT_UNDERFLOW``.
        dtmax: the largest step.
        safety, factormin, factormax: factor bounds, see above.
        norm: ``norm(x) -> scalar`` (joint) or ``(batch,)`` (per sample) replacing the RMS
            norm; a seminorm that ignores some components is a norm too.
        step_ts: times to step to exactly.
        jump_ts: discontinuities: stepped to exactly, first-same-as-last redone after them.
        per_sample: each sample its own step size, acceptance and status.
        predictive: Gustafsson's predictive controller (above; needs ``pcoeff = dcoeff =
            0``); ``None`` (default): as the solver declares (``predictive_control``, e.g.
            ``Radau5``, ``Rodas5``), with the default coefficients only.
        hold: the band of factors that keep the step size (above), or ``False`` for none;
            ``None`` (default): the solver's ``hold_step`` (e.g. ``Radau5``: ``(1.0, 1.2)``).
        differentiate_steps: with ``True`` (default) gradients also flow through the choice of
            the step sizes, so ``DirectAdjoint`` gives the exact derivative of the computed
            solution (what ``gradcheck`` checks). With ``False`` the step sizes are chosen
            without gradients (torchdiffeq's convention): the gradient is that of a solve on
            the same, fixed mesh. Prefer ``False`` when the vector field is not smooth in
            time between the steps (e.g. a spline control whose knots the steps straddle),
            where the mesh's derivative can dominate the solution's.
    """

    #: (predictive, hold band) of the solve, resolved by `init` from the solver's declarations
    _mode: tuple[bool, tuple[float, float] | None] = (False, None)

    def __init__(
        self,
        rtol: float | torch.Tensor = 1e-5,
        atol: float | torch.Tensor = 1e-6,
        *,
        pcoeff: float = 0.0,
        icoeff: float = 1.0,
        dcoeff: float = 0.0,
        dtmin: float | None = None,
        dtmax: float | None = None,
        safety: float = 0.9,
        factormin: float = 0.2,
        factormax: float = 10.0,
        norm: Norm | None = None,
        step_ts: Sequence[float] | torch.Tensor | None = None,
        jump_ts: Sequence[float] | torch.Tensor | None = None,
        per_sample: bool = False,
        predictive: bool | None = None,
        hold: tuple[float, float] | bool | None = None,
        differentiate_steps: bool = True,
    ) -> None:
        self.rtol = _positive("rtol", rtol)
        self.atol = _positive("atol", atol)
        for name, v in (("pcoeff", pcoeff), ("icoeff", icoeff), ("dcoeff", dcoeff)):
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise TypeError(f"PIDController: `{name}` must be a number, got {v!r}.")
            if not math.isfinite(v):
                raise ValueError(f"PIDController: `{name}` must be finite, got {v!r}.")
        if pcoeff == 0 and icoeff == 0 and dcoeff == 0:
            raise ValueError(
                "PIDController: `pcoeff`, `icoeff` and `dcoeff` are all 0, so the step size "
                "would never change; use icoeff=1 (integral control)."
            )
        self.pcoeff, self.icoeff, self.dcoeff = float(pcoeff), float(icoeff), float(dcoeff)
        self.dtmin = None if dtmin is None else _positive("dtmin", dtmin)
        # dtmax=inf means no limit, like None.
        if isinstance(dtmax, float) and dtmax == math.inf:
            dtmax = None
        self.dtmax = None if dtmax is None else _positive("dtmax", dtmax)
        if self.dtmin is not None and self.dtmax is not None and self.dtmin > self.dtmax:
            raise ValueError(f"PIDController: `dtmin` ({dtmin}) is larger than `dtmax` ({dtmax}).")
        for name, v in (("safety", safety), ("factormin", factormin), ("factormax", factormax)):
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise TypeError(f"PIDController: `{name}` must be a number, got {v!r}.")
        if not 0 < safety <= 1:
            raise ValueError(f"PIDController: `safety` must be in (0, 1], got {safety!r}.")
        if not 0 < factormin < 1 < factormax:
            raise ValueError(
                "PIDController: need 0 < factormin < 1 < factormax, got "
                f"factormin={factormin!r}, factormax={factormax!r}."
            )
        self.safety, self.factormin, self.factormax = float(safety), factormin, factormax
        if norm is not None and not callable(norm):
            raise TypeError(f"PIDController: `norm` must be callable, got {type(norm).__name__}.")
        self.norm = norm
        self.step_ts = _as_time_grid("step_ts", step_ts)
        self.jump_ts = _as_time_grid("jump_ts", jump_ts)
        self.per_sample = bool(per_sample)
        if not isinstance(differentiate_steps, bool):
            raise TypeError(
                f"PIDController: `differentiate_steps` must be a bool, got {differentiate_steps!r}."
            )
        self.differentiate_steps = differentiate_steps
        if predictive is not None and not isinstance(predictive, bool):
            raise TypeError(
                f"PIDController: `predictive` must be a bool or None, got {predictive!r}."
            )
        if predictive and (self.pcoeff != 0 or self.dcoeff != 0):
            raise ValueError(
                "PIDController: `predictive=True` is an integral controller with Gustafsson's "
                f"prediction; it needs pcoeff = dcoeff = 0, got pcoeff={pcoeff!r}, "
                f"dcoeff={dcoeff!r}."
            )
        self.predictive = predictive
        if hold is True:
            raise ValueError(
                "PIDController: `hold` is a band (lo, hi) of factors, e.g. (1.0, 1.2); None "
                "takes the solver's, False none."
            )
        if hold is not None and hold is not False:
            try:
                lo, hi = (float(v) for v in hold)  # type: ignore[union-attr]
            except (TypeError, ValueError):
                raise TypeError(
                    f"PIDController: `hold` must be a pair (lo, hi), False or None, got {hold!r}."
                ) from None
            if not 0 < lo <= 1 <= hi < math.inf:
                raise ValueError(
                    f"PIDController: `hold` must satisfy 0 < lo <= 1 <= hi, got {hold!r}."
                )
            hold = (lo, hi)
        self.hold = hold
        self._mode = (bool(predictive), _band(hold))

    def _resolve(self, solver: AbstractSolver) -> tuple[bool, tuple[float, float] | None]:
        """``(predictive, hold band)`` for a solve with ``solver``: the controller's own
        settings, or the solver's declarations where they are ``None``."""
        predictive = self.predictive
        if predictive is None:
            default = self.pcoeff == 0 and self.dcoeff == 0 and self.icoeff == 1
            predictive = default and solver.predictive_control
        hold = self.hold
        if hold is None:
            hold = solver.hold_step
        return predictive, _band(hold)

    def init(self, terms, t0, t1, y0, dt0, args, solver, vf0, norm):  # type: ignore[override]
        nfe = 0
        if dt0 is None:
            # Hairer, Nørsett & Wanner (1993), Solving ODEs I, II.4: a first guess from the
            # sizes of y0 and f0, refined with one more evaluation of f.
            one = terms.contr(t0, t0 + 1)
            unit = terms.prod(vf0, one)
            if norm is None:
                # One scale for the three norms below (they all measure against |y0|).
                scale = y0.abs() * self.rtol + self.atol
                root = math.sqrt(max(y0[0].numel() if self.per_sample else y0.numel(), 1))

                def scaled(x: torch.Tensor) -> torch.Tensor:
                    x = x / scale
                    if self.per_sample:
                        return torch.linalg.vector_norm(x.reshape(x.shape[0], -1), dim=1) / root
                    return torch.linalg.vector_norm(x) / root
            else:

                def scaled(x: torch.Tensor) -> torch.Tensor:
                    return self.scaled_norm(x, y0, None, norm)

            differentiated = torch.is_grad_enabled() and self.differentiate_steps
            if not (self.per_sample or t0.ndim or differentiated):
                h = self._initial_step_on_host(terms, t0, t1, y0, args, solver, one, unit, scaled)
                dt0 = torch.scalar_tensor(h, dtype=t0.dtype, device=t0.device)
            else:
                dt0 = self._initial_step(terms, t0, t1, y0, args, solver, one, unit, scaled)
            nfe = 1
        elif norm is not None:
            # The user's norm is first called here (the built-in RMS norm is finite on the
            # finite y0): NaN makes the first step NaN, reported at once as NONFINITE.
            d0 = self.scaled_norm(y0, y0, None, norm)
            dt0 = torch.where(torch.isfinite(d0), dt0, math.nan)
        if self.dtmax is not None:
            dt0 = dt0.clamp(max=self.dtmax)
        end, at_jump = self._clip(t0, t0 + dt0)
        one = torch.ones_like(t0, dtype=y0.dtype)
        # (The prepared copy of a solve: the solver's declarations are read once, here.)
        self._mode = self._resolve(solver)
        if self._mode[0]:
            # (last accepted error ratio, last accepted step size (0: none yet), at_jump,
            # whether the last step was rejected)
            zero = torch.zeros_like(t0)
            return end, (one, zero, at_jump, torch.zeros_like(t0, dtype=torch.bool)), nfe
        return end, (one, one, at_jump), nfe

    @staticmethod
    def _first_order(solver: AbstractSolver) -> int:
        """The exponent ``k`` the first step is sized by, ``h1^k max(d1, d2) = 0.01``.

        The exponent of the local error estimate (error ~ h^k): Hairer's HINIT (DOPRI5
        IORD = 5, DOP853 IORD = 8) and SciPy's select_initial_step (1 / (error_estimator_order
        + 1): RK45 1/5, RK23 1/3) both size the first step by the estimate the controller then
        reads, not by the order of the propagated solution (Dopri5: 1/5, not 1/6). Solvers
        without an integer error order fall back to the local error of the solution,
        h^(order+1)."""
        k = solver.error_order
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            return solver.order + 1
        return k

    def _initial_step(self, terms, t0, t1, y0, args, solver, one, unit, scaled) -> torch.Tensor:
        """The first step as tensors (per sample, or with its gradient)."""
        d0 = scaled(y0)
        d1 = scaled(unit)
        # A non-finite d0 or d1 (finite y0 and f0: a NaN norm) makes dt0 NaN below, which
        # the loop reports as a non-finite start instead of stepping on NaN times.
        small = (d0 < 1e-5) | (d1 < 1e-5)
        h0 = torch.where(small, torch.full_like(d0, 1e-6), 0.01 * d0 / d1.clamp_min(1e-30))
        h0 = h0.to(t0.dtype)
        h0 = torch.minimum(h0, t1 - t0).clamp_min(torch.finfo(t0.dtype).eps)
        if self.dtmax is not None:
            h0 = h0.clamp(max=self.dtmax)
        y1 = y0 + broadcast_time(h0, y0).to(y0.dtype) * unit
        f1 = terms.prod(terms.vf(t0 + h0, y1, args), one)
        d2 = scaled(f1 - unit) / h0.to(y0.dtype)
        dmax = torch.maximum(d1, d2)
        h1 = torch.where(
            dmax <= 1e-15,
            torch.clamp_min(h0 * 1e-3, 1e-6),
            (0.01 / dmax.clamp_min(1e-30)) ** (1.0 / self._first_order(solver)),
        ).to(t0.dtype)
        dt0 = torch.minimum(100 * h0, h1)
        # f blew up (or is NaN) at the trial point y0 + h0 f0: no estimate of the second
        # derivative; start from h0 and let step rejection shrink it.
        dt0 = torch.where(torch.isfinite(d2), dt0, h0)
        return dt0 if self.differentiate_steps else dt0.detach()

    def _initial_step_on_host(self, terms, t0, t1, y0, args, solver, one, unit, scaled) -> float:
        """:meth:`_initial_step`'s arithmetic on host numbers, for one joint interval whose
        first step carries no gradient: the three norms are transferred (two
        synchronisations) instead of some thirty operations on 0-dim tensors. Values are
        rounded to the state's and the time's dtypes where the tensors are; ``min`` and
        ``max`` propagate NaN as ``torch.minimum`` and ``torch.maximum`` do. In float64 the
        same operations give the same numbers; in lower precision a quotient or power
        rounded from float64 may differ from the tensor's by an ulp."""
        from .adaptive import host_round

        tdt, ydt = t0.dtype, y0.dtype
        with torch.no_grad():
            t0_h, t1_h, d0, d1 = _host_numbers([t0, t1, scaled(y0), scaled(unit)])
            h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / _nan_max(d1, 1e-30)
            h0 = host_round(host_round(h0, ydt), tdt)
            h0 = _nan_max(_nan_min(h0, host_round(t1_h - t0_h, tdt)), torch.finfo(tdt).eps)
            if self.dtmax is not None:
                h0 = _nan_min(h0, host_round(float(self.dtmax), tdt))
            h0_y = host_round(h0, ydt)
            # As the tensors compute them (a product, then a sum; the time in its dtype).
            y1 = y0 + unit * h0_y
            f1 = terms.prod(terms.vf(t0 + h0, y1, args), one)
            (d2,) = _host_numbers([scaled(f1 - unit)])
        d2 = host_round(d2 / h0_y, ydt)
        dmax = _nan_max(d1, d2)
        if dmax <= 1e-15:
            h1 = _nan_max(host_round(h0 * 1e-3, tdt), host_round(1e-6, tdt))
        else:
            h1 = (0.01 / _nan_max(dmax, 1e-30)) ** (1.0 / self._first_order(solver))
            h1 = host_round(host_round(h1, ydt), tdt)
        dt0 = _nan_min(host_round(100 * h0, tdt), h1)
        # f blew up (or is NaN) at the trial point: start from h0 (as the tensor arithmetic).
        return dt0 if math.isfinite(d2) else h0

    def adapt(self, t0, t1, y0, y1, y_error, error_order, state, norm):  # type: ignore[override]
        if y_error is None or error_order is None:
            raise ValueError(
                "PIDController needs a solver with an error estimate; this solver has none. "
                "Use an adaptive solver (Dopri5, Tsit5, ...) or ConstantStepSize with dt0=."
            )
        predictive, band = self._mode
        if predictive:
            prev1, h_acc, at_jump, rejected = state
        else:
            prev1, prev2, at_jump = state
        # A non-finite error is a failed step: NaN becomes inf, which rejects the step and
        # drives the factor to factormin.
        ratio = self.scaled_norm(y_error, y0, y1, norm).nan_to_num(nan=math.inf)
        if not self.differentiate_steps:
            ratio = ratio.detach()
        if (
            predictive
            and t0.ndim == 0
            and not isinstance(error_order, torch.Tensor)
            and self.step_ts is None
            and self.jump_ts is None
            and not any(v.requires_grad for v in (ratio, t0, t1, prev1, h_acc))
        ):
            return self._adapt_host(t0, t1, ratio, float(error_order), state)
        accept = ratio <= 1.0
        # A variable-order solver gives its error order as a tensor (per sample or joint).
        k = error_order if isinstance(error_order, torch.Tensor) else float(error_order)
        # The floor keeps a zero error (e.g. a finished sample) from making an infinite
        # factor, whose gradient would be NaN even where the clip below discards it.
        floored = ratio.clamp_min(1e-10)
        factor = floored.pow(-(self.pcoeff + self.icoeff + self.dcoeff) / k)
        pid = self.pcoeff != 0 or self.dcoeff != 0
        if pid:
            b2 = -(self.pcoeff + 2 * self.dcoeff) / k
            b3 = self.dcoeff / k
            factor = factor * prev1 ** (-b2) * prev2 ** (-b3)
        # `safety` multiplies in the fused update below, so the bounds are divided by it.
        safety = self.safety
        factor = factor.clamp(self.factormin / safety, self.factormax / safety)
        if pid:
            # Integral control alone never grows a rejected step (ratio > 1, safety <= 1).
            factor = torch.where(accept, factor, factor.clamp(max=1.0 / safety))
        if factor.dtype != t0.dtype:
            factor = factor.to(t0.dtype)
        h = t1 - t0
        if predictive:
            # Gustafsson: (h / h_acc) (err_acc / err)^(1/k) times the integral factor, for an
            # accepted step after an accepted one; never growing right after a rejection.
            have = (h_acc > 0) & accept
            gus = (h / torch.where(have, h_acc, h)) * (prev1 / floored).pow(1 / k).to(t0.dtype)
            gus = (factor * gus).clamp(self.factormin / safety, self.factormax / safety)
            factor = torch.where(have, torch.minimum(factor, gus), factor)
            factor = torch.where(rejected, factor.clamp(max=1.0 / safety), factor)
        if band is not None:
            # Keep the step size (factor * safety = 1) for an accepted step in the band.
            fs = factor * safety
            keep = accept & (fs >= band[0]) & (fs <= band[1])
        next_t0 = torch.where(accept, t1, t0)
        if self.dtmax is None:
            next_t1 = torch.addcmul(next_t0, h, factor, value=safety)
        else:
            next_t1 = next_t0 + (h * factor * safety).clamp(max=self.dtmax)
        if band is not None:
            # Exactly the same step (`factor * safety` rounds to 1 only nearly).
            next_t1 = torch.where(keep, next_t0 + h, next_t1)
        made_jump = None
        if self.jump_ts is not None:
            made_jump = at_jump & accept
        if self.step_ts is not None or self.jump_ts is not None:
            next_t1, at_jump = self._clip(next_t0, next_t1)
        if predictive:
            if not self.differentiate_steps:
                h = h.detach()
            prev1 = torch.where(accept, ratio.clamp_min(1e-2), prev1)
            h_acc = torch.where(accept, h, h_acc)
            return accept, next_t0, next_t1, made_jump, (prev1, h_acc, at_jump, ~accept)
        if pid:
            prev1, prev2 = (
                torch.where(accept, floored, prev1),
                torch.where(accept, prev1, prev2),
            )
        return accept, next_t0, next_t1, made_jump, (prev1, prev2, at_jump)

    def _adapt_host(self, t0, t1, ratio, k, state):  # type: ignore[no-untyped-def]
        """``adapt`` of a joint step with nothing to differentiate (neither the error ratio,
        the times nor the carried ratio and step size: a gradient there must flow on), in
        the predictive mode:
        :meth:`host_adapt`'s arithmetic on the state brought to the host in one transfer
        (a dozen tensor operations on 0-d tensors fewer)."""
        prev1, h_acc, at_jump, rejected = state
        f64 = torch.float64
        r, p1, ha, rj, h = torch.stack(
            [ratio.to(f64), prev1.to(f64), h_acc.to(f64), rejected.to(f64), (t1 - t0).to(f64)]
        ).tolist()
        accept, h_next, (p1, ha, rj) = self.host_adapt(r, h, k, (p1, ha, rj))
        next_t0 = t1 if accept else t0
        # (A held step is `t1 - t0` exactly, as in the tensor arithmetic.)
        next_t1 = next_t0 + (t1 - t0) if h_next == h else next_t0 + h_next
        new = (
            torch.tensor(p1, dtype=prev1.dtype, device=prev1.device),
            torch.tensor(ha, dtype=h_acc.dtype, device=h_acc.device),
            at_jump,
            torch.tensor(bool(rj), device=rejected.device),
        )
        accept_t = torch.tensor(accept, device=t0.device)
        return accept_t, next_t0, next_t1, None, new

    host_control = True

    def host_state(self) -> tuple[float, ...]:
        if self._mode[0]:
            return (1.0, 0.0, 0.0)  # (error ratio, step size, rejected) as in `adapt`
        return (1.0, 1.0)

    def host_adapt(
        self, ratio: float, h: float, error_order: float, state: tuple[float, ...]
    ) -> tuple[bool, float, tuple[float, ...]]:
        # `adapt`'s arithmetic on host floats, term for term.
        predictive, band = self._mode
        if predictive:
            prev1, h_acc, rejected = state
        else:
            prev1, prev2 = state
        accept = ratio <= 1.0
        p, i, d = self.pcoeff, self.icoeff, self.dcoeff
        factor = max(ratio, 1e-10) ** (-(p + i + d) / error_order)
        pid = p != 0 or d != 0
        if pid:
            factor *= prev1 ** ((p + 2 * d) / error_order) * prev2 ** (-d / error_order)
        safety = self.safety
        factor = min(max(factor, self.factormin / safety), self.factormax / safety)
        if pid and not accept:
            factor = min(factor, 1.0 / safety)
        if predictive:
            if h_acc > 0 and accept:
                gus = factor * (h / h_acc) * (prev1 / max(ratio, 1e-10)) ** (1 / error_order)
                gus = min(max(gus, self.factormin / safety), self.factormax / safety)
                factor = min(factor, gus)
            if rejected:
                factor = min(factor, 1.0 / safety)
        h_next = h * factor * safety
        if self.dtmax is not None:
            h_next = min(h_next, float(self.dtmax))
        if band is not None and accept and band[0] <= factor * safety <= band[1]:
            h_next = h
        if predictive:
            state = (max(ratio, 1e-2), h, 0.0) if accept else (prev1, h_acc, 1.0)
        elif pid and accept:
            state = (max(ratio, 1e-10), prev1)
        return accept, h_next, state

    def __repr__(self) -> str:
        return (
            f"PIDController(rtol={self.rtol!r}, atol={self.atol!r}, pcoeff={self.pcoeff}, "
            f"icoeff={self.icoeff}, dcoeff={self.dcoeff}, per_sample={self.per_sample})"
        )
