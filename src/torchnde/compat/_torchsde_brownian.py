"""torchsde's Brownian motions (``BrownianInterval``, ``BrownianTree``, ``BrownianPath``,
``ReverseBrownian``) on torchnde's.

Each is a torchnde :class:`~torchnde.AbstractBrownianPath` (so torchnde's solvers take it
as is) whose ``__call__`` follows torchsde: ``bm(ta, tb, return_U=False, return_A=False)``
returns ``W`` or the tuples ``(W, U)``, ``(W, A)``, ``(W, U, A)``, with
$U = \\int_{t_a}^{t_b} (W_s - W_{t_a})\\,ds = h (H + W / 2)$; ``bm(t)`` is the increment from
``t0`` (plus ``w0`` for ``BrownianTree`` / ``BrownianPath``); times outside ``[t0, t1]`` are
clamped with a warning and ``ta > tb`` raises ``RuntimeError``, as in torchsde. Sizes ``()``
and ``(batch,)`` are accepted (Lévy area zero, as torchsde treats the one dimension as a
batch).

Given end values (``W``/``H`` of ``BrownianInterval``, ``w1`` of ``BrownianTree``) condition
the path by the exact Brownian-bridge transform: with $s = t - t_0$, $T = t_1 - t_0$ and a
free Brownian motion $B$,
$W_t = B_t + \\frac{s}{T}(W - B_T) + \\frac{6 s (T - s)}{T^2} (H - H^B)$, because
$B_t - \\frac{s}{T} B_T - \\frac{6 s (T - s)}{T^2} H^B$ is independent of $(B_T, H^B)$
(J. Foster, T. Lyons, H. Oberhauser, *An optimal polynomial approximation of Brownian
motion*, SIAM J. Numer. Anal. 2020).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from .._brownian import AbstractBrownianPath
from .._brownian import BrownianInterval as _Interval
from .._brownian import BrownianPath as _Path
from .._brownian import VirtualBrownianTree as _Tree

__all__ = ["BaseBrownian", "BrownianInterval", "BrownianPath", "BrownianTree", "ReverseBrownian"]

_LEVY = {"none": None, "space-time": "space-time", "davie": "davie", "foster": "foster"}


def _levy(name: str) -> str | None:
    if name not in _LEVY:
        raise ValueError(f"`levy_area_approximation` must be one of {list(_LEVY)}, got {name!r}.")
    return _LEVY[name]


def _float(t: Any) -> float:
    return float(t.item()) if isinstance(t, torch.Tensor) else float(t)


class BaseBrownian(AbstractBrownianPath):
    """A torchnde Brownian motion called the torchsde way (see the module docstring)."""

    _name = "BrownianInterval"

    def __init__(
        self,
        inner: AbstractBrownianPath,
        size: tuple[int, ...],
        levy_area_approximation: str,
        w0: torch.Tensor | None = None,
        W: torch.Tensor | None = None,
        H: torch.Tensor | None = None,
    ) -> None:
        super().__init__(
            inner.t0, inner.t1, inner.shape, dtype=inner.dtype, device=inner.device,
            seed=inner.seed, levy_area=inner.levy_area,
        )  # fmt: skip
        self._inner = inner
        self._size = size
        self._levy_name = levy_area_approximation
        self._w0 = w0
        self._given = None if W is None and H is None else (W, H)
        self._free_total: tuple[torch.Tensor, torch.Tensor | None] | None = None

    # torchsde's properties
    @property
    def size(self) -> torch.Size:  # type: ignore[override]
        return torch.Size(self._size)

    @property
    def levy_area_approximation(self) -> str:
        return self._levy_name

    def _free(self, ta: float, tb: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self._inner.levy_area is None:
            return self._inner.evaluate(ta, tb), None  # type: ignore[arg-type]
        inc = self._inner.increment(ta, tb)
        return inc.W, inc.H

    def _forward_increment(self, ta: float, tb: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        W, H = self._free(ta, tb)
        if self._given is None:
            return W, H
        if self._free_total is None:
            self._free_total = self._free(self.t0, self.t1)
        WT, HT = self._free_total
        Wg, Hg = self._given
        T, sa, sb = self._span, ta - self.t0, tb - self.t0
        if Wg is not None:
            W = W + (tb - ta) / T * (Wg.reshape(W.shape) - WT)
        if Hg is not None:
            assert HT is not None  # a given H makes the inner motion keep H
            dH = Hg.reshape(W.shape) - HT
            phi = 6.0 * (sb * (T - sb) - sa * (T - sa)) / T**2
            W = W + phi * dH
            if H is not None:
                H = H + ((tb - ta) / T) ** 2 * dH
        return W, H

    def __call__(  # type: ignore[override]
        self,
        ta: Any,
        tb: Any = None,
        return_U: bool = False,
        return_A: bool = False,
        *,
        return_levy_area: bool = False,
    ) -> Any:
        if return_levy_area:  # torchnde's solvers
            return super().__call__(ta, tb, return_levy_area=True)
        point = tb is None
        a, b = (self.t0, _float(ta)) if point else (_float(ta), _float(tb))
        for name, v in (("ta", a), ("tb", b)):
            if v < self.t0 or v > self.t1:
                warnings.warn(
                    f"Should have {self.t0} <= {name} <= {self.t1} but got {name}={v}; clamped.",
                    stacklevel=2,
                )
        a, b = min(max(a, self.t0), self.t1), min(max(b, self.t0), self.t1)
        if a > b:
            raise RuntimeError(f"Query times ta={a:.3f} and tb={b:.3f} must respect ta <= tb.")
        want_U = return_U and self._levy_name != "none"
        want_A = return_A and self._levy_name in ("davie", "foster")
        inc = self._query(a, b, want_area=want_A and len(self._size) >= 2)
        shape = self._size
        W = inc.W.reshape(shape)
        U = A = None
        if want_U:
            assert inc.H is not None
            U = ((b - a) * (inc.H + 0.5 * inc.W)).reshape(shape)
        if want_A:
            A = torch.zeros_like(W) if inc.A is None else inc.A
        if not return_U and not return_A:
            return W + self._w0 if point and self._w0 is not None else W
        if return_U and return_A:
            return W, U, A
        return (W, U) if return_U else (W, A)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(t0={self.t0}, t1={self.t1}, size={self._size})"


def _internal(size: tuple[int, ...], levy: str | None) -> tuple[tuple[int, ...], str | None]:
    # torchnde's Brownian motions need a batch dimension and compute A over the last one;
    # torchsde treats sizes () and (batch,) as batch only (zero Lévy area).
    if len(size) >= 2:
        return size, levy
    return (size or (1,)), ("space-time" if levy in ("davie", "foster") else levy)


def _entropy(entropy: int | None) -> int:
    """torchsde draws a missing ``entropy`` from NumPy's global generator, so creating a
    Brownian motion leaves torch's global stream alone (a script seeded with
    ``torch.manual_seed`` initialises its models the same under either library)."""
    if entropy is None:
        return int(np.random.randint(0, 2**31 - 1))  # noqa: NPY002
    return entropy


class BrownianInterval(BaseBrownian):
    """torchsde's ``BrownianInterval(t0, t1, size, dtype, device, entropy, ...)``: a torchnde
    :class:`~torchnde.BrownianInterval` (``entropy`` is the seed); with ``halfway_tree=True``
    a :class:`~torchnde.VirtualBrownianTree` resolved to ``tol`` (answers independent of the
    query order, as torchsde's). ``dt``, ``pool_size`` and ``cache_size`` are tuning hints."""

    def __init__(
        self,
        t0: Any,
        t1: Any,
        size: Any = None,
        dtype: torch.dtype | None = None,
        device: Any = None,
        entropy: int | None = None,
        dt: float | None = None,
        tol: float = 0.0,
        pool_size: int = 8,
        cache_size: int | None = 45,
        halfway_tree: bool = False,
        levy_area_approximation: str = "none",
        W: torch.Tensor | None = None,
        H: torch.Tensor | None = None,
    ) -> None:
        given = W if W is not None else H
        if size is None:
            if given is None:
                raise ValueError("BrownianInterval: pass `size` (or `W` / `H` to take it from).")
            size = given.shape
        if given is not None:
            dtype = given.dtype if dtype is None else dtype
            device = given.device if device is None else device
        if H is not None and levy_area_approximation == "none":
            raise ValueError(
                "BrownianInterval: a given `H` needs levy_area_approximation='space-time', "
                "'davie' or 'foster'."
            )
        entropy = _entropy(entropy)
        size_t = tuple(int(s) for s in size)
        shape, levy = _internal(size_t, _levy(levy_area_approximation))
        if H is not None and levy is None:
            levy = "space-time"
        inner: AbstractBrownianPath
        t0f, t1f = _float(t0), _float(t1)
        if halfway_tree:
            inner = _Tree(
                t0f, t1f, shape, tol=tol if tol > 0 else None, dtype=dtype, device=device,
                seed=entropy, levy_area=levy,
            )  # fmt: skip
        else:
            cache = 64 if cache_size is None else max(int(cache_size), 1)
            inner = _Interval(
                t0f, t1f, shape, dtype=dtype, device=device, seed=entropy, levy_area=levy,
                cache_size=cache,
            )  # fmt: skip
        super().__init__(inner, size_t, levy_area_approximation, W=W, H=H)


class BrownianTree(BaseBrownian):
    """torchsde's ``BrownianTree(t0, w0, t1=t0 + 1, w1=None, entropy, tol, ...)``: a torchnde
    :class:`~torchnde.VirtualBrownianTree` of the shape, dtype and device of ``w0``;
    ``bm(t)`` is ``w0 + W(t)`` and a given ``w1`` pins ``bm(t1) = w1`` (Brownian bridge).
    ``pool_size``, ``cache_depth`` and ``safety`` are tuning hints it does not need."""

    _name = "BrownianTree"

    def __init__(
        self,
        t0: Any,
        w0: torch.Tensor,
        t1: Any = None,
        w1: torch.Tensor | None = None,
        entropy: int | None = None,
        tol: float = 1e-6,
        pool_size: int = 24,
        cache_depth: int = 9,
        safety: float | None = None,
    ) -> None:
        t0f = _float(t0)
        t1f = t0f + 1.0 if t1 is None else _float(t1)
        size = tuple(w0.shape)
        shape, _ = _internal(size, None)
        inner = _Tree(
            t0f, t1f, shape, tol=tol, dtype=w0.dtype, device=w0.device, seed=_entropy(entropy)
        )
        W = None if w1 is None else w1 - w0
        super().__init__(inner, size, "none", w0=w0, W=W)


class BrownianPath(BaseBrownian):
    """torchsde's ``BrownianPath(t0, w0, window_size=8)``: a torchnde
    :class:`~torchnde.BrownianPath` on ``[t0, t0 + 1]`` (torchsde's horizon) of the shape,
    dtype and device of ``w0``; ``bm(t)`` is ``w0 + W(t)``. ``window_size`` is unused, as
    in torchsde. torchnde extension: keyword ``t1`` for a longer horizon (torchsde clamps
    queries past ``t0 + 1``)."""

    _name = "BrownianPath"

    def __init__(self, t0: Any, w0: torch.Tensor, window_size: int = 8, *, t1: Any = None) -> None:
        t0f = _float(t0)
        t1f = t0f + 1.0 if t1 is None else _float(t1)
        size = tuple(w0.shape)
        shape, _ = _internal(size, None)
        inner = _Path(t0f, t1f, shape, dtype=w0.dtype, device=w0.device)
        super().__init__(inner, size, "none", w0=w0)


class ReverseBrownian:
    """torchsde's ``ReverseBrownian(bm)``: ``bm`` run backwards, ``rev(ta, tb) = bm(-tb, -ta)``
    (for query use; torchnde's solvers run reverse-time solves on the forward path
    themselves, so ``sdeint`` does not take it)."""

    def __init__(self, base_brownian: Any) -> None:
        self.base_brownian = base_brownian

    def __call__(self, ta: Any, tb: Any = None, return_U: bool = False, return_A: bool = False):
        return self.base_brownian(-tb, -ta, return_U=return_U, return_A=return_A)

    def __repr__(self) -> str:
        return f"ReverseBrownian(base_brownian={self.base_brownian!r})"

    @property
    def dtype(self) -> torch.dtype:
        return self.base_brownian.dtype

    @property
    def device(self) -> torch.device:
        return self.base_brownian.device

    @property
    def shape(self) -> Any:
        return self.base_brownian.shape

    @property
    def levy_area_approximation(self) -> str:
        return self.base_brownian.levy_area_approximation
