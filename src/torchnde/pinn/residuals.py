r"""Derivatives for residuals: by autograd on batches of points (neurodiffeq's :func:`diff`),
or per point with ``torch.func`` transforms batched by ``vmap`` (:func:`derivatives`).

Both give the same numbers; :func:`diff` is what residual functions written in neurodiffeq's
style use (``diff(u, t)`` with ``u`` computed from ``t``), :func:`derivatives` suits a trial
function of one point $p \in \mathbb{R}^d$ and returns its value, gradient and Hessian for a
whole batch in one vectorised call ($\Delta u = \operatorname{tr} H$).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import func

__all__ = ["derivatives", "diff", "laplacian"]


def diff(u: torch.Tensor, t: torch.Tensor, order: int = 1) -> torch.Tensor:
    r"""$\partial^{k} u / \partial t^{k}$ by autograd, for ``u`` computed pointwise from ``t``
    (both ``(n, 1)``); differentiable again (``create_graph=True``).

    Raises:
        ValueError: ``u`` and ``t`` of different shapes, or ``order < 1``.
    """
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"`order` must be an int >= 1, got {order!r}.")
    if u.shape != t.shape:
        raise ValueError(
            f"`u` and `t` must have the same shape (n, 1), got {tuple(u.shape)} and "
            f"{tuple(t.shape)}; compute u from t point by point."
        )
    for _ in range(order):
        if not u.requires_grad:  # a constant in t (e.g. the derivative of a linear function)
            return torch.zeros_like(t)
        (u,) = torch.autograd.grad(
            u, t, grad_outputs=torch.ones_like(u), create_graph=True, allow_unused=True
        )
        if u is None:  # u does not depend on t
            return torch.zeros_like(t)
    return u


def derivatives(
    fn: Callable[[torch.Tensor], torch.Tensor], points: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Value, gradient and Hessian of a scalar function of one point, for a batch of points.

    ``fn`` maps a point of shape ``(d,)`` to a scalar (shape ``()``); ``points`` is ``(n, d)``.
    Returns ``(u, grad, hess)`` of shapes ``(n,)``, ``(n, d)``, ``(n, d, d)``, computed by
    ``vmap(jacfwd(jacrev(fn)))`` (forward-over-reverse), differentiable in ``fn``'s parameters.

    Raises:
        ValueError: ``points`` not two-dimensional.
    """
    if points.ndim != 2:
        raise ValueError(
            f"`points` must have shape (n, d), got {tuple(points.shape)}; stack the "
            "coordinates as columns."
        )

    def value_and_grad(p: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        g, u = func.grad_and_value(fn)(p)
        return g, (g, u)

    def all_three(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h, (g, u) = func.jacfwd(value_and_grad, has_aux=True)(p)
        return u, g, h

    u, g, h = func.vmap(all_three)(points)
    return u, g, h


def laplacian(fn: Callable[[torch.Tensor], torch.Tensor], points: torch.Tensor) -> torch.Tensor:
    r"""$\Delta u = \operatorname{tr} \nabla^2 u$ at each of ``points`` (``(n, d)``), shape
    ``(n,)``; see :func:`derivatives`."""
    _, _, h = derivatives(fn, points)
    return torch.diagonal(h, dim1=-2, dim2=-1).sum(-1)
