r"""GRU-D: a GRU with trainable decays for irregularly sampled series with missing values."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._config import describe
from ._sequence import check_sequence

__all__ = ["GRUD", "forward_sequence", "time_since_observed"]


def forward_sequence(
    owner: str, ts: Any, x: Any, mask: Any, channels: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`check_sequence` for models that run forward in time: ``ts`` as ``(batch,
    length)`` (a ``ValueError`` for decreasing times), ``x`` zero where unobserved, the mask
    as ``x.dtype``."""
    ts, x, m, direction = check_sequence(owner, ts, x, mask, channels)
    if direction < 0:
        raise ValueError(
            f"{owner}: `ts` must increase along time (got decreasing times); flip the series."
        )
    return ts.to(x.dtype).expand(x.shape[0], x.shape[1]), x, m


def time_since_observed(ts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    r"""$\delta_t^d$ of Che et al. (2018): the time since channel $d$ was last observed,
    $\delta_1 = 0$, $\delta_t = s_t - s_{t-1} + (1 - m_{t-1}) \delta_{t-1}$.

    Args:
        ts: ``(batch, length)`` times $s_t$.
        mask: ``(batch, length, channels)``, 1 where observed.

    Returns:
        ``(batch, length, channels)``.
    """
    gaps = ts.diff(dim=-1).unsqueeze(-1)  # (batch, length - 1, 1)
    deltas = [torch.zeros_like(mask[:, 0])]
    for i in range(1, mask.shape[1]):
        deltas.append(gaps[:, i - 1] + (1 - mask[:, i - 1]) * deltas[-1])
    return torch.stack(deltas, dim=1)


class GRUD(nn.Module):
    r"""GRU-D (Che, Purushotham, Cho, Sontag, Liu 2018): a GRU whose input and hidden state
    decay with the time since the last observation.

    At step $t$ with values $x_t$, mask $m_t$ (1 = observed), time since the last observation
    $\delta_t$ (:func:`time_since_observed`), last observed values $x'_t$ and the empirical
    mean $\tilde x$:

    $$ \gamma_x = e^{-\max(0, W_{\gamma_x} \delta_t + b_{\gamma_x})}, \qquad
       \gamma_h = e^{-\max(0, W_{\gamma_h} \delta_t + b_{\gamma_h})}, $$
    $$ \hat x_t = m_t x_t + (1 - m_t)\,(\gamma_x x'_t + (1 - \gamma_x) \tilde x), \qquad
       \hat h_{t-1} = \gamma_h \odot h_{t-1}, $$
    $$ h_t = \mathrm{GRU}([\hat x_t, m_t], \hat h_{t-1}), $$

    with $W_{\gamma_x}$ diagonal (each channel decays on its own) and $W_{\gamma_h}$ full.
    A missing input decays from its last observation towards the mean; the hidden state
    forgets at a learnt rate while nothing is seen.

    Args:
        input_size: channels $D$ of ``x``.
        hidden_size: size of $h$.
        x_mean: the empirical mean $\tilde x$ of each channel over the training data (zeros,
            for standardised data, when omitted); a buffer.

    ``forward(ts, x, mask, lengths=None)`` returns ``(h_final (batch, hidden),
    hs (batch, length, hidden))``. A series shorter than the batch's longest is padded at the
    end; ``lengths`` (``(batch,)`` ints) says where each ends: the state is held after it, so
    ``h_final`` is its state at its last step.

    Reference:
        Z. Che, S. Purushotham, K. Cho, D. Sontag, Y. Liu, "Recurrent neural networks for
        multivariate time series with missing values", Scientific Reports 8, 6085 (2018).

    Example:
        >>> model = GRUD(input_size=12, hidden_size=32, x_mean=x_train_mean)
        >>> h, hs = model(ts, x, mask)           # x: (batch, length, 12), NaN allowed
        >>> logits = nn.Linear(32, 9)(h)
    """

    x_mean: torch.Tensor

    def __init__(
        self, input_size: int, hidden_size: int, x_mean: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        for name, v in (("input_size", input_size), ("hidden_size", hidden_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"GRUD: `{name}` must be an int >= 1, got {v!r}.")
        if x_mean is None:
            x_mean = torch.zeros(input_size)
        if not isinstance(x_mean, torch.Tensor) or x_mean.shape != (input_size,):
            raise ValueError(
                f"GRUD: `x_mean` must be a tensor of shape ({input_size},) (the mean of each "
                f"channel), got {describe(x_mean)}."
            )
        self.input_size, self.hidden_size = input_size, hidden_size
        self.register_buffer("x_mean", x_mean.detach().clone().float())
        self.decay_x_weight = nn.Parameter(torch.zeros(input_size))
        self.decay_x_bias = nn.Parameter(torch.zeros(input_size))
        self.decay_h = nn.Linear(input_size, hidden_size)
        self.cell = nn.GRUCell(2 * input_size, hidden_size)

    def forward(
        self,
        ts: torch.Tensor,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run over the series.

        Args:
            ts: times ``(length,)`` or ``(batch, length)``.
            x: values ``(batch, length, input_size)`` (anything, NaN too, where ``mask`` is 0).
            mask: 1 where observed (default: everything observed).
            lengths: valid steps of each series ``(batch,)``; all by default.

        Returns:
            ``(h_final, hs)``: ``(batch, hidden)`` and ``(batch, length, hidden)``.
        """
        ts, x, m = forward_sequence("GRUD", ts, x, mask, self.input_size)
        batch, length, _ = x.shape
        if lengths is not None:
            lengths = torch.as_tensor(lengths, device=x.device)
            if lengths.shape != (batch,) or bool((lengths < 1).any() | (lengths > length).any()):
                raise ValueError(
                    f"GRUD: `lengths` must be ({batch},) ints in [1, {length}], got "
                    f"{describe(lengths)}."
                )
        delta = time_since_observed(ts, m)
        x_mean = self.x_mean.to(x.dtype)
        h = x.new_zeros(batch, self.hidden_size)
        x_last = x_mean.expand(batch, -1)
        hs = []
        for i in range(length):
            d, mi, xi = delta[:, i], m[:, i], x[:, i]
            gamma_x = torch.exp(-torch.relu(self.decay_x_weight * d + self.decay_x_bias))
            gamma_h = torch.exp(-torch.relu(self.decay_h(d)))
            x_hat = mi * xi + (1 - mi) * (gamma_x * x_last + (1 - gamma_x) * x_mean)
            h_new = self.cell(torch.cat([x_hat, mi], dim=-1), gamma_h * h)
            if lengths is not None:
                h_new = torch.where((i < lengths)[:, None], h_new, h)
            h = h_new
            x_last = mi * xi + (1 - mi) * x_last
            hs.append(h)
        return h, torch.stack(hs, dim=1)
