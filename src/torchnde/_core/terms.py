r"""Terms say what the equation is.

Every term has the form $dy = \mathrm{vf}(t, y, \mathrm{args})\, dX(t)$ and splits it into three
operations, which is what lets one Runge–Kutta engine solve ODEs, CDEs and Stratonovich SDEs:

- ``vf(t, y, args)``: the vector field at one point (no control);
- ``contr(t0, t1)``: the control increment over a step (``t1 - t0`` for an ODE);
- ``prod(vf, control)``: the increment of ``y`` the two give together.

Solvers cache ``vf`` (first-same-as-last) and combine ``prod`` results; the loop never looks
inside a term.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["AbstractTerm", "ODETerm", "ControlTerm", "MultiTerm", "AbstractPath"]


def broadcast_time(dt: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """View a time-like tensor of shape ``()`` or ``(batch,)`` so it broadcasts against ``like``.

    Per-sample solves carry one step size per sample (leading batch dimension); joint solves a
    scalar.
    """
    if dt.ndim == 0 or dt.ndim == like.ndim:
        return dt
    return dt.reshape(dt.shape + (1,) * (like.ndim - dt.ndim))


class AbstractTerm(abc.ABC):
    """Base class of terms. Subclasses implement ``vf``, ``contr`` and ``prod``.

    How to write a term:

    1. ``vf(t, y, args)`` evaluates the vector field; ``t`` has shape ``()`` (joint stepping)
       or ``(batch,)`` (per-sample stepping).
    2. ``contr(t0, t1)`` returns the control increment over ``[t0, t1]``.
    3. ``prod(vf, control)`` returns the state increment, same shape as ``y``.
    4. ``vf_prod(t, y, args, control)`` may be overridden with a fused, faster version.
    """

    @abc.abstractmethod
    def vf(self, t: torch.Tensor, y: Any, args: Any) -> Any: ...

    @abc.abstractmethod
    def contr(self, t0: torch.Tensor, t1: torch.Tensor) -> Any: ...

    @abc.abstractmethod
    def prod(self, vf: Any, control: Any) -> torch.Tensor: ...

    def vf_prod(self, t: torch.Tensor, y: Any, args: Any, control: Any) -> torch.Tensor:
        return self.prod(self.vf(t, y, args), control)

    def prod_into(self, vf: Any, control: Any, out: torch.Tensor) -> None:
        """Write ``prod(vf, control)`` into ``out`` (a stage slot of a solver)."""
        out.copy_(self.prod(vf, control))


class ODETerm(AbstractTerm):
    r"""An ordinary differential equation $dy/dt = f(t, y, \mathrm{args})$.

    Args:
        vector_field: ``f(t, y, args)`` returning a tensor of the shape of ``y``. ``t`` is a
            0-d tensor, or of shape ``(batch,)`` when stepping per sample.

    Example:
        >>> term = ODETerm(lambda t, y, args: -y)
    """

    def __init__(self, vector_field: Callable[[torch.Tensor, Any, Any], Any]) -> None:
        if not callable(vector_field):
            raise TypeError(
                "ODETerm: `vector_field` must be callable as f(t, y, args), got "
                f"{type(vector_field).__name__}."
            )
        self.vector_field = vector_field

    def vf(self, t: torch.Tensor, y: Any, args: Any) -> Any:
        return self.vector_field(t, y, args)

    def contr(self, t0: torch.Tensor, t1: torch.Tensor) -> torch.Tensor:
        return t1 - t0

    def prod(self, vf: Any, control: Any) -> torch.Tensor:
        return vf * broadcast_time(control, vf)

    def prod_into(self, vf: Any, control: Any, out: torch.Tensor) -> None:
        control = broadcast_time(control, vf)
        if torch.is_grad_enabled() and (vf.requires_grad or control.requires_grad):
            out.copy_(vf * control)  # `out=` is not differentiable
        else:
            torch.mul(vf, control, out=out)

    def __repr__(self) -> str:
        return f"ODETerm({getattr(self.vector_field, '__name__', self.vector_field)!r})"


class AbstractPath(abc.ABC):
    """A control path X(t): an interpolated time series (CDEs) or Brownian motion (SDEs).

    ``evaluate(t0, t1)`` returns the increment ``X(t1) - X(t0)``; ``derivative(t)`` returns
    dX/dt where the path is differentiable.
    """

    @abc.abstractmethod
    def evaluate(self, t0: torch.Tensor, t1: torch.Tensor | None = None) -> torch.Tensor: ...

    def derivative(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} is not differentiable in time.")


class ControlTerm(AbstractTerm):
    r"""A controlled term $dy = g(t, y, \mathrm{args})\, dX(t)$.

    ``g`` returns a tensor of shape ``y.shape + (channels,)`` (a matrix per sample, contracted
    with the control increment of shape ``(..., channels)``), or, with
    ``noise="diagonal"``, the shape of ``y`` (multiplied elementwise).

    Args:
        vector_field: ``g(t, y, args)``.
        control: an :class:`AbstractPath`, or any callable ``control(t0, t1)`` returning the
            increment ``X(t1) - X(t0)``.
        noise: ``"general"`` (matrix product) or ``"diagonal"`` (elementwise).
    """

    def __init__(
        self,
        vector_field: Callable[[torch.Tensor, Any, Any], Any],
        control: AbstractPath | Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        noise: str = "general",
    ) -> None:
        if not callable(vector_field):
            raise TypeError(
                "ControlTerm: `vector_field` must be callable as g(t, y, args), got "
                f"{type(vector_field).__name__}."
            )
        if noise not in ("general", "diagonal"):
            raise ValueError(
                f"ControlTerm: `noise` must be 'general' or 'diagonal', got {noise!r}."
            )
        self.vector_field = vector_field
        self.control = control
        self.noise = noise

    def vf(self, t: torch.Tensor, y: Any, args: Any) -> Any:
        return self.vector_field(t, y, args)

    def contr(self, t0: torch.Tensor, t1: torch.Tensor) -> torch.Tensor:
        if isinstance(self.control, AbstractPath):
            return self.control.evaluate(t0, t1)
        return self.control(t0, t1)

    def prod(self, vf: Any, control: Any) -> torch.Tensor:
        if self.noise == "diagonal":
            return vf * control
        return (vf @ control.unsqueeze(-1)).squeeze(-1)


class MultiTerm(AbstractTerm):
    r"""The sum of several terms, e.g. drift and diffusion of an SDE:
    ``MultiTerm(ODETerm(f), ControlTerm(g, brownian))``.
    """

    def __init__(self, *terms: AbstractTerm) -> None:
        if len(terms) == 1 and isinstance(terms[0], Sequence):
            terms = tuple(terms[0])
        if not terms or not all(isinstance(t, AbstractTerm) for t in terms):
            raise TypeError(
                "MultiTerm: every argument must be a term (ODETerm, ControlTerm, ...), got "
                f"{[type(t).__name__ for t in terms]}."
            )
        self.terms = tuple(terms)

    def vf(self, t: torch.Tensor, y: Any, args: Any) -> tuple:
        return tuple(term.vf(t, y, args) for term in self.terms)

    def contr(self, t0: torch.Tensor, t1: torch.Tensor) -> tuple:
        return tuple(term.contr(t0, t1) for term in self.terms)

    def prod(self, vf: Any, control: Any) -> torch.Tensor:
        parts = [term.prod(v, c) for term, v, c in zip(self.terms, vf, control)]
        out = parts[0]
        for part in parts[1:]:
            out = out + part
        return out
