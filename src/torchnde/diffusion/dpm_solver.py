r"""DPM-Solver and DPM-Solver++ (Lu et al. 2022a, 2022b): second-order multistep exponential
integrators of the probability-flow ODE in the log-SNR $\lambda$."""

from __future__ import annotations

from typing import Any

import torch

from .base import AbstractForwardSDE
from .score import Score, data_prediction, noise_prediction

__all__ = ["dpm_solver_sample"]


def dpm_solver_sample(
    sde: AbstractForwardSDE,
    score: Score,
    x: torch.Tensor,
    ts: torch.Tensor,
    data: bool,
    stats: dict[str, Any],
    lower_order_final: bool = True,
) -> torch.Tensor:
    r"""The multistep second-order DPM-Solver on the grid ``ts``.

    The probability-flow ODE's linear part is integrated exactly and the network's prediction
    $m$ is extrapolated linearly in $\lambda$ from the last two steps. With
    $h_i = \lambda_i - \lambda_{i-1}$, $r_i = h_{i-1}/h_i$ and
    $D_i = (1 + \tfrac{1}{2r_i})\,m_{i-1} - \tfrac{1}{2r_i}\,m_{i-2}$ ($D_1 = m_0$):

    - noise prediction (``data=False``, DPM-Solver, Lu et al. 2022a/b, multistep "2M"):
      $x_i = \frac{\alpha_i}{\alpha_{i-1}} x_{i-1} - \sigma_i(e^{h_i} - 1)\,D_i$ with
      $m = \hat\epsilon$;
    - data prediction (``data=True``, DPM-Solver++(2M), Lu et al. 2022b, Alg. 2):
      $x_i = \frac{\sigma_i}{\sigma_{i-1}} x_{i-1} - \alpha_i(e^{-h_i} - 1)\,D_i$ with
      $m = \hat x_0$.

    One score evaluation per step. As in the authors' code (and ``diffusers``) the first
    step, and with ``lower_order_final`` the last step of a run of fewer than 15, are first
    order (the first-order step with noise prediction is DDIM).

    References:
        C. Lu, Y. Zhou, F. Bao, J. Chen, C. Li, J. Zhu, "DPM-Solver: a fast ODE solver for
        diffusion probabilistic model sampling in around 10 steps", NeurIPS 2022; "DPM-Solver
        ++: fast solver for guided sampling of diffusion probabilistic models", 2022.
    """
    n = len(ts) - 1
    predict = data_prediction if data else noise_prediction
    lam = sde.log_snr(ts)
    alpha, sigma = sde.marginal(ts)
    prev = h_prev = torch.zeros(())
    for i in range(1, n + 1):
        m = predict(sde, score, x, ts[i - 1])
        h = (lam[i] - lam[i - 1]).to(x.dtype)
        first = i == 1 or (lower_order_final and n < 15 and i == n)
        if first:
            d = m
        else:
            r = h_prev / h
            d = (1 + 0.5 / r) * m - (0.5 / r) * prev
        a_i, s_i = alpha[i].to(x.dtype), sigma[i].to(x.dtype)
        if data:
            x = (s_i / sigma[i - 1].to(x.dtype)) * x - a_i * torch.expm1(-h) * d
        else:
            x = (a_i / alpha[i - 1].to(x.dtype)) * x - s_i * torch.expm1(h) * d
        prev, h_prev = m, h
    stats["nfe"] = n
    stats["num_steps"] = n
    return x
