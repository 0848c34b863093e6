r"""The probability-flow ODE: deterministic sampling and exact likelihoods (Song et al. 2021).

The ODE

$$\frac{dx}{dt} = f(t)\,x - \tfrac12 g(t)^2\,\nabla_x \log p_t(x)$$

has the marginals $p_t$ of the forward SDE. Solved from $T$ to $\epsilon$ from prior noise it
samples; solved from $\epsilon$ to $T$ it is a continuous normalising flow, so the
instantaneous change of variables gives the exact log-likelihood of the model,

$$\log p_\epsilon(x) = \log p_T(x(T)) + \int_\epsilon^T \nabla\cdot
\Big(f x - \tfrac12 g^2 s_\theta\Big)(t, x(t))\,dt,$$

computed here by :class:`torchnde.models.CNF` (exact trace, or Hutchinson's estimator with
one probe held fixed along the trajectory).
"""

from __future__ import annotations

import math
from typing import Any

import torch

import torchnde as tn

from ._checks import check_positive, check_score, check_sde, check_steps, describe
from .base import AbstractForwardSDE, _per_sample
from .score import Score, call_score

__all__ = ["bits_per_dim", "log_prob", "probability_flow", "pf_ode_sample"]


def probability_flow(sde: AbstractForwardSDE, score: Score) -> Any:
    """The probability-flow vector field ``f(t, x)`` of ``sde`` with ``score``."""

    def vector_field(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        s = call_score(score, x, t)
        half_g2 = 0.5 * _per_sample(sde.diffusion_squared(t), x)
        return _per_sample(sde.drift_coefficient(t), x) * x - half_g2 * s

    return vector_field


def pf_ode_sample(
    sde: AbstractForwardSDE,
    score: Score,
    x_T: torch.Tensor,
    ts: torch.Tensor | None,
    solver: tn.AbstractSolver,
    rtol: float,
    atol: float,
    stats: dict[str, Any],
) -> torch.Tensor:
    """Solve the probability-flow ODE from ``x_T`` at ``T`` to ``eps``: adaptively at
    ``rtol``/``atol`` when ``ts`` is None, else stepping exactly on the grid ``ts``."""
    f = probability_flow(sde, score)
    term = tn.ODETerm(lambda t, y, args: f(t, y))
    kw: dict[str, Any] = {}
    if ts is None:
        if not solver.is_adaptive:
            raise ValueError(
                f"sample: {solver!r} is a fixed-step solver; pass `steps=` for the "
                "probability-flow ODE, or an adaptive solver such as Tsit5()."
            )
        kw["controller"] = tn.PIDController(rtol=rtol, atol=atol)
    else:
        kw["controller"] = tn.ConstantStepSize(step_ts=ts[1:-1].tolist())
        kw["dt0"] = sde.eps - sde.T
    sol = tn.solve(term, solver, sde.T, sde.eps, x_T, saveat=tn.SaveAt(t1=True), **kw)
    stats["nfe"] = int(sol.stats["num_fevals"])
    stats["num_steps"] = int(sol.stats["num_steps"])
    return sol.ys[-1]


def log_prob(
    sde: AbstractForwardSDE,
    score: Score,
    x: torch.Tensor,
    *,
    trace: str = "exact",
    noise: str = "rademacher",
    solver: tn.AbstractSolver | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    steps: int = 100,
    stats: dict[str, Any] | None = None,
) -> torch.Tensor:
    r"""The model's log-density $\log p_\epsilon(x)$ in nats per sample, ``(batch,)``, by the
    probability-flow ODE from $\epsilon$ to $T$ and the prior at $T$ (see the module).

    Args:
        sde: the forward SDE.
        score: ``score(x, t)``.
        x: data, ``(batch, *event)``.
        trace: ``"exact"`` (one vector-Jacobian product per dimension; small data) or
            ``"hutchinson"`` (one, with a probe drawn once per call and held fixed along the
            trajectory: an unbiased estimate of the log-density).
        noise: the Hutchinson probe, ``"rademacher"`` or ``"gaussian"``.
        solver: an ODE solver, :class:`torchnde.Tsit5` by default.
        rtol, atol: its tolerances (adaptive solvers).
        steps: the number of equal steps of a fixed-step solver.
        stats: a dict to fill with the solve's ``nfe`` (vector-field evaluations).

    Reference:
        Y. Song et al., "Score-based generative modeling through stochastic differential
        equations", ICLR 2021, Sec. 4.3 and App. D.2.
    """
    check_sde("log_prob", sde)
    check_score("log_prob", score)
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or not torch.is_floating_point(x):
        raise ValueError(
            f"log_prob: `x` must be a floating tensor of shape (batch, *event), got {describe(x)}."
        )
    if trace not in ("exact", "hutchinson"):
        raise ValueError(f"log_prob: `trace` must be 'exact' or 'hutchinson', got {trace!r}.")
    check_positive("log_prob", "rtol", rtol)
    check_positive("log_prob", "atol", atol)
    solver = tn.Tsit5() if solver is None else solver
    f = probability_flow(sde, score)
    kw: dict[str, Any] = {}
    if solver.is_adaptive:
        kw.update(rtol=rtol, atol=atol)
    else:
        kw.update(dt0=(sde.T - sde.eps) / check_steps("log_prob", steps))
    cnf = tn.models.CNF(
        f, tuple(x.shape[1:]), trace=trace, noise=noise, solver=solver, t0=sde.eps, t1=sde.T,
        **kw,
    )  # fmt: skip
    z, delta, _ = cnf.flow(x)
    if stats is not None:
        stats["nfe"] = int(cnf.last_stats["num_fevals"])
    return sde.prior_log_prob(z) + delta


def bits_per_dim(
    sde: AbstractForwardSDE,
    score: Score,
    k: torch.Tensor,
    *,
    num_levels: int,
    scale: float | torch.Tensor = 1.0,
    shift: float | torch.Tensor = 0.0,
    generator: torch.Generator | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    r"""Bits per dimension of discrete data by uniform dequantisation, per sample.

    ``k`` holds integers in $\{0, \dots, K-1\}$ ($K$ = ``num_levels``); the model sees
    $x = a\,(k + u)/K + b$ with $u \sim U[0, 1)^D$ (``scale`` $a$, ``shift`` $b$, per
    dimension or scalars). The discrete probability is bounded by
    $\log P(k) \ge \mathbb E_u \log p(x) + \sum_d \log|a_d| - D\log K$
    (Theis et al. 2016; Ho et al. 2019), and the result is
    $-(\log p(x) + \sum_d\log|a_d| - D\log K)/(D\log 2)$ for one draw of $u$ (average over
    samples for the bound). ``kwargs`` go to :func:`log_prob`.
    """
    if isinstance(num_levels, bool) or not isinstance(num_levels, int) or num_levels < 2:
        raise ValueError(f"bits_per_dim: `num_levels` must be an int >= 2, got {num_levels!r}.")
    if not isinstance(k, torch.Tensor) or k.ndim < 2:
        raise ValueError(
            f"bits_per_dim: `k` must be a tensor of shape (batch, *event), got {describe(k)}."
        )
    kf = k.to(torch.get_default_dtype()) if not torch.is_floating_point(k) else k
    if bool((kf < 0).any()) or bool((kf > num_levels - 1).any()) or bool((kf != kf.round()).any()):
        raise ValueError(
            f"bits_per_dim: `k` must hold integers in [0, {num_levels - 1}] (num_levels="
            f"{num_levels}); got values in [{float(kf.min())}, {float(kf.max())}]."
        )
    u = torch.rand(kf.shape, dtype=kf.dtype, device=kf.device, generator=generator)
    a = torch.as_tensor(scale, dtype=kf.dtype, device=kf.device)
    x = a * (kf + u) / num_levels + torch.as_tensor(shift, dtype=kf.dtype, device=kf.device)
    d = kf[0].numel()
    log_abs_scale = torch.log(a.abs()).expand(kf.shape[1:]).sum()
    logp = log_prob(sde, score, x, **kwargs) + log_abs_scale - d * math.log(num_levels)
    return -logp / (d * math.log(2))
