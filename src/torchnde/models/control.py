r"""Optimal energy shaping: a neural potential and a damping injection as a feedback law."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._config import describe
from .hamiltonian import _grad_of, _per_sample

__all__ = ["EnergyShaping"]


class EnergyShaping(nn.Module):
    r"""An energy-shaping controller with damping injection (Massaroli, Poli, Califano, Park,
    Yamashita, Asama 2021): for a mechanical system $\dot q = \dot q$,
    $\ddot q = a(q, \dot q) + u$ with generalised forces $u$, the feedback

    $$u(q, \dot q) = -\nabla_q V_\theta(q) - K_\phi(q, \dot q) \odot \dot q, \qquad
    K_\phi = \mathrm{softplus}(\cdot) \ge 0,$$

    adds the learned potential $V_\theta$ to the system's own and dissipates energy through the
    learned damping $K_\phi$. For a fully actuated conservative system the closed loop's
    energy $E + V_\theta$ never increases, so the system settles at a minimum of the shaped
    potential: training (through the solver, with an integral cost) puts that minimum at the
    target. :meth:`closed_loop` gives the closed-loop vector field of a plant for
    :func:`torchnde.solve` (use ``integral=`` for the running cost).

    Args:
        potential: a module ``V(q)``, ``q`` of shape ``(batch, dof)``, returning ``(batch,)``
            or ``(batch, 1)``.
        damping: a module ``k(x)``, ``x = [q, dq/dt]`` of shape ``(batch, 2 dof)``, returning
            ``(batch, dof)``: the damping gains before the softplus.

    Example:
        >>> ctrl = EnergyShaping(nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1)),
        ...                      nn.Linear(2, 1))
        >>> f = ctrl.closed_loop(lambda t, x, u: torch.cat([x[:, 1:], -torch.sin(x[:, :1]) + u], 1))
        >>> f(torch.tensor(0.0), torch.randn(4, 2)).shape
        torch.Size([4, 2])

    References:
        S. Massaroli, M. Poli, F. Califano, J. Park, A. Yamashita, H. Asama, "Optimal energy
        shaping via neural approximators", SIAM Journal on Applied Dynamical Systems, 2022
        (arXiv:2103.05285).
    """

    def __init__(self, potential: Any, damping: Any) -> None:
        super().__init__()
        for name, m in (("potential", potential), ("damping", damping)):
            if not callable(m):
                raise TypeError(f"EnergyShaping: `{name}` must be a module, got {describe(m)}.")
        self.potential, self.damping = potential, damping

    def shaped_potential(self, q: torch.Tensor) -> torch.Tensor:
        """$V_\\theta(q)$ per sample, ``(batch,)``."""
        return _per_sample("EnergyShaping", "potential", self.potential(q), q.shape[0])

    def control(self, x: torch.Tensor) -> torch.Tensor:
        r"""The feedback $u(q, \dot q)$, ``(batch, dof)``, of states ``x = [q, dq/dt]``."""
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] % 2:
            raise ValueError(
                "EnergyShaping: the state must be a tensor (batch, 2 dof) holding [q, dq/dt], "
                f"got {describe(x)}."
            )
        d = x.shape[1] // 2
        q, qd = x[:, :d], x[:, d:]
        (dv,) = _grad_of(self.shaped_potential, q)
        k = self.damping(x)
        if not isinstance(k, torch.Tensor) or k.shape != qd.shape:
            raise ValueError(
                f"EnergyShaping: `damping` must return (batch, dof) = {tuple(qd.shape)}, got "
                f"{describe(k)}."
            )
        return -dv - nn.functional.softplus(k) * qd

    def closed_loop(self, plant: Any) -> Any:
        """The vector field ``f(t, x, args) = plant(t, x, u(x))``."""
        if not callable(plant):
            raise TypeError(
                f"EnergyShaping.closed_loop: `plant` must be callable as plant(t, x, u), got "
                f"{describe(plant)}."
            )

        def field(t: torch.Tensor, x: torch.Tensor, args: Any = None) -> torch.Tensor:
            return plant(t, x, self.control(x))

        return field
