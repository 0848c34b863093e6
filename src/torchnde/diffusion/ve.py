r"""The variance-exploding SDE (Song et al. 2021; the continuous limit of SMLD/NCSN)."""

from __future__ import annotations

import math

import torch

from ._checks import check_positive
from .base import AbstractForwardSDE, _as_time

__all__ = ["VESDE"]


class VESDE(AbstractForwardSDE):
    r"""The variance-exploding SDE $dx = \sqrt{d[\varsigma(t)^2]/dt}\,dW$ with the geometric
    noise scale $\varsigma(t) = \sigma_{\min}(\sigma_{\max}/\sigma_{\min})^t$ on
    $[\epsilon, 1]$ (the continuous limit of NCSN, Song & Ermon 2019).

    No drift: $\alpha = 1$, $g^2 = 2\varsigma^2\log(\sigma_{\max}/\sigma_{\min})$. The
    marginal standard deviation is the exact one of this SDE started at the data,
    $\sigma(t) = \sqrt{\varsigma(t)^2 - \sigma_{\min}^2}$ (Song et al.'s code uses
    $\varsigma(t)$, i.e. data already blurred by $\sigma_{\min}$; the two differ by less than
    $\sigma_{\min}$). The prior is $\mathcal N(0, \sigma_{\max}^2 I)$: choose $\sigma_{\max}$
    about the largest distance between data points (Song & Ermon 2020, technique 1).

    Args:
        sigma_min, sigma_max: the noise scales at $t = 0$ and $t = 1$.
        eps: the smallest time.

    Reference:
        Y. Song et al., "Score-based generative modeling through stochastic differential
        equations", ICLR 2021, Eq. (9).
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, eps: float = 1e-5) -> None:
        self.sigma_min = check_positive("VESDE", "sigma_min", sigma_min)
        self.sigma_max = check_positive("VESDE", "sigma_max", sigma_max)
        if self.sigma_max <= self.sigma_min:
            raise ValueError(
                f"VESDE: need sigma_max > sigma_min, got sigma_min={sigma_min!r}, "
                f"sigma_max={sigma_max!r}."
            )
        self.eps = check_positive("VESDE", "eps", eps)
        self.T, self.prior_std = 1.0, self.sigma_max
        self._rate = math.log(self.sigma_max / self.sigma_min)

    def noise_scale(self, t: torch.Tensor) -> torch.Tensor:
        r"""$\varsigma(t) = \sigma_{\min}(\sigma_{\max}/\sigma_{\min})^t$."""
        return self.sigma_min * torch.exp(self._rate * t)

    def log_mean_scale(self, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(t)

    def std(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma_min * torch.sqrt(torch.expm1(2 * self._rate * t))

    def drift_coefficient(self, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(t)

    def diffusion_squared(self, t: torch.Tensor) -> torch.Tensor:
        return 2 * self._rate * self.noise_scale(t) ** 2

    def log_snr(self, t: object) -> torch.Tensor:
        return -self.std(_as_time(t)).log()

    def t_from_log_snr(self, lam: torch.Tensor) -> torch.Tensor:
        return torch.log1p(torch.exp(-2 * lam) / self.sigma_min**2) / (2 * self._rate)

    def __repr__(self) -> str:
        return f"VESDE(sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, eps={self.eps})"
