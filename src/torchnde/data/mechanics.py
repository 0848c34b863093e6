r"""Simulated mechanical systems for the physics-structured models: exact or reference-tolerance
trajectories, seeded.

- the ideal mass-spring $H = \tfrac12 (q^2 + p^2)$ (exact solution);
- the ideal pendulum of Greydanus et al. (2019), $m = l = 1$, $g = 3$:
  $H = 2 m g l (1 - \cos q) + \tfrac{l^2 p^2}{2 m} = 6 (1 - \cos q) + \tfrac12 p^2$;
- the double pendulum of Cranmer et al. (2020), unit masses and lengths, $g = 9.8$, state
  $(\theta_1, \theta_2, \omega_1, \omega_2)$;
- a damped pendulum driven by a torque (for :class:`~torchnde.models.DeLaN`),
  $\ddot q = -\tfrac{g}{l}\sin q - b \dot q + \tau / (m l^2)$.

Trajectories are solved in float64 with ``Dopri8`` at ``rtol=1e-10, atol=1e-12`` (the mass-spring
in closed form). Noise, where asked, is Gaussian on the observed states, with the derivative
targets those of the clean states, as in the papers' data (Greydanus et al.: $\sigma = 0.1$).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import torchnde

__all__ = [
    "DOUBLE_PENDULUM_G",
    "PENDULUM_G",
    "double_pendulum_dynamics",
    "double_pendulum_energy",
    "forced_pendulum_dynamics",
    "generate_double_pendulum",
    "generate_mass_spring",
    "generate_pendulum",
    "mass_spring_energy",
    "pendulum_dynamics",
    "pendulum_energy",
    "pendulum_period",
]

#: Gravity of the pendulum of Greydanus et al. (``m = l = 1``).
PENDULUM_G = 3.0
#: Gravity of the double pendulum of Cranmer et al. (unit masses and lengths).
DOUBLE_PENDULUM_G = 9.8

F64 = torch.float64


def mass_spring_energy(x: torch.Tensor) -> torch.Tensor:
    r"""$H = \tfrac12 (q^2 + p^2)$ of states ``(..., 2)``."""
    return 0.5 * (x[..., 0] ** 2 + x[..., 1] ** 2)


def pendulum_energy(x: torch.Tensor) -> torch.Tensor:
    r"""$H = 2 g (1 - \cos q) + \tfrac12 p^2$ of states ``(..., 2)`` (``g = 3``)."""
    return 2 * PENDULUM_G * (1 - torch.cos(x[..., 0])) + 0.5 * x[..., 1] ** 2


def pendulum_dynamics(t: torch.Tensor, x: torch.Tensor, args: object = None) -> torch.Tensor:
    r"""$(\dot q, \dot p) = (p, -2 g \sin q)$ of states ``(..., 2)``."""
    return torch.stack([x[..., 1], -2 * PENDULUM_G * torch.sin(x[..., 0])], dim=-1)


def pendulum_period(energy: float) -> float:
    r"""The period of the pendulum at energy $H$ (below the separatrix $H < 4 g$):
    $T = 4 K(k) / \sqrt{2 g}$ with $k^2 = H / (4 g)$, $K$ the complete elliptic integral."""
    from scipy.special import ellipk

    k2 = energy / (4 * PENDULUM_G)
    if not 0 <= k2 < 1:
        raise ValueError(
            f"pendulum_period: `energy` must be in [0, {4 * PENDULUM_G}), got {energy}."
        )
    return float(4 * ellipk(k2) / math.sqrt(2 * PENDULUM_G))


def _ring(n: int, rng: np.random.Generator, radius: tuple[float, float]) -> torch.Tensor:
    """``n`` points of the plane with radius uniform in ``radius`` (Greydanus' sampling)."""
    v = rng.normal(size=(n, 2))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    r = rng.uniform(radius[0], radius[1], size=(n, 1))
    return torch.tensor(v * r, dtype=F64)


def _reference(
    f: Callable[..., Any], x0: torch.Tensor, t: torch.Tensor, args: object = None
) -> torch.Tensor:
    sol = torchnde.solve(
        torchnde.ODETerm(f),
        torchnde.Dopri8(),
        t[0],
        t[-1],
        x0,
        args,
        saveat=torchnde.SaveAt(ts=t),
        controller=torchnde.PIDController(rtol=1e-10, atol=1e-12),
        max_steps=1_000_000,
    )
    return sol.ys


def _noisy(x: torch.Tensor, noise_std: float, rng: np.random.Generator) -> torch.Tensor:
    if noise_std < 0:
        raise ValueError(f"`noise_std` must be >= 0, got {noise_std}.")
    if noise_std == 0:
        return x
    return x + torch.tensor(rng.normal(scale=noise_std, size=tuple(x.shape)), dtype=x.dtype)


def _times(num_times: int, t1: float) -> torch.Tensor:
    if isinstance(num_times, bool) or not isinstance(num_times, int) or num_times < 2:
        raise ValueError(f"`num_times` must be an int >= 2, got {num_times!r}.")
    if not t1 > 0:
        raise ValueError(f"`t1` must be > 0, got {t1!r}.")
    return torch.linspace(0.0, t1, num_times, dtype=F64)


def generate_mass_spring(
    num_traj: int,
    num_times: int = 30,
    t1: float = 3.0,
    *,
    noise_std: float = 0.1,
    radius: tuple[float, float] = (0.1, 1.0),
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Trajectories of the ideal mass-spring, in closed form.

    Returns:
        ``(t, x, dxdt)``: times ``(num_times,)``, observed states ``(num_times, num_traj, 2)``
        (noisy) and the true derivatives at the clean states, same shape; float64.
    """
    rng = np.random.default_rng(seed)
    t = _times(num_times, t1)
    x0 = _ring(num_traj, rng, radius)
    c, s = torch.cos(t)[:, None], torch.sin(t)[:, None]
    q = x0[:, 0] * c + x0[:, 1] * s
    p = -x0[:, 0] * s + x0[:, 1] * c
    x = torch.stack([q, p], -1)
    dxdt = torch.stack([p, -q], -1)
    return t, _noisy(x, noise_std, rng), dxdt


def generate_pendulum(
    num_traj: int,
    num_times: int = 75,
    t1: float = 5.0,
    *,
    noise_std: float = 0.1,
    radius: tuple[float, float] = (1.3, 2.3),
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Trajectories of the ideal pendulum (Greydanus et al.: initial states at radius 1.3-2.3
    in the phase plane, 75 points over ``t in [0, 5]``, noise 0.1).

    Returns:
        ``(t, x, dxdt)`` as :func:`generate_mass_spring`.
    """
    rng = np.random.default_rng(seed)
    t = _times(num_times, t1)
    x = _reference(pendulum_dynamics, _ring(num_traj, rng, radius), t)
    return t, _noisy(x, noise_std, rng), pendulum_dynamics(t, x)


def double_pendulum_dynamics(t: torch.Tensor, x: torch.Tensor, args: object = None) -> torch.Tensor:
    r"""$(\dot\theta_1, \dot\theta_2, \dot\omega_1, \dot\omega_2)$ of the double pendulum with
    unit masses and lengths, states ``(..., 4)`` (the equations of Cranmer et al.'s code)."""
    g = DOUBLE_PENDULUM_G
    t1, t2, w1, w2 = x.unbind(-1)
    delta = t1 - t2
    a1 = 0.5 * torch.cos(delta)
    a2 = torch.cos(delta)
    f1 = -0.5 * w2**2 * torch.sin(delta) - g * torch.sin(t1)
    f2 = w1**2 * torch.sin(delta) - g * torch.sin(t2)
    g1 = (f1 - a1 * f2) / (1 - a1 * a2)
    g2 = (f2 - a2 * f1) / (1 - a1 * a2)
    return torch.stack([w1, w2, g1, g2], dim=-1)


def double_pendulum_energy(x: torch.Tensor) -> torch.Tensor:
    r"""$T + V$ of the double pendulum (unit masses and lengths), states ``(..., 4)``:
    $T = \omega_1^2 + \tfrac12 \omega_2^2 + \omega_1\omega_2\cos(\theta_1 - \theta_2)$,
    $V = -2 g \cos\theta_1 - g \cos\theta_2$."""
    g = DOUBLE_PENDULUM_G
    t1, t2, w1, w2 = x.unbind(-1)
    kinetic = w1**2 + 0.5 * w2**2 + w1 * w2 * torch.cos(t1 - t2)
    return kinetic - 2 * g * torch.cos(t1) - g * torch.cos(t2)


def generate_double_pendulum(
    num_traj: int,
    num_times: int = 100,
    t1: float = 10.0,
    *,
    noise_std: float = 0.0,
    angle: float = 0.5 * math.pi,
    speed: float = 1.0,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Trajectories of the double pendulum from angles uniform in ``[-angle, angle]`` and
    angular velocities uniform in ``[-speed, speed]``.

    Returns:
        ``(t, x, dxdt)``: times ``(num_times,)``, states ``(num_times, num_traj, 4)`` and the
        true derivatives (at the clean states), float64.
    """
    rng = np.random.default_rng(seed)
    t = _times(num_times, t1)
    lim = np.array([angle, angle, speed, speed])
    x0 = torch.tensor(rng.uniform(-lim, lim, size=(num_traj, 4)), dtype=F64)
    x = _reference(double_pendulum_dynamics, x0, t)
    return t, _noisy(x, noise_std, rng), double_pendulum_dynamics(t, x)


def forced_pendulum_dynamics(
    t: torch.Tensor, x: torch.Tensor, tau: torch.Tensor, damping: float = 0.1
) -> torch.Tensor:
    r"""The damped pendulum under a torque, $m = l = 1$, $g = 9.8$: $(\dot q, \ddot q)$ with
    $\ddot q = -g \sin q - b \dot q + \tau$; states ``(..., 2)``, torques ``(..., 1)``."""
    q, qd = x[..., 0], x[..., 1]
    qdd = -DOUBLE_PENDULUM_G * torch.sin(q) - damping * qd + tau[..., 0]
    return torch.stack([qd, qdd], dim=-1)
