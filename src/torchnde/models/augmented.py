r"""Augmented neural ODEs (ANODE) and second-order neural ODEs (SONODE)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._config import describe

__all__ = ["Augmented", "SecondOrder"]


class Augmented(nn.Module):
    r"""Augment the input with extra channels before an ODE layer (Dupont et al. 2019).

    A neural ODE is a homeomorphism of its input space, so trajectories cannot cross: in
    $\mathbb{R}^d$ it cannot map nested circles to linearly separable sets. Solving in
    $\mathbb{R}^{d+p}$ from $[x, a(x)]$ lifts that restriction.

    Args:
        node: the layer that solves the augmented state (a :class:`NeuralODE` whose vector
            field takes ``d + augment_dim`` channels), or any module of one input.
        augment_dim: $p$, the number of extra channels (along ``dim``).
        augment: ``"zero"`` ($a = 0$, ANODE) or a module ``a(x)`` returning the ``p`` extra
            channels (learned augmentation, e.g. a learned initial velocity for a
            :class:`SecondOrder` field, Norcliffe et al. 2020).
        keep_augmented: return the whole state (``True``, the ANODE read-out then sees the
            extra channels) or only the first ``d`` channels (positions of a SONODE).
        dim: the channel dimension of the input (``1``: ``(batch, channels, ...)``).

    A trajectory (``(len(ts), batch, ...)``, time first) is sliced along ``dim + 1``.

    References:
        E. Dupont, A. Doucet, Y. W. Teh, "Augmented neural ODEs", NeurIPS 2019.
    """

    def __init__(
        self,
        node: nn.Module,
        augment_dim: int,
        augment: str | nn.Module = "zero",
        *,
        keep_augmented: bool = True,
        dim: int = 1,
    ) -> None:
        super().__init__()
        if isinstance(augment_dim, bool) or not isinstance(augment_dim, int) or augment_dim < 1:
            raise ValueError(
                f"Augmented: `augment_dim` must be a positive int, got {augment_dim!r}."
            )
        if isinstance(augment, str):
            if augment != "zero":
                raise ValueError(
                    f"Augmented: `augment` must be 'zero' or a module a(x), got {augment!r}."
                )
        elif not callable(augment):
            raise TypeError(
                f"Augmented: `augment` must be 'zero' or a module a(x), got {describe(augment)}."
            )
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"Augmented: `dim` must be an int >= 1 (after batch), got {dim!r}.")
        self.node, self.augment_dim, self.dim = node, augment_dim, dim
        self.augment = augment
        self.keep_augmented = keep_augmented

    def augment_input(self, x: torch.Tensor) -> torch.Tensor:
        """``[x, a(x)]`` along ``dim``."""
        if x.ndim <= self.dim:
            raise ValueError(
                f"Augmented: the input needs a channel dimension {self.dim}, got shape "
                f"{tuple(x.shape)}."
            )
        if isinstance(self.augment, str):
            shape = list(x.shape)
            shape[self.dim] = self.augment_dim
            a = x.new_zeros(shape)
        else:
            a = self.augment(x)
            expect = list(x.shape)
            expect[self.dim] = self.augment_dim
            if not isinstance(a, torch.Tensor) or list(a.shape) != expect:
                raise ValueError(
                    f"Augmented: `augment(x)` must return shape {tuple(expect)}, got {describe(a)}."
                )
        return torch.cat([x, a], self.dim)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = self.node(self.augment_input(x), *args, **kwargs)
        if self.keep_augmented:
            return out
        d = x.shape[self.dim]
        axis = out.ndim - x.ndim + self.dim
        return out.narrow(axis, 0, d)


class SecondOrder(nn.Module):
    r"""A second-order vector field $\ddot x = a_\theta(t, x, \dot x)$ as the first-order
    system on $z = [x, v]$ (split in two halves along ``dim``): $\dot x = v$,
    $\dot v = a_\theta(t, [x, v])$ (SONODE, Norcliffe et al. 2020).

    Compose it with :class:`Augmented` for the initial velocity: zero, or learned with
    ``augment=`` a module $v_0(x)$ (the paper's choice), and ``keep_augmented=False`` to
    read out the position::

        Augmented(NeuralODE(SecondOrder(accel)), augment_dim=d, augment=v0_net,
                  keep_augmented=False)

    Args:
        acceleration: ``a(t, z)`` with ``z = [x, v]`` (``2d`` channels) returning ``d``
            channels.
        dim: the channel dimension.

    References:
        A. Norcliffe, C. Bodnar, B. Day, N. Simidjievski, P. Liò, "On second order behaviour
        in augmented neural ODEs", NeurIPS 2020.
    """

    def __init__(self, acceleration: Any, dim: int = 1) -> None:
        super().__init__()
        if not callable(acceleration):
            raise TypeError(
                f"SecondOrder: `acceleration` must be callable as a(t, z), got "
                f"{describe(acceleration)}."
            )
        self.acceleration, self.dim = acceleration, dim

    def forward(self, t: torch.Tensor, z: torch.Tensor, *args: Any) -> torch.Tensor:
        c = z.shape[self.dim]
        if c % 2:
            raise ValueError(
                f"SecondOrder: the state must hold [x, v] with equal halves along dim "
                f"{self.dim}, got {c} channels (shape {tuple(z.shape)})."
            )
        v = z.narrow(self.dim, c // 2, c // 2)
        a = self.acceleration(t, z, *args)
        if a.shape != v.shape:
            raise ValueError(
                f"SecondOrder: the acceleration must have the shape of the velocity "
                f"{tuple(v.shape)}, got {tuple(a.shape)}."
            )
        return torch.cat([v, a], self.dim)
