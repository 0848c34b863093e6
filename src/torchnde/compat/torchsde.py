r"""torchsde's API on torchnde: ``sdeint``, ``sdeint_adjoint`` and the Brownian motions.

Migrating is one import line::

    # import torchsde
    from torchnde.compat import torchsde

    ys = torchsde.sdeint(sde, y0, ts, method="srk", dt=1e-2)

The SDE protocol is torchsde's: an object (usually an ``nn.Module``) with attributes
``noise_type`` (``"diagonal"``, ``"scalar"``, ``"additive"``, ``"general"``) and ``sde_type``
(``"ito"``, ``"stratonovich"``), and methods ``f(t, y)`` (drift) and ``g(t, y)`` (diffusion:
``(batch, d)`` for diagonal noise, ``(batch, d, m)`` otherwise, ``(batch, d, 1)`` for scalar
noise), or ``f_and_g(t, y)``; ``h(t, y)`` (the prior drift) for ``logqp=True``. ``names``
renames them as in torchsde. Method names and defaults (``method`` by SDE type and noise,
``dt=1e-3``, ``rtol=1e-5``, ``atol=1e-4``), the contract checks (``ValueError`` for an
unknown method, a method of the other SDE type, Milstein / SRK with general noise, sizes of
the diffusion, of ``bm`` and of ``y0`` that do not match, times not strictly increasing)
and the outputs are torchsde's: ``ys`` of shape ``(len(ts), batch, d)``; with
``logqp=True`` also the log-ratio increments ``(len(ts) - 1, batch)``, computed as torchsde
does, by augmenting the state with $\int \frac12 |u|^2 dt$, $u = g^{+}(f - h)$ (so for
diagonal noise a given ``bm`` has ``d + 1`` channels). The Brownian motions are torchsde's
classes on torchnde's (see :mod:`torchnde.compat._torchsde_brownian`).

Not supported (``NotImplementedError`` naming the option): SDEs that only provide
``g_prod`` (a diffusion-vector product without ``g``), ``extra=True`` /
``extra_solver_state``, a ``dt_min`` other than the default (torchnde's adaptive solves
report step-size underflow instead of forcing ``dt_min`` steps), ``adjoint_adaptive=True``,
``adjoint_options``, ``options`` other than ``grad_free``, ``bm=ReverseBrownian(...)``, and
the Itô stochastic adjoint with general noise (write the SDE in Stratonovich form).
``adjoint_method`` selects nothing: the backward solve is torchnde's
(:class:`~torchnde.BacksolveAdjoint`). With ``adaptive=True`` the steps come from a
``PIDController(rtol, atol)`` on step-doubling error estimates (``heun``: its embedded one).
"""

from __future__ import annotations

import typing
import warnings
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import torch

from .._adjoint import BacksolveAdjoint, DirectAdjoint, ReversibleAdjoint
from .._brownian import AbstractBrownianPath, BrownianIncrement
from .._core.solvers.sde_midpoint import SDEMidpoint
from .._core.terms import NOISE_TYPES, AbstractPath
from .._sdeint import LastCall as _LastCall
from .._sdeint import sde_solver_from_name
from .._sdeint import sdeint as _sdeint
from ._torchsde_brownian import (
    BaseBrownian,
    BrownianInterval,
    BrownianPath,
    BrownianTree,
    ReverseBrownian,
    _entropy,
)

__all__ = [
    "BaseBrownian",
    "BaseSDE",
    "BrownianInterval",
    "BrownianPath",
    "BrownianTree",
    "ReverseBrownian",
    "SDEIto",
    "SDEStratonovich",
    "brownian_interval_like",
    "sdeint",
    "sdeint_adjoint",
    "settings",
    "types",
]

_METHODS = {
    "euler": "euler",
    "milstein": "milstein",
    "srk": "srk",
    "midpoint": "midpoint",
    "reversible_heun": "reversible_heun",
    "heun": "heun",
    "euler_heun": "euler_heun",
    "log_ode": "log_ode",
}
_CALCULUS = {
    "ito": ("euler", "milstein", "srk"),
    "stratonovich": ("midpoint", "heun", "euler_heun", "reversible_heun", "milstein", "log_ode"),
}


class _Names:
    """A torchsde ``settings`` enumeration: attributes and iteration over the names."""

    def __init__(self, **names: str) -> None:
        self.__dict__.update(names)

    def __iter__(self) -> Any:
        return iter(self.__dict__.values())

    def __contains__(self, item: object) -> bool:
        return item in self.__dict__.values()


settings = SimpleNamespace(
    SDE_TYPES=_Names(ito="ito", stratonovich="stratonovich"),
    NOISE_TYPES=_Names(
        general="general", diagonal="diagonal", scalar="scalar", additive="additive"
    ),
    METHODS=_Names(
        euler="euler",
        milstein="milstein",
        srk="srk",
        midpoint="midpoint",
        reversible_heun="reversible_heun",
        adjoint_reversible_heun="adjoint_reversible_heun",
        heun="heun",
        log_ode_midpoint="log_ode",
        euler_heun="euler_heun",
    ),  # fmt: skip
    LEVY_AREA_APPROXIMATIONS=_Names(
        none="none", space_time="space-time", davie="davie", foster="foster"
    ),
)
"""torchsde's ``torchsde.settings`` constants (``METHODS``, ``NOISE_TYPES``, ``SDE_TYPES``,
``LEVY_AREA_APPROXIMATIONS``)."""


types = SimpleNamespace(
    Any=typing.Any, Callable=typing.Callable, Dict=dict, Optional=typing.Optional,
    Sequence=Sequence, Tuple=tuple, Union=typing.Union, Tensor=torch.Tensor,
    Tensors=Sequence[torch.Tensor], TensorOrTensors=torch.Tensor | Sequence[torch.Tensor],
    Scalar=float | torch.Tensor, Vector=Sequence[float] | torch.Tensor,
    Module=torch.nn.Module, Modules=Sequence[torch.nn.Module],
    ModuleOrModules=torch.nn.Module | Sequence[torch.nn.Module],
    Size=torch.Size, Sizes=Sequence[torch.Size],
)  # fmt: skip
"""torchsde's ``torchsde.types``: the type aliases of its annotations."""


class BaseSDE(torch.nn.Module):
    """torchsde's ``BaseSDE(noise_type, sde_type)``: an ``nn.Module`` carrying the two
    attributes the SDE protocol reads."""

    def __init__(self, noise_type: str, sde_type: str) -> None:
        super().__init__()
        if noise_type not in NOISE_TYPES:
            raise ValueError(
                f"Expected noise type in {list(NOISE_TYPES)}, but found {noise_type!r}."
            )
        if sde_type not in ("ito", "stratonovich"):
            raise ValueError(
                f"Expected sde type in ['ito', 'stratonovich'], but found {sde_type!r}."
            )
        self.noise_type = noise_type
        self.sde_type = sde_type


class SDEIto(BaseSDE):
    """torchsde's ``SDEIto(noise_type)``."""

    def __init__(self, noise_type: str) -> None:
        super().__init__(noise_type=noise_type, sde_type="ito")


class SDEStratonovich(BaseSDE):
    """torchsde's ``SDEStratonovich(noise_type)``."""

    def __init__(self, noise_type: str) -> None:
        super().__init__(noise_type=noise_type, sde_type="stratonovich")


def brownian_interval_like(
    y: torch.Tensor,
    t0: Any = 0.0,
    t1: Any = 1.0,
    size: Sequence[int] | None = None,
    dtype: torch.dtype | None = None,
    device: Any = None,
    **kwargs: Any,
) -> BrownianInterval:
    """torchsde's ``brownian_interval_like(y, t0, t1, size, dtype, device, **kwargs)``: a
    :class:`BrownianInterval` with the shape, dtype and device of ``y`` unless given."""
    return BrownianInterval(
        t0, t1, size=y.shape if size is None else size, dtype=y.dtype if dtype is None else dtype,
        device=y.device if device is None else device, **kwargs,
    )  # fmt: skip


def _functions(sde: Any, names: dict[str, str] | None, logqp: bool) -> tuple:
    names = dict(names or {})
    unknown = set(names) - {
        "drift", "diffusion", "prior_drift", "drift_and_diffusion", "drift_and_diffusion_prod",
    }  # fmt: skip
    if unknown:
        raise ValueError(f"sdeint: unknown keys in `names`: {sorted(unknown)}.")
    f = getattr(sde, names.get("drift", "f"), None)
    g = getattr(sde, names.get("diffusion", "g"), None)
    fg = getattr(sde, names.get("drift_and_diffusion", "f_and_g"), None)
    if f is None and fg is not None:
        f = lambda t, y: fg(t, y)[0]
    if g is None and fg is not None:
        g = lambda t, y: fg(t, y)[1]
    if f is None or g is None:
        prod = names.get("drift_and_diffusion_prod", "f_and_g_prod")
        if hasattr(sde, "g_prod") or hasattr(sde, prod):
            raise NotImplementedError(
                f"sdeint: SDEs given by a diffusion-vector product only (`g_prod`, `{prod}`) "
                "are not supported; define `g` (or `f_and_g`) as well."
            )
        raise ValueError(  # torchsde's error type
            "sdeint: `sde` must define `f` and `g`, or `f_and_g` (after renaming by `names`)."
        )
    h = None
    if logqp:
        h = getattr(sde, names.get("prior_drift", "h"), None)
        if h is None:
            raise AttributeError(  # torchsde's error type
                "sdeint: logqp=True needs the prior drift `h(t, y)` on the SDE (or rename it "
                "with names={'prior_drift': ...})."
            )
    return f, g, h


def _solve(
    sde: Any, y0: torch.Tensor, ts: Any, bm: Any, method: str | None, dt: float,
    adaptive: bool, rtol: float, atol: float, options: dict | None, names: dict | None,
    logqp: bool, extra: bool, extra_solver_state: Any, adjoint: Any, who: str, dt_min: float,
) -> Any:  # fmt: skip
    if extra or extra_solver_state is not None:
        raise NotImplementedError(f"{who}: `extra` / `extra_solver_state` are not supported.")
    if dt_min != 1e-5:
        raise NotImplementedError(
            f"{who}: `dt_min` is not supported (got {dt_min}); torchnde's adaptive solves stop "
            "with a step-size underflow status instead of forcing steps of dt_min."
        )
    if isinstance(bm, ReverseBrownian):
        raise NotImplementedError(
            f"{who}: bm=ReverseBrownian(...) is not supported; solve forwards in time (torchnde "
            "runs reverse-time solves on the forward Brownian motion itself)."
        )
    noise = getattr(sde, "noise_type", None)
    calculus = getattr(sde, "sde_type", None)
    if noise not in NOISE_TYPES:
        raise ValueError(
            f"{who}: `sde.noise_type` must be one of {list(NOISE_TYPES)}, got {noise!r}."
        )
    if calculus not in ("ito", "stratonovich"):
        raise ValueError(
            f"{who}: `sde.sde_type` must be 'ito' or 'stratonovich', got {calculus!r}."
        )
    if not isinstance(y0, torch.Tensor) or y0.dim() != 2:
        raise ValueError(f"{who}: `y0` must be a 2-dimensional tensor of shape (batch, channels).")
    if not isinstance(ts, torch.Tensor):
        if not isinstance(ts, tuple | list) or not all(isinstance(t, float | int) for t in ts):
            raise ValueError(
                f"{who}: evaluation times `ts` must be a 1-D Tensor or list/tuple of floats."
            )
        ts = torch.tensor(ts, dtype=y0.dtype, device=y0.device)
    if ts.dim() != 1 or not bool((ts[1:] > ts[:-1]).all()):
        raise ValueError(f"{who}: evaluation times `ts` must be strictly increasing.")
    options = dict(options or {})
    grad_free = bool(options.pop("grad_free", False))
    if options:
        raise NotImplementedError(f"{who}: unsupported `options` {sorted(options)}.")
    if method is None:  # torchsde's defaults
        method = (
            "midpoint" if calculus == "stratonovich" else "euler" if noise == "general" else "srk"
        )
    if method not in _METHODS:
        raise ValueError(f"{who}: `method` must be one of {sorted(_METHODS)}, got {method!r}.")
    f, g, h = _functions(sde, names, logqp)
    if logqp:
        f, g = _logqp(f, g, h, noise)
        y0 = torch.cat([y0, y0.new_zeros(y0.shape[0], 1)], dim=1)
    _check_sizes(who, g, ts, y0, bm, noise)
    # torchsde warns at the end of its contract checks, before its solver checks the method
    # against the SDE type (which may then raise).
    if adaptive and method == "euler" and noise != "additive":
        warnings.warn(
            "Numerical solution is not guaranteed to converge to the correct solution when using "
            "adaptive time-stepping with the Euler--Maruyama method with non-additive noise.",
            stacklevel=3,
        )
    if method not in _CALCULUS[calculus]:
        other = "stratonovich" if calculus == "ito" else "ito"
        raise ValueError(
            f"{who}: SDE is of type {calculus} but solver {method!r} is for type {other}."
        )
    if method in ("milstein", "srk") and noise == "general":
        raise ValueError(
            f"{who}: SDE has noise type general but solver {method!r} only supports noise types "
            "('additive', 'diagonal', 'scalar')."
        )
    if bm is not None and not isinstance(bm, AbstractBrownianPath):
        bm = _TorchsdeBrownian(bm)  # torchsde's own Brownian motions (bm(ta, tb, return_U=))
    levy = None if bm is None else getattr(bm, "levy_area_approximation", None)
    needs = {"srk": ("space-time", "davie", "foster"), "log_ode": ("davie", "foster")}
    if method in needs and bm is not None and levy not in needs[method]:
        raise ValueError(
            f"{who}: SDE solver requires one of {needs[method]} set as the "
            f"`levy_area_approximation` on the Brownian motion; `bm` has {levy!r}."
        )
    if noise == "scalar":
        g_user = g

        def g(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # (batch, d, 1) -> (batch, d)
            out = g_user(t, y)
            return out.squeeze(-1) if out.ndim == y.ndim + 1 else out

    name = "milstein_derivative_free" if method == "milstein" and grad_free else method
    solver: Any = sde_solver_from_name(name, noise, calculus)
    if adaptive and method == "midpoint":  # the same steps, with a step-doubling error estimate
        solver = SDEMidpoint(adaptive=True)
    # torchsde's default Brownian motion draws its entropy from NumPy's global generator, so
    # a solve leaves torch's global stream (model initialisations, randn, shuffles) alone.
    seed = _entropy(None) if bm is None else None
    try:
        ys = _sdeint(
            f, g, y0, ts, noise=noise, calculus=calculus, method=solver, dt=dt, bm=bm,
            adjoint=adjoint, adaptive=adaptive, rtol=rtol, atol=atol, seed=seed,
        )  # fmt: skip
    except ValueError as e:
        if "needs an error estimate" in str(e):
            raise NotImplementedError(
                f"{who}: adaptive=True with method={method!r} is not supported (torchsde "
                "estimates the error by step doubling; torchnde's method has no error "
                "estimate). Use 'heun', 'euler_heun' or 'milstein', or a fixed dt."
            ) from None
        raise
    if logqp:
        ys, log_ratio = ys[..., :-1], ys[..., -1]
        return ys, log_ratio[1:] - log_ratio[:-1]
    return ys


class _TorchsdeBrownian(AbstractPath):
    """A Brownian motion of torchsde itself (or any object called the torchsde way,
    ``bm(ta, tb, return_U=..., return_A=...)``) for torchnde's solvers, which ask for
    ``bm(ta, tb, return_levy_area=True)``: the space-time Lévy area is
    $H = U / h - W / 2$ from torchsde's $U = \\int_{t_a}^{t_b} (W_s - W_{t_a})\\,ds$."""

    def __init__(self, bm: Any) -> None:
        self.bm = bm
        self.shape = tuple(bm.shape)
        self.levy_area_approximation = getattr(bm, "levy_area_approximation", "none")

    def evaluate(self, t0: torch.Tensor, t1: torch.Tensor | None = None) -> torch.Tensor:
        return self.bm(t0, t1)

    def __call__(self, ta: Any, tb: Any = None, *, return_levy_area: bool = False) -> Any:
        if not return_levy_area:
            return self.bm(ta, tb)
        levy = self.levy_area_approximation
        if levy == "none":
            raise ValueError(
                "this solver needs the space-time Lévy area, but `bm` was built with "
                "levy_area_approximation='none'; build it with 'space-time', 'davie' or 'foster'."
            )
        A = None
        if levy in ("davie", "foster"):
            W, U, A = self.bm(ta, tb, return_U=True, return_A=True)
        else:
            W, U = self.bm(ta, tb, return_U=True)
        h = tb - ta
        return BrownianIncrement(W, U / h - 0.5 * W, A)

    def __repr__(self) -> str:
        return repr(self.bm)


def _stable_division(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    b = torch.where(b.abs().detach() > eps, b, torch.full_like(b, eps) * b.sign())
    return a / b


def _logqp(f: Any, g: Any, h: Any, noise: str) -> tuple[Any, Any]:
    """torchsde's ``logqp``: the state augmented with the log-ratio
    $\\int \frac12 |u|^2 dt$, $u = g^{+}(f - h)$, driven by no noise (a zero diffusion row;
    for diagonal noise one more Brownian channel, as in torchsde)."""

    def u2(t: torch.Tensor, y: torch.Tensor, fy: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
        if noise == "diagonal":
            u = _stable_division(fy - h(t, y), gy)
        else:
            u = torch.linalg.pinv(gy).matmul((fy - h(t, y)).unsqueeze(-1)).squeeze(-1)
        return 0.5 * (u**2).sum(dim=1, keepdim=True)

    g_last = _LastCall(lambda t, ya: g(t, ya[:, :-1]))

    def f_aug(t: torch.Tensor, ya: torch.Tensor) -> torch.Tensor:
        y = ya[:, :-1]
        fy = f(t, y)
        return torch.cat([fy, u2(t, y, fy, g_last(t, ya))], dim=1)

    def g_aug(t: torch.Tensor, ya: torch.Tensor) -> torch.Tensor:
        gy = g_last(t, ya)
        if noise == "diagonal":
            return torch.cat([gy, gy.new_zeros(gy.shape[0], 1)], dim=1)
        return torch.cat([gy, gy.new_zeros(gy.shape[0], 1, gy.shape[-1])], dim=1)

    return f_aug, g_aug


def _check_sizes(who: str, g: Any, ts: torch.Tensor, y0: torch.Tensor, bm: Any, noise: str) -> None:
    """torchsde's contract on the sizes of the diffusion and the Brownian motion."""
    with torch.no_grad():
        gy = g(ts[0], y0)
    if noise == "diagonal" and gy.dim() != 2:
        raise ValueError(
            f"{who}: the diffusion must be of shape (batch, state_channels) for diagonal noise, "
            f"but got {tuple(gy.shape)}."
        )
    if noise != "diagonal" and gy.dim() != 3:
        raise ValueError(
            f"{who}: the diffusion must be of shape (batch, state_channels, noise_channels) for "
            f"{noise} noise, but got {tuple(gy.shape)}."
        )
    m = gy.shape[1] if noise == "diagonal" else gy.shape[2]
    if tuple(gy.shape[:2]) != tuple(y0.shape):
        raise ValueError(
            f"{who}: the diffusion's (batch, state) sizes {tuple(gy.shape[:2])} do not match "
            f"`y0`'s {tuple(y0.shape)}."
        )
    if noise == "scalar" and m != 1:
        raise ValueError(
            f"{who}: scalar noise must have only one channel; the diffusion has {m} noise channels."
        )
    if bm is not None:
        shape = tuple(getattr(bm, "shape", ()))
        if len(shape) != 2:
            raise ValueError(f"{who}: `bm` must be of shape (batch, noise_channels), got {shape}.")
        if shape != (y0.shape[0], m):
            raise ValueError(
                f"{who}: `bm` has shape {shape} but (batch, noise_channels) = "
                f"{(y0.shape[0], m)}: batch or noise sizes not consistent."
            )


def sdeint(
    sde: Any,
    y0: torch.Tensor,
    ts: Any,
    bm: Any = None,
    method: str | None = None,
    dt: float = 1e-3,
    adaptive: bool = False,
    rtol: float = 1e-5,
    atol: float = 1e-4,
    dt_min: float = 1e-5,
    options: dict[str, Any] | None = None,
    names: dict[str, str] | None = None,
    logqp: bool = False,
    extra: bool = False,
    extra_solver_state: Any = None,
    **unused_kwargs: Any,
) -> Any:
    """torchsde's ``sdeint``: solve ``sde`` from ``y0`` at ``ts[0]`` and return the states at
    ``ts``, shape ``(len(ts), batch, d)`` (time first); with ``logqp=True`` also the KL
    increments ``(len(ts) - 1, batch)``. Gradients by backpropagation through the solver."""
    if unused_kwargs:
        raise ValueError(f"sdeint: unexpected arguments {sorted(unused_kwargs)}.")
    return _solve(
        sde, y0, ts, bm, method, dt, adaptive, rtol, atol, options, names, logqp, extra,
        extra_solver_state, DirectAdjoint(), "sdeint", dt_min,
    )  # fmt: skip


def sdeint_adjoint(
    sde: Any,
    y0: torch.Tensor,
    ts: Any,
    bm: Any = None,
    method: str | None = None,
    adjoint_method: str | None = None,
    dt: float = 1e-3,
    adaptive: bool = False,
    adjoint_adaptive: bool = False,
    rtol: float = 1e-5,
    atol: float = 1e-4,
    adjoint_rtol: float = 1e-5,
    adjoint_atol: float = 1e-4,
    dt_min: float = 1e-5,
    options: dict[str, Any] | None = None,
    adjoint_options: dict[str, Any] | None = None,
    adjoint_params: Sequence[torch.Tensor] | None = None,
    names: dict[str, str] | None = None,
    logqp: bool = False,
    extra: bool = False,
    extra_solver_state: Any = None,
    **unused_kwargs: Any,
) -> Any:
    """torchsde's ``sdeint_adjoint``: as :func:`sdeint`, with gradients by the stochastic
    adjoint (:class:`~torchnde.BacksolveAdjoint`: the adjoint SDE solved backwards on the same
    Brownian path), or, for ``method="reversible_heun"`` with
    ``adjoint_method="adjoint_reversible_heun"``, by :class:`~torchnde.ReversibleAdjoint`
    (exact). ``adjoint_params`` defaults to ``sde.parameters()``. The backward solve uses the
    midpoint method on the forward steps: other ``adjoint_method`` names,
    ``adjoint_adaptive`` and the adjoint tolerances select nothing."""
    if unused_kwargs:
        raise ValueError(f"sdeint_adjoint: unexpected arguments {sorted(unused_kwargs)}.")
    if adjoint_options:
        raise NotImplementedError("sdeint_adjoint: `adjoint_options` are not supported.")
    if adjoint_adaptive:
        raise NotImplementedError(
            "sdeint_adjoint: adjoint_adaptive=True is not supported; the backward solve takes "
            "the forward steps."
        )
    params: list[torch.Tensor] | None
    if adjoint_params is None:
        params = list(sde.parameters()) if isinstance(sde, torch.nn.Module) else None
    else:
        params = list(adjoint_params)
    adjoint: Any
    if adjoint_method == "adjoint_reversible_heun":
        if method != "reversible_heun":
            raise ValueError(
                "sdeint_adjoint: adjoint_method='adjoint_reversible_heun' needs "
                f"method='reversible_heun', got {method!r}."
            )
        adjoint = ReversibleAdjoint(params=params)
    elif adjoint_method is None or adjoint_method in _METHODS:
        adjoint = BacksolveAdjoint(params=params)
    else:
        raise ValueError(
            f"sdeint_adjoint: `adjoint_method` must be None, 'adjoint_reversible_heun' or one of "
            f"{sorted(_METHODS)}, got {adjoint_method!r}."
        )
    return _solve(
        sde, y0, ts, bm, method, dt, adaptive, rtol, atol, options, names, logqp, extra,
        extra_solver_state, adjoint, "sdeint_adjoint", dt_min,
    )  # fmt: skip
