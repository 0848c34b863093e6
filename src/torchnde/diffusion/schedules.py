r"""The time grids the step-based samplers walk, from $T$ down to $\epsilon$."""

from __future__ import annotations

import torch

from ._checks import check_steps
from .base import AbstractForwardSDE

__all__ = ["SCHEDULES", "time_grid"]

#: The grids :func:`time_grid` makes.
SCHEDULES = ("time", "log_snr", "karras")


def time_grid(
    sde: AbstractForwardSDE,
    steps: int,
    schedule: str = "time",
    *,
    rho: float = 7.0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    r"""``steps + 1`` decreasing times from $T$ to $\epsilon$:

    - ``"time"``: uniform in $t$ (DDIM's and the SDE samplers' grid);
    - ``"log_snr"``: uniform in $\lambda = \log(\alpha/\sigma)$ (Lu et al. 2022's choice for
      DPM-Solver);
    - ``"karras"``: $\tilde\sigma_i = (\tilde\sigma_{\max}^{1/\rho} + \tfrac{i}{N}
      (\tilde\sigma_{\min}^{1/\rho} - \tilde\sigma_{\max}^{1/\rho}))^\rho$ in the noise level
      $\tilde\sigma = \sigma/\alpha$ of the rescaled state, $\rho = 7$ (Karras et al. 2022,
      Eq. 5), mapped back to $t$.
    """
    steps = check_steps("time_grid", steps)
    if schedule not in SCHEDULES:
        raise ValueError(f"time_grid: `schedule` must be one of {SCHEDULES}, got {schedule!r}.")
    kw = dict(dtype=dtype, device=device)
    t_hi, t_lo = torch.tensor(sde.T, **kw), torch.tensor(sde.eps, **kw)  # type: ignore[arg-type]
    u = torch.linspace(0.0, 1.0, steps + 1, **kw)  # type: ignore[arg-type]
    if schedule == "time":
        ts = t_hi + u * (t_lo - t_hi)
    elif schedule == "log_snr":
        lam_lo, lam_hi = sde.log_snr(t_hi), sde.log_snr(t_lo)
        ts = sde.t_from_log_snr(lam_lo + u * (lam_hi - lam_lo))
    else:
        s_max, s_min = sde.sigma_tilde(t_hi) ** (1 / rho), sde.sigma_tilde(t_lo) ** (1 / rho)
        ts = sde.t_from_sigma_tilde((s_max + u * (s_min - s_max)) ** rho)
    # The end points exactly (the inverse maps round).
    ts[0], ts[-1] = t_hi, t_lo
    return ts
