r"""Latent SDEs trained by variational inference in path space (Li et al. 2020).

The generative model is a *prior* SDE in a latent space, read out to the data by a linear map
and Gaussian observation noise:

$$ z_0 \sim \mathcal N(\mu_p, \sigma_p^2), \qquad dz = h_\theta(z)\,dt + g_\theta(z)\,dW,
   \qquad x_{t_i} \sim \mathcal N(W_o z_{t_i} + b_o, \sigma_x^2). $$

The approximate posterior is an SDE with the *same* diffusion and a drift that also reads a
context $c(t)$ summarising the observations (a GRU run backwards in time over them, so the
context at $t$ summarises the observations still to come):

$$ z_0 \sim q(z_0 \mid c(t_0)), \qquad dz = f_\phi(z, c(t))\,dt + g_\theta(z)\,dW. $$

Sharing the diffusion makes the two path measures equivalent, and Girsanov's theorem gives the
KL divergence between them as $\mathbb E_q \int \tfrac12 \lVert u \rVert^2 dt$ with
$u = (f - h)/g$: it is accumulated along the posterior solve by
:func:`torchnde.sdeint` with ``logqp=True``. The evidence lower bound per sequence is

$$ \mathrm{ELBO} = \mathbb E_q\Big[\sum_i \log p(x_{t_i} \mid z_{t_i})\Big]
   - \mathrm{KL}(q(z_0) \,\|\, p(z_0)) - \mathbb E_q \int_{t_0}^{t_n} \tfrac12 \lVert u
   \rVert^2 dt, $$

estimated with one posterior path per sequence. The architecture is that of torchsde's
``examples/latent_sde_lorenz.py`` (softplus MLPs, a diagonal diffusion made of one small
sigmoid network per latent channel, each reading only its own channel).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import nn

import torchnde as tn

from ._config import describe

__all__ = ["LatentSDE", "LatentSDEOutput"]


class LatentSDEOutput(NamedTuple):
    r"""What :meth:`LatentSDE.forward` returns, each per sequence (shape ``(batch,)``) except
    ``zs``.

    Attributes:
        log_px: $\sum_i \log p(x_{t_i} \mid z_{t_i})$ along the sampled posterior path.
        kl_z0: $\mathrm{KL}(q(z_0) \,\|\, p(z_0))$ (closed form, Gaussians).
        kl_path: $\int \tfrac12 \lVert (f - h)/g \rVert^2 dt$ along the sampled path (the
            single-sample estimate of the path-space KL).
        zs: the posterior latent path at ``ts``, shape ``(len(ts), batch, latent_size)``.
    """

    log_px: torch.Tensor
    kl_z0: torch.Tensor
    kl_path: torch.Tensor
    zs: torch.Tensor

    @property
    def elbo(self) -> torch.Tensor:
        """``log_px - kl_z0 - kl_path``, shape ``(batch,)``."""
        return self.log_px - self.kl_z0 - self.kl_path


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(n_in, hidden),
        nn.Softplus(),
        nn.Linear(hidden, hidden),
        nn.Softplus(),
        nn.Linear(hidden, n_out),
    )


class _DiagonalDiffusion(nn.Module):
    r"""$g_j(z) = \sigma(w_{2j}^\top \mathrm{softplus}(w_{1j} z_j + b_{1j}) + b_{2j})$: one
    one-hidden-layer network per latent channel, reading only its own channel (diagonal
    noise), evaluated for all channels at once. Equivalent to torchsde's ``ModuleList`` of
    ``Linear(1, hidden), Softplus, Linear(hidden, 1), Sigmoid``, with the same initialisation."""

    def __init__(self, latent_size: int, hidden: int) -> None:
        super().__init__()
        b1 = 1.0  # nn.Linear(1, hidden): U(-1/sqrt(1), 1/sqrt(1))
        b2 = 1.0 / math.sqrt(hidden)
        self.w1 = nn.Parameter(torch.empty(latent_size, hidden).uniform_(-b1, b1))
        self.b1 = nn.Parameter(torch.empty(latent_size, hidden).uniform_(-b1, b1))
        self.w2 = nn.Parameter(torch.empty(latent_size, hidden).uniform_(-b2, b2))
        self.b2 = nn.Parameter(torch.empty(latent_size).uniform_(-b2, b2))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = nn.functional.softplus(z[..., None] * self.w1 + self.b1)
        return torch.sigmoid((h * self.w2).sum(-1) + self.b2)


class LatentSDE(nn.Module):
    r"""A latent SDE with a GRU context encoder, trained on the ELBO (Li et al. 2020).

    See the module docstring for the model. Observations are time first,
    ``xs`` of shape ``(len(ts), batch, data_size)``, at the common times ``ts``.

    Args:
        data_size: channels of the observations.
        latent_size: size of the latent state $z$.
        context_size: size of the context $c(t)$ the encoder gives the posterior drift.
        hidden_size: width of the networks (and of the GRU).
        obs_std: the observation noise $\sigma_x$ of the likelihood.
        learn_obs_std: learn $\sigma_x$ (one per channel, started at ``obs_std``) instead of
            keeping it fixed (torchsde's example keeps it fixed).
        dt: the step of the fixed-step solves.
        method: the :func:`torchnde.sdeint` method (Itô): ``"euler"`` (torchsde's example),
            ``"milstein"``, ``"srk"``, ...
        adjoint: how to differentiate the posterior solve (``DirectAdjoint()`` by default;
            ``BacksolveAdjoint()`` is the stochastic adjoint of the paper, memory independent
            of the number of steps).

    References:
        X. Li, T.-K. L. Wong, R. T. Q. Chen, D. Duvenaud, "Scalable gradients for stochastic
        differential equations", AISTATS 2020.

    Example:
        >>> model = LatentSDE(data_size=3, latent_size=4, context_size=16, hidden_size=32)
        >>> ts = torch.linspace(0, 1, 20)
        >>> xs = torch.randn(20, 8, 3)
        >>> out = model(ts, xs)
        >>> loss = -out.elbo.mean()
        >>> paths = model.sample(ts, 16)  # (20, 16, 3), from the prior
    """

    def __init__(
        self,
        data_size: int,
        latent_size: int = 4,
        context_size: int = 64,
        hidden_size: int = 128,
        *,
        obs_std: float = 0.01,
        learn_obs_std: bool = False,
        dt: float = 0.01,
        method: str = "euler",
        adjoint: tn.AbstractAdjoint | None = None,
    ) -> None:
        super().__init__()
        for name, v in (
            ("data_size", data_size),
            ("latent_size", latent_size),
            ("context_size", context_size),
            ("hidden_size", hidden_size),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"LatentSDE: `{name}` must be an int >= 1, got {v!r}.")
        for name, x in (("obs_std", obs_std), ("dt", dt)):
            if (
                isinstance(x, bool)
                or not isinstance(x, (int, float))
                or not (math.isfinite(x) and x > 0)
            ):
                raise ValueError(f"LatentSDE: `{name}` must be a positive number, got {x!r}.")
        if method not in tn.SDE_METHODS:
            raise ValueError(
                f"LatentSDE: `method` must be one of {list(tn.SDE_METHODS)}, got {method!r}."
            )
        if adjoint is not None and not isinstance(adjoint, tn.AbstractAdjoint):
            raise TypeError(
                f"LatentSDE: `adjoint` must be an adjoint such as tn.BacksolveAdjoint(), got "
                f"{describe(adjoint)}."
            )
        self.data_size, self.latent_size = data_size, latent_size
        self.dt, self.method, self.adjoint = float(dt), method, adjoint
        self.encoder = nn.GRU(data_size, hidden_size)
        self.encoder_out = nn.Linear(hidden_size, context_size)
        self.qz0_net = nn.Linear(context_size, 2 * latent_size)
        self.posterior_drift = _mlp(latent_size + context_size, hidden_size, latent_size)
        self.prior_drift = _mlp(latent_size, hidden_size, latent_size)
        self.diffusion = _DiagonalDiffusion(latent_size, hidden_size)
        self.projector = nn.Linear(latent_size, data_size)
        self.pz0_mean = nn.Parameter(torch.zeros(latent_size))
        self.pz0_logstd = nn.Parameter(torch.zeros(latent_size))
        log_std = torch.full((data_size,), math.log(obs_std))
        if learn_obs_std:
            self.obs_logstd = nn.Parameter(log_std)
        else:
            self.register_buffer("obs_logstd", log_std)

    # -- pieces ------------------------------------------------------------------------------

    def _check(self, ts: Any, xs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(xs, torch.Tensor) or not torch.is_floating_point(xs):
            raise TypeError(
                "LatentSDE: `xs` must be a floating-point tensor of shape (len(ts), batch, "
                f"data_size), got {describe(xs)}."
            )
        if xs.ndim != 3 or xs.shape[-1] != self.data_size:
            raise ValueError(
                f"LatentSDE: `xs` must have shape (len(ts), batch, {self.data_size}) (time "
                f"first), got shape {tuple(xs.shape)}."
            )
        ts = self._check_ts(ts)
        if ts.shape[0] != xs.shape[0]:
            raise ValueError(
                f"LatentSDE: `xs` has {xs.shape[0]} times (its first dimension) but `ts` has "
                f"{ts.shape[0]}; pass the observations time first, (len(ts), batch, channels)."
            )
        return ts, xs

    def _check_ts(self, ts: Any) -> torch.Tensor:
        ts = torch.as_tensor(ts, dtype=self.pz0_mean.dtype, device=self.pz0_mean.device)
        if ts.ndim != 1 or ts.numel() < 2 or bool((ts.diff() <= 0).any()):
            raise ValueError(
                "LatentSDE: `ts` must be a 1-D strictly increasing tensor of at least two "
                f"times, got {describe(ts)}."
            )
        return ts

    def context(self, xs: torch.Tensor) -> torch.Tensor:
        """The context at each observation time, shape ``(len(ts), batch, context_size)``:
        a GRU run backwards in time, so ``context[i]`` summarises ``xs[i:]``."""
        out, _ = self.encoder(torch.flip(xs, dims=(0,)))
        return torch.flip(self.encoder_out(out), dims=(0,))

    def g(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The shared diagonal diffusion $g(z)$, the shape of ``z``."""
        return self.diffusion(z)

    def h(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The prior drift $h(z)$."""
        return self.prior_drift(z)

    def log_likelihood(self, xs: torch.Tensor, zs: torch.Tensor) -> torch.Tensor:
        r"""$\sum_i \log \mathcal N(x_{t_i}; W_o z_{t_i} + b_o, \sigma_x^2)$ per sequence,
        shape ``(batch,)``."""
        dist = torch.distributions.Normal(self.projector(zs), self.obs_logstd.exp())
        return dist.log_prob(xs).sum(dim=(0, 2))

    # -- the ELBO ----------------------------------------------------------------------------

    def forward(
        self,
        ts: torch.Tensor,
        xs: torch.Tensor,
        *,
        bm: tn.AbstractPath | None = None,
        eps: torch.Tensor | None = None,
    ) -> LatentSDEOutput:
        r"""The terms of the ELBO of each sequence, with one posterior path per sequence.

        Args:
            ts: the observation times, 1-D increasing, shape ``(T,)``.
            xs: the observations, time first, shape ``(T, batch, data_size)``.
            bm: the Brownian motion of the posterior solve (shape ``(batch, latent_size)``
                on ``[ts[0], ts[-1]]``); a fresh :class:`~torchnde.BrownianInterval` by
                default.
            eps: the standard normal draw of $z_0$ (``(batch, latent_size)``); fresh by
                default.

        Returns:
            A :class:`LatentSDEOutput`; ``out.elbo`` is the ELBO of each sequence.
        """
        ts, xs = self._check(ts, xs)
        ctx = self.context(xs)
        qz0_mean, qz0_logstd = self.qz0_net(ctx[0]).chunk(2, dim=-1)
        if eps is None:
            eps = torch.randn_like(qz0_mean)
        elif eps.shape != qz0_mean.shape:
            raise ValueError(
                f"LatentSDE: `eps` must have shape {tuple(qz0_mean.shape)} (batch, latent_size), "
                f"got {tuple(eps.shape)}."
            )
        z0 = qz0_mean + qz0_logstd.exp() * eps
        last = ts.numel() - 1

        def f(t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            # The context of the next observation time (torchsde's convention): it summarises
            # the observations still ahead of t. No host synchronisation: an index tensor.
            i = torch.searchsorted(ts, t.to(ts.dtype).reshape(1), right=True).clamp_(max=last)
            return self.posterior_drift(torch.cat([z, ctx.index_select(0, i)[0]], dim=-1))

        zs, kl = tn.sdeint(
            f,
            self.g,
            z0,
            ts,
            method=self.method,
            dt=self.dt,
            bm=bm,
            adjoint=self.adjoint,
            logqp=True,
            prior_drift=self.h,
        )
        qz0 = torch.distributions.Normal(qz0_mean, qz0_logstd.exp())
        pz0 = torch.distributions.Normal(self.pz0_mean, self.pz0_logstd.exp())
        kl_z0 = torch.distributions.kl_divergence(qz0, pz0).sum(-1)
        return LatentSDEOutput(self.log_likelihood(xs, zs), kl_z0, kl[-1], zs)

    def elbo(self, ts: torch.Tensor, xs: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """The ELBO of each sequence, shape ``(batch,)`` (``forward(...).elbo``)."""
        return self.forward(ts, xs, **kwargs).elbo

    # -- sampling ----------------------------------------------------------------------------

    def sample_latent(
        self,
        ts: torch.Tensor,
        batch_size: int,
        *,
        bm: tn.AbstractPath | None = None,
        eps: torch.Tensor | None = None,
        dt: float | None = None,
    ) -> torch.Tensor:
        """Latent paths of the prior SDE at ``ts``, shape ``(len(ts), batch_size,
        latent_size)``; ``dt`` defaults to the model's step."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"LatentSDE: `batch_size` must be an int >= 1, got {batch_size!r}.")
        ts = self._check_ts(ts)
        if eps is None:
            eps = torch.randn(batch_size, self.latent_size, dtype=ts.dtype, device=ts.device)
        elif eps.shape != (batch_size, self.latent_size):
            raise ValueError(
                f"LatentSDE: `eps` must have shape ({batch_size}, {self.latent_size}), got "
                f"{tuple(eps.shape)}."
            )
        z0 = self.pz0_mean + self.pz0_logstd.exp() * eps
        return tn.sdeint(
            self.h, self.g, z0, ts, method=self.method, dt=dt or self.dt, bm=bm,
            adjoint=self.adjoint,
        )  # fmt: skip

    def sample(
        self,
        ts: torch.Tensor,
        batch_size: int,
        *,
        bm: tn.AbstractPath | None = None,
        eps: torch.Tensor | None = None,
        dt: float | None = None,
    ) -> torch.Tensor:
        """Paths of the prior model in data space (the means $W_o z + b_o$, without the
        observation noise, as in torchsde's example), shape ``(len(ts), batch_size,
        data_size)``."""
        return self.projector(self.sample_latent(ts, batch_size, bm=bm, eps=eps, dt=dt))
