r"""ODE2VAE (Yildiz, Heinonen & Lähdesmäki 2019): a variational autoencoder whose latent
state is a position and a velocity following a second-order ODE, with a Bayesian neural
network for the acceleration field.

$$ \dot s = v, \qquad \dot v = f_W(s, v), \qquad W \sim q(W) = \prod_j \mathcal N(\mu_j,
   \sigma_j^2), $$

observations decoded from the positions, $x_i \sim \mathcal N(g(s(t_i)), \epsilon^2)$, and
the evidence lower bound of a data set of $N$ series

$$ \mathcal L = \sum_{n} \Big(\mathbb E_q \sum_{i,c} m_{ic} \log p(x_{ic} \mid s(t_i))
   - \mathrm{KL}(q(s_0, v_0 \mid x)\,\|\,\mathcal N(0, I))\Big)
   - \mathrm{KL}(q(W)\,\|\,p(W)), $$

of which :meth:`ODE2VAE.elbo` returns one series' share (the weights' KL divided by $N$).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

import torchnde as tn

from ._config import SolveConfig, describe
from ._sequence import (
    check_positive_int,
    decode_at,
    gaussian_loglik,
    latent_batch,
    prepend_t0,
)
from .odernn import ODERNN
from .rnn import RNN

__all__ = ["ODE2VAE"]


class _BayesLinear(nn.Module):
    r"""A linear layer with a mean-field Gaussian posterior over its weights and biases,
    $w = \mu + \mathrm{softplus}(\rho)\,\epsilon$, and a $\mathcal N(0, p^2)$ prior."""

    def __init__(self, n_in: int, n_out: int, prior_std: float) -> None:
        super().__init__()
        bound = 1 / math.sqrt(n_in)
        self.weight_mu = nn.Parameter(torch.empty(n_out, n_in).uniform_(-bound, bound))
        self.bias_mu = nn.Parameter(torch.empty(n_out).uniform_(-bound, bound))
        init = math.log(math.expm1(1e-3))  # softplus^{-1}(1e-3): start nearly deterministic
        self.weight_rho = nn.Parameter(torch.full((n_out, n_in), init))
        self.bias_rho = nn.Parameter(torch.full((n_out,), init))
        self.prior_std = prior_std
        self._drawn: tuple[torch.Tensor, torch.Tensor] | None = None

    def resample(self, sample: bool) -> None:
        """Draw the weights used until the next call (their means when ``sample`` is off)."""
        if sample:
            sw = nn.functional.softplus(self.weight_rho)
            sb = nn.functional.softplus(self.bias_rho)
            self._drawn = (
                self.weight_mu + sw * torch.randn_like(sw),
                self.bias_mu + sb * torch.randn_like(sb),
            )
        else:
            self._drawn = None

    def kl(self) -> torch.Tensor:
        p = self.prior_std
        total = self.weight_mu.new_zeros(())
        for mu, rho in ((self.weight_mu, self.weight_rho), (self.bias_mu, self.bias_rho)):
            s = nn.functional.softplus(rho)
            total = total + (torch.log(p / s) + (s**2 + mu**2) / (2 * p**2) - 0.5).sum()
        return total

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._drawn is None:
            return nn.functional.linear(x, self.weight_mu, self.bias_mu)
        return nn.functional.linear(x, *self._drawn)


class _Acceleration(nn.Module):
    """The Bayesian acceleration field ``f_W([s, v])`` and the second-order system."""

    def __init__(self, d: int, units: int, prior_std: float) -> None:
        super().__init__()
        self.l1 = _BayesLinear(2 * d, units, prior_std)
        self.l2 = _BayesLinear(units, units, prior_std)
        self.l3 = _BayesLinear(units, d, prior_std)
        self.layers = (self.l1, self.l2, self.l3)

    def resample(self, sample: bool) -> None:
        for layer in self.layers:
            layer.resample(sample)

    def kl(self) -> torch.Tensor:
        return sum((layer.kl() for layer in self.layers), self.l1.weight_mu.new_zeros(()))

    def forward(self, t: torch.Tensor, y: tuple[torch.Tensor, torch.Tensor]) -> Any:
        s, v = y
        h = torch.tanh(self.l1(torch.cat([s, v], dim=-1)))
        h = torch.tanh(self.l2(h))
        return v, self.l3(h)


class ODE2VAE(nn.Module):
    r"""ODE2VAE (Yildiz et al. 2019): a second-order latent ODE with a Bayesian
    (mean-field Gaussian) network for the acceleration, for irregularly sampled series.

    $$ \dot s = v,\quad \dot v = f_W(s, v),\quad W \sim q(W),\qquad
       x_i \sim \mathcal N(g(s(t_i)), \epsilon^2). $$

    An encoder (the :class:`RNN` baseline by default, or an :class:`ODERNN`) reads each
    series backwards and gives Gaussians for the position $s_0$ and velocity $v_0$ at its
    first time. One draw of the weights $W$ is shared by the batch in each call (as in the
    paper); their KL to the $\mathcal N(0, p^2)$ prior enters the ELBO divided by the number
    of series of the data set. The dynamics are autonomous, so times are measured from each
    series' first time.

    The paper's images use CNN encoders and decoders; here encoder and decoder work on
    vectors (pass your own ``decoder`` for other observation models). The paper's optional
    KL penalty on the latent density along the trajectory (via the trace of the Jacobian)
    is not included.

    Args:
        input_size: number of channels ``C``.
        latent_size: dimension $d$ of the position (the latent state is $2d$).
        encoder: ``"rnn"``, ``"odernn"`` or a module ``encoder(ts, x, mask) -> (final,
            hs)`` with an int ``hidden_size``.
        encoder_hidden: hidden size of the built-in encoders.
        hidden_units: width of the acceleration network and of the heads.
        decoder: ``g``: ``(..., d) -> (..., C)`` (default: linear).
        obs_std: $\epsilon$.
        prior_std: $p$, the prior standard deviation of every weight.
        solver, adjoint, rtol, atol, controller, dt0, max_steps: the latent solve, as in
            :class:`NeuralODE`.

    References:
        C. Yildiz, M. Heinonen, H. Lähdesmäki, "ODE²VAE: deep generative second order ODEs
        with Bayesian neural networks", NeurIPS 2019.

    Example:
        >>> model = ODE2VAE(input_size=2, latent_size=2)
        >>> ts = torch.linspace(0, 3, 16)
        >>> x = torch.randn(4, 16, 2)
        >>> loss = -model.elbo(ts, x, dataset_size=100).mean()
    """

    def __init__(
        self,
        input_size: int,
        latent_size: int,
        *,
        encoder: str | nn.Module = "rnn",
        encoder_hidden: int = 32,
        hidden_units: int = 32,
        decoder: nn.Module | None = None,
        obs_std: float = 0.1,
        prior_std: float = 1.0,
        solver: tn.AbstractSolver | None = None,
        adjoint: tn.AbstractAdjoint | None = None,
        rtol: float | None = None,
        atol: float | None = None,
        controller: tn.AbstractStepSizeController | None = None,
        dt0: float | None = None,
        max_steps: int = 4096,
    ) -> None:
        super().__init__()
        self.input_size = check_positive_int("ODE2VAE", "input_size", input_size)
        self.latent_size = check_positive_int("ODE2VAE", "latent_size", latent_size)
        check_positive_int("ODE2VAE", "encoder_hidden", encoder_hidden)
        check_positive_int("ODE2VAE", "hidden_units", hidden_units)
        for name, v in (("obs_std", obs_std), ("prior_std", prior_std)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"ODE2VAE: `{name}` must be a positive number, got {v!r}.")
        self.config = SolveConfig(
            "ODE2VAE", solver, adjoint, rtol, atol, controller, dt0, max_steps
        )
        enc: nn.Module
        if encoder == "rnn":
            enc = RNN(input_size, encoder_hidden)
        elif encoder == "odernn":
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
        elif isinstance(encoder, nn.Module):
            enc = encoder
        else:
            raise ValueError(
                'ODE2VAE: `encoder` must be "rnn", "odernn" or a module '
                f"encoder(ts, x, mask) -> (final, hs), got {describe(encoder)}."
            )
        h = getattr(enc, "hidden_size", None)
        if not isinstance(h, int):
            raise TypeError(
                "ODE2VAE: a custom `encoder` needs an int attribute `hidden_size`, got "
                f"{describe(h)}."
            )
        self.encoder = enc
        d = latent_size
        self.to_z0 = nn.Sequential(
            nn.Linear(h, hidden_units), nn.Tanh(), nn.Linear(hidden_units, 4 * d)
        )
        self.acceleration = _Acceleration(d, hidden_units, float(prior_std))
        self.decoder = nn.Linear(d, input_size) if decoder is None else decoder
        self.obs_std = float(obs_std)
        self.nfe = 0
        self.last: dict[str, torch.Tensor] = {}

    def _f(self, t: torch.Tensor, y: Any, args: Any) -> Any:
        self.nfe += 1
        return self.acceleration(t, y)

    def encode(
        self,
        ts: torch.Tensor,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        t0: float | torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation ``(B, 2d)`` of $q(s_0, v_0 \\mid x)$ (positions
        first) at ``t0`` (default: each series' first time), from the encoder run backwards
        in time."""
        batch = latent_batch("ODE2VAE", self.input_size, ts, x, mask, t0=t0)
        return self._encode(batch.ts, batch.x, batch.m, batch.t0)

    def _encode(
        self, ts: torch.Tensor, x: torch.Tensor, m: torch.Tensor, t0: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        ts, x, m = prepend_t0(ts, x, m, t0)
        final, _ = self.encoder(ts.flip(-1), x.flip(1), m.flip(1))
        mean, raw = self.to_z0(final).chunk(2, dim=-1)
        return mean, nn.functional.softplus(raw) + 1e-4

    def decode(
        self, z0: torch.Tensor, t0: torch.Tensor, ts: torch.Tensor, *, sample_weights: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions and velocities ``(N, T, d)`` from ``z0 = [s0, v0]`` ``(N, 2d)`` at
        ``t0`` (scalar or ``(N,)``) to ``ts`` (``(T,)`` or ``(N, T)``), with one draw of the
        weights (or their means)."""
        self.nfe = 0
        self.acceleration.resample(sample_weights)
        s0, v0 = z0.chunk(2, dim=-1)
        s, v = decode_at(self.config, self._f, (s0, v0), t0, ts)
        return s, v

    def weight_kl(self) -> torch.Tensor:
        r"""$\mathrm{KL}(q(W) \| p(W))$ of the acceleration network."""
        return self.acceleration.kl()

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
        dataset_size: int = 1,
        num_samples: int = 1,
        kl_weight: float = 1.0,
    ) -> torch.Tensor:
        """Each series' share of the data set's ELBO, ``(B,)``: its expected log-likelihood
        minus the KL of its $(s_0, v_0)$ and ``1/dataset_size`` of the weights' KL.

        Args:
            ts: ``(T,)`` or ``(B, T)``, increasing.
            x, mask: ``(B, T, C)``.
            mode, ts_target, x_target, target_mask, t0: what is encoded and what is
                scored, as in :meth:`LatentODE.elbo`.
            dataset_size: number of series $N$ in the data set.
            num_samples: draws of $(s_0, v_0, W)$.
            kl_weight: weight of both KL terms (annealing).
        """
        check_positive_int("ODE2VAE", "dataset_size", dataset_size)
        check_positive_int("ODE2VAE", "num_samples", num_samples)
        batch = latent_batch(
            "ODE2VAE",
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
        loglik = x.new_zeros(x.shape[0])
        for _ in range(num_samples):
            z0 = mean + std * torch.randn_like(std)
            s, _v = self.decode(z0, batch.t0, batch.ts_target, sample_weights=True)
            pred = self.decoder(s)
            loglik = loglik + gaussian_loglik(batch.x_target, pred, self.obs_std, batch.m_target)
        loglik = loglik / num_samples
        kl_z = (0.5 * (std**2 + mean**2 - 1) - torch.log(std)).sum(-1)
        kl_w = self.weight_kl()
        self.last = {
            "loglik": loglik.mean().detach(),
            "kl_z0": kl_z.mean().detach(),
            "kl_weights": kl_w.detach(),
        }
        return loglik - kl_weight * (kl_z + kl_w / dataset_size)

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
        """Predict ``(B, T', C)`` at ``ts_pred`` (default ``ts``) from the observations, with
        the posterior means of $(s_0, v_0)$ and $W$ (draws with ``sample=True``)."""
        target = ts if ts_pred is None else torch.as_tensor(ts_pred)
        b = x.shape[0] if isinstance(x, torch.Tensor) else 0
        tgt_x = x.new_zeros(b, target.shape[-1], self.input_size)
        batch = latent_batch(
            "ODE2VAE", self.input_size, ts, x, mask, ts_target=target, x_target=tgt_x, t0=t0
        )
        mean, std = self._encode(batch.ts, batch.x, batch.m, batch.t0)
        z0 = mean + std * torch.randn_like(std) if sample else mean
        tt, t0_ = batch.ts_target, batch.t0
        if tt.ndim == 1 and t0_.ndim == 1:
            tt = tt.expand(b, -1)
        s, _v = self.decode(z0, t0_, tt, sample_weights=sample)
        return self.decoder(s)

    def extra_repr(self) -> str:
        return (
            f"input_size={self.input_size}, latent_size={self.latent_size}, "
            f"obs_std={self.obs_std}, {self.config!r}"
        )
