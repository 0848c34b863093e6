r"""The RNN-decay baseline of the latent ODE paper: a GRU whose hidden state decays
exponentially between observations."""

from __future__ import annotations

import torch
from torch import nn

from ._sequence import ElapsedRNN, check_positive_int

__all__ = ["RNNDecay"]


class RNNDecay(ElapsedRNN):
    r"""A GRU whose hidden state decays to zero between observations (the "RNN-decay"
    baseline of Rubanova et al. 2019, after the decay of GRU-D, Che et al. 2018):

    $$ h_i' = h_{i-1} \odot e^{-\gamma \Delta t_i}, \qquad
       h_i = \mathrm{GRU}([x_i \odot m_i,\ m_i],\ h_i'), $$

    with learned per-unit rates $\gamma = \mathrm{softplus}(w) > 0$ and $\Delta t_i$ the
    time since the sample's previous observation. Times with no observed channel leave the
    state unchanged. Same call as :class:`ODERNN`.

    Args:
        input_size: number of channels ``C`` of ``x``.
        hidden_size: size of the hidden state.

    References:
        Y. Rubanova, R. T. Q. Chen, D. Duvenaud, "Latent ordinary differential equations for
        irregularly-sampled time series", NeurIPS 2019.

        Z. Che, S. Purushotham, K. Cho, D. Sontag, Y. Liu, "Recurrent neural networks for
        multivariate time series with missing values", Scientific Reports 2018.

    Example:
        >>> rnn = RNNDecay(input_size=3, hidden_size=16)
        >>> final, hs = rnn(torch.tensor([0.0, 0.3, 1.1]), torch.randn(8, 3, 3))
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size = check_positive_int("RNNDecay", "input_size", input_size)
        self.hidden_size = check_positive_int("RNNDecay", "hidden_size", hidden_size)
        self.cell = nn.GRUCell(2 * input_size, hidden_size)
        self.decay = nn.Parameter(torch.zeros(hidden_size))

    def _step(
        self, h: torch.Tensor, x: torch.Tensor, m: torch.Tensor, dt: torch.Tensor
    ) -> torch.Tensor:
        return self.cell(torch.cat([x, m], dim=-1), self._prior(h, dt))

    def _prior(self, h: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        return h * torch.exp(-nn.functional.softplus(self.decay) * dt)
