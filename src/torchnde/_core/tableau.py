"""Butcher tableaux as validated data.

A tableau is plain numbers: it is checked once when built and cast to a (dtype, device)
pair once per solve (cached), never mutated by a solver.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["ButcherTableau"]

_TOL = 1e-12


def _as_rows(name: str, value: Sequence[Sequence[float]]) -> tuple[tuple[float, ...], ...]:
    try:
        return tuple(tuple(float(x) for x in row) for row in value)
    except TypeError as e:
        raise TypeError(
            f"ButcherTableau: `{name}` must be a sequence of rows of numbers, got {value!r}."
        ) from e


def _as_vec(name: str, value: Sequence[float]) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in value)
    except TypeError as e:
        raise TypeError(
            f"ButcherTableau: `{name}` must be a sequence of numbers, got {value!r}."
        ) from e


@dataclass(frozen=True, eq=False)
class ButcherTableau:
    r"""The coefficients of an explicit Runge–Kutta method.

    $$k_i = f\Big(t_0 + c_i h,\; y_0 + h \sum_{j<i} a_{ij} k_j\Big),\qquad
    y_1 = y_0 + h \sum_i b_i k_i,\qquad
    \hat e = h \sum_i (b_i - \hat b_i) k_i .$$

    Args:
        a: the strictly lower-triangular stage matrix, given as its rows: row ``i`` (for
            stages ``i = 1 .. s-1``) holds ``a[i][0..i-1]``; the first (empty) row is omitted.
        b: the weights of the propagated solution, length ``s``.
        c: the nodes, length ``s`` with ``c[0] == 0``.
        order: the order of the propagated solution.
        b_error: the weights of the embedded solution, or ``None`` for a fixed-step method.
        error_order: the exponent ``k`` of the local error estimate (error ~ h^k), used by
            step-size controllers. Defaults to ``min(order, embedded order) + 1`` and must be
            given when ``b_error`` is.
        b_dense: optional dense-output polynomial, shape ``(s, m)``:
            ``b_i(θ) = Σ_m b_dense[i][m] θ^(m+1)``. Without it, a cubic Hermite interpolant
            through both end points and their derivatives is used (order ``min(order, 3)``).
        dense_order: the order of ``b_dense`` (local error ``O(h^{dense_order+1})``).
        fsal: whether the last stage is evaluated at ``(t1, y1)`` (the first stage of the next
            step). Checked against the coefficients.

    Raises:
        ValueError: when shapes do not match or the row-sum condition ``c_i = Σ_j a_ij``
            fails.

    Example:
        >>> heun = ButcherTableau(a=[[1.0]], b=[0.5, 0.5], c=[0.0, 1.0], order=2)
    """

    a: Sequence[Sequence[float]]
    b: Sequence[float]
    c: Sequence[float]
    order: int
    b_error: Sequence[float] | None = None
    error_order: int | None = None
    b_dense: Sequence[Sequence[float]] | None = None
    dense_order: int | None = None
    fsal: bool = False
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        a = _as_rows("a", self.a)
        b = _as_vec("b", self.b)
        c = _as_vec("c", self.c)
        s = len(b)
        set_ = object.__setattr__
        set_(self, "a", a)
        set_(self, "b", b)
        set_(self, "c", c)
        if s < 1:
            raise ValueError("ButcherTableau: `b` must have at least one weight, got none.")
        if len(c) != s:
            raise ValueError(
                f"ButcherTableau: `c` must have one node per stage ({s}, the length of `b`), "
                f"got {len(c)}."
            )
        if len(a) != s - 1 or any(len(row) != i + 1 for i, row in enumerate(a)):
            raise ValueError(
                f"ButcherTableau: `a` must have {s - 1} rows of lengths 1, 2, ..., {s - 1} "
                f"(the strictly lower triangle of an explicit method with {s} stages), got row "
                f"lengths {[len(r) for r in a]}."
            )
        if abs(c[0]) > _TOL:
            raise ValueError(f"ButcherTableau: an explicit method needs `c[0] == 0`, got {c[0]}.")
        for i, row in enumerate(a):
            if abs(sum(row) - c[i + 1]) > 1e-10:
                raise ValueError(
                    f"ButcherTableau: row {i + 1} of `a` sums to {sum(row)!r} but "
                    f"`c[{i + 1}]` = {c[i + 1]!r}; an explicit Runge–Kutta method needs "
                    "c_i = sum_j a_ij."
                )
        if not isinstance(self.order, int) or self.order < 1:
            raise ValueError(f"ButcherTableau: `order` must be a positive int, got {self.order!r}.")
        if self.b_error is not None:
            be = _as_vec("b_error", self.b_error)
            if len(be) != s:
                raise ValueError(f"ButcherTableau: `b_error` must have {s} weights, got {len(be)}.")
            set_(self, "b_error", be)
            if self.error_order is None:
                raise ValueError(
                    "ButcherTableau: `error_order` (the exponent k of the local error estimate, "
                    "error ~ h^k) is required with `b_error`."
                )
        if self.b_dense is not None:
            bd = _as_rows("b_dense", self.b_dense)
            if len(bd) != s or len({len(r) for r in bd}) != 1:
                raise ValueError(
                    f"ButcherTableau: `b_dense` must be an ({s}, m) array of polynomial "
                    f"coefficients, got row lengths {[len(r) for r in bd]}."
                )
            set_(self, "b_dense", bd)
            if self.dense_order is None:
                raise ValueError("ButcherTableau: `dense_order` is required with `b_dense`.")
        if self.fsal:
            if s < 2 or any(abs(x - y) > _TOL for x, y in zip(a[-1], b[:-1])) or abs(b[-1]) > _TOL:
                raise ValueError(
                    "ButcherTableau: `fsal=True` needs the last row of `a` to equal `b` (and "
                    "`b[-1] == 0`), so the last stage is evaluated at (t1, y1)."
                )
            if abs(c[-1] - 1.0) > _TOL:
                raise ValueError("ButcherTableau: `fsal=True` needs `c[-1] == 1`.")

    @property
    def num_stages(self) -> int:
        return len(self.b)

    @property
    def is_adaptive(self) -> bool:
        return self.b_error is not None

    def dense_polynomial_order(self) -> int:
        """The order of the dense output this tableau yields."""
        if self.dense_order is not None and self.b_dense is not None:
            return self.dense_order
        return min(self.order, 3)

    def cast(self, dtype: torch.dtype, device: torch.device) -> dict[str, Any]:
        """Tensors of the coefficients for one (dtype, device), cached.

        Keys: ``a`` (s, s) lower triangular, ``b`` (s,), ``c`` (s,), ``e`` (s,) = b - b_error,
        ``dense`` (s, m) when the tableau has a dense polynomial.
        """
        key = (dtype, device)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        s = self.num_stages
        a = torch.zeros(s, s, dtype=torch.float64)
        for i, row in enumerate(self.a):
            a[i + 1, : i + 1] = torch.tensor(row, dtype=torch.float64)
        out: dict[str, Any] = {
            "a": a,
            "b": torch.tensor(self.b, dtype=torch.float64),
            "c": torch.tensor(self.c, dtype=torch.float64),
        }
        if self.b_error is not None:
            out["e"] = out["b"] - torch.tensor(self.b_error, dtype=torch.float64)
        if self.b_dense is not None:
            out["dense"] = torch.tensor(self.b_dense, dtype=torch.float64)
        out = {k: v.to(dtype=dtype, device=device) for k, v in out.items()}
        # Row views used by the engine's fused stage products, built once: the full
        # zero-padded rows, and the rows cut to the stages before them (`a_low[i]` is
        # (1, i): stage i reads only the i stages already computed).
        out["a_pad"] = [out["a"][i : i + 1] for i in range(s)]
        out["a_low"] = [out["a"][i : i + 1, :i].contiguous() for i in range(s)]
        out["c_time"] = {}
        out["b_row"] = out["b"][None]
        if "e" in out:
            out["e_row"] = out["e"][None]
        self._cache[key] = out
        return out
