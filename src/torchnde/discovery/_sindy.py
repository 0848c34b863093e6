"""Sparse identification of nonlinear dynamics (Brunton, Proctor, Kutz 2016), PySINDy's API."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO, cast

import torch

from .._core.controllers import PIDController
from .._core.solution import SaveAt
from .._core.solvers import Dopri5
from .._core.terms import ODETerm
from .._solve import solve
from ._differentiation import AbstractDifferentiation, FiniteDifference, _times
from ._library import AbstractLibrary, PolynomialLibrary, _check_x
from ._optimizers import STLSQ, AbstractOptimizer

__all__ = ["SINDy", "EnsembleSINDy"]


def _format_equation(coefs: torch.Tensor, names: Sequence[str], precision: int) -> str:
    terms = []
    for c, name in zip(coefs.tolist(), names):
        if c == 0:
            continue
        terms.append(f"{c:.{precision}f}" if name == "1" else f"{c:.{precision}f} {name}")
    return " + ".join(terms) if terms else f"{0:.{precision}f}"


class SINDy:
    """``x_dot = theta(x) @ xi.T`` with a sparse ``xi`` found by ``optimizer`` over the terms of
    ``feature_library``. Defaults as PySINDy: :class:`STLSQ`, a degree-2
    :class:`PolynomialLibrary`, :class:`FiniteDifference`."""

    def __init__(
        self,
        optimizer: AbstractOptimizer | None = None,
        feature_library: AbstractLibrary | None = None,
        differentiation_method: AbstractDifferentiation | None = None,
        feature_names: Sequence[str] | None = None,
    ) -> None:
        for name, value, cls in (
            ("optimizer", optimizer, AbstractOptimizer),
            ("feature_library", feature_library, AbstractLibrary),
            ("differentiation_method", differentiation_method, AbstractDifferentiation),
        ):
            if value is not None and not isinstance(value, cls):
                raise TypeError(
                    f"`{name}` must be a {cls.__name__} (or None), got {type(value).__name__}."
                )
        self.optimizer = optimizer if optimizer is not None else STLSQ()
        self.feature_library = (
            feature_library if feature_library is not None else PolynomialLibrary()
        )
        self.differentiation_method = differentiation_method or FiniteDifference()
        self.feature_names = list(feature_names) if feature_names is not None else None
        self._coef: torch.Tensor | None = None
        self._num_features = 0

    def _data(
        self, x: object, t: float | torch.Tensor | None, x_dot: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = _check_x(x)
        if x_dot is None:
            if t is None:
                raise ValueError("give `t` (a spacing or the sample times) or `x_dot` to fit.")
            x_dot = self.differentiation_method(x, t)
        elif not isinstance(x_dot, torch.Tensor) or x_dot.shape != x.shape:
            got = tuple(x_dot.shape) if isinstance(x_dot, torch.Tensor) else type(x_dot).__name__
            raise ValueError(
                f"`x_dot` must be a tensor of the shape of `x`, {tuple(x.shape)}, got {got}."
            )
        elif t is not None:
            _times(x, t)
        return x, x_dot.to(x.dtype)

    def _check_names(self, x: torch.Tensor) -> None:
        if self.feature_names is not None and len(self.feature_names) != x.shape[1]:
            raise ValueError(
                f"`feature_names` has {len(self.feature_names)} names but `x` has "
                f"{x.shape[1]} features."
            )

    def fit(
        self,
        x: torch.Tensor,
        t: float | torch.Tensor | None = None,
        x_dot: torch.Tensor | None = None,
    ) -> SINDy:
        """Fit to samples ``x`` ``(num_samples, num_features)`` at times ``t`` (spacing or 1-D
        tensor), with derivatives ``x_dot`` if known (else estimated). Returns ``self``."""
        x, x_dot = self._data(x, t, x_dot)
        self._check_names(x)
        self._num_features = x.shape[1]
        self._coef = self.optimizer.fit(self.feature_library(x), x_dot)
        return self

    def _fitted(self) -> torch.Tensor:
        if self._coef is None:
            raise RuntimeError("this SINDy model is not fitted yet; call fit(x, t=...) first.")
        return self._coef

    def coefficients(self) -> torch.Tensor:
        """``xi``, shape ``(num_features, num_terms)``: row ``i`` gives ``d x_i / dt``."""
        return self._fitted()

    def get_feature_names(self) -> list[str]:
        """The names of the library's terms."""
        self._fitted()
        return self.feature_library.feature_names(
            self.feature_names, num_features=self._num_features
        )

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The model's ``x_dot`` at states ``x`` ``(num_samples, num_features)``."""
        coef = self._fitted()
        x = _check_x(x)
        if x.shape[1] != self._num_features:
            raise ValueError(
                f"`x` must have {self._num_features} features (as in fit), got shape "
                f"{tuple(x.shape)}."
            )
        return self.feature_library(x) @ coef.T.to(x.dtype)

    def simulate(
        self, x0: torch.Tensor, t: torch.Tensor, *, rtol: float = 1e-8, atol: float = 1e-10
    ) -> torch.Tensor:
        """Integrate the model from ``x0`` ``(num_features,)`` over the times ``t`` (1-D,
        increasing) with :func:`torchnde.solve` (Dopri5); returns ``(len(t), num_features)``."""
        self._fitted()
        if not isinstance(x0, torch.Tensor) or x0.shape != (self._num_features,):
            got = tuple(x0.shape) if isinstance(x0, torch.Tensor) else type(x0).__name__
            raise ValueError(f"`x0` must be a tensor of shape ({self._num_features},), got {got}.")
        if not isinstance(t, torch.Tensor) or t.ndim != 1 or t.shape[0] < 2:
            raise ValueError("`t` must be a 1-D tensor of at least 2 increasing times.")
        ts = t.to(x0.dtype)
        sol = solve(
            ODETerm(lambda s, y, args: self.predict(y[None])[0]),
            Dopri5(),
            float(ts[0]),
            float(ts[-1]),
            x0,
            saveat=SaveAt(ts=ts),
            controller=PIDController(rtol=rtol, atol=atol),
        )
        return cast(torch.Tensor, sol.ys)  # SaveAt(ts=...) always fills ys

    def equations(self, precision: int = 3) -> list[str]:
        """One string per feature, PySINDy's format: ``-10.000 x0 + 10.000 x1``."""
        names = self.get_feature_names()
        return [_format_equation(row, names, precision) for row in self.coefficients()]

    def print(
        self, lhs: Sequence[str] | None = None, precision: int = 3, file: TextIO | None = None
    ) -> list[str]:
        """Write ``(x0)' = ...`` lines to ``file`` (default ``sys.stdout``), as PySINDy's
        ``print``; returns the lines."""
        names = (
            list(lhs)
            if lhs is not None
            else (self.feature_names or [f"x{i}" for i in range(self._num_features)])
        )
        lines = [f"({n})' = {eq}" for n, eq in zip(names, self.equations(precision))]
        out = sys.stdout if file is None else file
        for line in lines:
            out.write(line + "\n")
        return lines


class EnsembleSINDy(SINDy):
    """Bagging SINDy (Fasel et al. 2022): fit on ``num_models`` random subsets of
    ``subset_fraction`` of the samples (with replacement); the coefficients are the median over
    the models, ``inclusion_probabilities()`` the fraction of models that keep each term."""

    def __init__(
        self,
        optimizer: AbstractOptimizer | None = None,
        feature_library: AbstractLibrary | None = None,
        differentiation_method: AbstractDifferentiation | None = None,
        feature_names: Sequence[str] | None = None,
        *,
        num_models: int = 20,
        subset_fraction: float = 0.6,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(optimizer, feature_library, differentiation_method, feature_names)
        if isinstance(num_models, bool) or not isinstance(num_models, int) or num_models < 1:
            raise ValueError(f"`num_models` must be an int >= 1, got {num_models!r}.")
        if not isinstance(subset_fraction, (int, float)) or not 0 < subset_fraction <= 1:
            raise ValueError(f"`subset_fraction` must be in (0, 1], got {subset_fraction!r}.")
        self.num_models, self.subset_fraction, self.generator = (
            num_models,
            float(subset_fraction),
            generator,
        )
        self._inclusion: torch.Tensor | None = None
        self.coef_list: torch.Tensor | None = None

    def fit(
        self,
        x: torch.Tensor,
        t: float | torch.Tensor | None = None,
        x_dot: torch.Tensor | None = None,
    ) -> EnsembleSINDy:
        x, x_dot = self._data(x, t, x_dot)
        self._check_names(x)
        self._num_features = x.shape[1]
        theta = self.feature_library(x)
        n = x.shape[0]
        k = max(1, int(self.subset_fraction * n))
        coefs = []
        for _ in range(self.num_models):
            idx = torch.randint(0, n, (k,), generator=self.generator, device=x.device)
            coefs.append(self.optimizer.fit(theta[idx], x_dot[idx]))
        self.coef_list = torch.stack(coefs)
        self._coef = self.coef_list.median(dim=0).values
        self._inclusion = (self.coef_list != 0).to(x.dtype).mean(dim=0)
        return self

    def inclusion_probabilities(self) -> torch.Tensor:
        """The fraction of the bagged models in which each coefficient is nonzero."""
        self._fitted()
        return cast(torch.Tensor, self._inclusion)  # set by fit, checked by _fitted
