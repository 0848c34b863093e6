r"""Monge-Ampere flow (Zhang, E, Wang 2018): a CNF whose vector field is a gradient."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

import torchnde as tn

from ._config import describe
from .cnf import CNF
from .regularisers import AbstractRegulariser

__all__ = ["MongeAmpereFlow", "PotentialGradient"]


class PotentialGradient(nn.Module):
    r"""The gradient field $v(t, x) = \nabla_x \varphi(t, x)$ of a scalar potential network.

    ``potential(t, x)`` returns one value per sample (shape ``(batch,)`` or ``(batch, 1)``).
    The gradient is taken by autograd, with a graph (for training and for the Jacobian trace
    of a CNF) whenever gradients are enabled where the field is called. Its Jacobian is the
    Hessian $\nabla^2_x\varphi$, symmetric: the field is curl-free by construction.
    """

    def __init__(self, potential: Any) -> None:
        super().__init__()
        if isinstance(potential, nn.Sequential) or not callable(potential):
            raise TypeError(
                "PotentialGradient: `potential` must be a module or callable phi(t, x) -> "
                f"(batch,), got {describe(potential)}; wrap a network of x alone with "
                "Autonomous(net) or of [x, t] with DepthCat(net)."
            )
        self.potential = potential

    def phi(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The potential, shape ``(batch,)``."""
        out = self.potential(t, x)
        if not isinstance(out, torch.Tensor) or out.numel() != x.shape[0]:
            raise ValueError(
                "PotentialGradient: `potential(t, x)` must return one value per sample, shape "
                f"({x.shape[0]},) or ({x.shape[0]}, 1), got {describe(out)}."
            )
        return out.reshape(x.shape[0])

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        graph = torch.is_grad_enabled()
        with torch.enable_grad():
            xg = x if x.requires_grad else x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.phi(t, xg).sum(), xg, create_graph=graph)
        return g


class MongeAmpereFlow(CNF):
    r"""Monge-Ampere flow (Zhang, E, Wang 2018): a continuous normalising flow whose vector
    field is the gradient of a scalar potential,

    $$\dot z = \nabla_z \varphi_\theta(t, z),\qquad
    \frac{d}{dt}\log p(z(t), t) = -\nabla^2_z \varphi_\theta(t, z(t)),$$

    the linearised Monge-Ampere equation: the density is transported by an irrotational
    (potential) flow, the continuous-time analogue of Brenier's optimal-transport map. As a
    :class:`CNF` it maps data $x = z(t_0)$ to the base at $t_1$ and

    $$\log p(x) = \log\mathcal N(z(t_1); 0, I) + \int_{t_0}^{t_1}
    \nabla^2_z\varphi_\theta(t, z(t))\,dt,$$

    the Laplacian being the trace of the field's Jacobian (exact, or Hutchinson's estimator)
    computed by the CNF machinery. Every option of :class:`CNF` applies (regularisers such as
    :class:`KineticEnergy`, every adjoint). The potential needs smooth (twice differentiable)
    activations, e.g. ``Softplus`` or ``Tanh``.

    Args:
        potential: ``phi(t, z)`` returning ``(batch,)`` or ``(batch, 1)``, e.g.
            ``DepthCat(mlp)`` with a last layer of width 1.
        event_shape: the shape of one sample.
        **kwargs: the keyword arguments of :class:`CNF` (``trace``, ``regularisers``,
            ``solver``, ``adjoint``, ``t0``, ``t1``, ``rtol``, ``atol``, ...).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.Softplus(),
        ...                           torch.nn.Linear(32, 1))
        >>> flow = MongeAmpereFlow(tn.models.DepthCat(net), 2)
        >>> flow.log_prob(torch.randn(5, 2)).shape
        torch.Size([5])

    Reference:
        L. Zhang, W. E, L. Wang, "Monge-Ampere flow for generative modeling", arXiv:1809.10188
        (2018).
    """

    def __init__(
        self,
        potential: Any,
        event_shape: int | Sequence[int],
        *,
        trace: str = "exact",
        noise: str = "gaussian",
        regularisers: Sequence[AbstractRegulariser] = (),
        solver: tn.AbstractSolver | None = None,
        adjoint: tn.AbstractAdjoint | None = None,
        t0: float = 0.0,
        t1: float = 1.0,
        rtol: float | None = None,
        atol: float | None = None,
        controller: tn.AbstractStepSizeController | None = None,
        dt0: float | None = None,
        max_steps: int = 65536,
    ) -> None:
        super().__init__(
            PotentialGradient(potential),
            event_shape,
            trace=trace,
            noise=noise,
            regularisers=regularisers,
            solver=solver,
            adjoint=adjoint,
            t0=t0,
            t1=t1,
            rtol=rtol,
            atol=atol,
            controller=controller,
            dt0=dt0,
            max_steps=max_steps,
        )

    @property
    def potential(self) -> Any:
        """The scalar potential network $\\varphi_\\theta(t, z)$."""
        return self.vector_field.potential
