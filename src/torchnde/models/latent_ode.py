r"""The latent ODE of Rubanova, Chen & Duvenaud (2019): a variational autoencoder of
irregularly sampled time series whose decoder is a neural ODE.

An encoder (an :class:`ODERNN` run backwards in time, or the :class:`RNN` baseline) reads
the observations and gives $q(z_0 \mid x) = \mathcal N(\mu, \sigma^2)$; the latent
trajectory is $z(t) = \mathrm{ODESolve}(f_\theta, z_0, (t_0, t))$, the observations are
$x_i \sim \mathcal N(g(z(t_i)), s^2)$, and training maximises the evidence lower bound

$$ \mathcal L = \mathbb E_{z_0 \sim q}\Big[\sum_{i, c} m_{ic}\log \mathcal N(x_{ic};
   g(z(t_i))_c, s^2)\Big] - \mathrm{KL}\big(q(z_0 \mid x)\,\|\,\mathcal N(0, I)\big), $$

optionally plus the log-likelihood of the observation times under an inhomogeneous Poisson
process with intensity $\lambda(z(t))$ (one per channel),

$$ \log p(\{t_i\}) = \sum_{i, c} m_{ic} \log\lambda_c(z(t_i)) - \sum_c \int_{t_0}^{t_N}
   \lambda_c(z(t))\,dt, $$

the integral solved together with $z$ as one more state component.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import torchnde as tn

from ._config import SolveConfig, check_vector_field, describe
from ._sequence import (
    check_positive_int,
    decode_at,
    gaussian_loglik,
    latent_batch,
    prepend_t0,
)
from .neural_ode import Autonomous
from .odernn import ODERNN
from .rnn import RNN

__all__ = ["LatentODE"]


def _mlp(n_in: int, units: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, units), nn.Tanh(), nn.Linear(units, n_out))


class _WithIntensity(nn.Module):
    """The latent field augmented with the integral of the Poisson intensities."""

    def __init__(self, field: Any, intensity: nn.Module) -> None:
        super().__init__()
        self.field, self.intensity = field, intensity

    def forward(self, t: torch.Tensor, y: tuple[torch.Tensor, torch.Tensor]) -> Any:
        z = y[0]
        return self.field(t, z), nn.functional.softplus(self.intensity(z))


class LatentODE(nn.Module):
    r"""Latent ODE (Rubanova et al. 2019) for irregularly sampled, partly observed series.

    The encoder reads the series backwards in time and returns its hidden state at the
    first observation time $t_0$; a linear-tanh-linear head maps it to the mean and
    (softplus) standard deviation of $q(z_0)$. The latent dynamics $\dot z = f_\theta(z)$
    are autonomous, so each sample's times are measured from its own first time: $z(t) =
    \mathrm{ODESolve}(f_\theta, z_0, (0, t - t_0))$. The decoder $g$ is linear (as in the
    paper) unless given.

    Modes of :meth:`elbo`: ``"interpolate"`` reconstructs the observed points;
    ``"extrapolate"`` encodes the points before the middle of each series' time range and
    scores the prediction of the points after it.

    Args:
        input_size: number of channels ``C``.
        latent_size: size of $z$.
        encoder: ``"odernn"`` (an :class:`ODERNN` with the model's solver settings),
            ``"rnn"`` (the :class:`RNN` baseline: "RNN encoder" in the paper), or a module
            called as ``encoder(ts, x, mask) -> (final, hs)`` with a ``hidden_size``.
        encoder_hidden: hidden size of the built-in encoders.
        hidden_units: width of the default networks.
        vector_field: the latent field ``f(t, z)`` (default: an autonomous tanh MLP).
        decoder: ``g`` mapping ``(..., latent_size)`` to ``(..., C)`` (default: linear).
        obs_std: the standard deviation $s$ of the Gaussian likelihood.
        poisson: add the Poisson-process likelihood of the observation times.
        solver, adjoint, rtol, atol, controller, dt0, max_steps: the latent solve (and the
            ODE-RNN encoder's), as in :class:`NeuralODE` (``Tsit5()`` by default). Per-sample
            times ``(B, T)`` are decoded per sample with a per-sample controller (rows must
            then be strictly increasing) and on the union of the times otherwise.

    After :meth:`elbo`, ``self.last`` holds the batch means of its parts (``"loglik"``,
    ``"kl"``, ``"poisson"`` with ``poisson=True``) and ``self.nfe`` the vector-field
    evaluations of the latent solve.

    References:
        Y. Rubanova, R. T. Q. Chen, D. Duvenaud, "Latent ordinary differential equations for
        irregularly-sampled time series", NeurIPS 2019.

    Example:
        >>> model = LatentODE(input_size=1, latent_size=4)
        >>> ts = torch.linspace(0, 5, 20)
        >>> x = torch.sin(ts)[None, :, None].repeat(8, 1, 1)
        >>> mask = torch.rand(8, 20, 1) < 0.5
        >>> loss = -model.elbo(ts, x, mask).mean()
        >>> pred = model(ts, x, mask, ts_pred=torch.linspace(0, 10, 40))  # (8, 40, 1)
    """

    def __init__(
        self,
        input_size: int,
        latent_size: int,
        *,
        encoder: str | nn.Module = "odernn",
        encoder_hidden: int = 32,
        hidden_units: int = 64,
        vector_field: Any = None,
        decoder: nn.Module | None = None,
        obs_std: float = 0.01,
        poisson: bool = False,
        solver: tn.AbstractSolver | None = None,
        adjoint: tn.AbstractAdjoint | None = None,
        rtol: float | None = None,
        atol: float | None = None,
        controller: tn.AbstractStepSizeController | None = None,
        dt0: float | None = None,
        max_steps: int = 4096,
    ) -> None:
        super().__init__()
        self.input_size = check_positive_int("LatentODE", "input_size", input_size)
        self.latent_size = check_positive_int("LatentODE", "latent_size", latent_size)
        check_positive_int("LatentODE", "encoder_hidden", encoder_hidden)
        check_positive_int("LatentODE", "hidden_units", hidden_units)
        if not (isinstance(obs_std, (int, float)) and not isinstance(obs_std, bool)) or not (
            obs_std > 0
        ):
            raise ValueError(f"LatentODE: `obs_std` must be a positive number, got {obs_std!r}.")
        self.config = SolveConfig(
            "LatentODE", solver, adjoint, rtol, atol, controller, dt0, max_steps
        )
        enc: nn.Module
        if encoder == "odernn":
            enc = ODERNN(
                input_size,
                encoder_hidden,
                hidden_units=hidden_units,
                solver=self.config.solver,
                adjoint=self.config.adjoint,
                controller=self.config.controller,
                dt0=dt0,
                max_steps=max_steps,
            )
        elif encoder == "rnn":
            enc = RNN(input_size, encoder_hidden)
        elif isinstance(encoder, nn.Module):
            enc = encoder
        else:
            raise ValueError(
                'LatentODE: `encoder` must be "odernn", "rnn" or a module '
                f"encoder(ts, x, mask) -> (final, hs), got {describe(encoder)}."
            )
        h = getattr(enc, "hidden_size", None)
        if not isinstance(h, int):
            raise TypeError(
                "LatentODE: a custom `encoder` needs an int attribute `hidden_size` (the size "
                f"of its final state), got {describe(h)}."
            )
        self.encoder = enc
        self.to_z0 = _mlp(h, hidden_units, 2 * latent_size)
        if vector_field is None:
            vector_field = Autonomous(_mlp(latent_size, hidden_units, latent_size))
        check_vector_field("LatentODE", vector_field)
        self.vector_field = vector_field
        self.decoder = nn.Linear(latent_size, input_size) if decoder is None else decoder
        self.obs_std = float(obs_std)
        self.poisson = bool(poisson)
        self.intensity = _mlp(latent_size, hidden_units, input_size) if self.poisson else None
        self._field: Any = (
            _WithIntensity(vector_field, self.intensity)
            if self.intensity is not None
            else vector_field
        )
        self.nfe = 0
        self.last: dict[str, torch.Tensor] = {}

    # -- encoder -----------------------------------------------------------------------------

    def encode(
        self,
        ts: torch.Tensor,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        t0: float | torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean and standard deviation ``(B, latent)`` of $q(z_0 \\mid x)$, $z_0$ at
        ``t0`` (default: each series' first time): the encoder reads the series backwards
        (an ODE-RNN's state then flows on from the first observation to ``t0``)."""
        batch = latent_batch("LatentODE", self.input_size, ts, x, mask, t0=t0)
        return self._encode(batch.ts, batch.x, batch.m, batch.t0)

    def _encode(
        self, ts: torch.Tensor, x: torch.Tensor, m: torch.Tensor, t0: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if ts.ndim == 1:  # drop trailing times no sample observes: exact, and cheaper
            seen = (m.amax(dim=(0, 2)) > 0).nonzero()
            if seen.numel() == 0:
                raise ValueError("LatentODE: `mask` observes nothing; the encoder needs data.")
            last = int(seen[-1]) + 1
            ts, x, m = ts[:last], x[:, :last], m[:, :last]
        ts, x, m = prepend_t0(ts, x, m, t0)
        final, _ = self.encoder(ts.flip(-1), x.flip(1), m.flip(1))
        mean, raw = self.to_z0(final).chunk(2, dim=-1)
        return mean, nn.functional.softplus(raw) + 1e-4

    # -- decoder -----------------------------------------------------------------------------

    def _f(self, t: torch.Tensor, y: Any, args: Any) -> Any:
        self.nfe += 1
        return self._field(t, y)

    def decode(self, z0: torch.Tensor, t0: torch.Tensor, ts: torch.Tensor) -> Any:
        """Latent trajectory from ``z0`` ``(N, latent)`` at times ``t0`` (scalar or ``(N,)``)
        to ``ts`` (``(T,)`` or ``(N, T)``, increasing, not before ``t0``): ``(N, T,
        latent)``; with ``poisson=True`` a pair with the intensity integrals ``(N, T, C)``
        from ``t0``."""
        self.nfe = 0
        y0: Any = (z0, z0.new_zeros(z0.shape[0], self.input_size)) if self.poisson else z0
        return decode_at(self.config, self._f, y0, t0, ts)

    # -- likelihood --------------------------------------------------------------------------

    def elbo(
        self,
        ts: torch.Tensor,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        mode: str = "interpolate",
        ts_target: torch.Tensor | None = None,
        x_target: torch.Tensor | None = None,
        target_mask: torch.Tensor | None = None,
        t0: float | torch.Tensor | None = None,
        num_samples: int = 1,
        kl_weight: float = 1.0,
    ) -> torch.Tensor:
        """The evidence lower bound of each series, ``(B,)`` (nats; the Monte-Carlo average
        over ``num_samples`` draws of $z_0$).

        Args:
            ts: ``(T,)`` or ``(B, T)``, increasing.
            x, mask: ``(B, T, C)``; ``mask`` 1 where observed.
            mode: ``"interpolate"`` (score the targets) or ``"extrapolate"`` (encode the
                inputs before the middle of each series' target time range, score the
                targets after it).
            ts_target, x_target, target_mask: what the likelihood scores (default: the
                inputs), e.g. every point of a grid of which the inputs are a subsample.
            t0: the time of $z_0$ (default: each series' first input time), at or before
                the first input and the first target.
            num_samples: draws of $z_0$.
            kl_weight: weight of the KL term (annealing).
        """
        check_positive_int("LatentODE", "num_samples", num_samples)
        batch = latent_batch(
            "LatentODE",
            self.input_size,
            ts,
            x,
            mask,
            mode=mode,
            ts_target=ts_target,
            x_target=x_target,
            target_mask=target_mask,
            t0=t0,
        )
        mean, std = self._encode(batch.ts, batch.x, batch.m, batch.t0)
        b, s = x.shape[0], num_samples
        eps = torch.randn((s, *mean.shape), dtype=mean.dtype, device=mean.device)
        z0 = (mean + std * eps).flatten(0, 1)
        tt = batch.ts_target if batch.ts_target.ndim == 1 else batch.ts_target.repeat(s, 1)
        t0_ = batch.t0 if batch.t0.ndim == 0 else batch.t0.repeat(s)
        out = self.decode(z0, t0_, tt)
        z, lam = out if self.poisson else (out, None)
        pred = self.decoder(z).unflatten(0, (s, b))  # (S, B, T, C)
        m_out = batch.m_target
        loglik = gaussian_loglik(batch.x_target, pred, self.obs_std, m_out).mean(0)  # (B,)
        kl = (0.5 * (std**2 + mean**2 - 1) - torch.log(std)).sum(-1)
        total = loglik - kl_weight * kl
        self.last = {"loglik": loglik.mean().detach(), "kl": kl.mean().detach()}
        if lam is not None and self.intensity is not None:
            lam = lam.unflatten(0, (s, b))  # intensity integrals from t0 (S, B, T, C)
            rate = nn.functional.softplus(self.intensity(z)).unflatten(0, (s, b))
            idx = batch.start.view(1, b, 1, 1).expand(s, b, 1, self.input_size)
            integral = lam[:, :, -1] - lam.gather(2, idx)[:, :, 0]
            pp = ((torch.log(rate) * m_out).sum(dim=(2, 3)) - integral.sum(-1)).mean(0)
            total = total + pp
            self.last["poisson"] = pp.mean().detach()
        return total

    def forward(
        self,
        ts: torch.Tensor,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        ts_pred: torch.Tensor | None = None,
        *,
        t0: float | torch.Tensor | None = None,
        sample: bool = False,
    ) -> torch.Tensor:
        """Predict the series at ``ts_pred`` (default ``ts``; ``(T',)`` or ``(B, T')``, not
        before ``t0``) from the observations: ``(B, T', C)``, decoded from the posterior
        mean of $z_0$ (or a draw with ``sample=True``). ``t0`` as in :meth:`elbo`."""
        target = ts if ts_pred is None else torch.as_tensor(ts_pred)
        b = x.shape[0] if isinstance(x, torch.Tensor) else 0
        tgt_x = x.new_zeros(b, target.shape[-1], self.input_size)
        batch = latent_batch(
            "LatentODE", self.input_size, ts, x, mask, ts_target=target, x_target=tgt_x, t0=t0
        )
        mean, std = self._encode(batch.ts, batch.x, batch.m, batch.t0)
        z0 = mean + std * torch.randn_like(std) if sample else mean
        tt, t0_ = batch.ts_target, batch.t0
        if tt.ndim == 1 and t0_.ndim == 1:
            tt = tt.expand(b, -1)
        out = self.decode(z0, t0_, tt)
        z = out[0] if self.poisson else out
        return self.decoder(z)

    def extra_repr(self) -> str:
        return (
            f"input_size={self.input_size}, latent_size={self.latent_size}, "
            f"obs_std={self.obs_std}, poisson={self.poisson}, {self.config!r}"
        )
