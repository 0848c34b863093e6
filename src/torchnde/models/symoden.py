r"""Symplectic ODE-Net: a structured Hamiltonian with a control input."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._config import describe
from .delan import _mlp
from .hamiltonian import _grad_of

__all__ = ["SymODEN"]


class SymODEN(nn.Module):
    r"""Symplectic ODE-Net (Zhong, Dey, Chakraborty 2020): Hamiltonian dynamics with a control
    input and a learned mechanical structure,

    $$H(q, p) = \tfrac12 p^\top M^{-1}_\theta(q)\, p + V_\theta(q), \qquad
    \dot q = \frac{\partial H}{\partial p}, \qquad
    \dot p = -\frac{\partial H}{\partial q} + g_\theta(q)\, u,$$

    with $M^{-1}_\theta = L L^\top + \varepsilon I$ ($L$ lower triangular with a softplus
    diagonal) positive definite, $V_\theta$ a potential and $g_\theta(q)$ the input matrix
    ``(dof, control_dim)``. The energy balance $dH/dt = \dot q^\top g_\theta(q) u$ holds for
    any networks (a port-Hamiltonian system without dissipation, see
    :class:`PortHamiltonian`), so the learned model is ready for energy-based control: the
    paper's controller, energy shaping plus damping injection, is
    $u = g^{+}(\nabla_q V - \nabla_q V_d) - K_d \dot q$.

    The state is ``x = [q, p]`` of shape ``(batch, 2 dof)``; the input ``args`` is ``None``,
    a tensor ``(batch, control_dim)`` or a callable ``u(t, x)``. Train it on trajectories
    through the solver (the paper: RK4 through short windows with the control held constant).

    Args:
        dof: the number of degrees of freedom.
        control_dim: the number of inputs.
        hidden, depth: the MLPs' hidden width and number of hidden layers.
        eps: added to $M^{-1}$.

    References:
        Y. D. Zhong, B. Dey, A. Chakraborty, "Symplectic ODE-Net: learning Hamiltonian
        dynamics with control", ICLR 2020.
    """

    def __init__(
        self, dof: int, control_dim: int = 1, *, hidden: int = 64, depth: int = 2, eps: float = 1e-2
    ) -> None:
        super().__init__()
        for name, v, low in (
            ("dof", dof, 1), ("control_dim", control_dim, 1), ("hidden", hidden, 1),
            ("depth", depth, 0),
        ):  # fmt: skip
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"SymODEN: `{name}` must be an int >= {low}, got {v!r}.")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
            raise ValueError(f"SymODEN: `eps` must be a number >= 0, got {eps!r}.")
        sizes = [dof] + [hidden] * depth
        self.dof, self.control_dim, self.eps = dof, control_dim, float(eps)
        self.inverse_mass_net = _mlp([*sizes, dof * (dof + 1) // 2])
        self.potential = _mlp([*sizes, 1])
        self.input_net = _mlp([*sizes, dof * control_dim])
        rows, cols = torch.tril_indices(dof, dof, -1)
        self.register_buffer("_rows", rows, persistent=False)
        self.register_buffer("_cols", cols, persistent=False)

    _rows: torch.Tensor
    _cols: torch.Tensor

    def inverse_mass(self, q: torch.Tensor) -> torch.Tensor:
        """$M^{-1}(q)$, ``(batch, dof, dof)``, symmetric positive definite."""
        d = self.dof
        out = self.inverse_mass_net(q)
        low = torch.diag_embed(nn.functional.softplus(out[:, :d]))
        if d > 1:
            strict = torch.zeros_like(low)
            strict[:, self._rows, self._cols] = out[:, d:]
            low = low + strict
        eye = torch.eye(d, dtype=q.dtype, device=q.device)
        return low @ low.transpose(1, 2) + self.eps * eye

    def input_gain(self, q: torch.Tensor) -> torch.Tensor:
        """$g(q)$, ``(batch, dof, control_dim)``."""
        return self.input_net(q).reshape(q.shape[0], self.dof, self.control_dim)

    def hamiltonian(self, x: torch.Tensor) -> torch.Tensor:
        r"""$H(q, p)$ per sample, ``(batch,)``."""
        self._check(x)
        q, p = x[:, : self.dof], x[:, self.dof :]
        kinetic = 0.5 * (p[:, None, :] @ self.inverse_mass(q) @ p[:, :, None])[:, 0, 0]
        return kinetic + self.potential(q)[:, 0]

    def _check(self, x: Any) -> None:
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != 2 * self.dof:
            raise ValueError(
                f"SymODEN: the state must be a tensor (batch, {2 * self.dof}) holding [q, p] "
                f"(dof={self.dof}), got {describe(x)}."
            )

    def forward(self, t: Any, x: torch.Tensor, args: Any = None) -> torch.Tensor:
        self._check(x)
        (dh,) = _grad_of(self.hamiltonian, x)
        d = self.dof
        dq, dp = dh[:, d:], -dh[:, :d]
        u = args(t, x) if callable(args) else args
        if u is not None:
            if not isinstance(u, torch.Tensor) or u.shape != (x.shape[0], self.control_dim):
                raise ValueError(
                    f"SymODEN: the input `args` must be a tensor (batch, control_dim) = "
                    f"({x.shape[0]}, {self.control_dim}) or a callable u(t, x) returning one, "
                    f"got {describe(u)}."
                )
            dp = dp + (self.input_gain(x[:, :d]) @ u[:, :, None])[..., 0]
        return torch.cat([dq, dp], dim=1)
