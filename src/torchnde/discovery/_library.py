"""Feature libraries for sparse regression (SINDy), following PySINDy's names.

A library maps a state ``x`` of shape ``(num_samples, num_features)`` to the candidate terms
``theta(x)`` of shape ``(num_samples, num_terms)``; :meth:`AbstractLibrary.feature_names` names
each term the way PySINDy does (``1``, ``x0``, ``x0^2``, ``x0 x1``, ``sin(1 x0)``). Libraries
combine: ``a + b`` concatenates their terms, ``a * b`` takes all pairwise products.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from itertools import combinations_with_replacement

import torch

__all__ = [
    "AbstractLibrary",
    "ConcatLibrary",
    "CustomLibrary",
    "FourierLibrary",
    "PolynomialLibrary",
    "TensoredLibrary",
]


def _check_x(x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"`x` must be a torch.Tensor, got {type(x).__name__}.")
    if x.ndim != 2:
        raise ValueError(
            f"`x` must have shape (num_samples, num_features), got shape {tuple(x.shape)}; "
            "reshape a single feature with x[:, None]."
        )
    return x


def _input_names(num_features: int, input_names: Sequence[str] | None) -> list[str]:
    if input_names is None:
        return [f"x{i}" for i in range(num_features)]
    names = list(input_names)
    if len(names) != num_features:
        raise ValueError(
            f"`input_names` must name each of the {num_features} features, got {len(names)} "
            f"names {names}."
        )
    return names


class AbstractLibrary(abc.ABC):
    """A map from states ``(num_samples, num_features)`` to candidate terms."""

    @abc.abstractmethod
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The terms ``theta(x)``, shape ``(num_samples, num_terms)``."""

    @abc.abstractmethod
    def feature_names(
        self, input_names: Sequence[str] | None = None, *, num_features: int
    ) -> list[str]:
        """The names of the terms, for inputs named ``input_names`` (default ``x0, x1, ...``)."""

    def __add__(self, other: AbstractLibrary) -> ConcatLibrary:
        if not isinstance(other, AbstractLibrary):
            return NotImplemented
        return ConcatLibrary([self, other])

    def __mul__(self, other: AbstractLibrary) -> TensoredLibrary:
        if not isinstance(other, AbstractLibrary):
            return NotImplemented
        return TensoredLibrary(self, other)


class PolynomialLibrary(AbstractLibrary):
    """All monomials of the features up to total degree ``degree`` (PySINDy's order: by degree,
    then lexicographic in the features)."""

    def __init__(self, degree: int = 2, include_bias: bool = True) -> None:
        if isinstance(degree, bool) or not isinstance(degree, int) or degree < 0:
            raise ValueError(f"`degree` must be an int >= 0, got {degree!r}.")
        if not include_bias and degree == 0:
            raise ValueError(
                "`degree=0` with `include_bias=False` leaves no terms; use degree >= 1."
            )
        self.degree = degree
        self.include_bias = include_bias

    def _combinations(self, num_features: int) -> list[tuple[int, ...]]:
        start = 0 if self.include_bias else 1
        return [
            c
            for d in range(start, self.degree + 1)
            for c in combinations_with_replacement(range(num_features), d)
        ]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_x(x)
        cols = []
        for c in self._combinations(x.shape[1]):
            col = torch.ones_like(x[:, 0])
            for i in c:
                col = col * x[:, i]
            cols.append(col)
        return torch.stack(cols, dim=1)

    def feature_names(
        self, input_names: Sequence[str] | None = None, *, num_features: int
    ) -> list[str]:
        names = _input_names(num_features, input_names)
        out = []
        for c in self._combinations(num_features):
            if not c:
                out.append("1")
                continue
            parts = []
            for i in sorted(set(c)):
                k = c.count(i)
                parts.append(names[i] if k == 1 else f"{names[i]}^{k}")
            out.append(" ".join(parts))
        return out


class FourierLibrary(AbstractLibrary):
    """``sin(k x_i)`` and ``cos(k x_i)`` for ``k = 1..n`` (PySINDy's ``n_frequencies``)."""

    def __init__(self, n: int = 1, include_sin: bool = True, include_cos: bool = True) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"`n` (the number of frequencies) must be an int >= 1, got {n!r}.")
        if not (include_sin or include_cos):
            raise ValueError("`include_sin` and `include_cos` are both False: no terms left.")
        self.n, self.include_sin, self.include_cos = n, include_sin, include_cos

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_x(x)
        cols = []
        for k in range(1, self.n + 1):
            for i in range(x.shape[1]):
                if self.include_sin:
                    cols.append(torch.sin(k * x[:, i]))
                if self.include_cos:
                    cols.append(torch.cos(k * x[:, i]))
        return torch.stack(cols, dim=1)

    def feature_names(
        self, input_names: Sequence[str] | None = None, *, num_features: int
    ) -> list[str]:
        names = _input_names(num_features, input_names)
        out = []
        for k in range(1, self.n + 1):
            for name in names:
                if self.include_sin:
                    out.append(f"sin({k} {name})")
                if self.include_cos:
                    out.append(f"cos({k} {name})")
        return out


class CustomLibrary(AbstractLibrary):
    """Each function in ``functions`` applied to each feature (elementwise torch functions);
    ``names[j](name)`` names ``functions[j]`` applied to the feature called ``name``."""

    def __init__(
        self,
        functions: Sequence[Callable[[torch.Tensor], torch.Tensor]],
        names: Sequence[Callable[[str], str]],
    ) -> None:
        functions, names = list(functions), list(names)
        if not functions:
            raise ValueError("`functions` is empty; give at least one function.")
        if len(names) != len(functions):
            raise ValueError(
                f"`names` must have one entry per function: got {len(names)} names for "
                f"{len(functions)} functions."
            )
        for j, f in enumerate(functions):
            if not callable(f):
                raise TypeError(f"`functions[{j}]` must be callable, got {type(f).__name__}.")
        for j, g in enumerate(names):
            if not callable(g):
                raise TypeError(
                    f"`names[{j}]` must be a callable str -> str, got {type(g).__name__}; "
                    "e.g. lambda s: f'exp({s})'."
                )
        self.functions, self.names = functions, names

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_x(x)
        return torch.stack([f(x[:, i]) for f in self.functions for i in range(x.shape[1])], dim=1)

    def feature_names(
        self, input_names: Sequence[str] | None = None, *, num_features: int
    ) -> list[str]:
        names = _input_names(num_features, input_names)
        return [str(g(name)) for g in self.names for name in names]


class ConcatLibrary(AbstractLibrary):
    """The terms of several libraries side by side (``a + b``)."""

    def __init__(self, libraries: Sequence[AbstractLibrary]) -> None:
        self.libraries: list[AbstractLibrary] = []
        for lib in libraries:
            self.libraries.extend(lib.libraries if isinstance(lib, ConcatLibrary) else [lib])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([lib(x) for lib in self.libraries], dim=1)

    def feature_names(
        self, input_names: Sequence[str] | None = None, *, num_features: int
    ) -> list[str]:
        return [
            n
            for lib in self.libraries
            for n in lib.feature_names(input_names, num_features=num_features)
        ]


class TensoredLibrary(AbstractLibrary):
    """All products of a term of ``left`` with a term of ``right`` (``left * right``); names
    joined by a space as in PySINDy."""

    def __init__(self, left: AbstractLibrary, right: AbstractLibrary) -> None:
        self.left, self.right = left, right

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.left(x), self.right(x)
        return (a[:, :, None] * b[:, None, :]).reshape(a.shape[0], -1)

    def feature_names(
        self, input_names: Sequence[str] | None = None, *, num_features: int
    ) -> list[str]:
        a = self.left.feature_names(input_names, num_features=num_features)
        b = self.right.feature_names(input_names, num_features=num_features)
        return [f"{p} {q}" for p in a for q in b]
