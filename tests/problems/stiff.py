"""Stiff reference problems with SciPy Radau reference solutions.

Each vector field is written once for NumPy and torch (state indexed as ``y[..., i]``).

* Robertson's chemical kinetics (3 components, ``[0, 1e5]``): rate constants spanning nine
  orders of magnitude (H. H. Robertson, 1966; Hairer & Wanner, *Solving ODEs II*, Sec. IV.1).
* Van der Pol with ``mu = 1000``, ``y'' - mu (1 - y^2) y' + y = 0`` (2 components,
  ``[0, 1000]``): a relaxation oscillation; the interval covers the first slow phase (period
  about 1614) and the first fast jump, near t = 807 (Hairer & Wanner, Sec. IV.1).
* HIRES (8 components, ``[0, 321.8122]``): photomorphogenesis, from the Test Set for IVP
  Solvers (Mazzia & Magherini; Hairer & Wanner, Sec. IV.10).

References come from ``scipy.integrate.solve_ivp(method="Radau", rtol=1e-10, atol=...)``
with the analytic Jacobian, cached per process.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["CONV_T", "STIFF", "StiffProblem", "conv_exact", "conv_vf", "radau_reference"]


def _xp(y: Any) -> Any:
    return torch if isinstance(y, torch.Tensor) else np


def _stack(parts: list[Any], y: Any) -> Any:
    return _xp(y).stack(parts, -1)


def robertson(t: Any, y: Any) -> Any:
    y1, y2, y3 = y[..., 0], y[..., 1], y[..., 2]
    return _stack(
        [
            -0.04 * y1 + 1e4 * y2 * y3,
            0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2 * y2,
            3e7 * y2 * y2,
        ],
        y,
    )


def robertson_jac(t: float, y: np.ndarray) -> np.ndarray:
    y1, y2, y3 = y
    return np.array(
        [
            [-0.04, 1e4 * y3, 1e4 * y2],
            [0.04, -1e4 * y3 - 6e7 * y2, -1e4 * y2],
            [0.0, 6e7 * y2, 0.0],
        ]
    )


MU = 1000.0


def vdp(t: Any, y: Any) -> Any:
    y1, y2 = y[..., 0], y[..., 1]
    return _stack([y2, MU * (1 - y1 * y1) * y2 - y1], y)


def vdp_jac(t: float, y: np.ndarray) -> np.ndarray:
    y1, y2 = y
    return np.array([[0.0, 1.0], [-2 * MU * y1 * y2 - 1, MU * (1 - y1 * y1)]])


def hires(t: Any, y: Any) -> Any:
    y1, y2, y3, y4, y5, y6, y7, y8 = (y[..., i] for i in range(8))
    r = 280.0 * y6 * y8
    return _stack(
        [
            -1.71 * y1 + 0.43 * y2 + 8.32 * y3 + 0.0007,
            1.71 * y1 - 8.75 * y2,
            -10.03 * y3 + 0.43 * y4 + 0.035 * y5,
            8.32 * y2 + 1.71 * y3 - 1.12 * y4,
            -1.745 * y5 + 0.43 * y6 + 0.43 * y7,
            -r + 0.69 * y4 + 1.71 * y5 - 0.43 * y6 + 0.69 * y7,
            r - 1.81 * y7,
            -r + 1.81 * y7,
        ],
        y,
    )


def hires_jac(t: float, y: np.ndarray) -> np.ndarray:
    J = np.zeros((8, 8))
    J[0, :3] = [-1.71, 0.43, 8.32]
    J[1, :2] = [1.71, -8.75]
    J[2, 2:5] = [-10.03, 0.43, 0.035]
    J[3, 1:4] = [8.32, 1.71, -1.12]
    J[4, 4:7] = [-1.745, 0.43, 0.43]
    J[5, 3:8] = [0.69, 1.71, -0.43 - 280 * y[7], 0.69, -280 * y[5]]
    J[6, 5:8] = [280 * y[7], -1.81, 280 * y[5]]
    J[7, 5:8] = [-280 * y[7], 1.81, -280 * y[5]]
    return J


@dataclass(frozen=True)
class StiffProblem:
    name: str
    f: Callable[[Any, Any], Any]
    jac: Callable[[float, np.ndarray], np.ndarray]
    y0: tuple[float, ...]
    t1: float
    atol: float  # absolute tolerance of the reference (the components' scale differs)


STIFF = {
    "robertson": StiffProblem("robertson", robertson, robertson_jac, (1.0, 0.0, 0.0), 1e5, 1e-14),
    "vdp1000": StiffProblem("vdp1000", vdp, vdp_jac, (2.0, 0.0), 1000.0, 1e-12),
    "hires": StiffProblem(
        "hires", hires, hires_jac, (1, 0, 0, 0, 0, 0, 0, 0.0057), 321.8122, 1e-14
    ),
}


@functools.cache
def radau_reference(name: str) -> np.ndarray:
    """The state at ``t1`` from SciPy's Radau at ``rtol=1e-10``."""
    from scipy.integrate import solve_ivp

    p = STIFF[name]
    sol = solve_ivp(
        lambda t, y: p.f(t, y), (0.0, p.t1), np.array(p.y0, dtype=float), method="Radau",
        rtol=1e-10, atol=p.atol, jac=p.jac,
    )  # fmt: skip
    if not sol.success:
        raise RuntimeError(f"reference solve of {name} failed: {sol.message}")
    return sol.y[:, -1]


# A nonlinear, non-autonomous problem with a closed-form solution, y = (1/(1+t), e^{sin t}):
# y1' = -y1² + c, y2' = y2 cos t - c/2, with a coupling c = y1 y2 - y2/(1+t) that vanishes on
# the solution but makes the Jacobian full (for convergence orders of the stiff solvers).
CONV_T = 2.0


def conv_vf(t: torch.Tensor, y: torch.Tensor, args: object) -> torch.Tensor:
    y1, y2 = y[..., 0], y[..., 1]
    c = y1 * y2 - y2 / (1 + t)
    return torch.stack([-y1 * y1 + c, y2 * torch.cos(t) - 0.5 * c], -1)


def conv_exact(t: float) -> np.ndarray:
    return np.array([1 / (1 + t), math.exp(math.sin(t))])
