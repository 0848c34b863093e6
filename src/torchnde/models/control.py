r"""Control: optimal energy shaping (a neural potential and a damping injection as a feedback
law) and a model-based policy trained through a learned continuous-time model with irregular
decision times."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import torchnde as tn

from ._config import describe
from .hamiltonian import _grad_of, _per_sample

__all__ = ["EnergyShaping", "SemiMarkovPolicy"]


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


class SemiMarkovPolicy(nn.Module):
    r"""A feedback policy for a continuous-time system with irregular decision times (Du, Futoma,
    Doshi-Velez 2020, model-based RL for semi-Markov decision processes with neural ODEs, in
    its simplest form): at each decision time $t_k$ the policy picks $u_k = \pi_\phi(x(t_k))$,
    held constant until $t_{k+1}$, while the state follows a plant $\dot x = f(t, x, u_k)$.
    :meth:`rollout` integrates any plant, a learned neural ODE model ``f_theta(t, x, u)`` or
    the true system, through :func:`torchnde.solve` over the given (irregular) decision times
    with the running cost $\int \ell(x, u)\,dt$ by ``solve(integral=...)``. Training the
    policy on the rollout cost through the *learned* model (backpropagating through its solves)
    and then acting on the true system is the model-based controller.

    Args:
        policy: a module ``pi(x)``, ``x`` of shape ``(batch, d)``, returning ``(batch, m)``.

    Example:
        >>> pol = SemiMarkovPolicy(nn.Linear(2, 1))
        >>> plant = lambda t, x, u: torch.cat([x[:, 1:], -torch.sin(x[:, :1]) + u], 1)
        >>> xs, cost = pol.rollout(plant, torch.randn(4, 2), torch.tensor([0.0, 0.3, 0.4, 1.0]),
        ...                        lambda x, u: (x**2).sum(1))
        >>> xs.shape, cost.shape
        (torch.Size([4, 4, 2]), torch.Size([4]))

    References:
        J. Du, J. Futoma, F. Doshi-Velez, "Model-based reinforcement learning for semi-Markov
        decision processes with neural ODEs", NeurIPS 2020.
    """

    def __init__(self, policy: Any) -> None:
        super().__init__()
        if not callable(policy):
            raise TypeError(f"SemiMarkovPolicy: `policy` must be a module, got {describe(policy)}.")
        self.policy = policy

    def act(self, x: torch.Tensor) -> torch.Tensor:
        r"""The action $\pi(x)$, ``(batch, m)``."""
        u = self.policy(x)
        if not isinstance(u, torch.Tensor) or u.ndim != 2 or u.shape[0] != x.shape[0]:
            raise ValueError(
                f"SemiMarkovPolicy: `policy` must return (batch, m) with batch = {x.shape[0]}, "
                f"got {describe(u)}."
            )
        return u

    def rollout(
        self,
        plant: Any,
        x0: torch.Tensor,
        decision_times: torch.Tensor,
        cost: Any,
        *,
        steps: int = 4,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Act at ``decision_times`` (1-D, increasing, irregular allowed) from ``x0``
        ``(batch, d)`` at ``decision_times[0]``, holding each action until the next time.

        Args:
            plant: ``f(t, x, u)`` returning ``(batch, d)``: the learned model or the true system.
            x0: the initial states, ``(batch, d)``.
            decision_times: ``(K + 1,)``, the decision times and the horizon last.
            cost: the running cost ``l(x, u)`` returning ``(batch,)``.
            steps: fixed ``RK4`` steps per interval.

        Returns:
            The states at the decision times ``(K + 1, batch, d)`` and the integral cost
            ``(batch,)``.
        """
        for name, f in (("plant", plant), ("cost", cost)):
            if not callable(f):
                raise TypeError(
                    f"SemiMarkovPolicy.rollout: `{name}` must be callable, got {describe(f)}."
                )
        if not isinstance(x0, torch.Tensor) or x0.ndim != 2:
            raise ValueError(
                f"SemiMarkovPolicy.rollout: `x0` must be a tensor (batch, d), got {describe(x0)}."
            )
        ts = decision_times
        if (
            not isinstance(ts, torch.Tensor)
            or ts.ndim != 1
            or ts.numel() < 2
            or not bool((ts[1:] > ts[:-1]).all())
        ):
            raise ValueError(
                "SemiMarkovPolicy.rollout: `decision_times` must be a 1-D increasing tensor of "
                f"at least 2 times, got {describe(ts)}."
            )
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(
                f"SemiMarkovPolicy.rollout: `steps` must be an int >= 1, got {steps!r}."
            )
        x, xs = x0, [x0]
        total = torch.zeros(x0.shape[0], dtype=x0.dtype, device=x0.device)
        for k in range(ts.numel() - 1):
            u = self.act(x)

            def field(t: torch.Tensor, y: torch.Tensor, args: Any, u: torch.Tensor = u) -> Any:
                return plant(t, y, u)

            def running(t: torch.Tensor, y: torch.Tensor, args: Any, u: torch.Tensor = u) -> Any:
                return cost(y, u)

            t0, t1 = ts[k], ts[k + 1]
            sol = tn.solve(tn.ODETerm(field), tn.RK4(), t0, t1, x, dt0=(t1 - t0) / steps,
                           controller=tn.ConstantStepSize(), integral=running)  # fmt: skip
            x = sol.ys[-1]
            total = total + sol.integral[-1]
            xs.append(x)
        return torch.stack(xs), total
