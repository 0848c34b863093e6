"""Sparse regressors for SINDy, batched over the targets in torch.

Each solves ``x_dot ~ theta @ xi.T`` for a sparse ``xi`` of shape ``(num_targets, num_terms)``
(PySINDy's ``coefficients()`` layout).
"""

from __future__ import annotations

import abc

import torch

__all__ = ["SR3", "STLSQ", "AbstractOptimizer"]


def _check_nonneg(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"`{name}` must be a number >= 0, got {value!r}.")
    return float(value)


def _check_iter(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`max_iter` must be an int >= 1, got {value!r}.")
    return value


def _masked_ridge(
    theta: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, alpha: float
) -> torch.Tensor:
    """Ridge regression of every target ``y[:, j]`` on the terms where ``mask[j]`` holds, all
    targets in one batched solve; coefficients off the mask are exactly zero."""
    gram = theta.T @ theta  # (p, p)
    rhs = theta.T @ y  # (p, d)
    m = mask.to(theta.dtype)  # (d, p)
    eye = torch.eye(gram.shape[0], dtype=theta.dtype, device=theta.device)
    a = m[:, :, None] * (gram + alpha * eye) * m[:, None, :] + (1 - m)[:, :, None] * eye
    b = m * rhs.T
    return torch.linalg.solve(a, b[:, :, None])[:, :, 0]


class AbstractOptimizer(abc.ABC):
    """A sparse regressor: ``fit(theta, x_dot)`` returns ``xi`` of shape
    ``(num_targets, num_terms)``."""

    @abc.abstractmethod
    def fit(self, theta: torch.Tensor, x_dot: torch.Tensor) -> torch.Tensor: ...


class STLSQ(AbstractOptimizer):
    r"""Sequentially thresholded least squares (Brunton, Proctor, Kutz 2016), PySINDy's default.

    Ridge regression ($\min \lVert y - \Theta \xi\rVert^2 + \alpha\lVert\xi\rVert^2$), then
    coefficients below ``threshold`` in magnitude are set to zero and the regression repeats on
    the remaining terms, until the support stops changing or ``max_iter`` passes; a last
    regression on the final support (unbiased when ``alpha=0``)."""

    def __init__(self, threshold: float = 0.1, alpha: float = 0.05, max_iter: int = 20) -> None:
        self.threshold = _check_nonneg("threshold", threshold)
        self.alpha = _check_nonneg("alpha", alpha)
        self.max_iter = _check_iter(max_iter)

    def fit(self, theta: torch.Tensor, x_dot: torch.Tensor) -> torch.Tensor:
        mask = torch.ones(x_dot.shape[1], theta.shape[1], dtype=torch.bool, device=theta.device)
        xi = _masked_ridge(theta, x_dot, mask, self.alpha)
        for _ in range(self.max_iter):
            new = mask & (xi.abs() >= self.threshold)
            if torch.equal(new, mask):
                break
            mask = new
            xi = _masked_ridge(theta, x_dot, mask, self.alpha)
        return xi * mask


class SR3(AbstractOptimizer):
    r"""Sparse relaxed regularised regression (Zheng et al. 2018; Champion et al. 2020) with the
    L0 penalty: alternate $w = \arg\min \tfrac12\lVert y - \Theta w\rVert^2 +
    \tfrac1{2\nu}\lVert w - u\rVert^2$ and $u = $ hard-threshold of $w$ at
    $\sqrt{2\,\mathrm{threshold}\,\nu}$ (PySINDy's convention), until $u$ moves less than
    ``tol``; returns $u$ refitted by least squares on its support."""

    def __init__(
        self, threshold: float = 0.1, nu: float = 1.0, max_iter: int = 100, tol: float = 1e-8
    ) -> None:
        self.threshold = _check_nonneg("threshold", threshold)
        self.nu = _check_nonneg("nu", nu)
        if self.nu == 0:
            raise ValueError("`nu` must be > 0, got 0.")
        self.max_iter = _check_iter(max_iter)
        self.tol = _check_nonneg("tol", tol)

    def fit(self, theta: torch.Tensor, x_dot: torch.Tensor) -> torch.Tensor:
        p = theta.shape[1]
        eye = torch.eye(p, dtype=theta.dtype, device=theta.device)
        a = theta.T @ theta + eye / self.nu
        rhs = theta.T @ x_dot  # (p, d)
        cut = (2 * self.threshold * self.nu) ** 0.5
        u = torch.linalg.lstsq(theta, x_dot).solution  # (p, d)
        for _ in range(self.max_iter):
            w = torch.linalg.solve(a, rhs + u / self.nu)
            new = torch.where(w.abs() >= cut, w, torch.zeros_like(w))
            done = (new - u).abs().max() <= self.tol
            u = new
            if done:
                break
        mask = (u != 0).T
        return _masked_ridge(theta, x_dot, mask, 0.0) * mask
