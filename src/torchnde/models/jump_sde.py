r"""Neural jump SDEs for temporal point processes (Jia & Benson 2019).

A latent state $z(t)$ flows by a neural ODE between events and jumps at each event; the
conditional intensity of the point process is a function of the latent state:

$$ dz = f(z)\,dt + w(z_{t-})\,dN_t, \qquad \lambda(t) = \lambda(z(t)). $$

The log-likelihood of event times $t_1 < \dots < t_n$ observed on $[t_0, T]$ is

$$ \log L = \sum_{i=1}^n \log \lambda(z(t_i^-)) - \int_{t_0}^T \lambda(z(t))\,dt, $$

the integral solved as one more state component, with the latent state. The event times are
data here (the jumps happen where events were observed), so the solve is piecewise between
events; to *simulate* from a fitted model, use :class:`torchnde.JumpTerm` with the same
networks.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

import torchnde

__all__ = ["NeuralJumpSDE"]


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, n_out))


class _Softplus(nn.Module):
    """``softplus(Linear(z))``: a positive intensity, one value per sample."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(latent_dim, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return nn.functional.softplus(self.linear(z))[..., 0]


class NeuralJumpSDE(nn.Module):
    r"""A neural jump SDE model of a temporal point process, scored by its exact
    log-likelihood (Jia & Benson 2019, "Neural Jump Stochastic Differential Equations").

    Between events the latent state follows ``dz/dt = drift(z)``; at an event it jumps to
    ``z + jump(z)``; the intensity is ``intensity(z)``. Each network may be replaced by your
    own module (``drift`` and ``jump``: ``(batch, latent_dim) -> (batch, latent_dim)``;
    ``intensity``: ``(batch, latent_dim) -> (batch,)``, positive).

    Args:
        latent_dim: size of the latent state.
        hidden: width of the default networks.
        drift, jump, intensity: the networks (defaults: one-hidden-layer tanh MLPs, and
            ``softplus`` of a linear map for the intensity).
        step_size: the step of the fixed-step solve between events (``RK4``); an interval
            between events shorter than it takes one step.

    Example:
        >>> model = NeuralJumpSDE(latent_dim=4)
        >>> times = torch.tensor([[0.5, 1.2, float("nan")], [0.3, 0.9, 2.0]])  # NaN padded
        >>> loglik = model(times, t_end=3.0)  # (2,)
    """

    def __init__(
        self,
        latent_dim: int = 8,
        hidden: int = 32,
        *,
        drift: nn.Module | None = None,
        jump: nn.Module | None = None,
        intensity: nn.Module | None = None,
        step_size: float = 0.1,
    ) -> None:
        super().__init__()
        if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
            raise ValueError(
                f"NeuralJumpSDE: `latent_dim` must be an int >= 1, got {latent_dim!r}."
            )
        if not (isinstance(step_size, (int, float)) and step_size > 0 and math.isfinite(step_size)):
            raise ValueError(
                f"NeuralJumpSDE: `step_size` must be a positive number, got {step_size!r}."
            )
        self.latent_dim = latent_dim
        self.drift = drift if drift is not None else _mlp(latent_dim, hidden, latent_dim)
        self.jump = jump if jump is not None else _mlp(latent_dim, hidden, latent_dim)
        self.intensity = intensity if intensity is not None else _Softplus(latent_dim)
        self.z0 = nn.Parameter(torch.zeros(latent_dim))
        self.step_size = float(step_size)
        #: Vector-field evaluations of the last forward pass.
        self.num_fevals = 0

    def _field(self, t: torch.Tensor, s: torch.Tensor, args: Any) -> torch.Tensor:
        z = s[:, : self.latent_dim]
        return torch.cat([self.drift(z), self.intensity(z)[:, None]], dim=1)

    def _flow(self, s: torch.Tensor, t0: torch.Tensor, t1: torch.Tensor) -> torch.Tensor:
        """The latent state and the integrated intensity carried from ``t0`` to ``t1`` (per
        sample); samples with ``t1 == t0`` keep their state."""
        span = (t1 - t0).detach()
        dt0 = torch.clamp(span, max=self.step_size).clamp_min(torch.finfo(span.dtype).tiny)
        sol = torchnde.solve(
            torchnde.ODETerm(self._field),
            torchnde.RK4(),
            t0,
            t1,
            s,
            dt0=dt0,
            controller=torchnde.ConstantStepSize(per_sample=True),
        )
        self.num_fevals += int(sol.stats["num_fevals"])
        return sol.ys[-1]

    def _check(self, event_times: Any, t_end: Any, t_start: float) -> tuple[torch.Tensor, ...]:
        if not isinstance(event_times, torch.Tensor) or not torch.is_floating_point(event_times):
            raise TypeError(
                "NeuralJumpSDE: `event_times` must be a floating-point tensor of shape "
                f"(batch, max_events), NaN-padded, got {type(event_times).__name__}."
            )
        if event_times.ndim != 2:
            raise ValueError(
                "NeuralJumpSDE: `event_times` must have shape (batch, max_events) (NaN after "
                f"each sequence's last event), got shape {tuple(event_times.shape)}."
            )
        times = event_times.to(self.z0.dtype)
        b = times.shape[0]
        end = torch.as_tensor(t_end, dtype=times.dtype, device=times.device)
        if end.ndim == 0:
            end = end.expand(b)
        if end.shape != (b,):
            raise ValueError(
                f"NeuralJumpSDE: `t_end` must be a number or shape ({b},), got shape "
                f"{tuple(end.shape)}."
            )
        valid = ~torch.isnan(times)
        if bool((valid[:, 1:] & ~valid[:, :-1]).any()):
            raise ValueError(
                "NeuralJumpSDE: `event_times` may be NaN-padded only after a sequence's last "
                "event, got a NaN followed by a time."
            )
        filled = torch.where(valid, times, end[:, None])
        start = torch.full_like(end, float(t_start))
        grid = torch.cat([start[:, None], filled, end[:, None]], dim=1)
        if bool((grid.diff(dim=1) < 0).any()):
            raise ValueError(
                "NeuralJumpSDE: each row of `event_times` must be non-decreasing and lie in "
                f"[t_start, t_end] = [{t_start}, t_end]."
            )
        return filled, valid, start, end

    def forward(
        self, event_times: torch.Tensor, t_end: float | torch.Tensor, t_start: float = 0.0
    ) -> torch.Tensor:
        r"""The log-likelihood of each sequence, shape ``(batch,)``.

        Args:
            event_times: ``(batch, max_events)`` event times, increasing along each row,
                padded with NaN after a sequence's last event.
            t_end: the end of the observation window (a number or ``(batch,)``).
            t_start: its start.
        """
        filled, valid, t_prev, end = self._check(event_times, t_end, t_start)
        self.num_fevals = 0
        b = filled.shape[0]
        s = torch.cat([self.z0.expand(b, -1), self.z0.new_zeros(b, 1)], dim=1)
        log_events = self.z0.new_zeros(b)
        for k in range(filled.shape[1]):
            if not bool(valid[:, k].any()):
                break
            t_k = torch.where(valid[:, k], filled[:, k], t_prev)
            s = self._flow(s, t_prev, t_k)
            z = s[:, : self.latent_dim]
            lam = self.intensity(z)
            log_events = log_events + torch.where(valid[:, k], torch.log(lam), 0.0)
            z_new = torch.where(valid[:, k, None], z + self.jump(z), z)
            s = torch.cat([z_new, s[:, self.latent_dim :]], dim=1)
            t_prev = t_k
        s = self._flow(s, t_prev, end)
        return log_events - s[:, self.latent_dim]

    @torch.no_grad()
    def intensity_at(
        self, event_times: torch.Tensor, ts: torch.Tensor, t_start: float = 0.0
    ) -> torch.Tensor:
        """The fitted intensity of one sequence (``event_times`` of shape ``(n,)``) at the
        increasing times ``ts``, given the events before each (left limits at events)."""
        out = []
        events = event_times[~torch.isnan(event_times)].tolist()
        s = torch.cat([self.z0, self.z0.new_zeros(1)])[None]
        t_prev = float(t_start)
        i = 0
        for t in ts.tolist():
            while i < len(events) and events[i] < t:
                s = self._flow(s, s.new_tensor([t_prev]), s.new_tensor([events[i]]))
                z = s[:, : self.latent_dim]
                s = torch.cat([z + self.jump(z), s[:, self.latent_dim :]], dim=1)
                t_prev, i = events[i], i + 1
            s = self._flow(s, s.new_tensor([t_prev]), s.new_tensor([t]))
            t_prev = t
            out.append(self.intensity(s[:, : self.latent_dim])[0])
        return torch.stack(out)
