r"""Small neural-ODE building blocks of the experiments, on the public solve API only.

They stand in for the model zoo (:mod:`torchnde.models`) until it lands; each is a few lines on
:func:`torchnde.solve`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import torchnde

__all__ = ["MLPField", "ODEBlock", "ODEClassifier", "regularised_field"]


class MLPField(nn.Module):
    r"""A vector field $f(t, h) = \mathrm{MLP}([h, t])$ (time appended when ``with_time``)."""

    def __init__(
        self,
        dim: int,
        hidden: int,
        layers: int = 2,
        act: type[nn.Module] = nn.Softplus,
        with_time: bool = True,
    ) -> None:
        super().__init__()
        self.with_time = with_time
        sizes = [dim + int(with_time)] + [hidden] * layers + [dim]
        mods: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            mods.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                mods.append(act())
        self.net = nn.Sequential(*mods)

    def forward(self, t: torch.Tensor, h: torch.Tensor, args: Any = None) -> torch.Tensor:
        if self.with_time:
            h = torch.cat([h, t.expand(*h.shape[:-1], 1).to(h)], dim=-1)
        return self.net(h)


def regularised_field(field: nn.Module, noise: torch.Tensor | None) -> Any:
    r"""The vector field of the state $(h, E, J)$ with $dE/dt = \lVert f \rVert^2$ and
    $dJ/dt = \lVert \partial f / \partial h \rVert_F^2$, per sample.

    The kinetic energy and Jacobian Frobenius penalties of Finlay et al. 2020 ("How to train
    your neural ODE"). The Frobenius norm is Hutchinson's estimate
    $\lVert \varepsilon^\top \partial f/\partial h \rVert^2$ with ``noise`` $\varepsilon$
    (fixed over the solve), or exact when ``noise`` is ``None`` (one gradient per dimension).
    """

    def vf(t: torch.Tensor, state: tuple[torch.Tensor, ...], args: Any) -> tuple[torch.Tensor, ...]:
        h = state[0]
        with torch.enable_grad():
            if not h.requires_grad:
                h = h.detach().requires_grad_(True)
            f = field(t, h)
            if noise is not None:
                (vjp,) = torch.autograd.grad(f, h, noise, create_graph=True)
                jac = (vjp**2).sum(-1)
            else:
                jac = torch.zeros(h.shape[0], dtype=h.dtype, device=h.device)
                for i in range(h.shape[-1]):
                    (row,) = torch.autograd.grad(f[:, i].sum(), h, create_graph=True)
                    jac = jac + (row**2).sum(-1)
        return f, (f**2).sum(-1), jac

    return vf


class ODEBlock(nn.Module):
    """``h(t1)`` of ``dh/dt = field(t, h)`` from ``h(0) = h0``; the last solve's forward NFE
    is kept in ``num_fevals``; with ``regularise`` it also returns the kinetic energy and the
    Jacobian Frobenius integrals per sample."""

    def __init__(self, field: nn.Module, setup: tuple[Any, Any, float | None], t1: float = 1.0):
        super().__init__()
        self.field = field
        self.solver, self.controller, self.dt0 = setup
        self.t1 = t1
        self.num_fevals = 0

    def forward(
        self, h0: torch.Tensor, regularise: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        if regularise:
            zeros = h0.new_zeros(h0.shape[0])
            noise = torch.randn_like(h0)
            sol = torchnde.solve(
                torchnde.ODETerm(regularised_field(self.field, noise)),
                self.solver,
                0.0,
                self.t1,
                (h0, zeros, zeros),
                dt0=self.dt0,
                controller=self.controller,
            )
            self.num_fevals = int(sol.stats["num_fevals"])
            h, e, j = (y[-1] for y in sol.ys)
            return h, e, j
        sol = torchnde.solve(
            torchnde.ODETerm(self.field),
            self.solver,
            0.0,
            self.t1,
            h0,
            dt0=self.dt0,
            controller=self.controller,
        )
        self.num_fevals = int(sol.stats["num_fevals"])
        return sol.ys[-1], None, None


class ODEClassifier(nn.Module):
    """``readout(h(1))`` with ``h(0) = [embed(x), 0_augment]``: a neural ODE classifier
    (Chen et al. 2018), augmented with ``augment`` zero channels (Dupont et al. 2019)."""

    def __init__(
        self, embed: nn.Module, block: ODEBlock, readout: nn.Module, augment: int = 0
    ) -> None:
        super().__init__()
        self.embed = embed
        self.block = block
        self.readout = readout
        self.augment = augment

    def forward(
        self, x: torch.Tensor, regularise: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        h0 = self.embed(x)
        if self.augment:
            h0 = torch.cat([h0, h0.new_zeros(*h0.shape[:-1], self.augment)], dim=-1)
        h, e, j = self.block(h0, regularise)
        return self.readout(h), e, j

    @property
    def num_fevals(self) -> int:
        return self.block.num_fevals
