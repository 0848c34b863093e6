r"""Jump diffusions: Poisson jumps on top of an ODE or SDE, located exactly.

A :class:`JumpTerm` adds to ``dy = f dt + g dW`` jumps at the times of a point process with
intensity $\lambda(t, y)$: between jumps the state follows the drift and diffusion, and at a
jump time $T$ it is replaced by ``jump(T, y(T-), args, mark)``.

Jump times come from the time change of a Poisson process: with $E_1, E_2, \dots$ independent
$\mathrm{Exp}(1)$ clocks, the $k$-th jump is the first time the integrated intensity since the
previous jump reaches $E_k$,

$$ \int_{T_{k-1}}^{T_k} \lambda(s, y(s))\, ds = E_k. $$

So the state is augmented, per sample, with the remaining clock $c = E_k - \int_{T_{k-1}}^t
\lambda\,ds$ (solved with the rest of the state, $dc = -\lambda\,dt$) and the number of jumps so
far; a jump is the downward zero crossing of $c$, located on the dense output like any event,
and the reset applies the jump map and draws a fresh clock. This is exact for any intensity
that depends on time and state (no thinning, no discretisation of the jump times beyond the
solver's).

Randomness is keyed: the clock and mark of sample ``i``'s ``k``-th jump are entry ``i`` of
draws from a generator seeded by ``(seed, k)``. A sample's jumps therefore do not depend on
how the loop steps (joint or per sample, where the resets fall), only on the seed, the batch
size and the sample's path.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import torch

from .terms import AbstractPath, AbstractTerm, ControlTerm, MultiTerm, ODETerm

__all__ = ["JumpTerm", "JumpSystem", "augment_jumps", "has_jumps"]

RateFn = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]
JumpFn = Callable[[torch.Tensor, torch.Tensor, Any, torch.Tensor], torch.Tensor]
MarkFn = Callable[[int, torch.Generator], torch.Tensor]


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)}, dtype {x.dtype}"
    return f"{type(x).__name__} {x!r}"


def uniform_marks(num: int, generator: torch.Generator) -> torch.Tensor:
    """The default marks: one ``U(0, 1)`` number per sample (shape ``(num,)``)."""
    return torch.rand(num, generator=generator, dtype=torch.float64)


class JumpTerm(AbstractTerm):
    r"""Poisson jumps with intensity $\lambda(t, y)$ and a jump map, for use in a
    :class:`MultiTerm` with an :class:`ODETerm` (drift) and a :class:`ControlTerm` (diffusion):

    $$ dy = f(t, y)\,dt + g(t, y)\,dW_t + \big(J(t, y_{t-}, \xi) - y_{t-}\big)\,dN_t, $$

    $N$ a point process with intensity $\lambda(t, y_{t-})$ and $\xi$ the marks. Each sample
    (first dimension of ``y``) has its own jumps. Jump times are located exactly: the
    integrated intensity since the last jump reaching an $\mathrm{Exp}(1)$ clock, as an
    event of a solve that carries the clock as an extra state component.

    Args:
        rate: the intensity: a number or a tensor of shape ``()`` or ``(batch,)`` (constant),
            or a callable ``rate(t, y, args)`` returning one value per sample, shape
            ``(batch,)``. Must be finite and non-negative.
        jump: ``jump(t, y, args, mark)`` returning the state just after a jump at ``t`` from
            the state ``y`` just before it (same shape as ``y``). Called on the whole batch;
            only the rows of the samples that jump are used.
        mark: ``mark(num, generator)`` drawing ``num`` marks (leading dimension ``num``) with
            the given ``torch.Generator``; by default one ``U(0, 1)`` number per sample (turn
            it into any distribution in ``jump`` by its quantile function).
        seed: an ``int`` (every solve with this term draws the same clocks and marks: a fixed
            realisation, like a Brownian motion), a ``torch.Generator`` (each solve draws its
            seed from it, so successive solves differ) or ``None`` (an ``int`` drawn once from
            torch's global generator).
        max_jumps: the most jumps a solve may have (per sample when stepping per sample):
            the next one ends it with ``Status.MAX_EVENTS_REACHED``, protection against an
            intensity that explodes.

    Example:
        >>> # Merton's jump diffusion for log S: drift, volatility, normal jumps at rate 0.5
        >>> bm = BrownianInterval(0.0, 1.0, (1000, 1), seed=0)
        >>> terms = MultiTerm(
        ...     ODETerm(lambda t, y, args: torch.full_like(y, 0.05)),
        ...     ControlTerm(lambda t, y, args: torch.full_like(y, 0.2), bm, noise="diagonal",
        ...                 calculus="ito"),
        ...     JumpTerm(0.5, lambda t, y, args, m: y + 0.1 * m[:, None],
        ...              mark=lambda n, g: torch.randn(n, generator=g, dtype=torch.float64),
        ...              seed=1),
        ... )
        >>> sol = solve(terms, EulerMaruyama(), 0.0, 1.0, torch.zeros(1000, 1), dt0=0.01)
    """

    def __init__(
        self,
        rate: float | torch.Tensor | RateFn,
        jump: JumpFn,
        *,
        mark: MarkFn | None = None,
        seed: int | torch.Generator | None = None,
        max_jumps: int = 100_000,
    ) -> None:
        if isinstance(rate, torch.Tensor) or (
            isinstance(rate, numbers.Real) and not isinstance(rate, bool)
        ):
            r = torch.as_tensor(rate)
            if r.is_complex() or not (torch.is_floating_point(r) or r.dtype == torch.int64):
                raise TypeError(f"JumpTerm: `rate` must be real, got {_describe(rate)}.")
            if r.ndim > 1:
                raise ValueError(
                    "JumpTerm: a constant `rate` must be a number or a tensor of shape () or "
                    f"(batch,), got {_describe(rate)}; for a state-dependent intensity pass a "
                    "callable rate(t, y, args)."
                )
            _check_rate_values(r.detach(), "`rate`")
        elif not callable(rate):
            raise TypeError(
                "JumpTerm: `rate` must be a number, a tensor or a callable rate(t, y, args), "
                f"got {_describe(rate)}."
            )
        if not callable(jump):
            raise TypeError(
                "JumpTerm: `jump` must be callable as jump(t, y, args, mark), got "
                f"{_describe(jump)}."
            )
        if mark is not None and not callable(mark):
            raise TypeError(
                "JumpTerm: `mark` must be callable as mark(num, generator) returning num marks, "
                f"got {_describe(mark)}."
            )
        if seed is None:
            seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
        elif isinstance(seed, bool) or not isinstance(seed, (int, torch.Generator)):
            raise TypeError(
                "JumpTerm: `seed` must be an int, a torch.Generator or None, got "
                f"{_describe(seed)}."
            )
        if isinstance(max_jumps, bool) or not isinstance(max_jumps, int) or max_jumps < 0:
            raise ValueError(f"JumpTerm: `max_jumps` must be an int >= 0, got {max_jumps!r}.")
        self.rate = rate
        self.jump = jump
        self.max_jumps = max_jumps
        self.mark = mark if mark is not None else uniform_marks
        self.seed = seed

    def vf(self, t: torch.Tensor, y: Any, args: Any) -> Any:
        raise NotImplementedError(_HANDLED_BY_SOLVE)

    def contr(self, t0: torch.Tensor, t1: torch.Tensor) -> Any:
        raise NotImplementedError(_HANDLED_BY_SOLVE)

    def prod(self, vf: Any, control: Any) -> torch.Tensor:
        raise NotImplementedError(_HANDLED_BY_SOLVE)

    def solve_seed(self) -> int:
        """The seed of one solve: the ``int`` given, or one drawn from the generator."""
        if isinstance(self.seed, torch.Generator):
            return int(torch.randint(0, 2**62, (), dtype=torch.int64, generator=self.seed))
        return int(self.seed)

    def __repr__(self) -> str:
        rate = self.rate if not callable(self.rate) else getattr(self.rate, "__name__", "rate")
        return f"JumpTerm(rate={rate!r}, jump={getattr(self.jump, '__name__', self.jump)!r})"


_HANDLED_BY_SOLVE = (
    "a JumpTerm is not stepped like the other terms: `solve` locates its jumps as events of "
    "an augmented equation; pass the terms to solve(...)."
)


def _check_rate_values(r: torch.Tensor, name: str) -> None:
    if not bool(torch.isfinite(r).all()):
        raise ValueError(
            f"JumpTerm: {name} must be finite, got {_describe(r)} with non-finite values."
        )
    if bool((r < 0).any()):
        raise ValueError(
            f"JumpTerm: {name} must be non-negative (an intensity), got a minimum of "
            f"{float(r.min()):.6g}; e.g. pass it through softplus or clamp it at zero."
        )


def has_jumps(terms: AbstractTerm) -> bool:
    """Whether ``terms`` is or contains a :class:`JumpTerm`."""
    leaves = terms.terms if isinstance(terms, MultiTerm) else (terms,)
    return any(isinstance(t, JumpTerm) for t in leaves)


def _seed_for(seed: int, k: int) -> int:
    # Tuples of ints hash deterministically (no hash randomisation for ints).
    return hash((seed, k)) & (2**62 - 1)


class _PaddedPath(AbstractPath):
    """A Brownian motion with the shape of ``y`` seen as one of the augmented state: increments
    flattened per sample and padded with zeros for the clock and the jump count."""

    def __init__(self, inner: Any, pad: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.inner = inner
        self.pad = pad

    def evaluate(self, t0: torch.Tensor, t1: torch.Tensor | None = None) -> torch.Tensor:
        if isinstance(self.inner, AbstractPath):
            return self.pad(self.inner.evaluate(t0, t1))
        return self.pad(self.inner(t0, t1))

    def evaluate_unchecked(self, t0: torch.Tensor, t1: torch.Tensor) -> Any:
        if isinstance(self.inner, AbstractPath):
            return self.pad(self.inner.evaluate_unchecked(t0, t1))
        return self.pad(self.inner(t0, t1))

    def __call__(self, t0: Any, t1: Any = None, *, return_levy_area: bool = False) -> Any:
        if not return_levy_area:
            return self.evaluate(t0, t1)
        out = self.inner(t0, t1, return_levy_area=True)
        return self.pad(out[0]), None if out[1] is None else self.pad(out[1])

    def check_times(self, t0: torch.Tensor, t1: torch.Tensor) -> None:
        if isinstance(self.inner, AbstractPath):
            self.inner.check_times(t0, t1)


class JumpSystem:
    """A jump diffusion as an equation on the augmented state ``z`` of shape ``(batch, n + 2)``:
    the flattened state, the remaining clock (column ``n``) and the number of jumps so far
    (column ``n + 1``). ``terms`` is a plain ODE or SDE; ``clock`` is the event function
    (crosses zero downwards at a jump) and ``reset`` the state just after it."""

    def __init__(
        self,
        jump_term: JumpTerm,
        drift: ODETerm | None,
        diffusion: ControlTerm | None,
        y0: torch.Tensor,
        t0: torch.Tensor,
        args: Any,
        per_sample: bool,
    ) -> None:
        self.term = jump_term
        self.per_sample = per_sample
        self.state_shape = tuple(y0.shape[1:])
        self.batch = y0.shape[0]
        self.n = int(torch.Size(self.state_shape).numel())
        self.dtype, self.device = y0.dtype, y0.device
        self.seed = jump_term.solve_seed()
        self._draws: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._check_rate(t0, y0, args)
        self.drift = drift
        self.terms: AbstractTerm = ODETerm(self._drift)
        if diffusion is not None:
            self.terms = MultiTerm(self.terms, self._diffusion(diffusion, t0, y0, args))
        clocks, _ = self._draw(0)
        zeros = torch.zeros(self.batch, 1, dtype=self.dtype, device=self.device)
        self.z0 = torch.cat([y0.reshape(self.batch, self.n), clocks[:, None], zeros], dim=1)

    # --- the state
    def unpack(self, z: torch.Tensor) -> torch.Tensor:
        """The user's state from augmented ones (leading dimensions kept)."""
        return z[..., : self.n].reshape(z.shape[:-1] + self.state_shape)

    def num_jumps(self, z: torch.Tensor) -> torch.Tensor:
        return z[..., self.n + 1].round().to(torch.int64)

    def _y(self, z: torch.Tensor) -> torch.Tensor:
        return z[:, : self.n].reshape((z.shape[0],) + self.state_shape)

    def _flat(self, v: torch.Tensor, extra: int = 0) -> torch.Tensor:
        """``v`` of shape ``(batch, *state, *extra)`` as ``(batch, n + 2, *extra)``, zeros for the
        clock and the count."""
        tail = tuple(v.shape[1 + len(self.state_shape) :])
        flat = v.reshape((v.shape[0], self.n) + tail)
        return torch.cat([flat, flat.new_zeros((v.shape[0], 2) + tail)], dim=1)

    # --- the intensity
    def rate(self, t: torch.Tensor, y: torch.Tensor, args: Any) -> torch.Tensor:
        r = self.term.rate
        if callable(r):
            return r(t, y, args)
        return torch.as_tensor(r, dtype=y.dtype, device=y.device).expand(y.shape[0])

    def _check_rate(self, t0: torch.Tensor, y0: torch.Tensor, args: Any) -> None:
        with torch.no_grad():
            r = self.rate(t0, y0, args)
        if not isinstance(r, torch.Tensor) or not torch.is_floating_point(r):
            raise TypeError(
                "JumpTerm: `rate` must return a floating-point tensor with one value per "
                f"sample, shape ({self.batch},), got {_describe(r)}."
            )
        if r.shape != (self.batch,):
            raise ValueError(
                f"JumpTerm: `rate` must give one value per sample, shape ({self.batch},) for "
                f"the state of shape {tuple(y0.shape)}, got {_describe(r)}"
                + (
                    "; return e.g. `y[:, 0].abs()` rather than `y.abs()`"
                    if r.ndim > 1
                    else "; expand it with .expand(y.shape[0])"
                )
                + "."
            )
        _check_rate_values(r, "`rate` at t0")

    # --- the augmented equation
    def _drift(self, t: torch.Tensor, z: torch.Tensor, args: Any) -> torch.Tensor:
        y = self._y(z)
        if self.drift is None:
            f = torch.zeros((z.shape[0], self.n), dtype=z.dtype, device=z.device)
        else:
            f = self.drift.vf(t, y, args).reshape(z.shape[0], self.n)
        r = self.rate(t, y, args).to(z.dtype)
        return torch.cat([f, -r[:, None], torch.zeros_like(r)[:, None]], dim=1)

    def _diffusion(
        self, diffusion: ControlTerm, t0: torch.Tensor, y0: torch.Tensor, args: Any
    ) -> ControlTerm:
        g_user = diffusion.vector_field
        noise = diffusion.noise
        if noise == "additive":
            with torch.no_grad():
                g0 = g_user(t0, y0, args)
            diagonal = isinstance(g0, torch.Tensor) and g0.shape == y0.shape
        else:
            diagonal = noise == "diagonal"
        control: Any = diffusion.control
        if diagonal:
            control = _PaddedPath(control, self._flat)

        def g(t: torch.Tensor, z: torch.Tensor, a: Any) -> torch.Tensor:
            return self._flat(g_user(t, self._y(z), a))

        return ControlTerm(g, control, noise=noise, calculus=diffusion.calculus)

    # --- jumps
    def _draw(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The clocks and marks of every sample's ``k``-th jump (clocks of index 0 start the
        solve; the marks of jump ``k`` come with the clocks that follow it)."""
        if k not in self._draws:
            gen = torch.Generator().manual_seed(_seed_for(self.seed, k))
            clocks = torch.empty(self.batch, dtype=torch.float64).exponential_(generator=gen)
            marks = self.term.mark(self.batch, gen) if k > 0 else clocks
            if (
                not isinstance(marks, torch.Tensor)
                or marks.ndim == 0
                or marks.shape[0] != self.batch
            ):
                raise ValueError(
                    f"JumpTerm: `mark(num, generator)` must return a tensor with leading "
                    f"dimension num={self.batch}, got {_describe(marks)}."
                )
            self._draws[k] = (
                clocks.to(device=self.device, dtype=self.dtype),
                marks.to(device=self.device),
            )
        return self._draws[k]

    def clock(self, t: torch.Tensor, z: torch.Tensor, args: Any) -> torch.Tensor:
        """The event function: the remaining clock, one value per sample."""
        return z[:, self.n].clone()

    def reset(self, t: torch.Tensor, z: torch.Tensor, args: Any) -> torch.Tensor:
        """The state just after a jump (the reset of the clock's event). Per sample, the loop
        keeps the rows of the samples that fired; jointly, the batch has one event sequence
        and the sample that jumps is the one whose clock ran out: the smallest, at zero to
        rounding at the located crossing (others within rounding of zero jump with it)."""
        c = z[:, self.n]
        if self.per_sample:
            fired = torch.ones_like(c, dtype=torch.bool)
        else:
            fired = (c <= 64 * torch.finfo(z.dtype).eps) | (c == c.min())
        count = z[:, self.n + 1].round().to(torch.int64) + 1
        ks = torch.unique(count[fired]).tolist()
        clocks = z[:, self.n].clone()
        marks: torch.Tensor | None = None
        for k in ks:
            c_k, m_k = self._draw(int(k))
            sel = fired & (count == k)
            clocks = torch.where(sel, c_k, clocks)
            if marks is None:
                marks = m_k.clone()
            else:
                marks = torch.where(sel.reshape((-1,) + (1,) * (m_k.ndim - 1)), m_k, marks)
        assert marks is not None  # ks is not empty
        y = self._y(z)
        y_new = self.term.jump(t, y, args, marks)
        if not isinstance(y_new, torch.Tensor) or y_new.shape != y.shape:
            raise ValueError(
                "JumpTerm: `jump(t, y, args, mark)` must return the state just after the jump, "
                f"with the shape of y {tuple(y.shape)}, got {_describe(y_new)}."
            )
        y_new = y_new.to(z.dtype).reshape(z.shape[0], self.n)
        rows = fired[:, None]
        return torch.cat(
            [
                torch.where(rows, y_new, z[:, : self.n]),
                torch.where(fired, clocks, z[:, self.n])[:, None],
                torch.where(fired, count.to(z.dtype), z[:, self.n + 1])[:, None],
            ],
            dim=1,
        )


def augment_jumps(
    terms: AbstractTerm, y0: Any, t0: torch.Tensor, args: Any, per_sample: bool
) -> JumpSystem:
    """Split ``terms`` into drift, diffusion and jumps and build the augmented system."""
    leaves = terms.terms if isinstance(terms, MultiTerm) else (terms,)
    jumps = [t for t in leaves if isinstance(t, JumpTerm)]
    odes = [t for t in leaves if isinstance(t, ODETerm)]
    controls = [t for t in leaves if isinstance(t, ControlTerm)]
    if len(jumps) > 1:
        raise NotImplementedError(
            f"`terms` has {len(jumps)} JumpTerms; combine them into one (the sum of the rates, "
            "and a jump map that picks one by a uniform mark)."
        )
    if len(odes) > 1 or len(controls) > 1 or len(odes) + len(controls) + 1 != len(leaves):
        raise NotImplementedError(
            "jump diffusions are MultiTerm(ODETerm(drift), ControlTerm(diffusion, brownian), "
            f"JumpTerm(rate, jump)) with the first two optional, got {terms!r} with terms "
            f"{[type(t).__name__ for t in leaves]}."
        )
    if not isinstance(y0, torch.Tensor):
        raise NotImplementedError(
            f"jump diffusions need a tensor `y0` of shape (batch, *state), got {_describe(y0)}; "
            "stack a tuple state into one tensor."
        )
    if y0.ndim == 0:
        raise ValueError(
            "jump diffusions need `y0` of shape (batch, *state): each sample jumps on its own, "
            f"got {_describe(y0)}; use y0.reshape(1, -1) for one sample."
        )
    return JumpSystem(
        jumps[0],
        odes[0] if odes else None,
        controls[0] if controls else None,
        y0,
        t0,
        args,
        per_sample,
    )
