r"""The sub-variance-preserving SDE (Song et al. 2021)."""

from __future__ import annotations

import torch

from .base import _as_time
from .vp import VPSDE, _invert_integrated_beta

__all__ = ["SubVPSDE"]


class SubVPSDE(VPSDE):
    r"""The sub-VP SDE $dx = -\tfrac12\beta(t)\,x\,dt + \sqrt{\beta(t)(1 - e^{-2B(t)})}\,dW$,
    $B(t) = \int_0^t \beta$, with the VP SDE's linear $\beta$ schedule.

    Its mean scale is the VP SDE's, $\alpha = e^{-B/2}$, but its variance is smaller at every
    time: $\sigma(t) = 1 - e^{-B}$ ($\sigma^2 \le$ the VP one); Song et al. report better
    likelihoods with it. Prior $\mathcal N(0, I)$.

    Args:
        beta_min, beta_max: the schedule's end points (Song et al.: 0.1 and 20).
        eps: the smallest time.

    Reference:
        Y. Song et al., "Score-based generative modeling through stochastic differential
        equations", ICLR 2021, Eq. (29), Table 2.
    """

    def std(self, t: torch.Tensor) -> torch.Tensor:
        return -torch.expm1(-self.integrated_beta(t))

    def diffusion_squared(self, t: torch.Tensor) -> torch.Tensor:
        return self.beta(t) * -torch.expm1(-2 * self.integrated_beta(t))

    def log_snr(self, t: object) -> torch.Tensor:
        # sigma / alpha = e^{B/2} - e^{-B/2} = 2 sinh(B/2).
        b = self.integrated_beta(_as_time(t))
        return -torch.log(2 * torch.sinh(0.5 * b))

    def t_from_log_snr(self, lam: torch.Tensor) -> torch.Tensor:
        b = 2 * torch.asinh(0.5 * torch.exp(-lam))
        return _invert_integrated_beta(b, self.beta_min, self.beta_max)

    def __repr__(self) -> str:
        return f"SubVPSDE(beta_min={self.beta_min}, beta_max={self.beta_max}, eps={self.eps})"
