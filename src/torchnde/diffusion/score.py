r"""The score-network interface: ``score(x, t)`` $\approx \nabla_x \log p_t(x)$, and the noise
and data predictions the samplers use.

For $x(t) = \alpha x(0) + \sigma z$ the three parametrisations are equivalent (Tweedie):

$$\nabla_x \log p_t(x) = -\frac{\hat\epsilon(x, t)}{\sigma(t)},\qquad
\hat x_0(x, t) = \frac{x + \sigma^2 \nabla_x\log p_t(x)}{\alpha} =
\frac{x - \sigma\hat\epsilon}{\alpha}.$$

A score is any callable ``score(x, t)`` with ``x`` of shape ``(batch, *event)`` and ``t`` of
shape ``(batch,)``, returning the shape of ``x``. :class:`NoisePredictorScore` turns a noise
predictor $\hat\epsilon(x, t)$ (DDPM's parametrisation, the usual network output) into one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ._checks import check_sde, describe
from .base import AbstractForwardSDE, _per_sample

__all__ = ["NoisePredictorScore", "ScoreMLP", "call_score", "data_prediction", "noise_prediction"]

Score = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def call_score(score: Score, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """``score(x, t)`` with ``t`` broadcast to ``(batch,)``; checks the output's shape."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    out = score(x, t)
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        raise ValueError(
            f"`score(x, t)` must return a tensor of the shape of x {tuple(x.shape)}, got "
            f"{describe(out)}."
        )
    return out


def noise_prediction(
    sde: AbstractForwardSDE, score: Score, x: torch.Tensor, t: torch.Tensor | float
) -> torch.Tensor:
    r"""$\hat\epsilon = -\sigma(t)\,s(x, t)$."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    s = call_score(score, x, t)
    return -_per_sample(sde.std(t), x) * s


def data_prediction(
    sde: AbstractForwardSDE, score: Score, x: torch.Tensor, t: torch.Tensor | float
) -> torch.Tensor:
    r"""Tweedie's denoised estimate $\hat x_0 = (x + \sigma^2 s(x, t))/\alpha$."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    a, sig = sde.marginal(t)
    s = call_score(score, x, t)
    return (x + _per_sample(sig, x) ** 2 * s) / _per_sample(a, x)


class NoisePredictorScore(nn.Module):
    r"""The score of a noise predictor: $s(x, t) = -\hat\epsilon_\theta(x, t)/\sigma(t)$.

    Args:
        noise_predictor: ``eps(x, t)`` (``t`` of shape ``(batch,)``), trained to predict the
            $z$ of $x = \alpha x_0 + \sigma z$.
        sde: the forward SDE that defines $\sigma(t)$.
    """

    def __init__(self, noise_predictor: Any, sde: AbstractForwardSDE) -> None:
        super().__init__()
        check_sde("NoisePredictorScore", sde)
        if not callable(noise_predictor):
            raise TypeError(
                "NoisePredictorScore: `noise_predictor` must be callable as eps(x, t), got "
                f"{describe(noise_predictor)}."
            )
        self.noise_predictor = noise_predictor
        self.sde = sde

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps = self.noise_predictor(x, t)
        return -eps / _per_sample(self.sde.std(t), x)


class ScoreMLP(nn.Module):
    r"""A small score network for vector data: a noise predictor
    $\hat\epsilon_\theta(c_{\mathrm{in}} x, \log\tilde\sigma(t))$ (an MLP with sinusoidal
    features of the log noise level) returned as the score $-\hat\epsilon/\sigma$.

    The input is scaled by $c_{\mathrm{in}} = 1/\sqrt{\alpha^2 + \sigma^2}$, so that it has
    about unit variance for unit-variance data at every time (Karras et al. 2022's
    preconditioning), which lets one network serve the VP, sub-VP and VE SDEs.

    Args:
        dim: the data dimension (``x`` has shape ``(batch, dim)``).
        sde: the forward SDE.
        hidden: width of the hidden layers.
        depth: number of hidden layers.
        features: number of sinusoidal time features.
    """

    def __init__(
        self,
        dim: int,
        sde: AbstractForwardSDE,
        hidden: int = 128,
        depth: int = 3,
        features: int = 16,
    ) -> None:
        super().__init__()
        check_sde("ScoreMLP", sde)
        for name, v in (("dim", dim), ("hidden", hidden), ("depth", depth), ("features", features)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"ScoreMLP: `{name}` must be a positive int, got {v!r}.")
        self.sde, self.dim = sde, dim
        self.freqs: torch.Tensor
        self.register_buffer(
            "freqs", torch.exp(torch.linspace(0.0, math.log(100.0), features // 2 + 1)) / 8
        )
        layers: list[nn.Module] = []
        width = dim + 2 * self.freqs.numel()
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, dim))
        self.net = nn.Sequential(*layers)

    def noise(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The noise prediction $\\hat\\epsilon_\\theta(x, t)$."""
        a, s = self.sde.marginal(t)
        c_in = torch.rsqrt(a**2 + s**2).to(x.dtype)
        log_sigma = (-self.sde.log_snr(t)).to(x.dtype)
        phase = log_sigma[:, None] * self.freqs.to(x.dtype)
        h = torch.cat([x * c_in[:, None], phase.sin(), phase.cos()], dim=1)
        return self.net(h)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -self.noise(x, t) / self.sde.std(t).to(x.dtype)[:, None]
