r"""Convex potential flows (CP-Flow, Huang, Chen, Tsirigotis, Courville 2021)."""

from __future__ import annotations

import math
import typing
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._config import describe
from .regularisers import gaussian_log_prob, sample_noise

__all__ = ["ICNN", "CPFlow"]


def _positive_int(owner: str, name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{owner}: `{name}` must be a positive int, got {v!r}.")
    return v


class ICNN(nn.Module):
    r"""A strongly convex input-convex neural network (Amos, Xu, Kolter 2017), as in CP-Flow:

    $$z_1 = s(A_0 x + b_0),\quad z_{k+1} = s(W_k^{+} z_k + A_k x + b_k),\quad
    F(x) = w^{+\top} z_L + a^\top x + \tfrac{\alpha}{2}\lVert x\rVert^2,$$

    with $s$ = softplus (convex and non-decreasing), the weights $W_k^{+}, w^{+}$ acting on
    the hidden units made positive by a softplus of free parameters, and
    $\alpha = \alpha_{\min} + \operatorname{softplus}(\cdot) > 0$ learned. A non-negative
    combination of convex non-decreasing functions of convex functions is convex, so $F$ is
    $\alpha$-strongly convex in $x$ and $\nabla F$ is invertible.

    Args:
        dim: input size $D$ (inputs ``(batch, D)``); the output has shape ``(batch,)``.
        hidden: width of the hidden layers.
        num_layers: number of hidden layers $L$.
        min_convexity: $\alpha_{\min} > 0$.
    """

    def __init__(
        self, dim: int, hidden: int = 64, num_layers: int = 3, min_convexity: float = 1e-2
    ) -> None:
        super().__init__()
        for name, v in (("dim", dim), ("hidden", hidden), ("num_layers", num_layers)):
            _positive_int("ICNN", name, v)
        if not isinstance(min_convexity, (int, float)) or not min_convexity > 0:
            raise ValueError(
                f"ICNN: `min_convexity` must be a positive number, got {min_convexity!r}."
            )
        self.dim, self.min_convexity = dim, float(min_convexity)
        self.inputs = nn.ModuleList([nn.Linear(dim, hidden) for _ in range(num_layers)])
        self.last_input = nn.Linear(dim, 1, bias=False)
        # Positive weights ~ 1/hidden at initialisation (softplus(r) ~ e^r for r << 0), so the
        # hidden units keep their scale through the layers.
        init = math.log(math.expm1(1.0 / hidden))
        self.hidden_weights = nn.ParameterList(
            [nn.Parameter(init + 0.1 * torch.randn(hidden, hidden)) for _ in range(num_layers - 1)]
        )
        self.last_weight = nn.Parameter(init + 0.1 * torch.randn(1, hidden))
        self.raw_convexity = nn.Parameter(torch.tensor(math.log(math.expm1(1.0))))

    @property
    def convexity(self) -> torch.Tensor:
        r"""The strong-convexity constant $\alpha$."""
        return self.min_convexity + F.softplus(self.raw_convexity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.softplus(self.inputs[0](x))
        for layer, w in zip(self.inputs[1:], self.hidden_weights):
            z = F.softplus(layer(x) + z @ F.softplus(w).T)
        out = self.last_input(x) + z @ F.softplus(self.last_weight).T
        return out.squeeze(-1) + 0.5 * self.convexity * (x * x).sum(-1)


def _grad(potential: nn.Module, x: torch.Tensor, graph: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x with grad, grad F(x))``."""
    with torch.enable_grad():
        xg = x if x.requires_grad else x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(potential(xg).sum(), xg, create_graph=True)
    if not graph:
        g = g.detach()
    return xg, g


def _hvp(g: torch.Tensor, x: torch.Tensor, v: torch.Tensor, graph: bool) -> torch.Tensor:
    r"""$\nabla^2 F(x)\,v$ per sample from $g = \nabla F(x)$ (built with a graph)."""
    with torch.enable_grad():
        (hv,) = torch.autograd.grad(g, x, v, create_graph=graph, retain_graph=True)
    return hv


def _hessian(g: torch.Tensor, x: torch.Tensor, graph: bool) -> torch.Tensor:
    """The per-sample Hessian ``(batch, D, D)`` by ``D`` Hessian-vector products."""
    eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    rows = [_hvp(g, x, eye[i].expand_as(x), graph) for i in range(x.shape[1])]
    return torch.stack(rows, 1)


def conjugate_gradient(
    matvec: Any, b: torch.Tensor, *, tol: float = 1e-6, max_iter: int = 100
) -> torch.Tensor:
    r"""Solve $A w = b$ per sample (rows of ``b``) for symmetric positive-definite $A$ given
    by ``matvec``, by conjugate gradients, to a residual $\lVert r\rVert \le$ ``tol``
    $\lVert b\rVert$ or ``max_iter`` iterations."""
    w = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = (r * r).sum(-1, keepdim=True)
    stop = (tol**2) * rr
    for _ in range(max_iter):
        if bool((rr <= stop).all()):
            break
        ap = matvec(p)
        pap = (p * ap).sum(-1, keepdim=True)
        alpha = torch.where(rr > stop, rr / pap.clamp_min(torch.finfo(b.dtype).tiny), 0.0)
        w = w + alpha * p
        r = r - alpha * ap
        rr_new = (r * r).sum(-1, keepdim=True)
        p = r + (rr_new / rr.clamp_min(torch.finfo(b.dtype).tiny)) * p
        rr = rr_new
    return w


class CPFlow(nn.Module):
    r"""A convex potential flow (Huang et al. 2021): the gradient map of strongly convex
    input-convex networks, composed over ``num_blocks`` blocks,

    $$z = f(x) = \nabla F_K \circ \dots \circ \nabla F_1(x),\qquad
    \log p(x) = \log\mathcal N(z; 0, I) + \sum_k \log\det \nabla^2 F_k(x_{k-1}).$$

    Each $\nabla F_k$ is the gradient of an $\alpha$-strongly convex :class:`ICNN`, hence a
    bijection with a symmetric positive-definite Jacobian (the Hessian): by Brenier's theorem
    one block can already express the optimal-transport map between the data and the base.

    - **Inversion** (:meth:`inverse`, :meth:`sample`): $x = \nabla F^*(z)$ is the minimiser of
      the strongly convex $F(x) - \langle x, z\rangle$, found per sample by damped Newton
      (exact Hessian, backtracking line search; the default for $D \le 16$) or by L-BFGS.
    - **Log-determinant**: ``log_prob`` computes it exactly (Cholesky of the $D\times D$
      Hessian from $D$ Hessian-vector products; low dimension). For training in higher
      dimension, :meth:`surrogate_log_prob` uses the paper's stochastic estimator of its
      gradient, $\partial_\theta \log\det H = \mathbb E_v[v^\top H^{-1}(\partial_\theta H)v]$
      with $\mathbb E[vv^\top] = I$: $H^{-1}v$ is solved by conjugate gradients on
      Hessian-vector products (no graph), and the returned value
      $\log\mathcal N(z) + \sum_k \operatorname{sg}[H_k^{-1}v]^\top H_k v$ has that gradient
      (its value is not $\log p$).

    Args:
        dim: data dimension $D$ (inputs ``(batch, D)``).
        hidden, num_layers, min_convexity: of each :class:`ICNN` block.
        num_blocks: number of composed gradient maps.
        noise: ``"rademacher"`` or ``"gaussian"`` probes of the stochastic estimator.
        cg_tol, cg_max_iter: conjugate-gradient stopping rule (relative residual).

    Reference:
        C.-W. Huang, R. T. Q. Chen, C. Tsirigotis, A. Courville, "Convex potential flows:
        universal probability distributions with optimal transport and convex optimization",
        ICLR 2021.
    """

    def __init__(
        self,
        dim: int,
        *,
        hidden: int = 64,
        num_layers: int = 3,
        num_blocks: int = 1,
        min_convexity: float = 1e-2,
        noise: str = "rademacher",
        cg_tol: float = 1e-4,
        cg_max_iter: int = 50,
    ) -> None:
        super().__init__()
        _positive_int("CPFlow", "dim", dim)
        _positive_int("CPFlow", "num_blocks", num_blocks)
        _positive_int("CPFlow", "cg_max_iter", cg_max_iter)
        if noise not in ("gaussian", "rademacher"):
            raise ValueError(f"CPFlow: `noise` must be 'gaussian' or 'rademacher', got {noise!r}.")
        if not isinstance(cg_tol, (int, float)) or not cg_tol > 0:
            raise ValueError(f"CPFlow: `cg_tol` must be a positive number, got {cg_tol!r}.")
        self.dim = dim
        self.blocks = nn.ModuleList(
            [ICNN(dim, hidden, num_layers, min_convexity) for _ in range(num_blocks)]
        )
        self.noise, self.cg_tol, self.cg_max_iter = noise, float(cg_tol), cg_max_iter

    def _check(self, x: Any, name: str = "x") -> None:
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(
                f"CPFlow: `{name}` must have shape (batch, {self.dim}), got {describe(x)}."
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r"""The map $z = f(x)$ to the base, ``(batch, D)``."""
        self._check(x)
        graph = torch.is_grad_enabled()
        for block in self.blocks:
            x = _grad(block, x, graph)[1]
        return x

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        r"""The exact log-density ``(batch,)``: the log-determinants by Cholesky of each
        block's Hessian (``D`` Hessian-vector products per block)."""
        self._check(x)
        graph = torch.is_grad_enabled()
        logdet = x.new_zeros(x.shape[0])
        for block in self.blocks:
            xg, g = _grad(block, x, True)
            h = _hessian(g, xg, graph)
            chol, info = torch.linalg.cholesky_ex(h)
            ld = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
            if bool((info != 0).any()):  # numerically indefinite: fall back to slogdet
                ld = torch.where(info == 0, ld, torch.linalg.slogdet(h)[1])
            logdet = logdet + ld
            x = g if graph else g.detach()
        return gaussian_log_prob(x) + logdet

    def surrogate_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        r"""A per-sample training objective ``(batch,)`` whose gradient is the stochastic
        estimate of $\nabla\log p(x)$ of Huang et al. (2021): one probe $v$ per
        sample and block, $H^{-1}v$ by conjugate gradients. Its value is not $\log p(x)$;
        evaluate with :meth:`log_prob`."""
        self._check(x)
        surrogate = x.new_zeros(x.shape[0])
        for block in self.blocks:
            xg, g = _grad(block, x, True)
            v = sample_noise(xg, self.noise)
            w = conjugate_gradient(
                lambda u, g=g, xg=xg: _hvp(g, xg, u, False).detach(),
                v.detach(),
                tol=self.cg_tol,
                max_iter=self.cg_max_iter,
            )
            surrogate = surrogate + (w.detach() * _hvp(g, xg, v, True)).sum(-1)
            x = g
        return gaussian_log_prob(x) + surrogate

    def inverse(
        self,
        z: torch.Tensor,
        *,
        method: str | None = None,
        tol: float = 1e-6,
        max_iter: int = 100,
    ) -> torch.Tensor:
        r"""Invert the map: $x = f^{-1}(z)$, block by block from the last, each by convex
        optimisation of $F(x) - \langle x, z\rangle$ until
        $\max\lvert\nabla F(x) - z\rvert \le$ ``tol``.

        Args:
            z: ``(batch, D)``.
            method: ``"newton"`` (damped Newton with the exact Hessian; default for
                $D \le 16$) or ``"lbfgs"`` (``torch.optim.LBFGS``, strong Wolfe).
            tol: tolerance on the gradient residual.
            max_iter: iterations per block.

        Returns:
            ``(batch, D)``, detached (no gradient flows through the optimiser).

        Raises:
            ValueError: for a bad ``method``, ``tol`` or ``max_iter``.
        """
        self._check(z, "z")
        if method is None:
            method = "newton" if self.dim <= 16 else "lbfgs"
        if method not in ("newton", "lbfgs"):
            raise ValueError(
                f"CPFlow.inverse: `method` must be 'newton' or 'lbfgs', got {method!r}."
            )
        if not isinstance(tol, (int, float)) or not tol > 0:
            raise ValueError(f"CPFlow.inverse: `tol` must be a positive number, got {tol!r}.")
        _positive_int("CPFlow.inverse", "max_iter", max_iter)
        solve = _newton if method == "newton" else _lbfgs
        x = z.detach()
        for block in reversed(self.blocks):
            x = solve(typing.cast(ICNN, block), x, tol, max_iter)
        return x

    def sample(
        self,
        n: int,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
        tol: float = 1e-6,
    ) -> torch.Tensor:
        """``n`` samples ``(n, D)``: base noise through :meth:`inverse`."""
        _positive_int("CPFlow.sample", "n", n)
        p = next(iter(self.parameters()))
        z = torch.randn(
            (n, self.dim), dtype=dtype or p.dtype, device=device or p.device, generator=generator
        )
        return self.inverse(z, tol=tol)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_blocks={len(self.blocks)}, noise={self.noise!r}"


def _newton(block: ICNN, z: torch.Tensor, tol: float, max_iter: int) -> torch.Tensor:
    r"""Damped Newton on $G(x) = F(x) - \langle x, z\rangle$ per sample: the step
    $H^{-1}(\nabla F - z)$, halved until Armijo's condition holds (G is strongly convex, so
    the full step is accepted near the solution and convergence is quadratic)."""
    x = z / block.convexity.detach()  # the minimiser for F = alpha/2 |x|^2

    def objective(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return block(x) - (x * z).sum(-1)

    for _ in range(max_iter):
        xg, g = _grad(block, x, True)
        r = g - z
        r = r.detach()
        if float(r.abs().max()) <= tol:
            break
        h = _hessian(g, xg, False)
        step = torch.linalg.solve(h, r.unsqueeze(-1)).squeeze(-1)
        slope = (r * step).sum(-1)
        g0 = objective(x)
        # Armijo's condition up to rounding of G: near the solution the decrease is below
        # the resolution of G and the full Newton step must be accepted.
        slack = 16 * torch.finfo(g0.dtype).eps * (1 + g0.abs())
        t = torch.ones_like(g0)
        x_new = x - step
        for _ in range(30):
            bad = objective(x_new) > g0 - 1e-4 * t * slope + slack
            if not bool(bad.any()):
                break
            t = torch.where(bad, 0.5 * t, t)
            x_new = x - t.unsqueeze(-1) * step
        x = x_new.detach()
    return x


def _lbfgs(block: ICNN, z: torch.Tensor, tol: float, max_iter: int) -> torch.Tensor:
    """L-BFGS on the sum over the batch of the separable objectives, then Newton-CG steps
    until the gradient residual is within ``tol``."""
    x = (z / block.convexity.detach()).clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [x], lr=1, max_iter=max_iter, tolerance_grad=tol, tolerance_change=0.0,
        history_size=20, line_search_fn="strong_wolfe",
    )  # fmt: skip

    def closure() -> torch.Tensor:
        with torch.enable_grad():
            loss = (block(x) - (x * z).sum(-1)).sum()
            (x.grad,) = torch.autograd.grad(loss, x)
        return loss.detach()

    opt.step(closure)
    x = x.detach()
    # L-BFGS's line search reads the objective, whose decrease near the solution (about
    # |residual|^2 / alpha) falls below its rounding before the residual reaches a tight `tol`
    # (float64: it stalls near 1e-9); Newton-CG steps (Hessian-vector products, conjugate
    # gradients, the full step) read the residual itself and finish the job.
    for _ in range(max_iter):
        xg, g = _grad(block, x, True)
        r = (g - z).detach()
        if float(r.abs().max()) <= tol:
            break
        step = conjugate_gradient(
            lambda u, g=g, xg=xg: _hvp(g, xg, u, False).detach(), r, tol=1e-3, max_iter=50
        )
        x = (x - step).detach()
    return x
