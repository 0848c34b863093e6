r"""Constrained Hamiltonian and Lagrangian neural networks in Cartesian coordinates (holonomic
constraints through Lagrange multipliers): `CHNN` and `CLNN` share `_Constrained`, the
constraints, the learned potential and diagonal masses, the state check and
$\Phi = (\phi(x), D\phi(x)\,\dot x)$."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.func import jacrev, vmap

from ._config import describe

__all__ = ["CHNN", "CLNN"]


class _Constrained(nn.Module):
    """The machinery CHNN and CLNN share: known constraints ``phi(x)``, a learned potential
    ``V(x)``, learned diagonal masses, the state check and the constraint values."""

    def __init__(
        self,
        constraints: Callable[[torch.Tensor], torch.Tensor],
        potential: Any,
        num_positions: int,
        *,
        learn_mass: bool = True,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if not callable(constraints):
            raise TypeError(
                f"{name}: `constraints` must be callable phi(x), got {describe(constraints)}."
            )
        if not callable(potential):
            raise TypeError(
                f"{name}: `potential` must be a module V(x), got {describe(potential)}."
            )
        n = num_positions
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"{name}: `num_positions` must be an int >= 1, got {n!r}.")
        self.constraints, self.potential, self.n = constraints, potential, n
        # softplus(log(e - 1)) = 1: unit masses at initialisation.
        self.raw_mass = nn.Parameter(torch.full((n,), math.log(math.e - 1))) if learn_mass else None

    _second = "p"  # the name of the state's second half, for the error message

    def inverse_mass(self) -> torch.Tensor:
        """The diagonal of $M^{-1}$, ``(n,)`` (ones without ``learn_mass``)."""
        if self.raw_mass is None:
            return torch.ones(self.n)
        return 1.0 / nn.functional.softplus(self.raw_mass)

    def _v1(self, x: torch.Tensor) -> torch.Tensor:
        return self.potential(x[None]).reshape(())

    def _xdot1(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _big_phi1(self, z: torch.Tensor) -> torch.Tensor:
        x, xdot = z[: self.n], self._xdot1(z)
        phi = self.constraints(x)
        dphi_xdot = torch.func.jvp(self.constraints, (x,), (xdot,))[1]
        return torch.cat([phi, dphi_xdot])

    def constraint_violation(self, z: torch.Tensor) -> torch.Tensor:
        r"""$\Phi(z)$ per sample, ``(batch, 2 c)``: the constraints and their time derivatives
        (zero on the manifold)."""
        self._check(z)
        return vmap(self._big_phi1)(z)

    def _check(self, z: Any) -> None:
        if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[1] != 2 * self.n:
            raise ValueError(
                f"{type(self).__name__}: the state must be a tensor (batch, {2 * self.n}) "
                f"holding [x, {self._second}] (num_positions={self.n}), got {describe(z)}."
            )


class CHNN(_Constrained):
    r"""A constrained Hamiltonian neural network (Finzi, Wang, Wilson 2020): Cartesian
    positions $x \in \mathbb{R}^n$ and momenta $p$, a learned Hamiltonian
    $H = \tfrac12 p^\top M_\theta^{-1} p + V_\theta(x)$ with a constant positive diagonal mass
    matrix, and *known* holonomic constraints $\phi(x) = 0$ (rods of fixed length, pinned
    points) enforced exactly through Lagrange multipliers:

    $$\dot z = P(z)\, J \nabla H(z), \qquad
    P = I - J\, D\Phi^\top \big(D\Phi\, J\, D\Phi^\top\big)^{-1} D\Phi,$$

    where $z = (x, p)$ and $\Phi(z) = \big(\phi(x),\; D\phi(x)\,M^{-1}p\big)$ stacks the
    constraints and their time derivatives. The flow stays on the constraint manifold
    ($\dot\Phi = D\Phi\,\dot z = 0$) and conserves $H$. Learning only $V$ and the masses
    in simple Cartesian coordinates, instead of the complicated $M(q)$ of generalised
    coordinates, is what the paper finds far more data efficient.

    Args:
        constraints: a callable ``phi(x)`` of one sample's positions ``(n,)`` returning the
            constraint values ``(c,)`` (zero on the manifold); called under ``torch.func``.
        potential: a module ``V(x)``, ``x`` of shape ``(batch, n)``, returning ``(batch,)`` or
            ``(batch, 1)``; it must act per sample.
        num_positions: ``n``, the number of Cartesian coordinates.
        learn_mass: learn the diagonal masses (softplus); otherwise unit masses.

    The state is ``(batch, 2 n)``, positions first.

    References:
        M. Finzi, K. A. Wang, A. G. Wilson, "Simplifying Hamiltonian and Lagrangian neural
        networks via explicit constraints", NeurIPS 2020.
    """

    def _xdot1(self, z: torch.Tensor) -> torch.Tensor:
        return z[self.n :] * self.inverse_mass().to(z.dtype)

    def _h1(self, z: torch.Tensor) -> torch.Tensor:
        x, p = z[: self.n], z[self.n :]
        return 0.5 * (p**2 * self.inverse_mass().to(p.dtype)).sum() + self._v1(x)

    def hamiltonian(self, z: torch.Tensor) -> torch.Tensor:
        """The learned energy per sample, ``(batch,)``."""
        self._check(z)
        return vmap(self._h1)(z)

    def _field1(self, z: torch.Tensor) -> torch.Tensor:
        n = self.n
        dh = jacrev(self._h1)(z)
        jdh = torch.cat([dh[n:], -dh[:n]])  # J grad H
        dphi = jacrev(self._big_phi1)(z)  # (2c, 2n)
        jdphi_t = torch.cat([dphi[:, n:], -dphi[:, :n]], dim=1).T  # J DPhi^T, (2n, 2c)
        gram = dphi @ jdphi_t  # DPhi J DPhi^T, (2c, 2c), invertible for independent constraints
        lam = torch.linalg.solve(gram, dphi @ jdh)
        return jdh - jdphi_t @ lam

    def forward(self, t: Any, z: torch.Tensor, args: Any = None) -> torch.Tensor:
        self._check(z)
        return vmap(self._field1)(z)


class CLNN(_Constrained):
    r"""A constrained Lagrangian neural network (Finzi, Wang, Wilson 2020), the Lagrangian
    counterpart of `CHNN`: Cartesian positions $x \in \mathbb{R}^n$ and velocities
    $\dot x$, a learned Lagrangian $L = \tfrac12 \dot x^\top M_\theta \dot x - V_\theta(x)$
    with a constant positive diagonal mass matrix, and *known* holonomic constraints
    $\phi(x) = 0$ enforced through Lagrange multipliers. The constrained Euler-Lagrange
    equations $M \ddot x = -\nabla V - D\phi^\top \lambda$ with $\ddot\phi = 0$, i.e.
    $D\phi\,\ddot x + \tfrac{d}{dt}(D\phi)\,\dot x = 0$, give

    $$\lambda = \big(D\phi\, M^{-1} D\phi^\top\big)^{-1}
    \Big(\tfrac{d}{dt}(D\phi)\,\dot x - D\phi\, M^{-1} \nabla V\Big), \qquad
    \ddot x = -M^{-1}\big(\nabla V + D\phi^\top \lambda\big),$$

    with $\tfrac{d}{dt}(D\phi)\,\dot x = \dot x^\top \nabla^2 \phi\, \dot x$ by a nested
    ``torch.func.jvp`` (no Hessian formed). Starting on the manifold
    ($\Phi = (\phi, D\phi\,\dot x) = 0$, see `constraint_violation`) the exact flow stays on
    it; numerically the drift is that of the solver (index-3 constraints handled at the
    acceleration level, as in the paper).

    Args:
        constraints: a callable ``phi(x)`` of one sample's positions ``(n,)`` returning the
            constraint values ``(c,)`` (zero on the manifold); called under ``torch.func``.
        potential: a module ``V(x)``, ``x`` of shape ``(batch, n)``, returning ``(batch,)`` or
            ``(batch, 1)``; it must act per sample.
        num_positions: ``n``, the number of Cartesian coordinates.
        learn_mass: learn the diagonal masses (softplus); otherwise unit masses.

    The state is ``(batch, 2 n)``, positions first, then velocities.

    References:
        M. Finzi, K. A. Wang, A. G. Wilson, "Simplifying Hamiltonian and Lagrangian neural
        networks via explicit constraints", NeurIPS 2020.
    """

    _second = "xdot"

    def _xdot1(self, z: torch.Tensor) -> torch.Tensor:
        return z[self.n :]

    def _kinetic1(self, v: torch.Tensor) -> torch.Tensor:
        return 0.5 * (v**2 / self.inverse_mass().to(v.dtype)).sum()

    def lagrangian(self, z: torch.Tensor) -> torch.Tensor:
        """The learned Lagrangian $T - V$ per sample, ``(batch,)``."""
        self._check(z)
        return vmap(lambda z1: self._kinetic1(z1[self.n :]) - self._v1(z1[: self.n]))(z)

    def energy(self, z: torch.Tensor) -> torch.Tensor:
        """The learned energy $T + V$ per sample, ``(batch,)`` (conserved by the flow)."""
        self._check(z)
        return vmap(lambda z1: self._kinetic1(z1[self.n :]) + self._v1(z1[: self.n]))(z)

    def _field1(self, z: torch.Tensor) -> torch.Tensor:
        x, v = z[: self.n], z[self.n :]
        minv = self.inverse_mass().to(z.dtype)
        dv = jacrev(self._v1)(x)  # grad V, (n,)
        dphi = jacrev(self.constraints)(x)  # (c, n)

        def dphi_v(y: torch.Tensor) -> torch.Tensor:
            return torch.func.jvp(self.constraints, (y,), (v,))[1]

        curvature = torch.func.jvp(dphi_v, (x,), (v,))[1]  # v^T Hess(phi) v, (c,)
        gram = (dphi * minv) @ dphi.T  # D phi M^-1 D phi^T, invertible for independent ones
        lam = torch.linalg.solve(gram, curvature - dphi @ (minv * dv))
        return torch.cat([v, -minv * (dv + dphi.T @ lam)])

    def forward(self, t: Any, z: torch.Tensor, args: Any = None) -> torch.Tensor:
        self._check(z)
        return vmap(self._field1)(z)
