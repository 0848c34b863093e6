r"""Deep Lagrangian networks: a mass matrix by a Cholesky-factor network and a potential
network, with inverse and forward dynamics under torques."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.func import jacrev, jvp, vmap

from ._config import describe

__all__ = ["DeLaN"]


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.Softplus())
    return nn.Sequential(*layers)


class DeLaN(nn.Module):
    r"""A deep Lagrangian network (Lutter, Ritter, Peters 2019): the Lagrangian of a rigid-body
    system $L = \tfrac12 \dot q^\top M_\theta(q) \dot q - V_\theta(q)$ with

    $$M_\theta(q) = L_\theta(q) L_\theta(q)^\top + \varepsilon I,$$

    $L_\theta$ lower triangular with a positive diagonal (softplus), so $M$ is symmetric
    positive definite by construction. The Euler–Lagrange equations with generalised forces
    (torques) $\tau$ give

    $$\tau = M(q)\ddot q + \dot M(q)\dot q - \tfrac12 \nabla_q\big(\dot q^\top M(q) \dot q\big)
    + \nabla_q V(q)$$

    (:meth:`inverse_dynamics`, the paper's training target) and, solved for $\ddot q$,
    :meth:`forward_dynamics`. Called as a vector field ``f(t, x, args)`` on the state
    ``x = [q, dq/dt]`` of shape ``(batch, 2 dof)`` it returns $(\dot q, \ddot q)$ under the
    torque ``args``: ``None`` (no torque), a tensor ``(batch, dof)``, or a callable
    ``tau(t, x)``. $\dot M \dot q$ is a forward-mode derivative (``torch.func.jvp``), the
    gradients are ``torch.func.jacrev``, all batched with ``vmap``; they compose with autograd
    for training.

    Args:
        dof: the number of degrees of freedom ``d``.
        hidden: the width of the hidden layers of both networks.
        depth: the number of hidden layers of both networks.
        eps: the $\varepsilon$ added to $M$ (a lower bound on its eigenvalues).
        cholesky: a module ``q (n, d) -> (n, d (d + 1) / 2)`` giving the diagonal (first
            ``d``, before the softplus) and the strictly lower entries (row by row) of
            $L_\theta$; default an MLP.
        potential: a module ``q (n, d) -> (n,)`` or ``(n, 1)``; default an MLP.

    Example:
        >>> delan = DeLaN(2, hidden=32)
        >>> q, qd, qdd = torch.randn(3, 8, 2).unbind(0)
        >>> tau = delan.inverse_dynamics(q, qd, qdd)
        >>> torch.allclose(delan.forward_dynamics(q, qd, tau), qdd, atol=1e-4)
        True

    References:
        M. Lutter, C. Ritter, J. Peters, "Deep Lagrangian networks: using physics as model
        prior for deep learning", ICLR 2019.
    """

    _rows: torch.Tensor
    _cols: torch.Tensor

    def __init__(
        self,
        dof: int,
        *,
        hidden: int = 64,
        depth: int = 2,
        eps: float = 1e-2,
        cholesky: Any = None,
        potential: Any = None,
    ) -> None:
        super().__init__()
        for name, v, low in (("dof", dof, 1), ("hidden", hidden, 1), ("depth", depth, 0)):
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"DeLaN: `{name}` must be an int >= {low}, got {v!r}.")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
            raise ValueError(f"DeLaN: `eps` must be a number >= 0, got {eps!r}.")
        sizes = [dof] + [hidden] * depth
        for name, m in (("cholesky", cholesky), ("potential", potential)):
            if m is not None and not callable(m):
                raise TypeError(f"DeLaN: `{name}` must be a module of q, got {describe(m)}.")
        self.dof, self.eps = dof, float(eps)
        self.cholesky = _mlp([*sizes, dof * (dof + 1) // 2]) if cholesky is None else cholesky
        self.potential = _mlp([*sizes, 1]) if potential is None else potential
        self.register_buffer("_rows", torch.tril_indices(dof, dof, -1)[0], persistent=False)
        self.register_buffer("_cols", torch.tril_indices(dof, dof, -1)[1], persistent=False)

    # Single-sample functions (vmapped below).
    def _mass1(self, q1: torch.Tensor) -> torch.Tensor:
        d = self.dof
        out = self.cholesky(q1[None])[0]
        if out.shape != (d * (d + 1) // 2,):
            raise ValueError(
                f"DeLaN: `cholesky` must return (n, {d * (d + 1) // 2}) for dof={d}, got "
                f"{tuple(out.shape)} per sample."
            )
        diag = nn.functional.softplus(out[:d])
        low = torch.diag_embed(diag).index_put((self._rows, self._cols), out[d:])
        return low @ low.T + self.eps * torch.eye(d, dtype=q1.dtype, device=q1.device)

    def _potential1(self, q1: torch.Tensor) -> torch.Tensor:
        v = self.potential(q1[None])
        if v.numel() != 1:
            raise ValueError(
                f"DeLaN: `potential` must return (n,) or (n, 1), got {tuple(v.shape)} for n=1."
            )
        return v.reshape(())

    def _terms1(self, q1: torch.Tensor, qd1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``M(q)`` and ``c + g = dM/dt qd - 1/2 d/dq (qd' M qd) + dV/dq`` of one sample."""
        m = self._mass1(q1)
        mdot_qd = jvp(lambda q: self._mass1(q) @ qd1, (q1,), (qd1,))[1]
        dke = jacrev(lambda q: 0.5 * qd1 @ self._mass1(q) @ qd1)(q1)
        g = jacrev(self._potential1)(q1)
        return m, mdot_qd - dke + g

    def _check(self, name: str, x: Any) -> None:
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != self.dof:
            raise ValueError(
                f"DeLaN: `{name}` must be a tensor (batch, {self.dof}) (dof={self.dof}), got "
                f"{describe(x)}."
            )

    def mass_matrix(self, q: torch.Tensor) -> torch.Tensor:
        """$M(q)$, ``(batch, dof, dof)``, symmetric positive definite."""
        self._check("q", q)
        return vmap(self._mass1)(q)

    def potential_energy(self, q: torch.Tensor) -> torch.Tensor:
        """$V(q)$, ``(batch,)``."""
        self._check("q", q)
        return vmap(self._potential1)(q)

    def energy(self, q: torch.Tensor, qd: torch.Tensor) -> torch.Tensor:
        r"""The total energy $\tfrac12 \dot q^\top M \dot q + V$, ``(batch,)``."""
        m = self.mass_matrix(q)
        return 0.5 * (qd[:, None, :] @ m @ qd[:, :, None])[:, 0, 0] + self.potential_energy(q)

    def inverse_dynamics(
        self, q: torch.Tensor, qd: torch.Tensor, qdd: torch.Tensor
    ) -> torch.Tensor:
        r"""The torque $\tau$ that produces the acceleration ``qdd``, ``(batch, dof)``."""
        for name, x in (("q", q), ("qd", qd), ("qdd", qdd)):
            self._check(name, x)
        m, cg = vmap(self._terms1)(q, qd)
        return (m @ qdd[:, :, None])[..., 0] + cg

    def forward_dynamics(
        self, q: torch.Tensor, qd: torch.Tensor, tau: torch.Tensor | None = None
    ) -> torch.Tensor:
        r"""The acceleration $\ddot q = M^{-1}(\tau - \dot M \dot q + \tfrac12 \nabla_q
        (\dot q^\top M \dot q) - \nabla_q V)$, ``(batch, dof)``."""
        self._check("q", q)
        self._check("qd", qd)
        m, cg = vmap(self._terms1)(q, qd)
        rhs = -cg if tau is None else tau - cg
        return torch.linalg.solve(m, rhs)

    def forward(self, t: Any, x: torch.Tensor, args: Any = None) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != 2 * self.dof:
            raise ValueError(
                f"DeLaN: the state must be a tensor (batch, {2 * self.dof}) holding [q, dq/dt], "
                f"got {describe(x)}."
            )
        q, qd = x[:, : self.dof], x[:, self.dof :]
        tau = args(t, x) if callable(args) else args
        if tau is not None:
            self._check("args (the torque)", tau)
        return torch.cat([qd, self.forward_dynamics(q, qd, tau)], dim=1)
