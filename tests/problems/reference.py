"""Non-stiff reference problems with SciPy reference solutions.

Each vector field ``f(t, y)`` is a plain function written once for both NumPy and torch:
it indexes the state as ``y[..., i]``, so a torch state may carry any leading batch
dimensions, and it picks ``numpy`` or ``torch`` from the type of ``y``. With torch, ``t`` is
a 0-d tensor (joint stepping); with SciPy it is a float.

Problems (state dimension, interval):

* DETEST (Hull, Enright, Fellen, Sedgwick, "Comparing numerical methods for ordinary
  differential equations", SIAM J. Numer. Anal. 9(4), 1972), all on ``[0, 20]``:
  A2 (1, closed form), A3 (1, closed form, non-autonomous), A4 (1, logistic, closed form),
  A5 (1, non-autonomous), B5 (3, Euler's rigid body, Jacobi elliptic closed form),
  C1 (10, linear chain, closed form), D2 and D5 (4, Kepler orbits of eccentricity 0.3 and
  0.9, closed form through Kepler's equation), E3 (2, forced Duffing-type oscillator).
* Lotka–Volterra (2, ``[0, 10]``), Van der Pol with mu = 1 (2, ``[0, 20]``; this is DETEST
  E2), the Arenstorf orbit (4, one period, a periodic orbit of the restricted three-body
  problem) and Pleiades (28, ``[0, 3]``, seven bodies in the plane); Hairer, Nørsett, Wanner,
  *Solving Ordinary Differential Equations I*, 2nd ed., Sec. II.0 and II.10.

The reference solution at the save times ``ts`` comes from SciPy's DOP853 at
``rtol = atol = 3e-14`` and is cached per process (``functools.cache``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["PROBLEMS", "Problem", "get", "reference_solution", "REFERENCE_TOL"]

REFERENCE_TOL = 3e-14


def _xp(y: Any) -> Any:
    return torch if isinstance(y, torch.Tensor) else np


def _stack(parts: list[Any], y: Any) -> Any:
    return _xp(y).stack(parts, -1)


def _time(t: Any, y: Any) -> Any:
    """``t`` as a tensor of ``y``'s dtype for torch (it may come as a float), else as is."""
    if isinstance(y, torch.Tensor):
        return torch.as_tensor(t, dtype=y.dtype, device=y.device)
    return t


@dataclass(frozen=True)
class Problem:
    """An initial value problem ``y' = f(t, y)``, ``y(t0) = y0`` on ``[t0, t1]``.

    Attributes:
        name: short identifier (used as the pytest id).
        f: the vector field ``f(t, y)``, NumPy or torch, batched over leading dimensions.
        y0: the initial state.
        t0, t1: the interval.
        ts: the save times (within ``(t0, t1]``, increasing, ending at ``t1``).
        exact: closed-form solution ``exact(t) -> (len(t), dim)`` for a NumPy array ``t``,
            or ``None``.
        period: the period for a periodic solution (then ``t1 == t0 + period``), or ``None``.
        easy: a short, well-conditioned problem (also run with low-order solvers).
    """

    name: str
    f: Callable[[Any, Any], Any]
    y0: tuple[float, ...]
    t0: float
    t1: float
    ts: tuple[float, ...]
    exact: Callable[[np.ndarray], np.ndarray] | None = None
    period: float | None = None
    easy: bool = False

    @property
    def dim(self) -> int:
        return len(self.y0)

    def y0_tensor(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        return torch.tensor(self.y0, dtype=dtype)

    def ts_tensor(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        return torch.tensor(self.ts, dtype=dtype)

    def vector_field(self) -> Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]:
        """``f`` in the ``f(t, y, args)`` form of ``torchnde.ODETerm``."""
        f = self.f

        def vf(t: torch.Tensor, y: torch.Tensor, args: Any) -> torch.Tensor:
            return f(t, y)

        vf.__name__ = self.name
        return vf

    def reference(self) -> np.ndarray:
        """SciPy DOP853 solution at ``ts``, shape ``(len(ts), dim)``."""
        return reference_solution(self.name)

    def __repr__(self) -> str:
        return f"Problem({self.name})"


def _save_times(t0: float, t1: float, n: int = 20) -> tuple[float, ...]:
    ts = np.linspace(t0, t1, n + 1)[1:]
    ts[-1] = t1
    return tuple(float(t) for t in ts)


# --------------------------------------------------------------------------- DETEST A


def _a2(t: Any, y: Any) -> Any:
    return -0.5 * y**3


def _a2_exact(t: np.ndarray) -> np.ndarray:
    return (1.0 / np.sqrt(1.0 + t))[:, None]


def _a3(t: Any, y: Any) -> Any:
    return y * _xp(y).cos(_time(t, y))


def _a3_exact(t: np.ndarray) -> np.ndarray:
    return np.exp(np.sin(t))[:, None]


def _a4(t: Any, y: Any) -> Any:
    return 0.25 * y * (1.0 - y / 20.0)


def _a4_exact(t: np.ndarray) -> np.ndarray:
    return (20.0 / (1.0 + 19.0 * np.exp(-t / 4.0)))[:, None]


def _a5(t: Any, y: Any) -> Any:
    return (y - t) / (y + t)


# --------------------------------------------------------------------------- DETEST B, C


def _b5(t: Any, y: Any) -> Any:
    y1, y2, y3 = y[..., 0], y[..., 1], y[..., 2]
    return _stack([y2 * y3, -y1 * y3, -0.51 * y1 * y2], y)


def _b5_exact(t: np.ndarray) -> np.ndarray:
    from scipy.special import ellipj

    sn, cn, dn, _ = ellipj(t, 0.51)
    return np.stack([sn, cn, dn], -1)


def _c1(t: Any, y: Any) -> Any:
    parts = [-y[..., 0]]
    parts += [y[..., i - 1] - y[..., i] for i in range(1, 9)]
    parts.append(y[..., 8])
    return _stack(parts, y)


def _c1_exact(t: np.ndarray) -> np.ndarray:
    cols = [t**i * np.exp(-t) / math.factorial(i) for i in range(9)]
    cols.append(1.0 - sum(cols))
    return np.stack(cols, -1)


# --------------------------------------------------------------------------- DETEST D, E


def _kepler(t: Any, y: Any) -> Any:
    x1, x2, v1, v2 = y[..., 0], y[..., 1], y[..., 2], y[..., 3]
    r3 = (x1 * x1 + x2 * x2) ** 1.5
    return _stack([v1, v2, -x1 / r3, -x2 / r3], y)


def _kepler_y0(e: float) -> tuple[float, ...]:
    return (1.0 - e, 0.0, 0.0, math.sqrt((1.0 + e) / (1.0 - e)))


def _kepler_exact(e: float) -> Callable[[np.ndarray], np.ndarray]:
    """Two-body orbit with semi-major axis 1 from periapsis: solve E - e sin E = t."""

    def exact(t: np.ndarray) -> np.ndarray:
        m = np.mod(t, 2 * np.pi)
        ecc = np.full_like(m, np.pi)  # Newton from E = pi converges for every e < 1
        for _ in range(60):
            ecc = ecc - (ecc - e * np.sin(ecc) - m) / (1.0 - e * np.cos(ecc))
        s, c = np.sin(ecc), np.cos(ecc)
        q = math.sqrt(1.0 - e * e)
        d = 1.0 - e * c
        return np.stack([c - e, q * s, -s / d, q * c / d], -1)

    return exact


def _e3(t: Any, y: Any) -> Any:
    y1, y2 = y[..., 0], y[..., 1]
    forcing = 2.0 * _xp(y).sin(2.78535 * _time(t, y)) * _xp(y).ones_like(y1)
    return _stack([y2, y1**3 / 6.0 - y1 + forcing], y)


def _van_der_pol(t: Any, y: Any, mu: float = 1.0) -> Any:
    y1, y2 = y[..., 0], y[..., 1]
    return _stack([y2, mu * (1.0 - y1 * y1) * y2 - y1], y)


def _lotka_volterra(t: Any, y: Any) -> Any:
    y1, y2 = y[..., 0], y[..., 1]
    return _stack([1.5 * y1 - y1 * y2, -3.0 * y2 + y1 * y2], y)


# --------------------------------------------------------------------------- Arenstorf

ARENSTORF_MU = 0.012277471
ARENSTORF_PERIOD = 17.0652165601579625588917206249
_ARENSTORF_Y0 = (0.994, 0.0, 0.0, -2.00158510637908252240537862224)


def _arenstorf(t: Any, y: Any) -> Any:
    mu = ARENSTORF_MU
    mp = 1.0 - mu
    y1, y2, v1, v2 = y[..., 0], y[..., 1], y[..., 2], y[..., 3]
    d1 = ((y1 + mu) ** 2 + y2 * y2) ** 1.5
    d2 = ((y1 - mp) ** 2 + y2 * y2) ** 1.5
    a1 = y1 + 2.0 * v2 - mp * (y1 + mu) / d1 - mu * (y1 - mp) / d2
    a2 = y2 - 2.0 * v1 - mp * y2 / d1 - mu * y2 / d2
    return _stack([v1, v2, a1, a2], y)


# --------------------------------------------------------------------------- Pleiades

_PLEIADES_X = (3.0, 3.0, -1.0, -3.0, 2.0, -2.0, 2.0)
_PLEIADES_Y = (3.0, -3.0, 2.0, 0.0, 0.0, -4.0, 4.0)
_PLEIADES_VX = (0.0, 0.0, 0.0, 0.0, 0.0, 1.75, -1.5)
_PLEIADES_VY = (0.0, 0.0, 0.0, -1.25, 1.0, 0.0, 0.0)


def _pleiades(t: Any, y: Any) -> Any:
    """State (x_1..7, y_1..7, x'_1..7, y'_1..7); body j has mass j."""
    xp = _xp(y)
    if xp is torch:
        mass = torch.arange(1, 8, dtype=y.dtype, device=y.device)
        eye = torch.eye(7, dtype=y.dtype, device=y.device)
    else:
        mass = np.arange(1.0, 8.0)
        eye = np.eye(7)
    x, yy = y[..., 0:7], y[..., 7:14]
    dx = x[..., None, :] - x[..., :, None]  # [i, j] = x_j - x_i
    dy = yy[..., None, :] - yy[..., :, None]
    r2 = dx * dx + dy * dy + eye  # the diagonal (dx = dy = 0) contributes nothing
    w = mass / r2**1.5
    ax = (w * dx).sum(-1)
    ay = (w * dy).sum(-1)
    if xp is torch:
        return torch.cat([y[..., 14:28], ax, ay], -1)
    return np.concatenate([y[..., 14:28], ax, ay], -1)


# --------------------------------------------------------------------------- registry


def _problem(name: str, f: Any, y0: Any, t1: float, **kw: Any) -> Problem:
    return Problem(name, f, tuple(float(v) for v in y0), 0.0, t1, _save_times(0.0, t1), **kw)


PROBLEMS: tuple[Problem, ...] = (
    _problem("A2", _a2, (1.0,), 20.0, exact=_a2_exact, easy=True),
    _problem("A3", _a3, (1.0,), 20.0, exact=_a3_exact, easy=True),
    _problem("A4", _a4, (1.0,), 20.0, exact=_a4_exact, easy=True),
    _problem("A5", _a5, (4.0,), 20.0, easy=True),
    _problem("B5", _b5, (0.0, 1.0, 1.0), 20.0, exact=_b5_exact, easy=True),
    _problem("C1", _c1, (1.0,) + (0.0,) * 9, 20.0, exact=_c1_exact, easy=True),
    _problem("D2", _kepler, _kepler_y0(0.3), 20.0, exact=_kepler_exact(0.3)),
    _problem("D5", _kepler, _kepler_y0(0.9), 20.0, exact=_kepler_exact(0.9)),
    _problem("E3", _e3, (0.0, 0.0), 20.0),
    _problem("lotka_volterra", _lotka_volterra, (1.0, 1.0), 10.0),
    _problem("van_der_pol", _van_der_pol, (2.0, 0.0), 20.0),
    _problem("arenstorf", _arenstorf, _ARENSTORF_Y0, ARENSTORF_PERIOD, period=ARENSTORF_PERIOD),
    _problem(
        "pleiades",
        _pleiades,
        _PLEIADES_X + _PLEIADES_Y + _PLEIADES_VX + _PLEIADES_VY,
        3.0,
    ),
)

_BY_NAME = {p.name: p for p in PROBLEMS}


def get(name: str) -> Problem:
    return _BY_NAME[name]


@functools.cache
def reference_solution(name: str) -> np.ndarray:
    """SciPy DOP853 at ``rtol = atol = REFERENCE_TOL``, at the problem's ``ts``."""
    from scipy.integrate import solve_ivp

    p = _BY_NAME[name]
    sol = solve_ivp(
        p.f,
        (p.t0, p.t1),
        np.array(p.y0),
        method="DOP853",
        t_eval=np.array(p.ts),
        rtol=REFERENCE_TOL,
        atol=REFERENCE_TOL,
    )
    if not sol.success:
        raise RuntimeError(f"reference solve of {name} failed: {sol.message}")
    out = sol.y.T.copy()
    out.setflags(write=False)
    return out
