r"""Stable neural flows: gradient flows of a learned energy."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._config import describe

__all__ = ["StableNeuralFlow"]


class StableNeuralFlow(nn.Module):
    r"""The vector field $f(t, x) = -\nabla_x E_\theta(t, x)$ of a learned scalar energy
    (Massaroli et al. 2020, "Stable neural flows").

    Along any solution $\frac{d}{dt}E(t, x(t)) = \partial_t E - \|\nabla_x E\|^2$, so for an
    energy that does not depend on $t$ the energy never increases: the flow is dissipative
    and settles towards (local) minima of $E$. Use it as a :class:`NeuralODE` vector field.

    Args:
        energy: a module ``E(x)`` (or, with ``time_dependent=True``, ``E(t, x)``) returning
            one energy per sample, shape ``(batch,)`` or ``(batch, 1)``.
        time_dependent: whether the energy takes ``t``.

    The gradient is taken with ``create_graph`` whenever autograd is recording, so the flow
    trains with every adjoint.

    References:
        S. Massaroli, M. Poli, M. Bin, J. Park, A. Yamashita, H. Asama, "Stable neural flows",
        arXiv:2003.08063, 2020.
    """

    def __init__(self, energy: Any, *, time_dependent: bool = False) -> None:
        super().__init__()
        if not callable(energy):
            raise TypeError(
                f"StableNeuralFlow: `energy` must be a module E(x), got {describe(energy)}."
            )
        self.energy, self.time_dependent = energy, time_dependent

    def potential(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The energy per sample, ``(batch,)``."""
        e = self.energy(t, x) if self.time_dependent else self.energy(x)
        if e.ndim == 2 and e.shape[1] == 1:
            e = e[:, 0]
        if e.shape != x.shape[:1]:
            raise ValueError(
                f"StableNeuralFlow: the energy must be one value per sample, shape "
                f"({x.shape[0]},) or ({x.shape[0]}, 1), got {tuple(e.shape)}."
            )
        return e

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        create = torch.is_grad_enabled()
        with torch.enable_grad():
            xg = x if x.requires_grad else x.detach().requires_grad_(True)
            e = self.potential(t, xg).sum()
            (g,) = torch.autograd.grad(e, xg, create_graph=create)
        return -g
