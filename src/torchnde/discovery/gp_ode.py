r"""GP-ODE (Heinonen, Yildiz, Mannerström, Intosalmi, Lähdesmäki 2018, "Learning unknown ODE
models with Gaussian processes"): a sparse Gaussian-process vector field, trained through the
solver.

The field is the GP posterior mean given values $U \in \mathbb R^{M \times D}$ at inducing
locations $Z \in \mathbb R^{M \times D}$, with an RBF kernel
$k(x, x') = \sigma_f^2 \exp(-\tfrac12 \sum_d (x_d - x'_d)^2 / \ell_d^2)$:

$$f(x) = K_{xZ} K_{ZZ}^{-1} U = K_{xZ} L^{-\top} V, \qquad K_{ZZ} = L L^\top,$$

whitened ($U = L V$, so the prior is $V \sim \mathcal N(0, I)$ whatever the kernel). The
inducing values have a Gaussian variational posterior $q(V) = \mathcal N(m, \mathrm{diag}\,
s^2)$; a sample of $V$ is a whole vector field, so a batch of samples solved together gives
trajectory uncertainty. Training maximises the ELBO
$\mathbb E_{q}[\log p(y \mid x(t; V))] - \mathrm{KL}(q(V) \,\Vert\, \mathcal N(0, I))$ by the
reparameterisation trick, through ``torchnde.solve``.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
from torch import nn

__all__ = ["GPODEField"]


class GPODEField(nn.Module):
    r"""A sparse-GP vector field with whitened inducing values (module docstring), for
    ``torchnde.ODETerm``.

    Args:
        inducing: the inducing locations $Z$ ``(M, D)`` (fixed; a grid over the state region,
            as Heinonen et al.).
        lengthscale: the initial RBF lengthscales (one per dimension, learned).
        variance: the initial signal variance $\sigma_f^2$ (learned).
        jitter: added to $K_{ZZ}$'s diagonal before the Cholesky factorisation.

    ``forward(t, y, args)`` with ``y`` ``(batch, D)`` uses the posterior mean $m$ of the
    inducing values, or, after :meth:`sample` ``(batch)`` set per-sample values, those (one
    field per trajectory of the batch). :meth:`kl` is $\mathrm{KL}(q(V) \Vert \mathcal N(0,I))$.
    """

    def __init__(
        self,
        inducing: torch.Tensor,
        *,
        lengthscale: float = 1.0,
        variance: float = 1.0,
        jitter: float = 1e-6,
    ) -> None:
        super().__init__()
        if not isinstance(inducing, torch.Tensor) or inducing.ndim != 2:
            got = tuple(inducing.shape) if isinstance(inducing, torch.Tensor) else inducing
            raise ValueError(f"`inducing` must be a tensor of shape (M, D), got {got!r}.")
        for name, value in (("lengthscale", lengthscale), ("variance", variance)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"`{name}` must be a number > 0, got {value!r}.")
        m, d = inducing.shape
        self.register_buffer("inducing", inducing.clone())
        dtype = inducing.dtype
        self.log_lengthscale = nn.Parameter(torch.full((d,), math.log(lengthscale), dtype=dtype))
        self.log_variance = nn.Parameter(torch.tensor(math.log(variance), dtype=dtype))
        self.mean = nn.Parameter(torch.zeros(m, d, dtype=dtype))
        self.log_std = nn.Parameter(torch.full((m, d), math.log(1e-2), dtype=dtype))
        self.jitter = jitter
        self._v: torch.Tensor | None = None

    def _z(self) -> torch.Tensor:
        return cast(torch.Tensor, self.inducing)

    def kernel(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The RBF kernel matrix ``(..., len(a), len(b))``."""
        ell = self.log_lengthscale.exp()
        d2 = (((a[..., :, None, :] - b[..., None, :, :]) / ell) ** 2).sum(-1)
        return self.log_variance.exp() * torch.exp(-0.5 * d2)

    def _projection(self) -> torch.Tensor:
        z = self._z()
        kzz = self.kernel(z, z) + self.jitter * torch.eye(len(z), dtype=z.dtype, device=z.device)
        return torch.linalg.cholesky(kzz)

    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> None:
        """Draw ``num_samples`` inducing values from $q(V)$ (reparameterised): until
        :meth:`use_mean`, ``forward`` on a batch of ``num_samples`` states uses one each."""
        eps = torch.randn(
            (num_samples, *self.mean.shape),
            generator=generator,
            dtype=self.mean.dtype,
        ).to(self.mean.device)
        self._v = self.mean + self.log_std.exp() * eps

    def use_mean(self) -> None:
        """Back to the posterior mean field."""
        self._v = None

    def forward(self, t: Any, y: torch.Tensor, args: Any = None) -> torch.Tensor:
        lower = self._projection()
        kxz = self.kernel(y, self._z())  # (batch, M)
        # K_xZ L^{-T} V: solve L^T W = K_Zx, i.e. W^T = K_xZ L^{-T}.
        w = torch.linalg.solve_triangular(lower, kxz.T, upper=False).T  # (batch, M)
        if self._v is None:
            return w @ self.mean
        if self._v.shape[0] != y.shape[0]:
            raise ValueError(
                f"sample() drew {self._v.shape[0]} fields but the state has batch "
                f"{y.shape[0]}; solve that many trajectories or call use_mean()."
            )
        return torch.einsum("bm,bmd->bd", w, self._v)

    def init_from_derivatives(
        self, x: torch.Tensor, x_dot: torch.Tensor, noise_variance: float = 0.1
    ) -> None:
        r"""Gradient matching: set the posterior mean $m$ to the MAP of $V$ given derivative
        estimates ``x_dot`` at states ``x`` (both ``(N, D)``; e.g. from
        :func:`~torchnde.discovery.collocate_data`), $m = (W^\top W + \tau^2 I)^{-1} W^\top
        \dot x$ with $W = K_{xZ} L^{-\top}$ and $\tau^2$ = ``noise_variance``: a start for
        training through the solver."""
        if x.ndim != 2 or x.shape != x_dot.shape or x.shape[1] != self.mean.shape[1]:
            raise ValueError(
                f"`x` and `x_dot` must both have shape (N, {self.mean.shape[1]}), got "
                f"{tuple(x.shape)} and {tuple(x_dot.shape)}."
            )
        with torch.no_grad():
            lower = self._projection()
            w = torch.linalg.solve_triangular(lower, self.kernel(x, self._z()).T, upper=False).T
            eye = torch.eye(w.shape[1], dtype=w.dtype, device=w.device)
            self.mean.copy_(torch.linalg.solve(w.T @ w + noise_variance * eye, w.T @ x_dot))

    def kl(self) -> torch.Tensor:
        r"""$\mathrm{KL}(\mathcal N(m, \mathrm{diag}\,s^2) \Vert \mathcal N(0, I))$."""
        var = (2 * self.log_std).exp()
        return 0.5 * (var + self.mean**2 - 1 - 2 * self.log_std).sum()
