r"""Shared machinery of the Adams methods: variable-step coefficients in divided-difference form.

The vector field's history at the current point $t_n$ is kept as *modified divided
differences* (Shampine & Gordon, 1975; Hairer, Nørsett & Wanner, *Solving ODEs I*, III.5)

$$\Phi_j(n) = f[t_n, \dots, t_{n-j}]\prod_{i=1}^{j}(t_n - t_{n-i}),$$

which are the backward differences $\nabla^j f_n$ for equal steps and stay of size
$O(h^j f^{(j)})$ for any steps (no division by small numbers). With $d_i = t_n - t_{n-i}$,
$h = t_{n+1} - t_n$, $\psi_i = h + d_i$ and $\alpha_i = h / \psi_i$:

* $c_j = \int_0^1 \prod_{i<j} (\alpha_i s + 1 - \alpha_i)\,ds$ (the $\gamma_j$ of the
  backward-difference Adams formulas for equal steps);
* $\beta_j = \prod_{i<j} \psi_i / d_{i+1}$ and $\Phi^*_j = \beta_j \Phi_j(n)$;
* the Adams–Bashforth predictor of order $k$ is $y^p = y_n + h\sum_{j<k} c_j \Phi^*_j$;
* the divided differences at the new point are $\Phi_j(n+1) = f_{n+1} - \sum_{i<j}\Phi^*_i$;
* the Adams–Moulton corrector of order $k+1$ is $y^c = y^p + h\,c_k\,\Phi_k(n+1)$, and
  $\mathrm{AM}_{k+1} - \mathrm{AM}_k = h (c_k - c_{k-1}) \Phi_k(n+1)$ (the error estimate).

The same integrals up to $\theta$ give the dense output. The integrals are computed exactly by
Gauss–Legendre quadrature (the integrands are polynomials of degree $\le$ the history length),
so every coefficient is a handful of batched tensor operations, per sample when the steps are.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

__all__ = [
    "advance",
    "initial_history",
    "coefficients",
    "contract",
    "integral_weights",
    "interpolate_history",
    "slope",
    "spread",
]

_QUADRATURE_POINTS = 8  # exact for polynomials of degree <= 15 (history length <= 14)


@functools.cache
def _gauss_legendre(dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x, w = np.polynomial.legendre.leggauss(_QUADRATURE_POINTS)
    nodes = torch.as_tensor((x + 1) / 2, dtype=dtype, device=device)
    weights = torch.as_tensor(w / 2, dtype=dtype, device=device)
    return nodes, weights


def spread(coef: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    """View coefficients of shape ``(*batch, m)`` so they broadcast against a history tensor
    ``(*batch, m, *rest)`` (history dimension right after the batch dimensions)."""
    return coef.reshape(coef.shape + (1,) * (history.ndim - coef.ndim))


def contract(weights: torch.Tensor, history: torch.Tensor, dim: int) -> torch.Tensor:
    """``Σ_j weights[..., r, j] history[j]``: ``weights`` of shape ``(*batch, r, m)``; returns
    ``(r, *y.shape)`` joint (``dim == 0``) or ``(batch, r, *state)`` per sample."""
    if dim == 0:
        m = history.shape[0]
        out = weights.to(history.dtype) @ history.reshape(m, -1)
        return out.view((weights.shape[0],) + history.shape[1:])
    b, m = history.shape[0], history.shape[1]
    out = torch.bmm(weights.to(history.dtype), history.reshape(b, m, -1))
    return out.view((b, weights.shape[1]) + history.shape[2:])


def integral_weights(alpha: torch.Tensor, theta: torch.Tensor | None, count: int) -> torch.Tensor:
    r"""$\int_0^\theta \prod_{i<j}(\alpha_i s + 1 - \alpha_i)\,ds$ for ``j < count``.

    ``alpha`` has shape ``(*batch, m)``. With ``theta=None`` the integral runs to 1 and the
    result has shape ``(*batch, count)``; otherwise ``theta`` has shape ``(n,)`` (joint, result
    ``(n, count)``) or ``(batch,)`` (per sample, result ``(batch, count)``).
    """
    nodes, weights = _gauss_legendre(alpha.dtype, alpha.device)
    a = alpha[..., : count - 1]
    if theta is None:
        x = nodes  # (Q,)
        scale = None
    else:
        theta = theta.to(alpha.dtype)
        x = theta[:, None] * nodes  # (n or batch, Q)
        scale = theta[:, None]
    factors = a.unsqueeze(-2) * x.unsqueeze(-1) + (1 - a).unsqueeze(-2)  # (..., Q, count-1)
    ones = torch.ones(factors.shape[:-1] + (1,), dtype=factors.dtype, device=factors.device)
    values = torch.cumprod(torch.cat([ones, factors], dim=-1), dim=-1)  # (..., Q, count)
    out = (values * weights.unsqueeze(-1)).sum(-2)
    return out if scale is None else out * scale


def coefficients(
    h: torch.Tensor, d: torch.Tensor, num: torch.Tensor, count: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""The step's coefficients from the history spacing.

    Args:
        h: the step, batch shape (positive where it matters; guarded where it is 0).
        d: ``(*batch, m)``: $d_i = t_n - t_{n-i}$, $d_0 = 0$.
        num: batch shape: how many history points are valid (entries ``i < num``).
        count: how many integrals $c_j$ to return (``j < count``, ``count <= m + 1``).

    Returns:
        ``(alpha, c, beta, psi)``: ``alpha``, ``beta`` and ``psi`` of shape ``(*batch, m)``
        (``beta`` zero on invalid entries), ``c`` of shape ``(*batch, count)``.
    """
    m = d.shape[-1]
    h_safe = torch.where(h > 0, h, torch.ones_like(h))[..., None]
    psi = h_safe + d
    alpha = h_safe / psi
    c = integral_weights(alpha, None, count)
    index = torch.arange(m, device=d.device, dtype=d.dtype)
    valid = index < num[..., None]
    # beta_j = prod_{i<j} psi_i / d_{i+1}; invalid denominators replaced before dividing (no
    # inf/NaN, whose gradient would leak through a `where`).
    d_next = torch.where(valid[..., 1:], d[..., 1:], torch.ones_like(d[..., 1:]))
    ratios = torch.cat([torch.ones_like(d[..., :1]), psi[..., :-1] / d_next], dim=-1)
    beta = torch.where(valid, torch.cumprod(ratios, dim=-1), torch.zeros_like(ratios))
    return alpha, c, beta, psi


def slope(terms: Any, t: torch.Tensor, vf: Any) -> torch.Tensor:
    """``dy/dt`` from a vector-field value: ``prod(vf, contr(t, t + 1))`` (ODE terms)."""
    return terms.prod(vf, terms.contr(t, t + 1))


def interpolate_history(dense_info: tuple, theta: torch.Tensor, per_sample: bool) -> torch.Tensor:
    """Dense output of an Adams step, ``y0 + h (Σ_j W_j(θ) c_j Φ_j + W_k(θ) e)``.

    ``dense_info = (y0, h, coef, phi, k, e, alpha)``: ``coef`` ``(*batch, m)`` weights of the
    history ``phi``, and the newest difference ``e`` (or ``None``) at history index ``k``
    (batch shape). The history is contracted by one matrix product, with no temporary of its
    size.
    """
    y0, h, coef, phi, k, e, alpha = dense_info
    m = coef.shape[-1]
    w = integral_weights(alpha, theta, m)  # (n or batch, m)
    if per_sample:
        out = contract((w * coef)[:, None, :], phi, 1)[:, 0]
        if e is not None:
            wk = w.gather(-1, k.to(torch.int64)[:, None])[:, 0]
            out = out + spread(wk.to(e.dtype), e) * e
        return y0 + spread(h.to(y0.dtype), out) * out
    out = contract(w * coef, phi, 0)
    if e is not None:
        wk = w[:, int(k)].to(e.dtype)
        out = out + wk.reshape((-1,) + (1,) * e.ndim) * e
    return y0 + h.to(y0.dtype) * out


def advance(
    beta: torch.Tensor,
    phi: torch.Tensor,
    f1: torch.Tensor,
    psi: torch.Tensor,
    num: torch.Tensor,
    dim: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The history at the new point, ``Φ_j(n+1) = f_{n+1} - Σ_{i<j} β_i Φ_i(n)`` (one matrix
    product with a strictly lower triangular weight matrix, no other history-sized
    temporaries), the new spacing ``d' = (0, ψ_0, ..., ψ_{m-2})`` and the number of valid
    points."""
    m = phi.shape[dim]
    lower = torch.ones(m, m, dtype=beta.dtype, device=beta.device).tril(-1)
    sums = contract(lower * beta.unsqueeze(-2), phi, dim)
    phi_new = f1.unsqueeze(dim) - sums
    d = torch.cat([torch.zeros_like(psi[..., :1]), psi[..., :-1]], dim=-1)
    return phi_new, d, torch.clamp(num + 1, max=float(m))


def initial_history(
    terms: Any, t0: torch.Tensor, y0: torch.Tensor, args: Any, m: int
) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(vf, Φ, d, num)`` at the first point: one evaluation, one valid history point."""
    vf = terms.vf(t0, y0, args)
    f = slope(terms, t0, vf)
    phi = torch.stack([f] + [torch.zeros_like(f)] * (m - 1), dim=t0.ndim)
    d = torch.zeros(t0.shape + (m,), dtype=t0.dtype, device=t0.device)
    return vf, phi, d, torch.ones_like(t0)
