"""An independent reference for delay differential equations: the method of steps with SciPy.

``scipy_dde(f, delays, phi, t0, t1, y0, ...)`` solves $y' = f(t, y, (y(t - \\tau_i))_i)$ with
``solve_ivp`` (DOP853, dense output) on segments no longer than ``min_delay`` (or the
smallest constant delay), split further at ``breakpoints``; the vector field reads the past
from ``phi`` (``t <= t0``) and from the dense outputs of the earlier segments. Plain NumPy
and floats: nothing of torchnde is used. Delays are floats or callables ``tau(t, y)``.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence

import numpy as np
from scipy.integrate import solve_ivp


class DenseHistory:
    """``phi`` before ``t0``, then the dense outputs of the solved pieces."""

    def __init__(self, phi: Callable[[float], np.ndarray], t0: float):
        self.phi, self.t0 = phi, t0
        self.ends: list[float] = []
        self.pieces: list[Callable[[float], np.ndarray]] = []

    def __call__(self, s: float) -> np.ndarray:
        if s <= self.t0:
            return np.asarray(self.phi(s), dtype=float)
        j = min(bisect.bisect_left(self.ends, s), len(self.ends) - 1)
        return self.pieces[j](s)


def scipy_dde(
    f: Callable[[float, np.ndarray, tuple[np.ndarray, ...]], np.ndarray],
    delays: Sequence[float | Callable[[float, np.ndarray], float]],
    phi: Callable[[float], np.ndarray],
    t0: float,
    t1: float,
    y0: np.ndarray,
    *,
    min_delay: float | None = None,
    breakpoints: Sequence[float] = (),
    rtol: float = 1e-12,
    atol: float = 1e-12,
    method: str = "DOP853",
) -> tuple[DenseHistory, int]:
    """The dense solution on ``[t0, t1]`` (a callable of one time) and the number of f calls."""
    consts = [d for d in delays if not callable(d)]
    length = min(consts + ([min_delay] if min_delay is not None else []))
    hist = DenseHistory(phi, t0)
    nfe = 0

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        nonlocal nfe
        nfe += 1
        yd = tuple(hist(t - (d(t, y) if callable(d) else d)) for d in delays)
        return np.asarray(f(t, y, yd), dtype=float)

    cuts = {t1}
    k = 1
    while t0 + k * length < t1:
        cuts.add(t0 + k * length)
        k += 1
    cuts.update(p for p in breakpoints if t0 < p < t1)
    y = np.asarray(y0, dtype=float)
    lo = t0
    for hi in sorted(cuts):
        sol = solve_ivp(rhs, (lo, hi), y, method=method, rtol=rtol, atol=atol, dense_output=True)
        if not sol.success:
            raise RuntimeError(f"solve_ivp failed on [{lo}, {hi}]: {sol.message}")
        hist.ends.append(hi)
        hist.pieces.append(sol.sol)
        y = sol.y[:, -1]
        lo = hi
    return hist, nfe


def mackey_glass(beta: float = 0.2, gamma: float = 0.1, n: float = 10.0):
    """The Mackey-Glass field $y' = \\beta y_\\tau / (1 + y_\\tau^n) - \\gamma y$ (NumPy)."""

    def f(t: float, y: np.ndarray, yd: tuple[np.ndarray, ...]) -> np.ndarray:
        return beta * yd[0] / (1 + yd[0] ** n) - gamma * y

    return f
