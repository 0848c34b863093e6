r"""Port-Hamiltonian neural networks: learned energy, interconnection, dissipation and input
matrices."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._config import describe
from .hamiltonian import _check_module, _grad_of, _per_sample

__all__ = ["PortHamiltonian"]


class PortHamiltonian(nn.Module):
    r"""A port-Hamiltonian system with learned parts:

    $$\dot x = \big(J_\theta(x) - R_\theta(x)\big)\nabla H_\theta(x) + G_\theta(x)\,u,$$

    $J = A - A^\top$ skew-symmetric (interconnection), $R = B B^\top$ positive semi-definite
    (dissipation), $G$ the input matrix and $u$ the input (``args``). Whatever the
    networks, the energy balance holds along every solution,

    $$\frac{dH}{dt} = -\nabla H^\top R \nabla H + \nabla H^\top G u \le \nabla H^\top G u,$$

    so the system is passive: without input its energy never increases, with $R = 0$ it is
    conserved. :class:`HNN` is the special case $J$ canonical, $R = 0$, $G = 0$;
    :class:`StableNeuralFlow` the case $J = 0$, $R = I$.

    Args:
        hamiltonian: a module ``H(x)``, ``x`` of shape ``(batch, n)``, returning ``(batch,)``
            or ``(batch, 1)``.
        interconnection: a module ``x -> (batch, n * n)`` giving $A$ (row by row), or ``None``
            for the canonical $J = \begin{pmatrix} 0 & I \\ -I & 0\end{pmatrix}$ (``n``
            even).
        dissipation: a module ``x -> (batch, n * n)`` giving $B$, or ``None`` for $R = 0$.
        input_matrix: a module ``x -> (batch, n * m)`` giving $G$ for inputs ``u`` of shape
            ``(batch, m)``, or ``None`` (no input).

    The input ``args`` of ``forward(t, x, args)`` is ``None``, a tensor ``(batch, m)`` or a
    callable ``u(t, x)`` (a feedback law).

    References:
        A. van der Schaft, D. Jeltsema, "Port-Hamiltonian systems theory: an introductory
        overview", *Foundations and Trends in Systems and Control* 1(2-3), 2014;
        S. Massaroli, M. Poli, F. Califano, A. Faragasso, J. Park, A. Yamashita, H. Asama,
        "Port-Hamiltonian approach to neural network training", IEEE CDC 2019.
    """

    def __init__(
        self,
        hamiltonian: Any,
        *,
        interconnection: Any = None,
        dissipation: Any = None,
        input_matrix: Any = None,
    ) -> None:
        super().__init__()
        _check_module("PortHamiltonian", "hamiltonian", hamiltonian)
        for name, m in (
            ("interconnection", interconnection),
            ("dissipation", dissipation),
            ("input_matrix", input_matrix),
        ):
            if m is not None:
                _check_module("PortHamiltonian", name, m)
        self.net = hamiltonian
        self.interconnection, self.dissipation = interconnection, dissipation
        self.input_matrix = input_matrix

    def hamiltonian(self, x: torch.Tensor) -> torch.Tensor:
        """The learned energy per sample, ``(batch,)``."""
        return _per_sample("PortHamiltonian", "hamiltonian", self.net(x), x.shape[0])

    def _square(self, name: str, m: Any, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        out = m(x)
        if not isinstance(out, torch.Tensor) or out.shape != (x.shape[0], n * n):
            raise ValueError(
                f"PortHamiltonian: `{name}` must return (batch, n * n) = ({x.shape[0]}, "
                f"{n * n}) for a state of {n} components, got {describe(out)}."
            )
        return out.reshape(x.shape[0], n, n)

    def structure(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(J, R)`` at ``x``: ``(batch, n, n)`` each (``R`` is ``None`` without dissipation)."""
        n = x.shape[1]
        if self.interconnection is None:
            if n % 2:
                raise ValueError(
                    f"PortHamiltonian: the canonical interconnection needs an even state "
                    f"dimension [q, p], got {n}; pass `interconnection=`."
                )
            d = n // 2
            eye = torch.eye(d, dtype=x.dtype, device=x.device)
            j = torch.zeros(n, n, dtype=x.dtype, device=x.device)
            j[:d, d:], j[d:, :d] = eye, -eye
            j = j.expand(x.shape[0], n, n)
        else:
            a = self._square("interconnection", self.interconnection, x)
            j = a - a.transpose(1, 2)
        r = None
        if self.dissipation is not None:
            b = self._square("dissipation", self.dissipation, x)
            r = b @ b.transpose(1, 2)
        return j, r

    def input_gain(self, x: torch.Tensor, m: int) -> torch.Tensor:
        """$G(x)$, ``(batch, n, m)``."""
        if self.input_matrix is None:
            raise ValueError(
                "PortHamiltonian: an input `args` was given but the model has no `input_matrix`."
            )
        g = self.input_matrix(x)
        n = x.shape[1]
        if not isinstance(g, torch.Tensor) or g.shape != (x.shape[0], n * m):
            raise ValueError(
                f"PortHamiltonian: `input_matrix` must return (batch, n * m) = ({x.shape[0]}, "
                f"{n * m}) for {n} states and {m} inputs, got {describe(g)}."
            )
        return g.reshape(x.shape[0], n, m)

    def forward(self, t: Any, x: torch.Tensor, args: Any = None) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 2:
            raise ValueError(
                f"PortHamiltonian: the state must be a tensor (batch, n), got {describe(x)}."
            )
        (dh,) = _grad_of(self.hamiltonian, x)
        j, r = self.structure(x)
        m = j if r is None else j - r
        dx = (m @ dh[:, :, None])[..., 0]
        u = args(t, x) if callable(args) else args
        if u is not None:
            if not isinstance(u, torch.Tensor) or u.ndim != 2 or u.shape[0] != x.shape[0]:
                raise ValueError(
                    f"PortHamiltonian: the input `args` must be a tensor (batch, m) or a "
                    f"callable u(t, x) returning one, got {describe(u)}."
                )
            dx = dx + (self.input_gain(x, u.shape[1]) @ u[:, :, None])[..., 0]
        return dx
