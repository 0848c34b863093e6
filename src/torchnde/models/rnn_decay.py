r"""The RNN-decay baseline of the latent ODE paper: a GRU whose hidden state decays
exponentially between observations."""

from __future__ import annotations

import typing

import torch
from torch import nn

from ._sequence import check_positive_int, check_sequence, elapsed_scan

__all__ = ["RNNDecay"]


class RNNDecay(nn.Module):
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
        h = h * torch.exp(-nn.functional.softplus(self.decay) * dt)
        return self.cell(torch.cat([x, m], dim=-1), h)

    def forward(
        self, ts: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``ts`` ``(T,)`` or ``(B, T)``, ``x`` and ``mask`` ``(B, T, C)``; returns the final
        hidden state ``(B, hidden)`` and all of them ``(B, T, hidden)``."""
        ts, x, m, _ = check_sequence("RNNDecay", ts, x, mask, self.input_size)
        hs, _ = elapsed_scan(ts, x, m, self.hidden_size, self._step)
        return hs[:, -1], hs

    def _prior(self, h: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        return h * torch.exp(-nn.functional.softplus(self.decay) * dt)

    def predictive_states(
        self, ts: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The state at each time *before* its observation is read, ``(B, T, hidden)``,
        from the last state and the time since it (zero before a sample's first
        observation): decode it for one-step-ahead prediction, or for forecasts at fully
        masked times after the data."""
        ts, x, m, _ = check_sequence("RNNDecay", ts, x, mask, self.input_size)
        _, prior = elapsed_scan(ts, x, m, self.hidden_size, self._step, self._prior)
        return typing.cast(torch.Tensor, prior)

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, hidden_size={self.hidden_size}"
