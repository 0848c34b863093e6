r"""The ODE-RNN of Rubanova, Chen & Duvenaud (2019): a GRU whose hidden state follows a
neural ODE between observation times.

Between observations $t_{i-1} < t_i$ the hidden state flows by $\dot h = f_\theta(h)$; at an
observation the GRU reads the observed channels and the mask:

$$ h_i' = \mathrm{ODESolve}(f_\theta, h_{i-1}, (t_{i-1}, t_i)), \qquad
   h_i = \mathrm{GRUCell}([x_i \odot m_i,\ m_i],\ h_i'), $$

and a sample with no observed channel at $t_i$ keeps $h_i = h_i'$.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import torchnde as tn

from ._config import SolveConfig, check_vector_field
from ._sequence import check_positive_int, check_sequence, masked_gru_update, union_of_times
from .neural_ode import Autonomous

__all__ = ["ODERNN"]


class ODERNN(nn.Module):
    r"""ODE-RNN (Rubanova et al. 2019): a GRU on irregularly sampled, partly observed series
    whose hidden state is evolved by a neural ODE between observation times.

    $$ h_i' = h_{i-1} + \int_{t_{i-1}}^{t_i} f_\theta(h)\,dt, \qquad
       h_i = \mathrm{GRU}([x_i \odot m_i, m_i], h_i'), $$

    with $h' = 0$ up to a sample's first observation; samples with no observed channel at
    $t_i$ skip the update. Masked values never reach the network (they are replaced by
    zeros, so NaNs there are fine). The times may run backwards (decreasing ``ts``), as in
    the latent ODE's encoder.

    Per-sample times ``ts`` of shape ``(B, T)`` are handled in one of two ways, chosen by the
    controller: with a per-sample controller (``PIDController(per_sample=True)`` or
    ``ConstantStepSize(per_sample=True)``) every sample solves its own intervals (so a
    sample's output does not depend on the rest of the batch); with a joint controller the
    batch is put on the sorted union of all its times, each sample masked where it has no
    observation (the "union of times" trick of the paper's code). A per-sample row may repeat
    its last time, fully masked, to pad a short series.

    Args:
        input_size: number of channels ``C`` of ``x``.
        hidden_size: size of the hidden state.
        vector_field: ``f(t, h)`` of the hidden state (default: an autonomous tanh MLP with
            ``hidden_units`` units).
        hidden_units: width of the default vector field.
        solver, adjoint, rtol, atol, controller, dt0, max_steps: the solves between
            observations, as in :class:`NeuralODE` (``Tsit5()`` by default).

    After each call ``self.nfe`` holds the vector-field evaluations of the forward pass and
    ``self.num_solves`` the number of solves.

    References:
        Y. Rubanova, R. T. Q. Chen, D. Duvenaud, "Latent ordinary differential equations for
        irregularly-sampled time series", NeurIPS 2019.

    Example:
        >>> rnn = ODERNN(input_size=3, hidden_size=16)
        >>> ts = torch.tensor([0.0, 0.3, 1.1, 1.5])
        >>> x = torch.randn(8, 4, 3)
        >>> final, hs = rnn(ts, x, mask=torch.rand(8, 4, 3) > 0.5)
        >>> final.shape, hs.shape
        (torch.Size([8, 16]), torch.Size([8, 4, 16]))
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        vector_field: Any = None,
        hidden_units: int = 64,
        solver: tn.AbstractSolver | None = None,
        adjoint: tn.AbstractAdjoint | None = None,
        rtol: float | None = None,
        atol: float | None = None,
        controller: tn.AbstractStepSizeController | None = None,
        dt0: float | None = None,
        max_steps: int = 4096,
    ) -> None:
        super().__init__()
        self.input_size = check_positive_int("ODERNN", "input_size", input_size)
        self.hidden_size = check_positive_int("ODERNN", "hidden_size", hidden_size)
        check_positive_int("ODERNN", "hidden_units", hidden_units)
        if vector_field is None:
            vector_field = Autonomous(
                nn.Sequential(
                    nn.Linear(hidden_size, hidden_units),
                    nn.Tanh(),
                    nn.Linear(hidden_units, hidden_size),
                )
            )
        check_vector_field("ODERNN", vector_field)
        self.vector_field = vector_field
        self.cell = nn.GRUCell(2 * input_size, hidden_size)
        self.config = SolveConfig("ODERNN", solver, adjoint, rtol, atol, controller, dt0, max_steps)
        self.nfe = 0
        self.num_solves = 0

    def _f(self, t: torch.Tensor, h: torch.Tensor, args: Any) -> torch.Tensor:
        self.nfe += 1
        return self.vector_field(t, h)

    def evolve(self, h: torch.Tensor, t0: torch.Tensor, t1: torch.Tensor) -> torch.Tensor:
        """The hidden state ``h`` ``(B, hidden)`` at ``t0`` flowed to ``t1`` (scalars, or
        ``(B,)`` with a per-sample controller)."""
        if not bool((t1 != t0).any()):
            return h
        self.num_solves += 1
        sol = self.config.solve(self._f, t0, t1, h, tn.SaveAt(t1=True))
        return sol.ys[-1]

    def _scan(
        self, ts: torch.Tensor, x: torch.Tensor, m: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # A sample's hidden state is zero until its first observation, as if its solve
        # started there: leading fully masked entries (padding, other samples' times on a
        # union grid) leave no trace.
        seen = m.amax(dim=-1) > 0
        started = torch.zeros_like(seen[:, 0])
        h = x.new_zeros(x.shape[0], self.hidden_size)
        out, before = [], []
        for i in range(x.shape[1]):
            if i > 0:
                h = self.evolve(h, ts[..., i - 1], ts[..., i])
                h = torch.where(started[:, None], h, torch.zeros_like(h))
            before.append(h)
            h = masked_gru_update(self.cell, h, x[:, i], m[:, i])
            started = started | seen[:, i]
            out.append(h)
        return torch.stack(out, dim=1), torch.stack(before, dim=1)

    def _run(
        self, ts: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        ts, x, m, direction = check_sequence("ODERNN", ts, x, mask, self.input_size)
        self.nfe = 0
        self.num_solves = 0
        if ts.ndim == 2 and not self.config.controller.per_sample:
            u, xu, mu, index = union_of_times(ts, x, m, direction)
            idx = index[..., None].expand(-1, -1, self.hidden_size)
            post, prior = self._scan(u, xu, mu)
            return post.gather(1, idx), prior.gather(1, idx)
        return self._scan(ts, x, m)

    def predictive_states(
        self, ts: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The hidden state at each time *before* its observation is read, $h_i'$ (the state
        flowed from the previous observation; zero before a sample's first), ``(B, T,
        hidden)``: decode it for one-step-ahead prediction, or for forecasts at fully masked
        times after the data."""
        return self._run(ts, x, mask)[1]

    def forward(
        self, ts: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the ODE-RNN over a batch.

        Args:
            ts: observation times, ``(T,)`` shared or ``(B, T)`` per sample, monotone.
            x: values ``(B, T, C)``.
            mask: ``(B, T, C)``, 1 (or True) where observed; ``None``: all observed.

        Returns:
            ``(final, hs)``: the hidden state after the last observation ``(B, hidden)`` and
            after every observation ``(B, T, hidden)`` (batch first).
        """
        hs = self._run(ts, x, mask)[0]
        return hs[:, -1], hs

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, hidden_size={self.hidden_size}, {self.config!r}"
