r"""Collocation: kernel-smoothed states and derivatives from data, then the vector field by
regression, with no solver in the loop (SciML's ``collocate_data``, DiffEqFlux.jl).

For each sample time $t_i$, a local polynomial regression with kernel weights
$w_{ij} = K\big((t_j - t_i) / (h\,(t_{n} - t_1))\big)$ gives the smoothed state (local linear,
the intercept) and its derivative (local quadratic, the linear coefficient):

$$\hat x(t_i) = e_1^\top (T_1^\top W_i T_1)^{-1} T_1^\top W_i X, \qquad
\hat{\dot x}(t_i) = e_2^\top (T_2^\top W_i T_2)^{-1} T_2^\top W_i X,$$

with $T_k = [1, (t_j - t_i), \dots, (t_j - t_i)^k]_j$ and, by default, DiffEqFlux's bandwidth
$h = n^{-1/5} n^{-3/35} \log(n)^{-1/16}$ (a fraction of the time span). Then the field
$f_\theta$ is fitted by $\min_\theta \sum_i \lVert f_\theta(t_i, \hat x_i) - \hat{\dot x}_i
\rVert^2$ -- cheap, and a good start for training through the solver (Roesch, Rackauckas,
Stumpf 2021, "Collocation based training of neural ordinary differential equations").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ._differentiation import AbstractDifferentiation, _check, _times

__all__ = ["KERNELS", "CollocationDerivative", "collocate_data", "fit_collocation"]


def _compact(f: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda u: torch.where(u.abs() <= 1, f(u), torch.zeros_like(u))


#: The kernels by name: compact ones vanish outside ``|u| <= 1``.
KERNELS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "epanechnikov": _compact(lambda u: 0.75 * (1 - u**2)),
    "uniform": _compact(lambda u: 0.5 * torch.ones_like(u)),
    "triangular": _compact(lambda u: 1 - u.abs()),
    "quartic": _compact(lambda u: (15 / 16) * (1 - u**2) ** 2),
    "tricube": _compact(lambda u: (70 / 81) * (1 - u.abs() ** 3) ** 3),
    "gaussian": lambda u: torch.exp(-0.5 * u**2) / math.sqrt(2 * math.pi),
}


def _kernel(kernel: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if kernel not in KERNELS:
        raise ValueError(f"`kernel` must be one of {', '.join(KERNELS)}, got {kernel!r}.")
    return KERNELS[kernel]


def _bandwidth(n: int, bandwidth: float | None) -> float:
    if bandwidth is None:
        return n ** (-1 / 5) * n ** (-3 / 35) * math.log(n) ** (-1 / 16)
    if isinstance(bandwidth, bool) or not isinstance(bandwidth, (int, float)) or bandwidth <= 0:
        raise ValueError(
            f"`bandwidth` must be a number > 0 (a fraction of the time span) or None, got "
            f"{bandwidth!r}."
        )
    return float(bandwidth)


def collocate_data(
    data: torch.Tensor,
    t: float | torch.Tensor,
    kernel: str = "triangular",
    bandwidth: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel-smoothed derivatives and states of ``data`` ``(num_samples, num_features)`` at
    times ``t`` (a spacing or a 1-D tensor), as DiffEqFlux's ``collocate_data``.

    Args:
        data: the samples, time first (torchnde's convention).
        t: the sample times, or their spacing.
        kernel: one of :data:`KERNELS`.
        bandwidth: the kernel's half width as a fraction of the time span; ``None`` for
            DiffEqFlux's $n^{-1/5} n^{-3/35} \\log(n)^{-1/16}$. Compact kernels need enough
            samples within it (at least three, for the local quadratic).

    Returns:
        ``(x_dot, x)``: the estimated derivatives and smoothed states, each of ``data``'s
        shape (DiffEqFlux's order).

    Raises:
        ValueError: for a bad ``kernel``, ``bandwidth`` or ``t``, fewer than 3 samples, or a
            bandwidth too narrow for the local fits (fewer than 3 samples under the kernel).
    """
    x = _check(data, 3)
    ts = _times(x, t)
    k = _kernel(kernel)
    n = x.shape[0]
    h = _bandwidth(n, bandwidth)
    span = ts[-1] - ts[0]
    dt = ts[None, :] - ts[:, None]  # (i, j): t_j - t_i
    w = k(dt / (span * h))  # (i, j)
    if int((w > 0).sum(1).min()) < 3:
        raise ValueError(
            f"`bandwidth` {h:.3g} leaves fewer than 3 samples under the {kernel} kernel at some "
            "time; widen it (or pass bandwidth=None)."
        )
    # Scale the time offsets by the bandwidth so the normal equations stay well conditioned.
    s = span * h
    u = dt / s
    basis = torch.stack([torch.ones_like(u), u, u**2], -1)  # (i, j, 3)
    wb = w[..., None] * basis
    gram = wb.transpose(1, 2) @ basis  # (i, 3, 3)
    rhs = wb.transpose(1, 2) @ x  # (i, 3, d)
    quad = torch.linalg.solve(gram, rhs)  # (i, 3, d)
    lin = torch.linalg.solve(gram[:, :2, :2], rhs[:, :2])  # (i, 2, d)
    return quad[:, 1] / s, lin[:, 0]


class CollocationDerivative(AbstractDifferentiation):
    """The derivative from :func:`collocate_data` (local quadratic kernel regression), as a
    SINDy ``differentiation_method``; robust to noise where finite differences are not."""

    def __init__(self, kernel: str = "triangular", bandwidth: float | None = None) -> None:
        _kernel(kernel)
        self.kernel = kernel
        self.bandwidth = None if bandwidth is None else _bandwidth(3, bandwidth)

    def __call__(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        return collocate_data(x, t, self.kernel, self.bandwidth)[0]


def fit_collocation(
    field: nn.Module,
    data: torch.Tensor,
    t: float | torch.Tensor,
    *,
    args: Any = None,
    kernel: str = "triangular",
    bandwidth: float | None = None,
    steps: int = 500,
    lr: float = 1e-2,
    lbfgs_steps: int = 0,
    target: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    autonomous: bool = True,
) -> float:
    r"""Fit ``field(t, y, args)`` (a vector field, as for ``torchnde.ODETerm``) to the kernel
    estimates of :func:`collocate_data` by full-batch regression, in place, no solver:
    $\min_\theta \operatorname{mean}_i \lVert f_\theta(t_i, \hat x_i) - \hat{\dot x}_i \rVert^2$
    by ``steps`` of Adam at ``lr``, then ``lbfgs_steps`` iterations of L-BFGS (strong Wolfe).

    Args:
        field: the module to fit; its parameters are updated.
        data: ``(num_samples, num_features)`` samples of one trajectory, time first.
        t: their times (a spacing or a 1-D tensor).
        args: passed to ``field``.
        kernel, bandwidth: as :func:`collocate_data`.
        steps: Adam steps (>= 0).
        lr: Adam's learning rate.
        lbfgs_steps: L-BFGS iterations after Adam (>= 0).
        target: optional ``(x, x_dot) -> target`` replacing the regression target (e.g. the
            derivative minus known terms, to fit a UDE's network alone).
        autonomous: the field ignores ``t``: it is called once on all states (at ``t[0]``);
            ``False`` calls it sample by sample at each time.

    Returns:
        The final mean squared residual.

    Raises:
        ValueError: for negative ``steps``/``lbfgs_steps`` or a non-positive ``lr``, and as
            :func:`collocate_data`.
    """
    for name, value in (("steps", steps), ("lbfgs_steps", lbfgs_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"`{name}` must be an int >= 0, got {value!r}.")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0:
        raise ValueError(f"`lr` must be a number > 0, got {lr!r}.")
    x_dot, x = collocate_data(data, t, kernel, bandwidth)
    ts = _times(data, t)
    goal = x_dot if target is None else target(x, x_dot)
    params = [p for p in field.parameters() if p.requires_grad]

    def loss() -> torch.Tensor:
        if autonomous:
            pred = field(ts[0], x, args)
        else:
            pred = torch.stack([field(ti, xi, args) for ti, xi in zip(ts, x)])
        return ((pred - goal) ** 2).mean()

    adam = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        adam.zero_grad(set_to_none=True)
        objective = loss()
        objective.backward()
        adam.step()
    if lbfgs_steps:
        lbfgs = torch.optim.LBFGS(
            params, max_iter=lbfgs_steps, history_size=50, line_search_fn="strong_wolfe"
        )

        def closure() -> torch.Tensor:
            lbfgs.zero_grad(set_to_none=True)
            objective = loss()
            objective.backward()
            return objective

        lbfgs.step(closure)
    with torch.no_grad():
        return float(loss())
