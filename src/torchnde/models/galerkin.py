r"""Depth-varying (Galerkin) layers: weights that are functions of the depth ``t``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GalerkinConv2d", "GalerkinLinear", "basis_functions"]


def basis_functions(t: torch.Tensor, basis: str, n: int, period: float) -> torch.Tensor:
    r"""The basis $\psi_0(t), \dots, \psi_{n-1}(t)$ at ``t`` (shape ``()`` or ``(batch,)``),
    returned with a trailing dimension of size ``n``.

    - ``"polynomial"``: $1, t, t^2, \dots, t^{n-1}$;
    - ``"fourier"``: $1, \cos\omega t, \sin\omega t, \cos 2\omega t, \sin 2\omega t, \dots$
      with $\omega = 2\pi/$ ``period`` (truncated to ``n`` terms).
    """
    if basis == "polynomial":
        k = torch.arange(n, dtype=t.dtype, device=t.device)
        return t[..., None] ** k
    if basis == "fourier":
        k = torch.arange(1, n // 2 + 1, dtype=t.dtype, device=t.device)
        arg = (2 * math.pi / period) * t[..., None] * k
        trig = torch.stack([torch.cos(arg), torch.sin(arg)], -1).flatten(-2)
        return torch.cat([torch.ones_like(t)[..., None], trig], -1)[..., :n]
    raise ValueError(f"`basis` must be 'polynomial' or 'fourier', got {basis!r}.")


def _check(owner: str, basis: str, n_basis: int, period: float) -> None:
    if basis not in ("polynomial", "fourier"):
        raise ValueError(f"{owner}: `basis` must be 'polynomial' or 'fourier', got {basis!r}.")
    if isinstance(n_basis, bool) or not isinstance(n_basis, int) or n_basis < 1:
        raise ValueError(f"{owner}: `n_basis` must be a positive int, got {n_basis!r}.")
    if not period > 0:
        raise ValueError(f"{owner}: `period` must be positive, got {period!r}.")


class GalerkinLinear(nn.Module):
    r"""A linear layer whose weight and bias vary with depth (Massaroli et al. 2020):

    $$W(t) = \sum_{k<n} \alpha_k \psi_k(t),\qquad b(t) = \sum_{k<n} \beta_k \psi_k(t),$$

    with learned coefficients $\alpha_k, \beta_k$ and a polynomial or Fourier basis (see
    :func:`basis_functions`): the parameters of the "infinite-dimensional" neural ODE
    $\dot x = f(t, x, \theta(t))$ are truncated to a finite eigenbasis. Called as
    ``layer(t, x)``; ``t`` is a 0-d tensor or per sample ``(batch,)``.

    Args:
        in_features, out_features: as for ``nn.Linear``.
        basis: ``"polynomial"`` or ``"fourier"``.
        n_basis: number of basis functions $n$.
        period: period of the Fourier basis.
        bias: learn a depth-varying bias.

    References:
        S. Massaroli, M. Poli, J. Park, A. Yamashita, H. Asama, "Dissecting neural ODEs",
        NeurIPS 2020.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        basis: str = "fourier",
        n_basis: int = 5,
        *,
        period: float = 1.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        _check("GalerkinLinear", basis, n_basis, period)
        self.basis, self.n_basis, self.period = basis, n_basis, period
        bound = 1 / math.sqrt(in_features)
        # the constant mode starts like nn.Linear, the others small
        w = torch.empty(n_basis, out_features, in_features).uniform_(-bound, bound)
        w[1:] *= 0.1
        self.coeff_weight = nn.Parameter(w)
        self.coeff_bias = nn.Parameter(torch.zeros(n_basis, out_features)) if bias else None

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        """$W(t)$: ``(out, in)``, or ``(batch, out, in)`` for per-sample ``t``."""
        psi = basis_functions(t.to(self.coeff_weight.dtype), self.basis, self.n_basis, self.period)
        return torch.einsum("...k,koi->...oi", psi, self.coeff_weight)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        psi = basis_functions(
            torch.as_tensor(t, dtype=x.dtype, device=x.device), self.basis, self.n_basis,
            self.period,
        )  # fmt: skip
        if psi.ndim == 1:
            out = x @ torch.einsum("k,koi->oi", psi, self.coeff_weight).T
            if self.coeff_bias is not None:
                out = out + psi @ self.coeff_bias
            return out
        w = torch.einsum("bk,koi->boi", psi, self.coeff_weight)
        out = torch.einsum("boi,bi->bo", w, x)
        if self.coeff_bias is not None:
            out = out + psi @ self.coeff_bias
        return out


class GalerkinConv2d(nn.Module):
    r"""A 2-D convolution whose kernel and bias vary with depth,
    $K(t) = \sum_{k<n} \alpha_k \psi_k(t)$ (Massaroli et al. 2020); see
    :class:`GalerkinLinear`. Called as ``layer(t, x)`` with ``x`` of shape
    ``(batch, in_channels, H, W)``; per-sample ``t`` of shape ``(batch,)`` runs one grouped
    convolution with a kernel per sample.

    Args:
        in_channels, out_channels, kernel_size, padding: as for ``nn.Conv2d`` (stride 1).
        basis, n_basis, period, bias: as for :class:`GalerkinLinear`.

    References:
        S. Massaroli, M. Poli, J. Park, A. Yamashita, H. Asama, "Dissecting neural ODEs",
        NeurIPS 2020.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        basis: str = "fourier",
        n_basis: int = 5,
        *,
        padding: int | None = None,
        period: float = 1.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        _check("GalerkinConv2d", basis, n_basis, period)
        self.basis, self.n_basis, self.period = basis, n_basis, period
        self.padding = kernel_size // 2 if padding is None else padding
        bound = 1 / math.sqrt(in_channels * kernel_size * kernel_size)
        w = torch.empty(n_basis, out_channels, in_channels, kernel_size, kernel_size)
        w.uniform_(-bound, bound)
        w[1:] *= 0.1
        self.coeff_weight = nn.Parameter(w)
        self.coeff_bias = nn.Parameter(torch.zeros(n_basis, out_channels)) if bias else None

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(
                f"GalerkinConv2d: `x` must be (batch, channels, H, W), got shape {tuple(x.shape)}."
            )
        psi = basis_functions(
            torch.as_tensor(t, dtype=x.dtype, device=x.device), self.basis, self.n_basis,
            self.period,
        )  # fmt: skip
        if psi.ndim == 1:
            w = torch.einsum("k,koihw->oihw", psi, self.coeff_weight)
            b = None if self.coeff_bias is None else psi @ self.coeff_bias
            return F.conv2d(x, w, b, padding=self.padding)
        batch, c, h, wd = x.shape
        w = torch.einsum("bk,koihw->boihw", psi, self.coeff_weight)
        w = w.reshape((-1,) + tuple(w.shape[2:]))
        b = None if self.coeff_bias is None else (psi @ self.coeff_bias).reshape(-1)
        out = F.conv2d(x.reshape(1, batch * c, h, wd), w, b, padding=self.padding, groups=batch)
        return out.reshape(batch, -1, out.shape[-2], out.shape[-1])
