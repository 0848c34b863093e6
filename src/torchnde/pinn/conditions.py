r"""Conditions that hold exactly: the network's output is reparameterised so that every trial
solution satisfies the initial or boundary conditions by construction (Lagaris, Likas,
Fotiadis 1998; neurodiffeq's conventions, Chen et al. 2020).

A condition wraps a network $N$ (a module mapping the concatenated coordinates, shape
``(n, num_coords)``, to ``(n, 1)``) into a trial solution $\tilde u$:

- :class:`IVP`: $\tilde u(t) = u_0 + (1 - e^{-(t - t_0)}) N(t)$, or with a derivative
  condition $\tilde u(t) = u_0 + (t - t_0) u_0' + (1 - e^{-(t - t_0)})^2 N(t)$.
- :class:`DirichletBVP`: $u(t_0) = u_0$, $u(t_1) = u_1$ on an interval.
- :class:`DoubleEndedBVP1D`: a Dirichlet *or* Neumann condition at each end of an interval.
- :class:`DirichletBVP2D`: Dirichlet values on the four edges of a rectangle (transfinite
  interpolation plus $\tilde x(1 - \tilde x)\tilde y(1 - \tilde y) N$).
- :class:`IBVP1D`: space-time rectangle $[x_{\min}, x_{\max}] \times [t_{\min}, \infty)$ with an
  initial profile and a Dirichlet or Neumann condition at each end.
- :class:`NoCondition`, :class:`CustomCondition`: no constraint, or your own reparameterisation.

The constructions of the mixed and Neumann ends need the network at the end points (never its
derivative there). On an interval $[a, b]$ of length $L$, $s = (x - a)/L$ and
$N_a = N(a), N_b = N(b)$:

$$\begin{aligned}
\text{D-D:}\ & (1-s)\,v_a + s\,v_b + s(1-s)\,N(x)\\
\text{D-N:}\ & v_a + sL\,v_b + s(1-s)^2 N(x) + s(2-s)\,N_b\\
\text{N-D:}\ & v_b - rL\,v_a + r(1-r)^2 N(x) + r(2-r)\,N_a,\quad r = 1 - s\\
\text{N-N:}\ & sL\,v_a + \tfrac{s^2 L}{2}(v_b - v_a) + s^2(1-s)^2 N(x) + N_a
\end{aligned}$$

where $v$ is the value (Dirichlet) or the derivative $u'$ (Neumann) at that end; each line
meets both end conditions for every $N$ (differentiate at $s = 0$ and $s = 1$).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = [
    "BaseCondition",
    "CustomCondition",
    "DirichletBVP",
    "DirichletBVP2D",
    "DoubleEndedBVP1D",
    "IBVP1D",
    "IVP",
    "NoCondition",
]

BoundaryFn = Callable[[torch.Tensor], torch.Tensor]


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"`{name}` must be a finite number, got {value!r}.")
    return float(value)


def _interval(name_min: str, lo: Any, name_max: str, hi: Any) -> tuple[float, float]:
    a, b = _number(name_min, lo), _number(name_max, hi)
    if not b > a:
        raise ValueError(
            f"`{name_max}` must be greater than `{name_min}`, got {name_min}={a}, {name_max}={b}; "
            "swap them."
        )
    return a, b


def _callable(name: str, value: Any) -> Any:
    if value is not None and not callable(value):
        raise TypeError(
            f"`{name}` must be a function of the coordinate tensor (or None), got "
            f"{type(value).__name__}."
        )
    return value


def _one_of(side: str, val: Any, prime: Any) -> tuple[str, Any]:
    """The kind ('D' or 'N') and function of one end, from its ``*_val`` / ``*_prime``."""
    if (val is None) == (prime is None):
        raise ValueError(
            f"give exactly one of `{side}_val` (Dirichlet) and `{side}_prime` (Neumann), got "
            f"{'both' if val is not None else 'neither'}."
        )
    return ("D", val) if val is not None else ("N", prime)


def _ends(
    s: torch.Tensor,
    length: float,
    kind_a: str,
    va: torch.Tensor,
    kind_b: str,
    vb: torch.Tensor,
    n: torch.Tensor,
    na: Callable[[], torch.Tensor],
    nb: Callable[[], torch.Tensor],
) -> torch.Tensor:
    """The interval reparameterisation of the module docstring (``na``/``nb`` evaluate the
    network at the ends only where a construction needs them)."""
    if kind_a == "D" and kind_b == "D":
        return (1 - s) * va + s * vb + s * (1 - s) * n
    if kind_a == "D":
        return va + s * length * vb + s * (1 - s) ** 2 * n + s * (2 - s) * nb()
    if kind_b == "D":
        r = 1 - s
        return vb - r * length * va + r * (1 - r) ** 2 * n + r * (2 - r) * na()
    return s * length * va + 0.5 * s**2 * length * (vb - va) + s**2 * (1 - s) ** 2 * n + na()


class BaseCondition(abc.ABC):
    """A condition: turns a network into a trial solution that satisfies it exactly.

    Subclasses implement :meth:`enforce`. ``net`` maps the coordinates stacked as columns,
    shape ``(n, num_coords)``, to ``(n, 1)``; each coordinate is a column ``(n, 1)``.
    """

    @abc.abstractmethod
    def enforce(self, net: nn.Module, *coords: torch.Tensor) -> torch.Tensor:
        """The trial solution at ``coords`` (each ``(n, 1)``), shape ``(n, 1)``."""

    @staticmethod
    def _net(net: nn.Module, *coords: torch.Tensor) -> torch.Tensor:
        return net(torch.cat(coords, dim=1))


class NoCondition(BaseCondition):
    """No condition: the trial solution is the network itself."""

    def enforce(self, net: nn.Module, *coords: torch.Tensor) -> torch.Tensor:
        return self._net(net, *coords)


class CustomCondition(BaseCondition):
    """Your own reparameterisation: ``parameterize(net_output, *coords) -> trial solution``.

    Example (``u(0) = 1`` by a quadratic factor)::

        CustomCondition(lambda out, t: 1 + t**2 * out)
    """

    def __init__(self, parameterize: Callable[..., torch.Tensor]) -> None:
        if not callable(parameterize):
            raise TypeError(
                "`parameterize` must be a function (net_output, *coords) -> tensor, got "
                f"{type(parameterize).__name__}."
            )
        self.parameterize = parameterize

    def enforce(self, net: nn.Module, *coords: torch.Tensor) -> torch.Tensor:
        return self.parameterize(self._net(net, *coords), *coords)


class IVP(BaseCondition):
    r"""$u(t_0) = u_0$ (and $u'(t_0) = u_0'$ if given), exactly.

    $\tilde u = u_0 + (1 - e^{-(t-t_0)}) N$, or $u_0 + (t - t_0) u_0' + (1 - e^{-(t-t_0)})^2 N$.
    """

    def __init__(self, t_0: float, u_0: float, u_0_prime: float | None = None) -> None:
        self.t_0 = _number("t_0", t_0)
        self.u_0 = _number("u_0", u_0)
        self.u_0_prime = None if u_0_prime is None else _number("u_0_prime", u_0_prime)

    def enforce(self, net: nn.Module, *coords: torch.Tensor) -> torch.Tensor:
        (t,) = coords
        out = self._net(net, t)
        factor = 1 - torch.exp(-(t - self.t_0))
        if self.u_0_prime is None:
            return self.u_0 + factor * out
        return self.u_0 + (t - self.t_0) * self.u_0_prime + factor**2 * out


class DoubleEndedBVP1D(BaseCondition):
    """A Dirichlet (``*_val``) or Neumann (``*_prime``) condition at each end of
    ``[x_min, x_max]``, exactly (constructions in the module docstring)."""

    def __init__(
        self,
        x_min: float,
        x_max: float,
        x_min_val: float | None = None,
        x_min_prime: float | None = None,
        x_max_val: float | None = None,
        x_max_prime: float | None = None,
    ) -> None:
        self.x_min, self.x_max = _interval("x_min", x_min, "x_max", x_max)
        self.kind_a, va = _one_of("x_min", x_min_val, x_min_prime)
        self.kind_b, vb = _one_of("x_max", x_max_val, x_max_prime)
        self.va = _number(f"x_min_{'val' if self.kind_a == 'D' else 'prime'}", va)
        self.vb = _number(f"x_max_{'val' if self.kind_b == 'D' else 'prime'}", vb)

    def enforce(self, net: nn.Module, *coords: torch.Tensor) -> torch.Tensor:
        (x,) = coords
        length = self.x_max - self.x_min
        s = (x - self.x_min) / length
        return _ends(
            s,
            length,
            self.kind_a,
            torch.full_like(x, self.va),
            self.kind_b,
            torch.full_like(x, self.vb),
            self._net(net, x),
            lambda: self._net(net, torch.full_like(x, self.x_min)),
            lambda: self._net(net, torch.full_like(x, self.x_max)),
        )


class DirichletBVP(DoubleEndedBVP1D):
    """$u(t_0) = u_0$ and $u(t_1) = u_1$, exactly: $(1-s) u_0 + s u_1 + s(1-s) N$ with
    $s = (t - t_0)/(t_1 - t_0)$."""

    def __init__(self, t_0: float, u_0: float, t_1: float, u_1: float) -> None:
        super().__init__(t_0, t_1, x_min_val=u_0, x_max_val=u_1)


class DirichletBVP2D(BaseCondition):
    r"""Dirichlet values on the four edges of $[x_{\min}, x_{\max}] \times [y_{\min}, y_{\max}]$.

    ``x_min_val(y)``, ``x_max_val(y)``, ``y_min_val(x)``, ``y_max_val(x)`` are functions of the
    other coordinate (tensors in, tensors out) that agree at the corners. The trial solution is
    the transfinite (Coons) interpolation of the edge values plus
    $\tilde x(1 - \tilde x)\tilde y(1 - \tilde y) N(x, y)$, with $\tilde x, \tilde y \in [0, 1]$.
    """

    def __init__(
        self,
        x_min: float,
        x_min_val: BoundaryFn,
        x_max: float,
        x_max_val: BoundaryFn,
        y_min: float,
        y_min_val: BoundaryFn,
        y_max: float,
        y_max_val: BoundaryFn,
    ) -> None:
        self.x_min, self.x_max = _interval("x_min", x_min, "x_max", x_max)
        self.y_min, self.y_max = _interval("y_min", y_min, "y_max", y_max)
        for name, fn in (
            ("x_min_val", x_min_val),
            ("x_max_val", x_max_val),
            ("y_min_val", y_min_val),
            ("y_max_val", y_max_val),
        ):
            if fn is None:
                raise TypeError(f"`{name}` must be a function of the other coordinate, got None.")
            _callable(name, fn)
        self.f0, self.f1, self.g0, self.g1 = x_min_val, x_max_val, y_min_val, y_max_val

    def enforce(self, net: nn.Module, *coords: torch.Tensor) -> torch.Tensor:
        x, y = coords
        sx = (x - self.x_min) / (self.x_max - self.x_min)
        sy = (y - self.y_min) / (self.y_max - self.y_min)
        x0, x1 = torch.full_like(x, self.x_min), torch.full_like(x, self.x_max)
        g0, g1 = self.g0(x), self.g1(x)
        base = (
            (1 - sx) * self.f0(y)
            + sx * self.f1(y)
            + (1 - sy) * (g0 - ((1 - sx) * self.g0(x0) + sx * self.g0(x1)))
            + sy * (g1 - ((1 - sx) * self.g1(x0) + sx * self.g1(x1)))
        )
        return base + sx * (1 - sx) * sy * (1 - sy) * self._net(net, x, y)


def _derivative(fn: BoundaryFn, x: torch.Tensor) -> torch.Tensor:
    """``fn'(x)`` by autograd (a graph kept only where the caller records one)."""
    keep = torch.is_grad_enabled()
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        out = fn(xr)
        if not out.requires_grad:  # a profile that does not depend on x
            return torch.zeros_like(x)
        (g,) = torch.autograd.grad(out.sum(), xr, create_graph=keep, allow_unused=True)
    return torch.zeros_like(x) if g is None else g


class IBVP1D(BaseCondition):
    r"""$u(x, t_{\min}) = $ ``t_min_val(x)`` on $[x_{\min}, x_{\max}]$ and, at each end, a Dirichlet
    (``x_min_val(t)``) or Neumann (``x_min_prime(t)``, the value of $u_x$) condition.

    Write $u = f(x) + w(x, t)$ with $f$ = ``t_min_val``; $w$ is the interval construction of
    the module docstring in $x$, with end data $v(t)$ minus $f$'s value (or slope) at that end,
    and network $(1 - e^{-(t - t_{\min})}) N(x, t)$. With compatible data
    ($f(x_{\min})$ = ``x_min_val(t_min)`` or $f'(x_{\min})$ = ``x_min_prime(t_min)``, and at
    $x_{\max}$) every condition holds exactly; the slope of $f$ is taken by autograd.
    """

    def __init__(
        self,
        x_min: float,
        x_max: float,
        t_min: float,
        t_min_val: BoundaryFn,
        x_min_val: BoundaryFn | None = None,
        x_min_prime: BoundaryFn | None = None,
        x_max_val: BoundaryFn | None = None,
        x_max_prime: BoundaryFn | None = None,
    ) -> None:
        self.x_min, self.x_max = _interval("x_min", x_min, "x_max", x_max)
        self.t_min = _number("t_min", t_min)
        if t_min_val is None:
            raise TypeError("`t_min_val` must be a function of x (the initial profile), got None.")
        self.f = _callable("t_min_val", t_min_val)
        self.kind_a, self.fa = _one_of("x_min", x_min_val, x_min_prime)
        self.kind_b, self.fb = _one_of("x_max", x_max_val, x_max_prime)
        _callable("x_min_val" if self.kind_a == "D" else "x_min_prime", self.fa)
        _callable("x_max_val" if self.kind_b == "D" else "x_max_prime", self.fb)

    def enforce(self, net: nn.Module, *coords: torch.Tensor) -> torch.Tensor:
        x, t = coords
        length = self.x_max - self.x_min
        s = (x - self.x_min) / length
        xa, xb = torch.full_like(x, self.x_min), torch.full_like(x, self.x_max)
        fa = self.f(xa) if self.kind_a == "D" else _derivative(self.f, xa)
        fb = self.f(xb) if self.kind_b == "D" else _derivative(self.f, xb)
        factor = 1 - torch.exp(-(t - self.t_min))
        return self.f(x) + _ends(
            s,
            length,
            self.kind_a,
            self.fa(t) - fa,
            self.kind_b,
            self.fb(t) - fb,
            factor * self._net(net, x, t),
            lambda: factor * self._net(net, xa, t),
            lambda: factor * self._net(net, xb, t),
        )
