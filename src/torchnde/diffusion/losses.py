r"""Denoising score matching with the weightings of Song et al. (2021, 2021b)."""

from __future__ import annotations

from typing import Any

import torch

from ._checks import check_score, check_sde, describe
from .base import AbstractForwardSDE, _per_sample
from .score import Score, call_score

__all__ = ["WEIGHTINGS", "dsm_loss"]

#: The weightings :func:`dsm_loss` accepts.
WEIGHTINGS = ("score", "likelihood", "none")


def dsm_loss(
    sde: AbstractForwardSDE,
    score: Score,
    x0: torch.Tensor,
    *,
    weighting: str = "score",
    importance_sampling: bool = False,
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""The denoising score-matching loss per sample (Song et al. 2021, Eq. 7):

    $$\ell(x_0) = \tfrac12\,\lambda(t)\,\big\|s_\theta(x_t, t) + z/\sigma(t)\big\|^2,\qquad
    x_t = \alpha(t) x_0 + \sigma(t) z,\ t \sim U[\epsilon, T],\ z \sim \mathcal N(0, I).$$

    Weightings $\lambda(t)$:

    - ``"score"``: $\sigma(t)^2$ (Song et al. 2021's $\lambda \propto
      1/\mathbb E\|\nabla\log p_{0t}\|^2$): the noise-prediction MSE
      $\tfrac12\|\hat\epsilon - z\|^2$ of DDPM.
    - ``"likelihood"``: $g(t)^2$ (Song, Durkan, Murray, Ermon 2021b): then
      $(T - \epsilon)\,\mathbb E\,\ell$ plus the prior term bounds the negative
      log-likelihood, so minimising it trains for likelihood. With
      ``importance_sampling=True`` $t$ is drawn with density $\propto g^2/\sigma^2 =
      -2\,d\lambda/dt$, i.e. uniformly in the log-SNR $\lambda$, and the loss is reweighted
      to the same expectation: $\tfrac12 (\lambda(\epsilon) - \lambda(T))\cdot 2/(T-\epsilon)
      \cdot \|\hat\epsilon - z\|^2$ (the variance reduction of Song et al. 2021b, Sec. 5).
    - ``"none"``: $\lambda = 1$.

    Args:
        sde: the forward SDE.
        score: ``score(x, t)``.
        x0: a batch of data, ``(batch, *event)``.
        weighting: one of :data:`WEIGHTINGS`.
        importance_sampling: with ``"likelihood"`` only.
        t, noise: the times ``(batch,)`` and noise (shape of ``x0``) to use instead of
            drawing them.
        generator: the generator of the draws.

    Returns:
        ``(batch,)``: average it for the objective.

    References:
        Y. Song et al., "Score-based generative modeling through stochastic differential
        equations", ICLR 2021. Y. Song, C. Durkan, I. Murray, S. Ermon, "Maximum likelihood
        training of score-based diffusion models", NeurIPS 2021.
    """
    check_sde("dsm_loss", sde)
    check_score("dsm_loss", score)
    if not isinstance(x0, torch.Tensor) or x0.ndim < 2 or not torch.is_floating_point(x0):
        raise ValueError(
            f"dsm_loss: `x0` must be a floating tensor of shape (batch, *event), got "
            f"{describe(x0)}."
        )
    if weighting not in WEIGHTINGS:
        raise ValueError(f"dsm_loss: `weighting` must be one of {WEIGHTINGS}, got {weighting!r}.")
    if importance_sampling and weighting != "likelihood":
        raise ValueError(
            "dsm_loss: `importance_sampling=True` applies to weighting='likelihood' only, got "
            f"weighting={weighting!r}."
        )
    b = x0.shape[0]
    kw: dict[str, Any] = dict(dtype=x0.dtype, device=x0.device)
    span = sde.T - sde.eps
    if t is None:
        u = torch.rand(b, generator=generator, **kw)
        if importance_sampling:
            lam_hi = sde.log_snr(torch.tensor(sde.eps, **kw))
            lam_lo = sde.log_snr(torch.tensor(sde.T, **kw))
            t = sde.t_from_log_snr(lam_lo + u * (lam_hi - lam_lo))
        else:
            t = sde.eps + span * u
    elif not isinstance(t, torch.Tensor) or t.shape != (b,):
        raise ValueError(f"dsm_loss: `t` must have shape ({b},), got {describe(t)}.")
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, **kw)
    elif not isinstance(noise, torch.Tensor) or noise.shape != x0.shape:
        raise ValueError(
            f"dsm_loss: `noise` must have the shape of x0 {tuple(x0.shape)}, got {describe(noise)}."
        )
    xt = sde.perturb(x0, t, noise)
    s = call_score(score, xt, t)
    sigma = _per_sample(sde.std(t), x0)
    # The residual in noise units, sigma s + z = z - eps_hat: finite at small sigma.
    r = (sigma * s + noise).reshape(b, -1).pow(2).sum(1)
    if weighting == "score":
        return 0.5 * r
    if weighting == "none":
        return 0.5 * r / sde.std(t).to(r.dtype) ** 2
    if importance_sampling:
        lam_range = sde.log_snr(torch.tensor(sde.eps, **kw)) - sde.log_snr(
            torch.tensor(sde.T, **kw)
        )
        # g^2/sigma^2 = -2 dlambda/dt integrates to 2 (lambda(eps) - lambda(T)); per unit of
        # t (so the expectation matches uniform t), divide by the span.
        return 0.5 * r * (2 * lam_range / span)
    return 0.5 * r * (sde.diffusion_squared(t) / sde.std(t) ** 2).to(r.dtype)
