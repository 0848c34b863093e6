r"""Heun's second-order sampler of Karras, Aittala, Aila, Laine (2022), on the engine."""

from __future__ import annotations

from typing import Any

import torch

import torchnde as tn

from .base import AbstractForwardSDE
from .score import Score, noise_prediction

__all__ = ["karras_ode", "karras_heun_sample"]


def karras_ode(sde: AbstractForwardSDE, score: Score) -> Any:
    r"""The probability-flow ODE in Karras et al.'s variables: the rescaled state
    $\tilde x = x/\alpha$ against the noise level $\tilde\sigma = \sigma/\alpha$,

    $$\frac{d\tilde x}{d\tilde\sigma} = \hat\epsilon(\alpha\tilde x, t(\tilde\sigma))
    = \frac{\tilde x - D(\tilde x; \tilde\sigma)}{\tilde\sigma}$$

    (their Eq. 4 with $s(t) = \alpha$, $\sigma(t) = \tilde\sigma$), as ``f(sigma, x, args)``."""

    def vector_field(sig: torch.Tensor, xt: torch.Tensor, args: Any) -> torch.Tensor:
        sig = torch.as_tensor(sig, dtype=torch.float64, device=xt.device)
        t = sde.t_from_sigma_tilde(sig)
        a = sde.log_mean_scale(t).exp().to(xt.dtype)
        return noise_prediction(sde, score, a * xt, t.to(xt.dtype))

    return vector_field


def karras_heun_sample(
    sde: AbstractForwardSDE,
    score: Score,
    x: torch.Tensor,
    ts: torch.Tensor,
    stats: dict[str, Any],
) -> torch.Tensor:
    r"""Karras et al.'s deterministic sampler (their Algorithm 1, $S_{\mathrm{churn}} = 0$):
    :class:`torchnde.Heun` (explicit trapezoid, second order, two evaluations per step) on
    :func:`karras_ode` stepping exactly on the noise levels of the grid ``ts`` (their
    $\rho = 7$ grid with ``schedule="karras"``). The last step ends at $\epsilon$, not at
    $\tilde\sigma = 0$, so it is a Heun step too: $2N$ evaluations for $N$ steps.

    Reference:
        T. Karras, M. Aittala, T. Aila, S. Laine, "Elucidating the design space of
        diffusion-based generative models", NeurIPS 2022.
    """
    sig = sde.sigma_tilde(ts.to(torch.float64))
    a_T = sde.log_mean_scale(ts[0]).exp().to(x.dtype)
    sol = tn.solve(
        tn.ODETerm(karras_ode(sde, score)), tn.Heun(), sig[0], sig[-1], x / a_T,
        dt0=sig[-1] - sig[0], controller=tn.ConstantStepSize(step_ts=sig[1:-1].tolist()),
        saveat=tn.SaveAt(t1=True), max_steps=4 * len(ts) + 16,
    )  # fmt: skip
    stats["nfe"] = int(sol.stats["num_fevals"])
    stats["num_steps"] = int(sol.stats["num_steps"])
    a_eps = sde.log_mean_scale(ts[-1]).exp().to(x.dtype)
    return a_eps * sol.ys[-1]
