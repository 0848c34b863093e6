r"""Hamiltonian neural networks: vector fields $J \nabla H_\theta$ of a learned energy."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._config import describe

__all__ = ["HNN", "SeparableHNN"]


def _per_sample(owner: str, what: str, e: torch.Tensor, batch: int) -> torch.Tensor:
    """``e`` as ``(batch,)``: a module may return ``(batch,)`` or ``(batch, 1)``."""
    if not isinstance(e, torch.Tensor):
        raise TypeError(f"{owner}: the {what} must return a tensor, got {describe(e)}.")
    if e.ndim == 2 and e.shape[1] == 1:
        e = e[:, 0]
    if e.shape != (batch,):
        raise ValueError(
            f"{owner}: the {what} must return one value per sample, shape ({batch},) or "
            f"({batch}, 1), got {tuple(e.shape)}."
        )
    return e


def _grad_of(f: Any, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Gradients of the scalar ``f(*xs).sum()``; with ``create_graph`` whenever autograd is
    recording, so the vector field trains (double backward) with every adjoint."""
    create = torch.is_grad_enabled()
    with torch.enable_grad():
        xg = [x if x.requires_grad else x.detach().requires_grad_(True) for x in xs]
        out = f(*xg).sum()
        grads = torch.autograd.grad(out, xg, create_graph=create, allow_unused=True)
    return tuple(torch.zeros_like(x) if g is None else g for x, g in zip(xs, grads))


def _check_module(owner: str, name: str, m: Any) -> None:
    if not callable(m):
        raise TypeError(f"{owner}: `{name}` must be a module {name}(x), got {describe(m)}.")


class HNN(nn.Module):
    r"""A Hamiltonian neural network (Greydanus, Dzamba, Yosinski 2019): the vector field

    $$f(t, x) = J \nabla_x H_\theta(x), \qquad x = (q, p), \qquad
    J = \begin{pmatrix} 0 & I \\ -I & 0 \end{pmatrix},$$

    i.e. $\dot q = \partial H/\partial p$, $\dot p = -\partial H/\partial q$, of a learned
    scalar energy $H_\theta$. Along every exact solution $dH/dt = \nabla H^\top J \nabla H = 0$:
    the learned energy is conserved, and the flow preserves phase-space volume.

    The state is one tensor ``(batch, 2 d)``, positions first, momenta last. Train it on
    derivatives (``loss = (hnn(t, x) - dxdt)**2``, as the paper) or on trajectories through
    any solver and adjoint (``NeuralODE(hnn)``). The field is not separable in general, so
    use a general-purpose solver (``Dopri5``, or ``ImplicitMidpoint``/``GaussLegendre4`` for
    a symplectic one); for $H = T(p) + V(q)$ use :class:`SeparableHNN` with ``Leapfrog`` or
    ``Yoshida4``.

    Args:
        hamiltonian: a module ``H(x)`` (or, with ``time_dependent=True``, ``H(t, x)``)
            returning one energy per sample, shape ``(batch,)`` or ``(batch, 1)``.
        time_dependent: whether the Hamiltonian takes ``t``.

    Example:
        >>> H = nn.Sequential(nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 1))
        >>> hnn = HNN(H)
        >>> x = torch.randn(8, 2)
        >>> hnn(torch.tensor(0.0), x).shape
        torch.Size([8, 2])

    References:
        S. Greydanus, M. Dzamba, J. Yosinski, "Hamiltonian neural networks", NeurIPS 2019.
    """

    def __init__(self, hamiltonian: Any, *, time_dependent: bool = False) -> None:
        super().__init__()
        _check_module("HNN", "hamiltonian", hamiltonian)
        self.net, self.time_dependent = hamiltonian, time_dependent

    def hamiltonian(self, t: Any, x: torch.Tensor) -> torch.Tensor:
        """The learned energy per sample, ``(batch,)``."""
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] % 2:
            got = describe(x)
            raise ValueError(
                f"HNN: the state must be a tensor (batch, 2 d) holding [q, p], got {got}; for "
                "a tuple (q, p) (symplectic solvers) use SeparableHNN."
            )
        e = self.net(t, x) if self.time_dependent else self.net(x)
        return _per_sample("HNN", "hamiltonian", e, x.shape[0])

    def forward(self, t: Any, x: torch.Tensor, args: Any = None) -> torch.Tensor:
        (g,) = _grad_of(lambda xg: self.hamiltonian(t, xg), x)
        d = x.shape[1] // 2
        return torch.cat([g[:, d:], -g[:, :d]], dim=1)


class SeparableHNN(nn.Module):
    r"""A Hamiltonian neural network with a separable energy $H = T_\phi(p) + V_\theta(q)$:

    $$\dot q = \nabla T_\phi(p), \qquad \dot p = -\nabla V_\theta(q),$$

    the structure the explicit symplectic solvers (``SemiImplicitEuler``, ``Leapfrog``,
    ``Yoshida4``) need. With them the discrete flow is exactly symplectic and the energy error
    stays bounded over long times instead of drifting.

    The state is a tuple ``(q, p)`` of ``(batch, d)`` tensors (what the symplectic solvers
    take; the field returns ``(dq, dp)``) or one tensor ``(batch, 2 d)`` for any other solver.

    Args:
        kinetic: a module ``T(p)``, one value per sample (``(batch,)`` or ``(batch, 1)``), or
            ``None`` for the fixed $T(p) = \tfrac12 \lVert p \rVert^2$ (unit masses).
        potential: a module ``V(q)``, one value per sample.

    Example:
        >>> V = nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 1))
        >>> hnn = SeparableHNN(None, V)
        >>> q, p = torch.randn(8, 1), torch.randn(8, 1)
        >>> sol = torchnde.solve(torchnde.ODETerm(hnn), torchnde.Leapfrog(), 0.0, 1.0, (q, p),
        ...                      dt0=0.01, controller=torchnde.ConstantStepSize())

    References:
        S. Greydanus, M. Dzamba, J. Yosinski, "Hamiltonian neural networks", NeurIPS 2019;
        E. Hairer, C. Lubich, G. Wanner, *Geometric Numerical Integration*, Ch. VI.
    """

    def __init__(self, kinetic: Any, potential: Any) -> None:
        super().__init__()
        if kinetic is not None:
            _check_module("SeparableHNN", "kinetic", kinetic)
        _check_module("SeparableHNN", "potential", potential)
        self.kinetic, self.potential = kinetic, potential

    def _t(self, p: torch.Tensor) -> torch.Tensor:
        if self.kinetic is None:
            return 0.5 * (p**2).sum(dim=1)
        return _per_sample("SeparableHNN", "kinetic energy", self.kinetic(p), p.shape[0])

    def _v(self, q: torch.Tensor) -> torch.Tensor:
        return _per_sample("SeparableHNN", "potential", self.potential(q), q.shape[0])

    @staticmethod
    def _split(y: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(y, (tuple, list)) and len(y) == 2:
            return y[0], y[1]
        if isinstance(y, torch.Tensor) and y.ndim == 2 and y.shape[1] % 2 == 0:
            d = y.shape[1] // 2
            return y[:, :d], y[:, d:]
        raise ValueError(
            "SeparableHNN: the state must be a tuple (q, p) of (batch, d) tensors or one "
            f"tensor (batch, 2 d), got {describe(y)}."
        )

    def hamiltonian(self, y: Any) -> torch.Tensor:
        """The learned energy $T(p) + V(q)$ per sample, ``(batch,)``."""
        q, p = self._split(y)
        return self._t(p) + self._v(q)

    def forward(self, t: Any, y: Any, args: Any = None) -> Any:
        q, p = self._split(y)
        if self.kinetic is None:
            dq = p
        else:
            (dq,) = _grad_of(self._t, p)
        (dv,) = _grad_of(self._v, q)
        if isinstance(y, torch.Tensor):
            return torch.cat([dq, -dv], dim=1)
        return dq, -dv
