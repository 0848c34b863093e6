"""Sample-quality measures of the diffusion experiments: MMD and the Frechet distance."""

from __future__ import annotations

import torch

__all__ = ["frechet_distance", "mmd2", "parse_ints", "parse_names"]

#: RBF bandwidths of :func:`mmd2` (unit-scale data).
BANDWIDTHS = (0.05, 0.1, 0.2, 0.5, 1.0)


def mmd2(x: torch.Tensor, y: torch.Tensor, bandwidths: tuple[float, ...] = BANDWIDTHS) -> float:
    r"""The unbiased estimate of the squared maximum mean discrepancy between the samples ``x``
    and ``y`` (Gretton et al. 2012) for the sum of RBF kernels
    $\sum_h \exp(-\|a - b\|^2 / (2h^2))$: zero in expectation when they share a law."""
    x, y = x.double(), y.double()

    def k(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d2 = torch.cdist(a, b).pow(2)
        return sum(torch.exp(-d2 / (2 * h * h)) for h in bandwidths)  # type: ignore[return-value]

    n, m = len(x), len(y)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(sxx + syy - 2 * kxy.mean())


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    r"""$\|\mu_a - \mu_b\|^2 + \operatorname{tr}(\Sigma_a + \Sigma_b - 2(\Sigma_a^{1/2}\Sigma_b
    \Sigma_a^{1/2})^{1/2})$ between Gaussians fitted to feature sets (the FID formula,
    Heusel et al. 2017)."""
    a, b = a.double(), b.double()
    mu = a.mean(0) - b.mean(0)
    ca, cb = torch.cov(a.T), torch.cov(b.T)
    w, v = torch.linalg.eigh(ca)
    root_a = (v * w.clamp_min(0).sqrt()) @ v.T
    mid = torch.linalg.eigvalsh(root_a @ cb @ root_a).clamp_min(0).sqrt().sum()
    return float(mu @ mu + torch.trace(ca) + torch.trace(cb) - 2 * mid)


def parse_names(key: str, value: str, allowed: tuple[str, ...]) -> list[str]:
    names = [s.strip() for s in value.split(",") if s.strip()]
    bad = [s for s in names if s not in allowed]
    if not names or bad:
        raise ValueError(
            f"config key `{key}` must be a comma-separated list of {list(allowed)}, got {value!r}."
        )
    return names


def parse_ints(key: str, value: str) -> list[int]:
    try:
        out = [int(s) for s in value.split(",") if s.strip()]
    except ValueError:
        out = []
    if not out or any(v < 1 for v in out):
        raise ValueError(
            f"config key `{key}` must be a comma-separated list of positive ints, got {value!r}."
        )
    return out
