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
import inspect
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

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
    5. A term whose vector field can be written into a given tensor declares
       ``writes_vf_into = True`` and implements ``vf_into(t, y, args, out)``; fixed-step
       Runge–Kutta methods then lay their stages out in one tensor for it.
    """

    @abc.abstractmethod
    def vf(self, t: torch.Tensor, y: Any, args: Any) -> Any: ...

    @abc.abstractmethod
    def contr(self, t0: torch.Tensor, t1: torch.Tensor) -> Any: ...

    @abc.abstractmethod
    def prod(self, vf: Any, control: Any) -> torch.Tensor: ...

    def vf_prod(self, t: torch.Tensor, y: Any, args: Any, control: Any) -> torch.Tensor:
        return self.prod(self.vf(t, y, args), control)

    def control_scale(self) -> float | None:
        """``c`` when ``prod(vf(t, y, args), contr(t0, t1))`` is ``c (t1 - t0) vf`` for a tensor
        ``vf`` (an ODE: ``1``; in reverse time: ``-1``), so that a solver on a grid decided in
        advance may fold the step size into its stage coefficients; ``None`` otherwise."""
        return None

    def base_term(self) -> AbstractTerm:
        """The user's term behind the wrappers the solve adds (tuple-state packing, reverse
        time); a term that wraps another returns the inner term's ``base_term()``."""
        return self

    def sde_parts(self) -> tuple[ODETerm | None, ControlTerm] | None:
        """``(drift, diffusion)`` when this term is an SDE in the form the SDE solvers take
        (``MultiTerm(ODETerm(f), ControlTerm(g, brownian))`` in either order, or a lone
        ``ControlTerm`` without drift); ``None`` otherwise. Decided once, when the term is
        built, so a solver's step reads it for free."""
        return None

    def check_times(self, t0: torch.Tensor, t1: torch.Tensor) -> None:  # noqa: B027
        """Raise ``ValueError`` unless the term is defined on all of ``[t0, t1]`` (e.g. a CDE
        whose path covers a shorter interval). ``solve`` calls it once; defined everywhere
        by default."""

    def prod_into(self, vf: Any, control: Any, out: torch.Tensor) -> None:
        """Write ``prod(vf, control)`` into ``out`` (a stage slot of a solver)."""
        out.copy_(self.prod(vf, control))

    #: whether :meth:`vf_into` can write the vector field into a given tensor (a solver then
    #: lays its stages out in one tensor for it, instead of stacking them afterwards).
    writes_vf_into: ClassVar[bool] = False

    #: whether the vector field is declared not to depend on ``t`` (see :class:`ODETerm`);
    #: read from :meth:`base_term` by the solvers that would otherwise differentiate in t.
    autonomous: bool = False

    def vf_into(self, t: torch.Tensor, y: Any, args: Any, out: torch.Tensor) -> Any:
        """``vf(t, y, args)``, written into ``out`` (a stage slot of a solver, shaped and
        typed like the state) where the term can and no gradient is recorded (``out=`` is
        not differentiable): then ``out`` itself is returned. Otherwise a new value, which
        the caller uses instead of ``out``; the default never writes."""
        return self.vf(t, y, args)


class ODETerm(AbstractTerm):
    r"""An ordinary differential equation $dy/dt = f(t, y, \mathrm{args})$.

    Args:
        vector_field: ``f(t, y, args)`` returning a tensor of the shape of ``y``. ``t`` is a
            0-d tensor, or of shape ``(batch,)`` when stepping per sample.
        autonomous: declares that ``f`` does not depend on ``t``. Rosenbrock methods
            (``Rodas5``, ``Rodas4``, ``Ros3p``) then take $\partial f/\partial t = 0$
            without evaluating ``f`` at a perturbed time: one evaluation less per step, the
            same steps otherwise (they find the difference exactly zero for such a field).
            Declared for a field that does depend on ``t``, it makes them drop that
            derivative and lose their order: leave it ``False`` when unsure. Other solvers
            ignore it.

    Example:
        >>> term = ODETerm(lambda t, y, args: -y, autonomous=True)
    """

    def __init__(
        self, vector_field: Callable[[torch.Tensor, Any, Any], Any], *, autonomous: bool = False
    ) -> None:
        if not callable(vector_field):
            raise TypeError(
                "ODETerm: `vector_field` must be callable as f(t, y, args), got "
                f"{type(vector_field).__name__}."
            )
        if not isinstance(autonomous, bool):
            raise TypeError(
                f"ODETerm: `autonomous` must be True or False, got {autonomous!r}; pass "
                "autonomous=True only for a vector field that does not depend on t."
            )
        _check_takes_t_y_args("ODETerm", vector_field)
        self.vector_field = vector_field
        self.autonomous = autonomous

    def vf(self, t: torch.Tensor, y: Any, args: Any) -> Any:
        return self.vector_field(t, y, args)

    def contr(self, t0: torch.Tensor, t1: torch.Tensor) -> torch.Tensor:
        return t1 - t0

    def prod(self, vf: Any, control: Any) -> torch.Tensor:
        return vf * broadcast_time(control, vf)

    def control_scale(self) -> float | None:
        # Only when neither the control nor the product is redefined by a subclass.
        cls = type(self)
        if cls.contr is ODETerm.contr and cls.prod is ODETerm.prod:
            return 1.0
        return None

    def prod_into(self, vf: Any, control: Any, out: torch.Tensor) -> None:
        control = broadcast_time(control, vf)
        if torch.is_grad_enabled() and (vf.requires_grad or control.requires_grad):
            out.copy_(vf * control)  # `out=` is not differentiable
        else:
            torch.mul(vf, control, out=out)

    def __repr__(self) -> str:
        return f"ODETerm({getattr(self.vector_field, '__name__', self.vector_field)!r})"


def _takes_three_fast(f: Any) -> bool:
    """Whether a plain function or bound method surely accepts three positional arguments,
    read off its code object (``inspect.signature`` costs ~30 µs, and terms are built per
    call by the convenience functions); ``False`` means "ask inspect"."""
    bound = 0
    if inspect.ismethod(f):
        f, bound = f.__func__, 1
    code = getattr(f, "__code__", None) if inspect.isfunction(f) else None
    if code is None:
        return False
    if code.co_kwonlyargcount > len(f.__kwdefaults__ or {}):
        return False  # a required keyword-only argument
    positional = code.co_argcount - bound
    required = positional - len(f.__defaults__ or ())
    return required <= 3 and (positional >= 3 or bool(code.co_flags & inspect.CO_VARARGS))


def _check_takes_t_y_args(who: str, f: Callable) -> None:
    """Refuse, at construction, a vector field that cannot be called as ``f(t, y, args)``:
    typically torchdiffeq's ``f(t, y)``, which would fail at the first evaluation with a bare
    "takes 2 positional arguments but 3 were given". Functions whose signature Python cannot
    inspect (some builtins and extensions) are let through."""
    target = f.forward if isinstance(f, torch.nn.Module) else f
    if _takes_three_fast(target):
        return
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return
    try:
        sig.bind(None, None, None)
        return
    except TypeError:
        pass
    name = getattr(target, "__qualname__", type(f).__name__)
    try:
        sig.bind(None, None)
        two = True
    except TypeError:
        two = False
    fix = (
        f"wrap it: {who}(lambda t, y, args: f(t, y)), or add a third parameter `args` (it "
        "receives solve's `args=`)"
        if two
        else "give it the parameters (t, y, args)"
    )
    raise TypeError(
        f"{who}: `vector_field` must be callable as f(t, y, args), but {name} has signature "
        f"{sig}; {fix}."
    )


class AbstractPath(abc.ABC):
    """A control path X(t): an interpolated time series (CDEs) or Brownian motion (SDEs).

    ``evaluate(t0, t1)`` returns the increment ``X(t1) - X(t0)``; ``derivative(t)`` returns
    dX/dt where the path is differentiable.
    """

    @abc.abstractmethod
    def evaluate(self, t0: torch.Tensor, t1: torch.Tensor | None = None) -> Any: ...

    def derivative(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} is not differentiable in time.")

    def check_times(self, t0: torch.Tensor, t1: torch.Tensor) -> None:  # noqa: B027
        """Raise ``ValueError`` unless the path is defined on all of ``[t0, t1]`` (an
        interpolation on a shorter interval); defined everywhere by default."""

    def evaluate_unchecked(self, t0: torch.Tensor, t1: torch.Tensor) -> Any:
        """``evaluate(t0, t1)`` inside a solve, whose times :meth:`check_times` checked once:
        a path that checks the times of every ``evaluate`` call skips that check here."""
        return self.evaluate(t0, t1)


NOISE_TYPES = ("general", "diagonal", "scalar", "additive")
CALCULI = ("ito", "stratonovich")


def _align_leading(control: torch.Tensor, ndim: int) -> torch.Tensor:
    """View ``control`` of shape ``(*lead, m)`` so its leading dimensions line up with the first
    dimensions of a tensor with ``ndim`` dimensions whose last is ``m``."""
    missing = ndim - control.ndim
    if missing <= 0:
        return control
    return control.reshape(control.shape[:-1] + (1,) * missing + control.shape[-1:])


class ControlTerm(AbstractTerm):
    r"""A controlled term $dy = g(t, y, \mathrm{args})\, dX(t)$: the diffusion of an SDE (with
    a Brownian motion as ``control``) or the vector field of a CDE.

    The layout of ``g`` and of the increments ``dX`` depends on ``noise``; for a state ``y`` of
    shape ``(batch, *state)``:

    - ``"general"``: ``g`` has shape ``y.shape + (m,)`` and ``dX`` shape ``(batch, m)`` (or
      ``y.shape[:-1] + (m,)``); the product contracts the last dimension of ``g``.
    - ``"diagonal"``: ``g`` and ``dX`` have the shape of ``y``; the product is elementwise (one
      Brownian motion per component, and $g_i$ should depend on $y_i$ only, as the Milstein
      and stochastic Runge–Kutta solvers assume).
    - ``"scalar"``: ``g`` has the shape of ``y`` and ``dX`` shape ``(batch, 1)``: one Brownian
      motion per sample.
    - ``"additive"``: ``g`` does not depend on ``y``; it has the shape of ``y`` (diagonal
      layout, with ``dX`` of the shape of ``y``) or ``y.shape + (m,)`` (general layout).

    Args:
        vector_field: ``g(t, y, args)``.
        control: an :class:`AbstractPath` (e.g. a Brownian motion), or any callable
            ``control(t0, t1)`` returning the increment ``X(t1) - X(t0)``.
        noise: the layout above.
        calculus: for SDEs, ``"ito"`` or ``"stratonovich"``: ``solve`` then checks that the
            solver converges to solutions in that sense. ``None`` (no check) for CDEs, or
            when you take care of it yourself.

    Example:
        >>> bm = BrownianInterval(0.0, 1.0, (16, 3), seed=0)
        >>> sde = MultiTerm(ODETerm(lambda t, y, args: -y),
        ...                 ControlTerm(lambda t, y, args: 0.1 * y, bm, noise="diagonal",
        ...                             calculus="ito"))
        >>> sol = solve(sde, EulerMaruyama(), 0.0, 1.0, torch.ones(16, 3), dt0=0.01)
    """

    def __init__(
        self,
        vector_field: Callable[[torch.Tensor, Any, Any], Any],
        control: AbstractPath | Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        noise: str = "general",
        calculus: str | None = None,
    ) -> None:
        if not callable(vector_field):
            raise TypeError(
                "ControlTerm: `vector_field` must be callable as g(t, y, args), got "
                f"{type(vector_field).__name__}."
            )
        if not (isinstance(control, AbstractPath) or callable(control)):
            raise TypeError(
                "ControlTerm: `control` must be a path (e.g. BrownianInterval(...)) or a callable "
                f"control(t0, t1), got {type(control).__name__}."
            )
        if noise not in NOISE_TYPES:
            raise ValueError(
                f"ControlTerm: `noise` must be one of {list(NOISE_TYPES)}, got {noise!r}."
            )
        if calculus is not None and calculus not in CALCULI:
            raise ValueError(
                f"ControlTerm: `calculus` must be 'ito', 'stratonovich' or None, got {calculus!r}."
            )
        self.vector_field = vector_field
        self.control = control
        self.noise = noise
        self.calculus = calculus

    def vf(self, t: torch.Tensor, y: Any, args: Any) -> Any:
        return self.vector_field(t, y, args)

    def contr(self, t0: torch.Tensor, t1: torch.Tensor) -> torch.Tensor:
        if isinstance(self.control, AbstractPath):
            return self.control.evaluate_unchecked(t0, t1)
        return self.control(t0, t1)

    def sde_parts(self) -> tuple[ODETerm | None, ControlTerm]:
        return None, self

    def check_times(self, t0: torch.Tensor, t1: torch.Tensor) -> None:
        if isinstance(self.control, AbstractPath):
            self.control.check_times(t0, t1)

    def contr_levy(self, t0: torch.Tensor, t1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""The increment $\Delta W$ and the space-time Lévy area
        $H = \frac{1}{h}\int_{t_0}^{t_1} \big(W_s - W_{t_0} - \tfrac{s - t_0}{h}\Delta W\big)\,ds$
        over ``[t0, t1]`` (the strong order 1.5 solvers need both)."""
        control = self.control
        try:
            out = control(t0, t1, return_levy_area=True)  # type: ignore[call-arg, operator]
        except TypeError:
            raise TypeError(
                f"this solver needs the space-time Lévy area of the Brownian motion, but "
                f"{type(control).__name__} cannot be called as bm(ta, tb, return_levy_area=True); "
                "use a BrownianInterval, VirtualBrownianTree or BrownianPath built with "
                "levy_area='space-time'."
            ) from None
        return _split_levy(out)

    def prod(self, vf: Any, control: Any) -> torch.Tensor:
        noise = self.noise
        if noise == "diagonal" or (noise == "additive" and vf.ndim == control.ndim):
            return vf * control
        if noise == "scalar":
            return vf * control.reshape(control.shape[:1] + (1,) * (vf.ndim - 1))
        if control.ndim == vf.ndim - 1:
            return (vf @ control.unsqueeze(-1)).squeeze(-1)
        return (vf @ _align_leading(control, vf.ndim - 1).unsqueeze(-1)).squeeze(-1)

    def prod_into(self, vf: Any, control: Any, out: torch.Tensor) -> None:
        if self.noise == "diagonal" and not (
            torch.is_grad_enabled() and (vf.requires_grad or control.requires_grad)
        ):
            torch.mul(vf, control, out=out)
        else:
            out.copy_(self.prod(vf, control))

    def __repr__(self) -> str:
        name = getattr(self.vector_field, "__name__", self.vector_field)
        return f"ControlTerm({name!r}, noise={self.noise!r}, calculus={self.calculus!r})"


def _split_levy(out: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dW, H)`` from a path's answer to ``return_levy_area=True``: a
    ``BrownianIncrement`` ``(W, H, A)`` or a pair."""
    if isinstance(out, (tuple, list)) and len(out) >= 2 and out[1] is not None:
        return out[0], out[1]
    raise TypeError(
        "this solver needs the space-time Lévy area of the Brownian motion, which did not "
        "provide it; create the Brownian motion with levy_area='space-time'."
    )


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
        self._sde_parts: tuple[ODETerm | None, ControlTerm] | None = None
        if len(self.terms) == 2:
            a, b = self.terms
            if isinstance(a, ODETerm) and isinstance(b, ControlTerm):
                self._sde_parts = (a, b)
            elif isinstance(b, ODETerm) and isinstance(a, ControlTerm):
                self._sde_parts = (b, a)

    def sde_parts(self) -> tuple[ODETerm | None, ControlTerm] | None:
        return self._sde_parts

    def vf(self, t: torch.Tensor, y: Any, args: Any) -> tuple:
        return tuple(term.vf(t, y, args) for term in self.terms)

    def contr(self, t0: torch.Tensor, t1: torch.Tensor) -> tuple:
        return tuple(term.contr(t0, t1) for term in self.terms)

    def check_times(self, t0: torch.Tensor, t1: torch.Tensor) -> None:
        for term in self.terms:
            term.check_times(t0, t1)

    def prod(self, vf: Any, control: Any) -> torch.Tensor:
        parts = [term.prod(v, c) for term, v, c in zip(self.terms, vf, control)]
        out = parts[0]
        for part in parts[1:]:
            out = out + part
        return out
