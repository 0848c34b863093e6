r"""DDIM (Song, Meng, Ermon 2021) for any forward SDE of the family."""

from __future__ import annotations

from typing import Any

import torch

from .base import AbstractForwardSDE
from .score import Score, noise_prediction

__all__ = ["ddim_sample"]


def ddim_sample(
    sde: AbstractForwardSDE,
    score: Score,
    x: torch.Tensor,
    ts: torch.Tensor,
    eta: float,
    generator: torch.Generator | None,
    stats: dict[str, Any],
) -> torch.Tensor:
    r"""DDIM from $t$ to $s < t$ on the grid ``ts`` (Song, Meng, Ermon 2021, Eq. 12):

    $$\hat x_0 = \frac{x_t - \sigma_t\hat\epsilon}{\alpha_t},\qquad
    x_s = \alpha_s\hat x_0 + \sqrt{\sigma_s^2 - \eta^2 c^2}\,\hat\epsilon + \eta c\,z,\qquad
    c^2 = \sigma_s^2\big(1 - e^{2(\lambda_t - \lambda_s)}\big),$$

    where $c^2$ is the variance of $q(x_s \mid x_t, x_0)$ (DDPM's posterior; for the VP SDE
    it is Song et al.'s $\sigma_t(\eta=1)^2$). ``eta = 0`` is deterministic: it is Euler's
    method for the probability-flow ODE in the rescaled state $x/\alpha$ and noise level
    $\sigma/\alpha$ (Song et al. 2021, Sec. 4.3; Karras et al. 2022, Sec. 3), hence first
    order; ``eta = 1`` is the ancestral DDPM sampler. One score evaluation per step.
    """
    for i in range(len(ts) - 1):
        t, s = ts[i], ts[i + 1]
        a_t, sig_t = (v.to(x.dtype) for v in sde.marginal(t))
        a_s, sig_s = (v.to(x.dtype) for v in sde.marginal(s))
        eps = noise_prediction(sde, score, x, t)
        x0 = (x - sig_t * eps) / a_t
        if eta == 0:
            x = a_s * x0 + sig_s * eps
            continue
        lam_t, lam_s = sde.log_snr(t).to(x.dtype), sde.log_snr(s).to(x.dtype)
        c2 = eta**2 * sig_s**2 * -torch.expm1(2 * (lam_t - lam_s))
        z = torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
        x = a_s * x0 + torch.sqrt((sig_s**2 - c2).clamp_min(0)) * eps + c2.sqrt() * z
    stats["nfe"] = len(ts) - 1
    stats["num_steps"] = len(ts) - 1
    return x
