"""torchcde's API on torchnde: change ``import torchcde`` to
``import torchnde.compat.torchcde as torchcde``.

Same function names, argument names, defaults, shapes (``cdeint`` returns time second to
last) and coefficient layouts as torchcde 0.2.5; the solve runs on torchnde's engine
(``method`` names as torchdiffeq's; ``adjoint=True`` is torchnde's ``BacksolveAdjoint``).
The signature helpers follow Signatory's ``signature``/``logsignature`` (which torchcde's
log-ODE functions use), in plain PyTorch. Options that are not supported raise
``NotImplementedError`` naming them; nothing is silently ignored.
"""

from __future__ import annotations

import math
import types
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch

from .._adjoint import BacksolveAdjoint, DirectAdjoint, ReversibleAdjoint
from .._cde import lyndon as _lyndon
from .._cde.cubic import natural_cubic_coeffs as _natural
from .._cde.hermite import hermite_cubic_coeffs as _hermite
from .._cde.linear import linear_interpolation_coeffs as _linear
from .._cde.log_ode import logsig_windows as _logsig_windows
from .._cde.missing import fill_forward as _fill_forward
from .._cde.signature import logsignature as _logsignature
from .._cde.signature import signature as _signature
from .._cde.tridiagonal import thomas as _thomas
from .._convenience import METHODS
from .._core.controllers import ConstantStepSize, PIDController
from .._core.runge_kutta import AbstractRungeKutta
from .._core.solution import SaveAt
from .._core.solver import AbstractSolver
from .._core.solvers.sra1 import SRA1
from .._core.tableau import ButcherTableau
from .._core.terms import ODETerm
from .._solve import solve
from ._torchsde_brownian import _entropy

__all__ = [
    "CubicSpline",
    "InterpolationBase",
    "LinearInterpolation",
    "TupleControl",
    "cdeint",
    "hermite_cubic_coefficients_with_backward_differences",
    "linear_interpolation_coeffs",
    "logsig_windows",
    "logsignature",
    "logsignature_channels",
    "logsignature_windows",
    "natural_cubic_coeffs",
    "natural_cubic_spline_coeffs",
    "signature",
    "signature_channels",
]

__version__ = "0.2.5"


class CompatAssertionError(ValueError, AssertionError):
    """Bad input where torchcde raises ``AssertionError``: both a ``ValueError`` (torchnde's
    convention) and an ``AssertionError`` (what torchcde's users catch)."""


# --------------------------------------------------------------------------- coefficients
def _validate(x: Any, t: Any) -> torch.Tensor:
    """torchcde's checks (ValueError) and default times."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError("X must both be floating point.")
    if x.ndimension() < 2:
        raise ValueError(
            "X must have at least two dimensions, corresponding to time and channels. It "
            f"instead has shape {tuple(x.shape)}."
        )
    if t is None:
        return torch.linspace(0, x.size(-2) - 1, x.size(-2), dtype=x.dtype, device=x.device)
    if not isinstance(t, torch.Tensor) or not t.is_floating_point():
        raise ValueError("t must both be floating point.")
    if t.ndimension() != 1:
        raise ValueError(f"t must be one dimensional. It instead has shape {tuple(t.shape)}.")
    if x.size(-2) < 2:
        raise ValueError(
            "Must have a time dimension of size at least 2. It instead has shape "
            f"{tuple(x.shape)}, corresponding to a time dimension of size {x.size(-2)}."
        )
    if bool((t[1:] <= t[:-1]).any()):
        raise ValueError("t must be monotonically increasing.")
    if x.size(-2) != t.size(0):
        raise ValueError(
            f"The time dimension of X must equal the length of t. X has shape {tuple(x.shape)} "
            f"and t has shape {tuple(t.shape)}, corresponding to time dimensions of "
            f"{x.size(-2)} and {t.size(0)} respectively."
        )
    return t


def _forward_fill(x: torch.Tensor, fill_index: int = -2) -> torch.Tensor:
    """torchcde.misc.forward_fill: NaNs take the last value before them along ``fill_index``
    (leading NaNs stay)."""
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        raise CompatAssertionError("forward_fill: `x` must be a tensor.")
    moved = x.movedim(fill_index, -2) if x.dim() >= 2 else x.unsqueeze(-1)
    if x.dim() < 2:
        return _fill_forward(moved.unsqueeze(-1).squeeze(-1)).squeeze(-1)
    return _fill_forward(moved).movedim(-2, fill_index)


def _cheap_stack(tensors: list[torch.Tensor], dim: int) -> torch.Tensor:
    """torchcde.misc.cheap_stack: ``torch.stack``."""
    return torch.stack(tensors, dim)


def _tridiagonal_solve(
    b: torch.Tensor, A_upper: torch.Tensor, A_diagonal: torch.Tensor, A_lower: torch.Tensor
) -> torch.Tensor:
    """torchcde.misc.tridiagonal_solve: solves along the last dimension of ``b``."""
    zero = torch.zeros_like(A_diagonal[..., :1])
    lower = torch.cat([zero, A_lower], dim=-1)
    upper = torch.cat([A_upper, zero], dim=-1)
    rows = (v.movedim(-1, 0) for v in (lower, A_diagonal, upper, b))
    return _thomas(*rows).movedim(0, -1)


#: torchcde.misc, the parts its users and tests reach for.
misc = types.ModuleType("torchcde.misc", "torchcde.misc on torchnde")
misc.forward_fill = _forward_fill  # type: ignore[attr-defined]
misc.validate_input_path = _validate  # type: ignore[attr-defined]
misc.cheap_stack = _cheap_stack  # type: ignore[attr-defined]
misc.tridiagonal_solve = _tridiagonal_solve  # type: ignore[attr-defined]


def _rectilinear(x: torch.Tensor, time_index: int) -> torch.Tensor:
    channels = x.size(-1)
    if isinstance(time_index, bool) or not isinstance(time_index, int):
        raise CompatAssertionError(
            f"Index of the time channel must be an integer in [0, {channels - 1}]"
        )
    if not 0 <= time_index < channels:
        raise CompatAssertionError(
            f"Time index must be in [0, {channels - 1}], was given {time_index}."
        )
    if bool(torch.isnan(x[..., time_index]).any()):
        raise CompatAssertionError(
            "There exist nan values in the time column which is not allowed. If the times are "
            "padded with nans after final time, a simple solution is to forward fill the final "
            "time."
        )
    filled = _fill_forward(x)
    rep = filled.repeat_interleave(2, dim=-2)
    rep[..., :-1, time_index] = rep[..., 1:, time_index].clone()
    return rep[..., :-1, :]


def linear_interpolation_coeffs(
    x: torch.Tensor, t: torch.Tensor | None = None, rectilinear: int | None = None
) -> torch.Tensor:
    """As ``torchcde.linear_interpolation_coeffs``: the filled series ``(..., length,
    channels)``, or with ``rectilinear=time_channel`` the rectilinear series ``(..., 2 *
    length - 1, channels)``."""
    if rectilinear is not None:
        if bool(torch.isnan(x[..., 0, :]).any()):
            warnings.warn(
                "The data `x` begins with missing values in some channels. The path will be "
                "constructed by backward-filling the first observed value, which is not causal.",
                stacklevel=2,
            )
        x = _rectilinear(x, rectilinear)
    t = _validate(x, t)
    return _linear(x, t)


def natural_cubic_coeffs(x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
    """As ``torchcde.natural_cubic_coeffs``: ``(..., length - 1, 4 * channels)``."""
    t = _validate(x, t)
    return _natural(x, t)


def natural_cubic_spline_coeffs(x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
    """As ``torchcde.natural_cubic_spline_coeffs`` (deprecated there): missing values at the
    ends are imputed at the first and last time only, not filled."""
    t = _validate(x, t)
    if bool(torch.isnan(x).any()):
        xs = x.transpose(-1, -2)
        observed = ~torch.isnan(xs)
        length = xs.shape[-1]
        pos = torch.arange(length, device=x.device)
        first = torch.where(observed, pos, length).amin(-1, keepdim=True).clamp(max=length - 1)
        last = torch.where(observed, pos, -1).amax(-1, keepdim=True).clamp(min=0)
        xs = xs.clone()
        xs[..., 0] = xs.gather(-1, first)[..., 0]
        xs[..., -1] = xs.gather(-1, last)[..., 0]
        x = xs.transpose(-1, -2)
    return _natural(x, t)


def hermite_cubic_coefficients_with_backward_differences(
    x: torch.Tensor, t: torch.Tensor | None = None
) -> torch.Tensor:
    """As torchcde's: Hermite cubic coefficients ``(..., length - 1, 4 * channels)``."""
    t = _validate(x, t)
    return _hermite(x, t)


# ----------------------------------------------------------------------------- paths
class InterpolationBase(torch.nn.Module):
    """torchcde's base class of controls: ``grid_points``, ``interval``, ``evaluate(t)``,
    ``derivative(t)``."""

    @property
    def grid_points(self) -> torch.Tensor:
        raise NotImplementedError

    @property
    def interval(self) -> torch.Tensor:
        raise NotImplementedError

    def evaluate(self, t: Any) -> torch.Tensor:
        raise NotImplementedError

    def derivative(self, t: Any) -> torch.Tensor:
        raise NotImplementedError


class _Piecewise(InterpolationBase):
    _t: torch.Tensor

    @property
    def grid_points(self) -> torch.Tensor:
        return self._t

    @property
    def knots(self) -> torch.Tensor:
        return self._t.detach()

    @property
    def interval(self) -> torch.Tensor:
        return torch.stack([self._t[0], self._t[-1]])

    def _interpret_t(
        self, t: Any, segments: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(t - t_index, index)`` as torchcde's ``_interpret_t``."""
        segments = self._t.numel() - 1 if segments is None else segments
        t = torch.as_tensor(t, dtype=self._t.dtype, device=self._t.device)
        # Left-continuous at the knots, as torchcde (bucketize(t) - 1).
        index = torch.bucketize(t.detach(), self._t.detach()).sub(1).clamp(0, segments - 1)
        return t - self._t[index], index


class LinearInterpolation(_Piecewise):
    """As ``torchcde.LinearInterpolation(coeffs, t=None)``; ``evaluate``/``derivative`` take
    a time tensor of any shape ``s`` and return ``(..., *s, channels)``.

    Slopes are computed per call from the two neighbouring values (not stored): a graph from
    ``coeffs`` to a stored slope would be shared by every evaluation, which a continuous
    adjoint differentiating with respect to ``coeffs`` cannot traverse twice.
    """

    _coeffs: torch.Tensor

    def __init__(self, coeffs: torch.Tensor, t: torch.Tensor | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if t is None:
            t = torch.linspace(
                0, coeffs.size(-2) - 1, coeffs.size(-2), dtype=coeffs.dtype, device=coeffs.device
            )
        self.register_buffer("_t", t)
        self.register_buffer("_coeffs", coeffs)

    def _slope(self, index: torch.Tensor) -> torch.Tensor:
        dx = self._coeffs[..., index + 1, :] - self._coeffs[..., index, :]
        return dx / (self._t[index + 1] - self._t[index]).unsqueeze(-1)

    def evaluate(self, t: Any) -> torch.Tensor:
        frac, index = self._interpret_t(t)
        return self._coeffs[..., index, :] + frac.unsqueeze(-1) * self._slope(index)

    def derivative(self, t: Any) -> torch.Tensor:
        _, index = self._interpret_t(t)
        return self._slope(index)


class CubicSpline(_Piecewise):
    """As ``torchcde.CubicSpline(coeffs, t=None)`` (natural cubic or Hermite coefficients)."""

    _a: torch.Tensor
    _b: torch.Tensor
    _two_c: torch.Tensor
    _three_d: torch.Tensor

    def __init__(self, coeffs: torch.Tensor, t: torch.Tensor | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if t is None:
            t = torch.linspace(
                0, coeffs.size(-2), coeffs.size(-2) + 1, dtype=coeffs.dtype, device=coeffs.device
            )
        channels = coeffs.size(-1) // 4
        if channels * 4 != coeffs.size(-1):
            raise ValueError("Passed invalid coeffs.")
        a, b, two_c, three_d = (
            coeffs[..., :channels],
            coeffs[..., channels : 2 * channels],
            (coeffs[..., 2 * channels : 3 * channels]),
            coeffs[..., 3 * channels :],
        )
        self.register_buffer("_t", t)
        self.register_buffer("_a", a)
        self.register_buffer("_b", b)
        self.register_buffer("_two_c", two_c)
        self.register_buffer("_three_d", three_d)

    def evaluate(self, t: Any) -> torch.Tensor:
        frac, index = self._interpret_t(t, self._b.size(-2))
        s = frac.unsqueeze(-1)
        inner = 0.5 * self._two_c[..., index, :] + self._three_d[..., index, :] * s / 3
        inner = self._b[..., index, :] + inner * s
        return self._a[..., index, :] + inner * s

    def derivative(self, t: Any) -> torch.Tensor:
        frac, index = self._interpret_t(t, self._b.size(-2))
        s = frac.unsqueeze(-1)
        inner = self._two_c[..., index, :] + self._three_d[..., index, :] * s
        return self._b[..., index, :] + inner * s


class TupleControl(torch.nn.Module):
    """As ``torchcde.TupleControl(*controls)``: several controls over one interval, for a
    tuple state ``z0 = (z_1, ..., z_n)`` whose ``func`` returns one matrix per control;
    ``evaluate``/``derivative`` return tuples."""

    def __init__(self, *controls: Any) -> None:
        super().__init__()
        if len(controls) == 0:
            raise ValueError("Expected one or more controls to batch together.")
        self._interval = controls[0].interval
        grid_points = controls[0].grid_points
        same_grid_points = True
        for control in controls[1:]:
            if bool((control.interval != self._interval).any()):
                raise ValueError("Can only batch togehter controls over the same interval.")
            if same_grid_points:
                other = control.grid_points
                same = other.shape == grid_points.shape and bool((other == grid_points).all())
                same_grid_points = same
        self._grid_points = grid_points if same_grid_points else None
        self.controls = torch.nn.ModuleList(controls)

    @property
    def interval(self) -> torch.Tensor:
        return self._interval

    @property
    def grid_points(self) -> torch.Tensor:
        if self._grid_points is None:
            raise RuntimeError("Batch of controls have different grid points.")
        return self._grid_points

    def evaluate(self, t: Any) -> tuple[torch.Tensor, ...]:
        controls: list[Any] = list(self.controls)
        return tuple(control.evaluate(t) for control in controls)

    def derivative(self, t: Any) -> tuple[torch.Tensor, ...]:
        controls: list[Any] = list(self.controls)
        return tuple(control.derivative(t) for control in controls)


# ------------------------------------------------------------------------------ cdeint
class _SRA1Drift(AbstractRungeKutta):
    r"""torchsde's ``srk`` on torchcde's zero diffusion: SRA1's drift part (Rößler 2010), the
    two-stage Runge–Kutta method of order 2 with $c_2 = 3/4$, $b = (1/3, 2/3)$, read from
    SRA1's tableau."""

    tableau: ClassVar[ButcherTableau] = ButcherTableau(
        a=[list(row) for row in SRA1.tableau.a0[1:]],
        b=list(SRA1.tableau.alpha),
        c=list(SRA1.tableau.c0),
        order=2,
    )


#: torchsde's methods on a CDE, whose diffusion torchcde sets to zero: the ODE method each
#: reduces to, and the SDE type torchsde's solver is for (torchsde raises for the other one;
#: Milstein has one of each).
_SDE_METHODS: dict[str, tuple[Callable[[], AbstractSolver], tuple[str, ...]]] = {
    "euler": (METHODS["euler"], ("ito",)),
    "milstein": (METHODS["euler"], ("ito", "stratonovich")),
    "srk": (_SRA1Drift, ("ito",)),
    "euler_heun": (METHODS["euler"], ("stratonovich",)),
    "midpoint": (METHODS["midpoint"], ("stratonovich",)),
    "heun": (METHODS["heun2"], ("stratonovich",)),
    "reversible_heun": (METHODS["reversible_heun"], ("stratonovich",)),
}
_SDE_KWARGS = {"dt", "adaptive", "rtol", "atol", "dt_min", "bm", "options"}
_SDE_ADJOINT_KWARGS = {
    "adjoint_method",
    "adjoint_adaptive",
    "adjoint_rtol",
    "adjoint_atol",
    "adjoint_options",
    "adjoint_params",
}
_OPTIONS = {"step_size", "first_step", "max_num_steps", "step_t", "jump_t", "norm", "interp"}
#: torchdiffeq's fixed-grid options; the adaptive ones are ignored there with a warning.
_FIXED_OPTIONS = {"step_size", "interp", "max_num_steps"}
#: torchdiffeq's "rk4" is the 3/8-rule variant (rk4_alt_step_func).
_FIXED_SOLVERS = {"rk4": "rk38"}
_ADJOINT_OPTIONS = {"norm"}


class _ConstantStepSizesPID(PIDController):
    """torchdiffeq's adaptive stepping for gradients: step sizes are chosen without autograd
    (its ``_optimal_step_size`` runs under ``no_grad``), so backpropagation differentiates
    the solver on the grid it chose, not the choice of the grid."""

    def init(self, *a: Any, **k: Any) -> Any:
        end, state, nfe = super().init(*a, **k)
        return end.detach(), state, nfe

    def adapt(self, *a: Any, **k: Any) -> Any:
        accept, next_t0, next_t1, made_jump, state = super().adapt(*a, **k)
        return accept, next_t0, next_t1.detach(), made_jump, state


def _unsupported(name: str, why: str) -> NotImplementedError:
    return NotImplementedError(f"torchnde.compat.torchcde.cdeint: {name} is not supported: {why}")


def _check_within_interval(X: Any, t: torch.Tensor) -> None:
    """``t`` must lie in ``X.interval`` (up to round-off at the ends): torchcde integrates on
    the extrapolated end pieces there, which carries no information about the data."""
    interval = getattr(X, "interval", None)
    if not isinstance(interval, torch.Tensor) or interval.numel() != 2:
        return
    lo, hi = (float(v) for v in interval.detach().reshape(2))
    tq = t.detach()
    eps = max(torch.finfo(tq.dtype).eps, torch.finfo(interval.dtype).eps)
    tol = 8 * eps * max(abs(lo), abs(hi))
    first, last = float(tq.min()), float(tq.max())
    if first < lo - tol or last > hi + tol:
        raise ValueError(
            f"cdeint: `t` runs from {first:.6g} to {last:.6g}, outside X.interval = "
            f"[{lo:.6g}, {hi:.6g}]: beyond its data the control would be extrapolated (a cubic "
            "grows like the cube of the distance), so the solution would mean nothing. Pass "
            "times within X.interval (e.g. t=X.interval)."
        )


def _check_one(dxdt: Any, vf: Any, z0: torch.Tensor, prod: bool) -> None:
    """torchcde's shape checks for one tensor of the state."""
    if dxdt.shape[:-1] != z0.shape[:-1]:
        raise ValueError(
            "X.derivative did not return a tensor with the same number of batch dimensions as "
            f"z0. X.derivative returned shape {tuple(dxdt.shape)} (meaning "
            f"{tuple(dxdt.shape[:-1])} batch dimensions), whilst z0 has shape {tuple(z0.shape)} "
            f"(meaning {tuple(z0.shape[:-1])} batch dimensions)."
        )
    if prod:
        if vf.shape != z0.shape:
            raise ValueError(
                "func.prod did not return a tensor with the same shape as z0. func.prod "
                f"returned shape {tuple(vf.shape)} whilst z0 has shape {tuple(z0.shape)}."
            )
        return
    if vf.shape[:-2] != z0.shape[:-1]:
        raise ValueError(
            "func did not return a tensor with the same number of batch dimensions as z0. "
            f"func returned shape {tuple(vf.shape)} (meaning batch dimensions "
            f"{tuple(vf.shape[:-2])}), whilst z0 has shape {tuple(z0.shape)} (meaning batch "
            f"dimensions {tuple(z0.shape[:-1])})."
        )
    if vf.size(-2) != z0.size(-1):
        raise ValueError(
            "func did not return a tensor with the same number of hidden channels as z0. "
            f"func returned shape {tuple(vf.shape)} (meaning {vf.size(-2)} channels), whilst "
            f"z0 has shape {tuple(z0.shape)} (meaning {z0.size(-1)} channels)."
        )
    if vf.size(-1) != dxdt.size(-1):
        raise ValueError(
            "func did not return a tensor with the same number of input channels as "
            f"X.derivative returned. func returned shape {tuple(vf.shape)} (meaning "
            f"{vf.size(-1)} channels), whilst X.derivative returned shape "
            f"{tuple(dxdt.shape)} (meaning {dxdt.size(-1)} channels)."
        )


def _check(X: Any, func: Any, z0: Any, t0: torch.Tensor) -> None:
    """torchcde's ``_check_compatability``: one call of ``X.derivative`` and ``func``."""
    dxdt = X.derivative(t0)
    prod = getattr(func, "prod", None)
    vf = prod(t0, z0, dxdt) if prod is not None else func(t0, z0)
    what = "func.prod" if prod is not None else "func"
    if isinstance(z0, torch.Tensor):
        if not isinstance(dxdt, torch.Tensor):
            raise ValueError("z0 is a tensor and so X.derivative must return a tensor as well.")
        if not isinstance(vf, torch.Tensor):
            raise ValueError(f"z0 is a tensor and so {what} must return a tensor as well.")
        _check_one(dxdt, vf, z0, prod is not None)
        return
    if not isinstance(dxdt, (tuple, list)):
        raise ValueError("z0 is a tuple/list and so X.derivative must return a tuple/list as well.")
    if len(z0) != len(dxdt):
        raise ValueError("z0 and X.derivative(t) must be tuples of the same length.")
    if not isinstance(vf, (tuple, list)):
        raise ValueError(f"z0 is a tuple/list and so {what} must return a tuple/list as well.")
    if len(z0) != len(vf):
        args = "(t, z, dXdt)" if prod is not None else "(t, z)"
        raise ValueError(f"z0 and {what}{args} must be tuples of the same length.")
    for dxdt_, vf_, z0_ in zip(dxdt, vf, z0):
        if not isinstance(dxdt_, torch.Tensor):
            raise ValueError("X.derivative must return a tensor or tuple of tensors.")
        if not isinstance(vf_, torch.Tensor):
            raise ValueError(f"{what} must return a tensor or tuple/list of tensors.")
        _check_one(dxdt_, vf_, z0_, prod is not None)


def _adjoint_params(func: Any, X: Any, adjoint_params: Any) -> list[torch.Tensor] | None:
    """``adjoint_params`` as given, else ``func``'s parameters (with torchcde's warning when
    the path's buffers need gradients that the adjoint would then not give them)."""
    if adjoint_params is not None:
        return list(adjoint_params)
    if not isinstance(func, torch.nn.Module):
        return None
    if isinstance(X, torch.nn.Module) and any(b.requires_grad for b in X.buffers()):
        warnings.warn(
            "One of the inputs to the control path X requires gradients but "
            "`kwargs['adjoint_params']` has not been passed; those inputs will not "
            "receive a gradient with the adjoint method. Pass "
            "adjoint_params=tuple(func.parameters()) + (coeffs,).",
            stacklevel=3,
        )
    return [p for p in func.parameters() if p.requires_grad]


def _interpolate(ys: Any, grid: torch.Tensor, t: torch.Tensor) -> Any:
    """Outputs at ``t`` linearly interpolated from the states at the (sorted) ``grid``, time
    first, as torchdiffeq's ``interp="linear"`` and torchsde's output times do."""
    g = grid.detach()
    j = (torch.searchsorted(g, t.detach(), right=True) - 1).clamp(0, max(g.numel() - 2, 0))
    if g.numel() == 1:
        return ys
    frac = (t - grid[j]) / (grid[j + 1] - grid[j])

    def one(y: torch.Tensor) -> torch.Tensor:
        f = frac.to(y.dtype).reshape(frac.shape + (1,) * (y.ndim - 1))
        return y[j] + f * (y[j + 1] - y[j])

    return tuple(one(y) for y in ys) if isinstance(ys, tuple) else one(ys)


def cdeint(
    X: Any,
    func: Callable[..., Any],
    z0: torch.Tensor | tuple[torch.Tensor, ...],
    t: torch.Tensor,
    adjoint: bool = True,
    backend: str = "torchdiffeq",
    **kwargs: Any,
) -> Any:
    r"""As ``torchcde.cdeint``: solves $z_t = z_{t_0} + \int f(s, z_s)\,dX_s$.

    Returns shape ``(..., len(t), hidden_channels)`` (time second to last, as torchcde), a
    tuple of those for a tuple ``z0`` (with a :class:`TupleControl`). ``t`` must lie in
    ``X.interval`` (a ``ValueError`` otherwise, where torchcde integrates on the control's
    extrapolation). ``func.prod(t, z, dXdt)`` is used when ``func`` has it.

    With ``backend="torchdiffeq"`` (default) the keyword arguments are torchdiffeq's
    ``odeint``/``odeint_adjoint``'s: ``method`` (``"dopri5"``), ``rtol`` (1e-4), ``atol``
    (1e-6), ``options`` (``step_size``, ``first_step``, ``max_num_steps``, ``step_t``,
    ``jump_t``, ``norm``, ``interp``), ``adjoint_params``, ``adjoint_rtol``,
    ``adjoint_atol``, ``adjoint_method``, ``adjoint_options`` (``norm="seminorm"``);
    ``adjoint=True`` is :class:`~torchnde.BacksolveAdjoint`.

    With ``backend="torchsde"`` they are torchsde's ``sdeint``/``sdeint_adjoint``'s, on the
    zero diffusion torchcde gives the SDE: ``method`` (``"midpoint"``, or ``"srk"`` when
    ``func.sde_type == "ito"``), ``dt`` (1e-3) with torchsde's grid ``t[0] + k dt`` and the
    outputs linearly interpolated between its points, ``adjoint_method`` and
    ``adjoint_params``. ``method="reversible_heun"`` with ``adjoint=True`` differentiates
    by :class:`~torchnde.ReversibleAdjoint` (``adjoint_method="adjoint_reversible_heun"``,
    the default for it there): exact gradients of the computed solution in O(1) memory.
    """
    if backend not in ("torchdiffeq", "torchsde"):
        raise ValueError(f"Unrecognised backend={backend}")
    if not callable(getattr(X, "derivative", None)):
        raise ValueError("X must have a 'derivative' method.")
    if isinstance(z0, list):
        z0 = tuple(z0)
    parts = z0 if isinstance(z0, tuple) else (z0,)
    if not parts or not all(isinstance(p, torch.Tensor) for p in parts):
        raise ValueError("z0 must either a tensor or a tuple/list of tensors.")
    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(t, dtype=parts[0].dtype)
    if t.ndim != 1:
        raise ValueError(f"t must be one dimensional. It instead has shape {tuple(t.shape)}.")
    _check_within_interval(X, t)
    with torch.no_grad():
        _check(X, func, z0, t[0].detach())

    prod = getattr(func, "prod", None)
    tuple_state = isinstance(z0, tuple)

    def field(tt: torch.Tensor, z: Any, args: Any) -> Any:
        dxdt = X.derivative(tt)
        if prod is not None:
            return prod(tt, z, dxdt)
        vf = func(tt, z)
        if tuple_state:
            return tuple((v @ d.unsqueeze(-1)).squeeze(-1) for v, d in zip(vf, dxdt))
        return (vf @ dxdt.unsqueeze(-1)).squeeze(-1)

    run = _torchsde if backend == "torchsde" else _torchdiffeq
    ys = run(ODETerm(field), func, X, z0, t, adjoint, dict(kwargs))
    if tuple_state:
        return tuple(y.movedim(0, -2) for y in ys)
    return ys.movedim(0, -2)


def _torchdiffeq(
    term: ODETerm, func: Any, X: Any, z0: Any, t: torch.Tensor, adjoint: bool, kwargs: dict
) -> Any:
    """The solve as torchdiffeq's ``odeint``/``odeint_adjoint`` would make it; time first."""
    method = kwargs.pop("method", "dopri5")
    rtol = kwargs.pop("rtol", 1e-4)
    atol = kwargs.pop("atol", 1e-6)
    options = dict(kwargs.pop("options", None) or {})
    adjoint_params = kwargs.pop("adjoint_params", None)
    adjoint_rtol = kwargs.pop("adjoint_rtol", rtol)
    adjoint_atol = kwargs.pop("adjoint_atol", atol)
    adjoint_method = kwargs.pop("adjoint_method", None)
    adjoint_options = dict(kwargs.pop("adjoint_options", None) or {})
    if kwargs:
        raise _unsupported(f"keyword argument(s) {sorted(kwargs)}", "not an odeint option.")
    unknown = set(options) - _OPTIONS
    if unknown:
        raise _unsupported(f"options {sorted(unknown)}", f"supported: {sorted(_OPTIONS)}.")
    if set(adjoint_options) - _ADJOINT_OPTIONS:
        bad = sorted(set(adjoint_options) - _ADJOINT_OPTIONS)
        raise _unsupported(f"adjoint_options {bad}", "supported: ['norm'].")
    if method not in METHODS:
        raise ValueError(f'Invalid method "{method}". Must be one of {sorted(METHODS)}')
    solver = METHODS[_FIXED_SOLVERS.get(method, method)]()
    if not solver.is_adaptive:
        ignored = sorted(k for k in options if k not in _FIXED_OPTIONS)
        if ignored:
            warnings.warn(f"{method}: Unexpected arguments {ignored}", stacklevel=3)
            options = {k: v for k, v in options.items() if k in _FIXED_OPTIONS}
    interp = options.get("interp", "linear")
    if interp not in ("linear", "cubic"):
        raise ValueError(f'interp must be "linear" or "cubic", got {interp!r}')

    grid: dict[str, Any] = {"step_ts": options.get("step_t"), "jump_ts": options.get("jump_t")}
    norm = options.get("norm")
    save_ts = t
    fixed_grid = None
    if solver.is_adaptive:
        if "step_size" in options:
            raise ValueError(f"option `step_size` is for fixed-step methods, not {method!r}.")
        controller: Any = _ConstantStepSizesPID(rtol=rtol, atol=atol, norm=norm, **grid)
        dt0 = options.get("first_step")
    else:
        dt0 = options.get("step_size")
        if dt0 is None:
            grid["step_ts"] = t  # torchdiffeq steps from one output time to the next
            dt0 = float((t[-1] - t[0]).detach().abs()) or 1.0
        elif interp == "linear":
            # torchdiffeq's grid t0 + k·step_size (the last point moved to t[-1]); outputs
            # between grid points are linear interpolations of the grid values.
            n = int(torch.ceil((t[-1] - t[0]) / dt0 + 1).item())
            fixed_grid = torch.arange(0, n, dtype=t.dtype, device=t.device) * dt0 + t[0]
            fixed_grid[-1] = t[-1]
            grid["step_ts"] = save_ts = fixed_grid
        controller = ConstantStepSize(**grid)
    adj: Any = DirectAdjoint()
    if adjoint:
        adj_solver = None if adjoint_method is None else METHODS[adjoint_method]()
        seminorm = adjoint_options.get("norm") == "seminorm"
        adj_controller = None
        if (adj_solver or solver).is_adaptive and (adjoint_rtol, adjoint_atol) != (rtol, atol):
            adj_controller = PIDController(rtol=adjoint_rtol, atol=adjoint_atol, **grid)
        adj = BacksolveAdjoint(
            solver=adj_solver,
            controller=adj_controller,
            seminorm=seminorm,
            params=_adjoint_params(func, X, adjoint_params),
            dt0=dt0 if not (adj_solver or solver).is_adaptive else None,
        )
    sol = solve(
        term,
        solver,
        t[0],
        t[-1],
        z0,
        dt0=dt0,
        saveat=SaveAt(ts=save_ts),
        controller=controller,
        adjoint=adj,
        max_steps=int(options.get("max_num_steps", 2**31 - 1)),
    )
    if fixed_grid is not None:
        return _interpolate(sol.ys, fixed_grid, t)
    return sol.ys


def _torchsde(
    term: ODETerm, func: Any, X: Any, z0: Any, t: torch.Tensor, adjoint: bool, kwargs: dict
) -> Any:
    """The solve as torchsde's ``sdeint``/``sdeint_adjoint`` would make it, on the zero
    diffusion of torchcde's SDE (so Brownian motion plays no part); time first."""
    allowed = _SDE_KWARGS | {"method"} | (_SDE_ADJOINT_KWARGS if adjoint else set())
    unused = {k: kwargs.pop(k) for k in sorted(set(kwargs) - allowed)}
    if unused:  # torchsde warns about them, and goes on
        warnings.warn(f"sdeint: Unexpected arguments {unused}", stacklevel=3)
    sde_type = getattr(func, "sde_type", "stratonovich")
    method = kwargs.pop("method", None) or ("srk" if sde_type == "ito" else "midpoint")
    if method not in _SDE_METHODS:
        raise _unsupported(
            f"backend='torchsde' with method={method!r}",
            f"supported: {sorted(_SDE_METHODS)} (on a CDE they reduce to ODE methods).",
        )
    make_solver, sde_types = _SDE_METHODS[method]
    if sde_type not in sde_types:
        raise ValueError(f"SDE is of type {sde_type} but solver is for type {sde_types[0]}")
    if kwargs.pop("adaptive", False) or kwargs.pop("adjoint_adaptive", False):
        raise _unsupported("adaptive=True with backend='torchsde'", "use backend='torchdiffeq'.")
    if kwargs.pop("options", None) or kwargs.pop("adjoint_options", None):
        raise _unsupported("torchsde `options`", "the SDE solvers' options do not apply to a CDE.")
    if kwargs.pop("bm", None) is None:
        # torchsde makes its Brownian motion (unused: the diffusion is zero) with entropy from
        # NumPy's global generator: draw as it does, so NumPy's stream goes on the same.
        _entropy(None)
    dt = kwargs.pop("dt", 1e-3)
    if isinstance(dt, torch.Tensor):
        dt = float(dt)
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not dt > 0:
        raise ValueError(f"cdeint: `dt` must be a positive number, got {dt!r}.")
    if bool((t[1:] <= t[:-1]).any()):
        raise ValueError("Evaluation times `ts` must be strictly increasing.")
    grid = _torchsde_grid(t, dt)
    # the grid points that outputs need: the ends of the step each output time falls in
    k = (torch.searchsorted(grid, t.detach(), right=True) - 1).clamp(0, grid.numel() - 1)
    needed = torch.unique(torch.cat([k, (k + 1).clamp(max=grid.numel() - 1)]))
    save = grid[needed]
    if save.numel() > 1:  # the ends as given (a gradient for t[0] and t[-1])
        save = torch.cat([t[:1], save[1:-1], t[-1:]])
    solver = make_solver()
    adjoint_method = kwargs.pop("adjoint_method", None)
    params = _adjoint_params(func, X, kwargs.pop("adjoint_params", None)) if adjoint else None
    adj: Any = DirectAdjoint()
    if adjoint:
        if method == "reversible_heun" and adjoint_method in (None, "adjoint_reversible_heun"):
            adj = ReversibleAdjoint(params=params)
        elif adjoint_method == "adjoint_reversible_heun":
            raise ValueError(
                "cdeint: adjoint_method='adjoint_reversible_heun' needs "
                f"method='reversible_heun', got {method!r}."
            )
        else:
            if method == "reversible_heun":
                warnings.warn(
                    "method='reversible_heun', but adjoint_method!='adjoint_reversible_heun'.",
                    stacklevel=3,
                )
            name = method if adjoint_method is None else adjoint_method
            if name not in _SDE_METHODS:
                raise _unsupported(
                    f"adjoint_method={name!r}", f"supported: {sorted(_SDE_METHODS)}."
                )
            adj = BacksolveAdjoint(solver=_SDE_METHODS[name][0](), params=params, dt0=dt)
    # dt0 spans the interval, so every step is cut at the next grid point: torchsde's steps
    sol = solve(
        term,
        solver,
        t[0],
        t[-1],
        z0,
        dt0=float(grid[-1] - grid[0]) or dt,
        saveat=SaveAt(ts=save),
        controller=ConstantStepSize(step_ts=grid),
        adjoint=adj,
        max_steps=2**31 - 1,
    )
    return _interpolate(sol.ys, save, t)


def _torchsde_grid(t: torch.Tensor, dt: float) -> torch.Tensor:
    """torchsde's step ends: ``t[0]``, then ``curr + dt`` accumulated in the dtype of ``t``
    (rounding included, as its loop adds) while below ``t[-1]``, then ``t[-1]``."""
    t0, t1 = t[0].detach().cpu(), t[-1].detach().cpu()
    steps = max(math.ceil(float(t1 - t0) / dt), 0) + 1
    dtype = t0.numpy().dtype
    acc = np.cumsum(np.concatenate([t0.numpy().reshape(1), np.full(steps, dt, dtype)]), dtype=dtype)
    points = torch.from_numpy(acc[acc < t1.numpy()])
    return torch.cat([points, t1.reshape(1)]).to(t.device)


# ------------------------------------------------------------------- signatures (Signatory)
def signature_channels(channels: int, depth: int, scalar_term: bool = False) -> int:
    """As ``signatory.signature_channels``."""
    return _lyndon.signature_channels(channels, depth) + int(bool(scalar_term))


def logsignature_channels(in_channels: int, depth: int) -> int:
    """As ``signatory.logsignature_channels``: Witt's formula."""
    return _lyndon.logsignature_channels(in_channels, depth)


def signature(
    path: torch.Tensor,
    depth: int,
    stream: bool = False,
    basepoint: bool | torch.Tensor = False,
    inverse: bool = False,
    initial: torch.Tensor | None = None,
    scalar_term: bool = False,
) -> torch.Tensor:
    """As ``signatory.signature`` (``path`` of shape ``(batch, length, channels)``)."""
    if initial is not None:
        raise NotImplementedError("signature: `initial` is not supported; concatenate paths.")
    if inverse:
        if stream:
            raise NotImplementedError("signature: `inverse=True` with `stream=True`.")
        if basepoint is not False and basepoint is not None:
            base = torch.zeros_like(path[..., :1, :]) if basepoint is True else basepoint
            base = torch.as_tensor(base, dtype=path.dtype).expand_as(path[..., 0, :])
            path = torch.cat([base.unsqueeze(-2), path], dim=-2)
        out = _signature(path.flip(-2), depth)
    else:
        out = _signature(path, depth, stream=stream, basepoint=basepoint)
    if scalar_term:
        out = torch.cat([torch.ones_like(out[..., :1]), out], dim=-1)
    return out


def logsignature(
    path: torch.Tensor,
    depth: int,
    stream: bool = False,
    basepoint: bool | torch.Tensor = False,
    inverse: bool = False,
    mode: str = "words",
) -> torch.Tensor:
    """As ``signatory.logsignature`` with ``mode`` ``"words"``, ``"brackets"`` or
    ``"expand"``."""
    if inverse:
        if stream:
            raise NotImplementedError("logsignature: `inverse=True` with `stream=True`.")
        return -_logsignature(path, depth, basepoint=basepoint, mode=mode)
    return _logsignature(path, depth, stream=stream, basepoint=basepoint, mode=mode)


# ------------------------------------------------------------------------------ log-ODE
def logsig_windows(
    x: torch.Tensor, depth: int, window_length: float, t: torch.Tensor | None = None
) -> torch.Tensor:
    """As ``torchcde.logsig_windows``: ``(..., windows + 1, logsignature_channels)``, for
    interpolation on times ``0, 1, ..., windows``."""
    t = _validate(x, t)
    return _logsig_windows(x, depth, float(window_length), t)


def logsignature_windows(
    x: torch.Tensor, depth: int, window_length: float, t: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """As ``torchcde.logsignature_windows`` (deprecated there): each window's log-signature
    scaled by the window's length; returns ``(values, window times)``."""
    t = _validate(x, t)
    out = _logsig_windows(x, depth, float(window_length), t)
    timespan = t[-1] - t[0]
    num = int((timespan / window_length).ceil().item())
    new_t = torch.linspace(
        float(t[0]), float(t[0] + num * window_length), num + 1, dtype=t.dtype, device=t.device
    )
    new_t = torch.min(new_t, t.max())
    steps = out.diff(dim=-2) * new_t.diff().unsqueeze(-1)
    return torch.cat([out[..., :1, :], steps], dim=-2).cumsum(dim=-2), new_t
