r"""The reverse-time SDE (Anderson 1982; Song et al. 2021), solved on torchnde's engine, and
the predictor-corrector sampler with a Langevin corrector.

The forward SDE $dx = f x\,dt + g\,dW$ runs backwards as

$$dx = \big[f(t)\,x - g(t)^2\,\nabla_x\log p_t(x)\big]\,dt + g(t)\,d\bar W,$$

from $T$ to $\epsilon$, with $d\bar W$ a Brownian motion in reverse time. Its noise is
additive ($g$ depends on $t$ only), so Itô and Stratonovich agree and every SDE solver of
torchnde applies: :class:`~torchnde.EulerMaruyama` (DDPM's ancestral sampler in the limit),
:class:`~torchnde.SRA1` (strong order 1.5 for additive noise) and
:class:`~torchnde.ReversibleHeun`. The SDE solvers step forward in time, so the solve runs in
$u = -t$ from $-T$ to $-\epsilon$: $dx = -[f x - g^2 s](-u)\,du + g(-u)\,dW_u$, with a
:class:`~torchnde.BrownianInterval` over $[-T, -\epsilon]$.
"""

from __future__ import annotations

from typing import Any

import torch

import torchnde as tn

from .base import AbstractForwardSDE, _per_sample
from .score import Score, call_score

__all__ = ["pc_sample", "reverse_sde_sample", "reverse_sde_terms"]


def reverse_sde_terms(
    sde: AbstractForwardSDE, score: Score, bm: tn.AbstractPath | Any
) -> tn.MultiTerm:
    """The reverse-time SDE as torchnde terms in the forward time $u = -t$: solve them from
    ``-T`` to ``-eps`` with ``bm`` a Brownian motion over that interval."""

    def drift(u: torch.Tensor, x: torch.Tensor, args: Any) -> torch.Tensor:
        t = -torch.as_tensor(u, dtype=x.dtype, device=x.device)
        s = call_score(score, x, t)
        g2 = _per_sample(sde.diffusion_squared(t), x)
        return g2 * s - _per_sample(sde.drift_coefficient(t), x) * x

    def diffusion(u: torch.Tensor, x: torch.Tensor, args: Any) -> torch.Tensor:
        t = -torch.as_tensor(u, dtype=x.dtype, device=x.device)
        return _per_sample(sde.diffusion(t), x).expand_as(x)

    return tn.MultiTerm(
        tn.ODETerm(drift), tn.ControlTerm(diffusion, bm, noise="additive", calculus="ito")
    )


def reverse_sde_sample(
    sde: AbstractForwardSDE,
    score: Score,
    x_T: torch.Tensor,
    ts: torch.Tensor,
    solver: tn.AbstractSolver,
    seed: int,
    stats: dict[str, Any],
) -> torch.Tensor:
    """Solve the reverse SDE from ``x_T`` stepping exactly on the decreasing grid ``ts``."""
    levy = getattr(solver, "levy_area", None)
    bm = tn.BrownianInterval(
        -sde.T, -sde.eps, tuple(x_T.shape), dtype=x_T.dtype, device=x_T.device, seed=seed,
        levy_area=levy,
    )  # fmt: skip
    terms = reverse_sde_terms(sde, score, bm)
    sol = tn.solve(
        terms, solver, -sde.T, -sde.eps, x_T, dt0=sde.T - sde.eps,
        controller=tn.ConstantStepSize(step_ts=(-ts[1:-1]).tolist()),
        saveat=tn.SaveAt(t1=True), max_steps=4 * len(ts) + 16,
    )  # fmt: skip
    stats["nfe"] = int(sol.stats["num_fevals"])
    stats["num_steps"] = int(sol.stats["num_steps"])
    return sol.ys[-1]


def pc_sample(
    sde: AbstractForwardSDE,
    score: Score,
    x: torch.Tensor,
    ts: torch.Tensor,
    snr: float,
    corrector_steps: int,
    generator: torch.Generator | None,
    stats: dict[str, Any],
) -> torch.Tensor:
    r"""Predictor-corrector sampling (Song et al. 2021, Algorithms 2-3): at each grid time,
    ``corrector_steps`` Langevin steps $x \leftarrow x + \delta s + \sqrt{2\delta}\,z$ with
    $\delta = 2 a_i (r\,\|z\|/\|s\|)^2$ ($r$ = ``snr``, $a_i = e^{2 f(t_i)\Delta t}$, which is
    Song et al.'s $1 - \beta_i$ for VP and 1 for VE), then one Euler-Maruyama step of the
    reverse SDE."""
    nfe = 0
    b = x.shape[0]
    for i in range(len(ts) - 1):
        t, t_next = ts[i], ts[i + 1]
        dt = t - t_next
        for _ in range(corrector_steps):
            s = call_score(score, x, t)
            z = torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
            s_norm = s.reshape(b, -1).norm(dim=1).mean()
            z_norm = z.reshape(b, -1).norm(dim=1).mean()
            a = torch.exp(2 * sde.drift_coefficient(t) * dt).to(x.dtype)
            delta = 2 * a * (snr * z_norm / s_norm) ** 2
            x = x + delta * s + torch.sqrt(2 * delta) * z
            nfe += 1
        s = call_score(score, x, t)
        nfe += 1
        drift = sde.drift_coefficient(t).to(x.dtype) * x - sde.diffusion_squared(t).to(x.dtype) * s
        z = torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
        x = x - drift * dt.to(x.dtype) + sde.diffusion(t).to(x.dtype) * dt.sqrt().to(x.dtype) * z
    stats["nfe"] = nfe
    stats["num_steps"] = len(ts) - 1
    return x
