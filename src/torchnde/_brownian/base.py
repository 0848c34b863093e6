"""What the three Brownian motions share: validation, the call conventions, reverse-time and
per-sample queries, and the Lévy-area result type. Subclasses implement one method,
``_forward_increment(ta, tb)`` for ``t0 <= ta < tb <= t1`` given as Python floats.
"""

from __future__ import annotations

import abc
import math
import numbers
from collections.abc import Sequence
from typing import Any, NamedTuple, cast

import torch

from .._core.terms import AbstractPath
from .bridge import float_bits, full_area, mix

__all__ = ["AbstractBrownianPath", "BrownianIncrement", "LEVY_AREAS"]

LEVY_AREAS = (None, "space-time", "davie", "foster")

Time = float | int | torch.Tensor


class BrownianIncrement(NamedTuple):
    r"""The increment of a Brownian motion over $[t_a, t_b]$ and its Lévy areas.

    Attributes:
        W: $W(t_b) - W(t_a)$, shape ``(batch, *noise)``.
        H: the space-time Lévy area
            $H = \frac{1}{h}\int_{t_a}^{t_b} (W_u - W_{t_a} - \frac{u - t_a}{h} W)\,du$,
            $h = t_b - t_a$, same shape as ``W`` (``None`` when the Brownian motion was built
            with ``levy_area=None``). Independent of ``W``, variance $h/12$.
        A: the approximated Lévy area $A_{ij} = \frac12\int (W^i dW^j - W^j dW^i)$ over the
            last noise dimension, shape ``(batch, *noise, noise[-1])``, antisymmetric in its
            last two dimensions (only with ``levy_area="davie"`` or ``"foster"``).

    For a reverse-time query ($t_a > t_b$) ``W`` and ``A`` change sign and ``H`` (which is the
    same for the path run backwards) does not.
    """

    W: torch.Tensor
    H: torch.Tensor | None = None
    A: torch.Tensor | None = None


def is_real(x: object) -> bool:
    """A real number (Python or numpy scalar), not a bool."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _check_shape(name: str, shape: Any) -> tuple[int, ...]:
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, Sequence | torch.Size) or isinstance(shape, str):
        raise TypeError(
            f"{name}: `shape` must be a tuple of ints (batch, *noise), got "
            f"{type(shape).__name__} {shape!r}."
        )
    out = tuple(shape)
    if (
        len(out) == 0
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in out)
        or not all(s > 0 for s in out)
    ):
        raise ValueError(
            f"{name}: `shape` must be a non-empty tuple of positive ints (batch, *noise), "
            f"got {shape!r}. Example: shape=(256, 32) for a batch of 256 with 32 Brownian "
            "channels."
        )
    return out


def _check_time(name: str, arg: str, t: Any) -> float:
    if isinstance(t, torch.Tensor):
        if t.numel() != 1:
            raise ValueError(
                f"{name}: `{arg}` must be a scalar, got a tensor of shape {tuple(t.shape)}."
            )
        t = t.item()
    if not is_real(t):
        raise TypeError(f"{name}: `{arg}` must be a real number, got {type(t).__name__} {t!r}.")
    t = float(t)
    if not math.isfinite(t):
        raise ValueError(f"{name}: `{arg}` must be finite, got {t}.")
    return t


class AbstractBrownianPath(AbstractPath):
    r"""Base class of the Brownian motions: a path $W$ on $[t_0, t_1]$ with $W(t_0) = 0$,
    values of shape ``(batch, *noise)``.

    Calls:

    - ``bm(ta, tb)`` returns the increment $W(t_b) - W(t_a)$; ``bm(t)`` returns
      $W(t) - W(t_0)$. Reverse-time queries ($t_a > t_b$) return the negated increment.
    - ``bm(ta, tb, return_levy_area=True)`` (or ``bm.increment(ta, tb)``) returns a
      :class:`BrownianIncrement` ``(W, H, A)``.
    - ``evaluate(ta, tb)`` is ``bm(ta, tb)`` (the :class:`AbstractPath` interface, so
      ``ControlTerm(g, bm)`` works).

    Times are Python numbers or tensors: of shape ``()`` for one interval for the whole batch,
    or of shape ``(batch,)`` for per-sample intervals (each sample's increment over its own
    interval, all from the same Brownian motion, as per-sample stepping asks). Times are
    read on the host: a tensor time on CUDA costs one synchronisation per query.

    How to write a Brownian motion: implement ``_forward_increment(ta, tb)`` returning
    ``(W, H)`` for Python floats ``t0 <= ta < tb <= t1`` (``H`` only when
    ``self.levy_area`` is not ``None``); validation, reverse time, per-sample times and the
    full Lévy area are handled here.
    """

    _name = "AbstractBrownianPath"

    def __init__(
        self,
        t0: Time,
        t1: Time,
        shape: Sequence[int] | torch.Size | int,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        seed: int | None = None,
        levy_area: str | None = None,
    ) -> None:
        name = self._name
        self.t0 = _check_time(name, "t0", t0)
        self.t1 = _check_time(name, "t1", t1)
        if not self.t0 < self.t1:
            raise ValueError(
                f"{name}: need t0 < t1, got t0={self.t0}, t1={self.t1}. A reverse-time solve "
                "uses the Brownian motion on [min, max] and queries it backwards."
            )
        self.shape = _check_shape(name, shape)
        if dtype is None:
            dtype = torch.get_default_dtype()
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(
                f"{name}: `dtype` must be a floating-point torch.dtype (torch.float32 or "
                f"torch.float64), got {dtype!r}."
            )
        if dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            raise TypeError(f"{name}: unsupported `dtype` {dtype!r}; use torch.float32/64.")
        self.dtype = dtype
        try:
            self.device = torch.device("cpu" if device is None else device)
        except (RuntimeError, TypeError) as e:
            raise TypeError(f"{name}: `device` {device!r} is not a torch device ({e}).") from None
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"{name}: `seed` must be an int or None, got {type(seed).__name__}.")
        self.seed = seed
        if levy_area not in LEVY_AREAS:
            raise ValueError(
                f"{name}: `levy_area` must be one of None, 'space-time', 'davie', 'foster', got "
                f"{levy_area!r}."
            )
        self.levy_area = levy_area
        try:
            self._gen = torch.Generator(device=self.device)
        except RuntimeError as e:
            raise ValueError(
                f"{name}: cannot create a random generator on `device`={device!r} "
                f"({str(e).split('.')[0]}); pass a "
                "device this machine has (e.g. 'cpu' or 'cuda')."
            ) from None
        self._span = self.t1 - self.t0
        # round-off slack for times that land a hair outside [t0, t1] (t0 + n * dt)
        self._slack = 1e-6 * max(abs(self.t0), abs(self.t1), self._span)

    def _cache_size(self, cache_size: int | None, per_node: int) -> int:
        """Validate ``cache_size``; ``None`` picks as many nodes as fit in 32 MiB (at least
        64, at most 8192), ``per_node`` tensors of ``shape`` each."""
        if cache_size is None:
            nbytes = per_node * math.prod(self.shape) * torch.finfo(self.dtype).bits // 8
            return max(64, min(8192, (32 << 20) // max(nbytes, 1)))
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 1:
            raise ValueError(
                f"{self._name}: `cache_size` must be a positive int (tree nodes whose tensors "
                f"are kept) or None, got {cache_size!r}."
            )
        return cache_size

    # ---------------------------------------------------------------------------- sampling
    def _randn(self, seed: int, lead: tuple[int, ...] = ()) -> torch.Tensor:
        """Standard normal noise of shape ``lead + self.shape`` from a seed (bit-reproducible
        on a given device)."""
        self._gen.manual_seed(seed)
        return torch.randn(
            lead + self.shape, generator=self._gen, dtype=self.dtype, device=self.device
        )

    @abc.abstractmethod
    def _forward_increment(
        self, ta: float, tb: float
    ) -> tuple[torch.Tensor, torch.Tensor | None]: ...

    # ------------------------------------------------------------------------------ queries
    def _clip(self, t: float, arg: str) -> float:
        if not math.isfinite(t):
            raise ValueError(
                f"{self._name}: query time `{arg}`={t} is not finite; query times must lie in "
                f"the interval [t0, t1] = [{self.t0}, {self.t1}] the Brownian motion was "
                "created on (a NaN time usually comes from a NaN step size or solution time)."
            )
        if t < self.t0:
            if t >= self.t0 - self._slack:
                return self.t0
        elif t > self.t1:
            if t <= self.t1 + self._slack:
                return self.t1
        else:
            return t
        raise ValueError(
            f"{self._name}: query time `{arg}`={t} is outside the interval [t0, t1] = "
            f"[{self.t0}, {self.t1}] the Brownian motion was created on; create it over an "
            "interval that covers the whole solve."
        )

    def _times(self, t: Time, arg: str) -> float | list[float]:
        """A query time as a float, or a list of ``batch`` floats for per-sample times."""
        if isinstance(t, torch.Tensor):
            if t.ndim == 0:
                return self._clip(float(t.item()), arg)
            if t.ndim == 1 and t.shape[0] == self.shape[0]:
                if t.is_complex() or t.dtype == torch.bool:
                    raise TypeError(f"{self._name}: `{arg}` must be real, got dtype {t.dtype}.")
                return [self._clip(float(v), arg) for v in t.tolist()]
            raise ValueError(
                f"{self._name}: `{arg}` must have shape () or (batch,) = ({self.shape[0]},) "
                f"(per-sample times), got shape {tuple(t.shape)}."
            )
        if not is_real(t):
            raise TypeError(
                f"{self._name}: `{arg}` must be a number or a tensor, got {type(t).__name__}."
            )
        return self._clip(float(t), arg)

    def _scalar_query(self, ta: float, tb: float, want_area: bool) -> BrownianIncrement:
        sign = 1.0
        if ta > tb:
            ta, tb, sign = tb, ta, -1.0
        if ta == tb:
            W = torch.zeros(self.shape, dtype=self.dtype, device=self.device)
            H = None if self.levy_area is None else torch.zeros_like(W)
        else:
            W, H = self._forward_increment(ta, tb)
        A = None
        if want_area and self.levy_area in ("davie", "foster"):
            H = cast(torch.Tensor, H)  # tracked whenever `levy_area` is set
            # one independent normal per (i, j) pair, seeded by the query interval
            noise = self._randn(
                mix(self.seed, 8, float_bits(ta), float_bits(tb)), lead=(self.shape[-1],)
            ).movedim(0, -1)
            A = full_area(W, H, tb - ta, self.levy_area, noise)
        if sign < 0:
            W = -W
            A = None if A is None else -A
        return BrownianIncrement(W, H, A)

    def _query(self, ta: Time, tb: Time | None, want_area: bool) -> BrownianIncrement:
        names = ("ta", "tb")
        if tb is None:  # bm(t): the increment over [t0, t]
            ta, tb, names = self.t0, ta, ("t0", "t")
        a = self._times(ta, names[0])
        b = self._times(tb, names[1])
        if isinstance(a, float) and isinstance(b, float):
            return self._scalar_query(a, b, want_area)
        n = self.shape[0]
        la = a if isinstance(a, list) else [a] * n
        lb = b if isinstance(b, list) else [b] * n
        groups: dict[tuple[float, float], list[int]] = {}
        for i, pair in enumerate(zip(la, lb)):
            groups.setdefault(pair, []).append(i)
        if len(groups) == 1:
            return self._scalar_query(la[0], lb[0], want_area)
        # Each distinct interval is queried for the whole batch and its rows are kept: exact
        # (every sample reads its own row of the one Brownian motion), cost x (distinct pairs).
        out: list[torch.Tensor | None] = [None, None, None]
        for (pa, pb), rows in groups.items():
            inc = self._scalar_query(pa, pb, want_area)
            idx = torch.tensor(rows, device=self.device)
            for k, v in enumerate(inc):
                if v is None:
                    continue
                if out[k] is None:
                    out[k] = torch.empty_like(v)
                out[k].index_copy_(0, idx, v.index_select(0, idx))  # type: ignore[union-attr]
        return BrownianIncrement(cast(torch.Tensor, out[0]), out[1], out[2])

    def __call__(self, ta: Time, tb: Time | None = None, *, return_levy_area: bool = False) -> Any:
        """``W(tb) - W(ta)``; ``bm(t)`` is ``W(t) - W(t0)``. With ``return_levy_area=True`` a
        :class:`BrownianIncrement` ``(W, H, A)``."""
        if return_levy_area:
            return self.increment(ta, tb)
        return self._query(ta, tb, want_area=False).W

    def increment(self, ta: Time, tb: Time | None = None) -> BrownianIncrement:
        """The increment and Lévy areas over ``[ta, tb]`` (see :class:`BrownianIncrement`).

        Raises ``ValueError`` when the Brownian motion was built with ``levy_area=None``.
        """
        if self.levy_area is None:
            raise ValueError(
                f"{self._name}: Lévy area requested but the Brownian motion was created with "
                "levy_area=None; pass levy_area='space-time' (or 'davie' / 'foster' for the "
                "full area) when creating it."
            )
        return self._query(ta, tb, want_area=True)

    def evaluate(self, t0: torch.Tensor, t1: torch.Tensor | None = None) -> torch.Tensor:
        return self._query(t0, t1, want_area=False).W

    def __repr__(self) -> str:
        extra = "" if self.levy_area is None else f", levy_area={self.levy_area!r}"
        return (
            f"{type(self).__name__}(t0={self.t0}, t1={self.t1}, shape={self.shape}, "
            f"dtype={self.dtype}, device={self.device}{extra})"
        )
