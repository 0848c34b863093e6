r"""The variance-preserving SDE (Song et al. 2021; the continuous limit of DDPM)."""

from __future__ import annotations

import torch

from ._checks import check_positive
from .base import AbstractForwardSDE

__all__ = ["VPSDE"]


class VPSDE(AbstractForwardSDE):
    r"""The variance-preserving SDE $dx = -\tfrac12\beta(t)\,x\,dt + \sqrt{\beta(t)}\,dW$ with
    the linear schedule $\beta(t) = \beta_{\min} + t(\beta_{\max} - \beta_{\min})$ on
    $[\epsilon, 1]$ (the continuous limit of DDPM, Ho et al. 2020).

    With $B(t) = \int_0^t \beta = \beta_{\min} t + \tfrac12(\beta_{\max} - \beta_{\min})t^2$:
    $\alpha(t) = e^{-B/2}$, $\sigma(t) = \sqrt{1 - e^{-B}}$, so unit-variance data keep unit
    variance; the prior is $\mathcal N(0, I)$.

    Args:
        beta_min, beta_max: the schedule's end points (Song et al.: 0.1 and 20).
        eps: the smallest time (sampling ends and likelihoods are taken there).

    Reference:
        Y. Song, J. Sohl-Dickstein, D. P. Kingma, A. Kumar, S. Ermon, B. Poole, "Score-based
        generative modeling through stochastic differential equations", ICLR 2021, Eq. (11).
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, eps: float = 1e-3) -> None:
        self.beta_min = check_positive("VPSDE", "beta_min", beta_min)
        self.beta_max = check_positive("VPSDE", "beta_max", beta_max)
        if self.beta_max < self.beta_min:
            raise ValueError(
                f"VPSDE: need beta_max >= beta_min, got beta_min={beta_min!r}, "
                f"beta_max={beta_max!r}."
            )
        self.eps = check_positive("VPSDE", "eps", eps)
        self.T, self.prior_std = 1.0, 1.0

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def integrated_beta(self, t: torch.Tensor) -> torch.Tensor:
        r"""$B(t) = \int_0^t \beta(s)\,ds$."""
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def log_mean_scale(self, t: torch.Tensor) -> torch.Tensor:
        return -0.5 * self.integrated_beta(t)

    def std(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(-torch.expm1(-self.integrated_beta(t)))

    def drift_coefficient(self, t: torch.Tensor) -> torch.Tensor:
        return -0.5 * self.beta(t)

    def diffusion_squared(self, t: torch.Tensor) -> torch.Tensor:
        return self.beta(t)

    def log_snr(self, t: object) -> torch.Tensor:
        from .base import _as_time

        return -0.5 * torch.log(torch.expm1(self.integrated_beta(_as_time(t))))

    def t_from_log_snr(self, lam: torch.Tensor) -> torch.Tensor:
        b = torch.log1p(torch.exp(-2 * lam))
        return _invert_integrated_beta(b, self.beta_min, self.beta_max)

    def __repr__(self) -> str:
        return f"VPSDE(beta_min={self.beta_min}, beta_max={self.beta_max}, eps={self.eps})"


def _invert_integrated_beta(b: torch.Tensor, beta_min: float, beta_max: float) -> torch.Tensor:
    # The root of (beta_max - beta_min)/2 t^2 + beta_min t - B = 0 in the cancellation-free
    # form 2B / (beta_min + sqrt(beta_min^2 + 2 (beta_max - beta_min) B)).
    return 2 * b / (beta_min + torch.sqrt(beta_min**2 + 2 * (beta_max - beta_min) * b))
