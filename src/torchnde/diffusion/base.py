r"""The forward SDE of score-based diffusion: a linear SDE with a Gaussian transition kernel.

Every forward SDE of Song et al. (2021) is linear in the state,

$$dx = f(t)\,x\,dt + g(t)\,dW,\qquad x(t) \mid x(0) \sim
\mathcal N\big(\alpha(t)\,x(0),\ \sigma(t)^2 I\big),$$

with $f = d\log\alpha/dt$ and $g^2 = d\sigma^2/dt - 2 f \sigma^2$ (the variance ODE). A
subclass gives $\log\alpha(t)$, $\sigma(t)$, $f$, $g^2$ and the inverse of the log
signal-to-noise ratio $\lambda(t) = \log(\alpha/\sigma)$, which the samplers of Karras et al.
(2022) and Lu et al. (2022) step in.
"""

from __future__ import annotations

import abc
import math
from typing import Any

import torch

import torchnde as tn

__all__ = ["AbstractForwardSDE"]


def _as_time(t: Any, like: torch.Tensor | None = None) -> torch.Tensor:
    if isinstance(t, torch.Tensor):
        return t
    dtype = like.dtype if like is not None else torch.get_default_dtype()
    device = like.device if like is not None else None
    return torch.as_tensor(float(t), dtype=dtype, device=device)


class AbstractForwardSDE(abc.ABC):
    r"""A forward diffusion $dx = f(t) x\,dt + g(t)\,dW$ on $[\epsilon, T]$ with the marginal
    $x(t) = \alpha(t) x(0) + \sigma(t) z$, $z \sim \mathcal N(0, I)$.

    Subclasses implement :meth:`log_mean_scale`, :meth:`std`, :meth:`drift_coefficient`,
    :meth:`diffusion_squared`, :meth:`t_from_log_snr` and set ``prior_std``, ``T`` and
    ``eps`` (the smallest time the samplers reach and the likelihood is computed at).

    Times are tensors (any shape) or Python floats; the coefficients broadcast with them.
    """

    T: float = 1.0
    eps: float = 1e-3
    prior_std: float = 1.0

    # --- the coefficients -----------------------------------------------------------------
    @abc.abstractmethod
    def log_mean_scale(self, t: torch.Tensor) -> torch.Tensor:
        r"""$\log\alpha(t)$."""

    @abc.abstractmethod
    def std(self, t: torch.Tensor) -> torch.Tensor:
        r"""$\sigma(t)$, the standard deviation of $x(t)$ given $x(0)$."""

    @abc.abstractmethod
    def drift_coefficient(self, t: torch.Tensor) -> torch.Tensor:
        r"""$f(t)$ of the drift $f(t)\,x$."""

    @abc.abstractmethod
    def diffusion_squared(self, t: torch.Tensor) -> torch.Tensor:
        r"""$g(t)^2$."""

    @abc.abstractmethod
    def t_from_log_snr(self, lam: torch.Tensor) -> torch.Tensor:
        r"""The time at which $\lambda(t) = \log(\alpha(t)/\sigma(t))$ equals ``lam``."""

    # --- derived --------------------------------------------------------------------------
    def marginal(self, t: Any) -> tuple[torch.Tensor, torch.Tensor]:
        r"""$(\alpha(t), \sigma(t))$: $x(t) \mid x(0) \sim \mathcal N(\alpha x(0), \sigma^2 I)$."""
        t = _as_time(t)
        return self.log_mean_scale(t).exp(), self.std(t)

    def log_snr(self, t: Any) -> torch.Tensor:
        r"""$\lambda(t) = \log\alpha(t) - \log\sigma(t)$, decreasing in $t$."""
        t = _as_time(t)
        return self.log_mean_scale(t) - self.std(t).log()

    def sigma_tilde(self, t: Any) -> torch.Tensor:
        r"""$\tilde\sigma(t) = \sigma/\alpha = e^{-\lambda}$: the noise level of the rescaled
        state $x/\alpha$ (Karras et al. 2022's $\sigma$)."""
        return (-self.log_snr(t)).exp()

    def t_from_sigma_tilde(self, sigma: torch.Tensor) -> torch.Tensor:
        r"""The inverse of :meth:`sigma_tilde`."""
        return self.t_from_log_snr(-sigma.log())

    def diffusion(self, t: Any) -> torch.Tensor:
        """$g(t)$."""
        return self.diffusion_squared(_as_time(t)).sqrt()

    def drift(self, t: Any, x: torch.Tensor) -> torch.Tensor:
        """The forward drift $f(t)\\,x$ (``t`` a scalar or ``(batch,)``)."""
        return _per_sample(self.drift_coefficient(_as_time(t, x)), x) * x

    def perturb(
        self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        r"""A draw of $x(t) = \alpha(t) x_0 + \sigma(t) z$ (``t`` of shape ``(batch,)``)."""
        if noise is None:
            noise = torch.randn_like(x0)
        a, s = self.marginal(t)
        return _per_sample(a, x0) * x0 + _per_sample(s, x0) * noise

    def terms(self, bm: tn.AbstractPath | Any) -> tn.MultiTerm:
        r"""The forward SDE as torchnde terms: ``MultiTerm(ODETerm(f x), ControlTerm(g, bm))``
        with additive (Itô = Stratonovich) noise; ``bm`` has the shape of the state."""
        return tn.MultiTerm(
            tn.ODETerm(lambda t, y, args: self.drift(t, y)),
            tn.ControlTerm(
                lambda t, y, args: _per_sample(self.diffusion(_as_time(t, y)), y).expand_as(y),
                bm,
                noise="additive",
                calculus="ito",
            ),
        )

    # --- the prior ------------------------------------------------------------------------
    def prior_sample(
        self,
        shape: tuple[int, ...],
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        r"""Draws of the prior $\mathcal N(0, \sigma_T^2 I)$ that approximates $p_T$."""
        z = torch.randn(shape, dtype=dtype, device=device, generator=generator)
        return self.prior_std * z

    def prior_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        r"""$\log\mathcal N(z; 0, \sigma_T^2 I)$ per sample, ``(batch,)``."""
        d = z[0].numel()
        s = self.prior_std
        sq = z.reshape(z.shape[0], -1).pow(2).sum(1)
        return -0.5 * sq / s**2 - d * math.log(s) - 0.5 * d * math.log(2 * math.pi)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _per_sample(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """View a scalar or ``(batch,)`` coefficient so it broadcasts over ``x``'s sample dims."""
    c = c.to(x.dtype)
    if c.ndim == 0:
        return c
    return c.reshape(c.shape + (1,) * (x.ndim - c.ndim))
