r"""The RNN-$\Delta t$ baseline of the latent ODE paper: a GRU that reads the time since the
previous observation as one more input."""

from __future__ import annotations

import torch
from torch import nn

from ._sequence import ElapsedRNN, check_positive_int

__all__ = ["RNN"]


class RNN(ElapsedRNN):
    r"""A GRU for irregularly sampled series with the elapsed time as an input
    ("RNN-$\Delta t$", the baseline of Rubanova et al. 2019):

    $$ h_i = \mathrm{GRU}([x_i \odot m_i,\ m_i,\ \Delta t_i],\ h_{i-1}), $$

    $\Delta t_i = |t_i - t_{\mathrm{last}}|$ the time since the sample's previous observation
    (0 at its first). Times with no observed channel leave the state unchanged; masked values
    never reach the network. Same call as :class:`ODERNN`.

    Args:
        input_size: number of channels ``C`` of ``x``.
        hidden_size: size of the hidden state.

    References:
        Y. Rubanova, R. T. Q. Chen, D. Duvenaud, "Latent ordinary differential equations for
        irregularly-sampled time series", NeurIPS 2019 (the RNN-$\Delta t$ baseline).

    Example:
        >>> rnn = RNN(input_size=3, hidden_size=16)
        >>> final, hs = rnn(torch.tensor([0.0, 0.3, 1.1]), torch.randn(8, 3, 3))
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size = check_positive_int("RNN", "input_size", input_size)
        self.hidden_size = check_positive_int("RNN", "hidden_size", hidden_size)
        self.cell = nn.GRUCell(2 * input_size + 1, hidden_size)

    def _step(
        self, h: torch.Tensor, x: torch.Tensor, m: torch.Tensor, dt: torch.Tensor
    ) -> torch.Tensor:
        return self.cell(torch.cat([x, m, dt], dim=-1), h)

    def _prior(self, h: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        z = h.new_zeros(h.shape[0], 2 * self.input_size)
        return self.cell(torch.cat([z, dt], dim=-1), h)
