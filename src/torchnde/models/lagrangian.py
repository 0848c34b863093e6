r"""Lagrangian neural networks: accelerations from the Euler–Lagrange equations of a learned
Lagrangian, with the Hessian batched by ``torch.func``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.func import hessian, jacrev, vmap

from ._config import describe

__all__ = ["LNN"]


class LNN(nn.Module):
    r"""A Lagrangian neural network (Cranmer, Greydanus, Hoyer et al. 2020): the state is
    $x = (q, \dot q)$ and the vector field $f(t, x) = (\dot q, \ddot q)$ with the acceleration
    solving the Euler–Lagrange equations $\frac{d}{dt}\nabla_{\dot q} L = \nabla_q L$ of a
    learned scalar $L_\theta(q, \dot q)$:

    $$\ddot q = \big(\nabla_{\dot q}\nabla_{\dot q}^\top L\big)^{-1}
    \big(\nabla_q L - (\nabla_q \nabla_{\dot q}^\top L)\,\dot q\big).$$

    Any Lagrangian works (no canonical coordinates, no mass-matrix structure); the flow
    conserves the energy $E = \dot q^\top \nabla_{\dot q} L - L$. The gradient and the
    Hessian of every sample are taken with ``torch.func`` (``vmap`` of ``jacrev`` and
    ``hessian``), one batched call rather than a loop, and compose with ordinary autograd, so
    the field trains on accelerations (the paper) or through any solver and adjoint.

    The state is one tensor ``(batch, 2 d)``, positions first. The Lagrangian must treat every
    sample independently (no batch normalisation), since it is called on one sample at a time
    under ``vmap``. The Hessian $\nabla_{\dot q}^2 L$ must be invertible where the field is
    evaluated; ``eps`` adds $\varepsilon I$ to it.

    Args:
        lagrangian: a module ``L(x)``, ``x`` of shape ``(n, 2 d)``, returning ``(n,)`` or
            ``(n, 1)``; smooth (twice differentiable: softplus or tanh, not ReLU).
        eps: added to the diagonal of $\nabla_{\dot q}^2 L$ before solving.

    Example:
        >>> L = nn.Sequential(nn.Linear(4, 64), nn.Softplus(), nn.Linear(64, 1))
        >>> lnn = LNN(L)
        >>> lnn(torch.tensor(0.0), torch.randn(8, 4)).shape
        torch.Size([8, 4])

    References:
        M. Cranmer, S. Greydanus, S. Hoyer, P. Battaglia, D. Spergel, S. Ho, "Lagrangian
        neural networks", ICLR 2020 workshop on integration of deep neural models and
        differential equations, arXiv:2003.04630.
    """

    def __init__(self, lagrangian: Any, *, eps: float = 0.0) -> None:
        super().__init__()
        if not callable(lagrangian):
            raise TypeError(f"LNN: `lagrangian` must be a module L(x), got {describe(lagrangian)}.")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
            raise ValueError(f"LNN: `eps` must be a number >= 0, got {eps!r}.")
        self.net, self.eps = lagrangian, float(eps)

    def _check(self, x: Any) -> int:
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] % 2:
            raise ValueError(
                f"LNN: the state must be a tensor (batch, 2 d) holding [q, dq/dt], got "
                f"{describe(x)}."
            )
        return x.shape[1] // 2

    def _single(self, x1: torch.Tensor) -> torch.Tensor:
        e = self.net(x1[None])
        if not isinstance(e, torch.Tensor) or e.numel() != 1:
            raise ValueError(
                "LNN: the Lagrangian must return one value per sample, shape (n,) or (n, 1), "
                f"got {describe(e)} for a batch of 1."
            )
        return e.reshape(())

    def lagrangian(self, x: torch.Tensor) -> torch.Tensor:
        """The learned Lagrangian per sample, ``(batch,)``."""
        self._check(x)
        return vmap(self._single)(x)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        r"""The energy $E = \dot q^\top \nabla_{\dot q} L - L$ of the learned Lagrangian,
        ``(batch,)`` (conserved along the exact flow)."""
        d = self._check(x)
        grad = vmap(jacrev(self._single))(x)
        return (x[:, d:] * grad[:, d:]).sum(1) - self.lagrangian(x)

    def acceleration(self, x: torch.Tensor) -> torch.Tensor:
        r"""$\ddot q$ from the Euler–Lagrange equations, ``(batch, d)``."""
        d = self._check(x)
        grad = vmap(jacrev(self._single))(x)  # (batch, 2d)
        hess = vmap(hessian(self._single))(x)  # (batch, 2d, 2d)
        h_vv = hess[:, d:, d:]
        if self.eps:
            h_vv = h_vv + self.eps * torch.eye(d, dtype=x.dtype, device=x.device)
        h_vq = hess[:, d:, :d]  # d/dq of dL/d(qdot)
        rhs = grad[:, :d] - (h_vq @ x[:, d:, None])[..., 0]
        return torch.linalg.solve(h_vv, rhs)

    def forward(self, t: Any, x: torch.Tensor, args: Any = None) -> torch.Tensor:
        d = self._check(x)
        return torch.cat([x[:, d:], self.acceleration(x)], dim=1)
