"""Derivative estimation from sampled trajectories ``x`` of shape ``(num_samples, num_features)``
at times ``t`` (a spacing ``dt`` or a 1-D tensor of increasing times)."""

from __future__ import annotations

import abc

import torch

__all__ = [
    "AbstractDifferentiation",
    "FiniteDifference",
    "SmoothedFiniteDifference",
    "SplineDerivative",
]


def _times(x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    n = x.shape[0]
    if isinstance(t, torch.Tensor):
        if t.ndim != 1 or t.shape[0] != n:
            raise ValueError(
                f"`t` must be a spacing or a 1-D tensor of {n} times (one per row of `x`), got "
                f"shape {tuple(t.shape)}."
            )
        ts = t.to(x.dtype)
        if n > 1 and not bool((ts[1:] > ts[:-1]).all()):
            raise ValueError("`t` must be strictly increasing.")
        return ts
    if isinstance(t, bool) or not isinstance(t, (int, float)) or t <= 0:
        raise ValueError(f"`t` as a spacing must be a number > 0, got {t!r}.")
    return torch.arange(n, dtype=x.dtype, device=x.device) * float(t)


def _check(x: object, min_samples: int) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"`x` must be a torch.Tensor, got {type(x).__name__}.")
    if x.ndim != 2:
        raise ValueError(
            f"`x` must have shape (num_samples, num_features), got shape {tuple(x.shape)}."
        )
    if x.shape[0] < min_samples:
        raise ValueError(
            f"`x` needs at least {min_samples} samples for this method, got {x.shape[0]}."
        )
    return x


class AbstractDifferentiation(abc.ABC):
    """``method(x, t)`` returns the estimated ``dx/dt``, same shape as ``x``."""

    @abc.abstractmethod
    def __call__(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor: ...


class FiniteDifference(AbstractDifferentiation):
    """Finite differences: ``order=2`` (default) central in the interior and second-order
    one-sided at the ends (``torch.gradient``, also for uneven times); ``order=1`` forward
    differences (backward at the last point)."""

    def __init__(self, order: int = 2) -> None:
        if order not in (1, 2):
            raise ValueError(f"`order` must be 1 or 2, got {order!r}.")
        self.order = order

    def __call__(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        x = _check(x, 3)
        ts = _times(x, t)
        if self.order == 2:
            return torch.gradient(x, spacing=(ts,), dim=0, edge_order=2)[0]
        d = (x[1:] - x[:-1]) / (ts[1:] - ts[:-1])[:, None]
        return torch.cat([d, d[-1:]], dim=0)


class SmoothedFiniteDifference(AbstractDifferentiation):
    """Savitzky-Golay smoothing (a least-squares polynomial of degree ``polyorder`` over
    ``window_length`` evenly spaced points; the end windows evaluate their own fit), then
    :class:`FiniteDifference`. PySINDy's defaults: 11 points, degree 3. Needs even spacing."""

    def __init__(self, window_length: int = 11, polyorder: int = 3, order: int = 2) -> None:
        if (
            isinstance(window_length, bool)
            or not isinstance(window_length, int)
            or window_length < 3
            or window_length % 2 == 0
        ):
            raise ValueError(f"`window_length` must be an odd int >= 3, got {window_length!r}.")
        if (
            isinstance(polyorder, bool)
            or not isinstance(polyorder, int)
            or not 0 <= polyorder < window_length
        ):
            raise ValueError(
                f"`polyorder` must be an int in [0, window_length), got {polyorder!r}."
            )
        self.window_length, self.polyorder = window_length, polyorder
        self.fd = FiniteDifference(order)

    def smooth(self, x: torch.Tensor) -> torch.Tensor:
        w, h = self.window_length, self.window_length // 2
        x = _check(x, w)
        offs = torch.arange(-h, h + 1, dtype=x.dtype, device=x.device)
        vander = offs[:, None] ** torch.arange(self.polyorder + 1, dtype=x.dtype, device=x.device)
        proj = vander @ torch.linalg.pinv(vander)  # (w, w): window values -> fitted values
        windows = x.unfold(0, w, 1)  # (n - w + 1, d, w)
        centre = windows @ proj[h]  # (n - w + 1, d)
        head = (proj[:h] @ x[:w]).reshape(h, -1)
        tail = (proj[h + 1 :] @ x[-w:]).reshape(h, -1)
        return torch.cat([head, centre, tail], dim=0)

    def __call__(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        x = _check(x, self.window_length)
        ts = _times(x, t)
        if ts.shape[0] > 2:
            dts = ts[1:] - ts[:-1]
            if float((dts - dts.mean()).abs().max()) > 1e-6 * float(dts.mean()):
                raise ValueError("SmoothedFiniteDifference needs evenly spaced `t`.")
        return self.fd(self.smooth(x), ts)


class SplineDerivative(AbstractDifferentiation):
    """The derivative of a smoothing spline through each feature (SciPy's
    ``UnivariateSpline(t, x, k=degree, s=s)``, as PySINDy's ``SINDyDerivative(kind='spline')``);
    ``s=0`` interpolates. Needs SciPy."""

    def __init__(self, s: float = 0.0, degree: int = 3) -> None:
        if isinstance(s, bool) or not isinstance(s, (int, float)) or s < 0:
            raise ValueError(f"`s` (the smoothing factor) must be a number >= 0, got {s!r}.")
        if degree not in (1, 2, 3, 4, 5):
            raise ValueError(f"`degree` must be an int in 1..5, got {degree!r}.")
        self.s, self.degree = float(s), degree

    def __call__(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        try:
            from scipy.interpolate import UnivariateSpline
        except ImportError as e:  # pragma: no cover - scipy is in the test extras
            raise ImportError("SplineDerivative needs SciPy: pip install scipy.") from e
        x = _check(x, self.degree + 1)
        ts = _times(x, t).detach().cpu().double().numpy()
        xs = x.detach().cpu().double().numpy()
        cols = [
            UnivariateSpline(ts, xs[:, i], k=self.degree, s=self.s).derivative()(ts)
            for i in range(xs.shape[1])
        ]
        return torch.tensor(list(zip(*cols)), dtype=x.dtype, device=x.device).reshape(x.shape)
