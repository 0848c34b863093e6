r"""Deep equilibrium layers: the output is a fixed point, differentiated implicitly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ._config import describe

__all__ = ["DEQ", "anderson", "broyden"]

Map = Callable[[torch.Tensor], torch.Tensor]


def _residual(fz: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Per-sample relative residual |f(z) - z| / (|f(z)| + tiny) of flattened ``(b, D)``."""
    return (fz - z).norm(dim=1) / (fz.norm(dim=1) + 1e-12)


def anderson(
    g: Map, z0: torch.Tensor, *, max_iters: int = 50, tol: float = 1e-6, memory: int = 5,
    beta: float = 1.0, ridge: float | None = None,
) -> tuple[torch.Tensor, int, float]:  # fmt: skip
    r"""Anderson acceleration (type II, Walker & Ni 2011) of $z = g(z)$ on ``(batch, D)``
    states: the next iterate mixes the last ``memory`` images $g(z_i)$ with weights
    $\alpha$ minimising $\|\sum_i \alpha_i (g(z_i) - z_i)\|$ subject to $\sum_i \alpha_i = 1$
    (per sample, a small least-squares solve regularised by ``ridge`` relative to the mean
    squared residual; default: the square root of the dtype's machine epsilon), damped by
    ``beta``.
    Returns the iterate, the iterations used and the largest relative residual."""
    b, d = z0.shape
    lam = torch.finfo(z0.dtype).eps ** 0.5 if ridge is None else ridge
    m = max(1, min(memory, max_iters))
    xs = z0.new_zeros(b, m, d)
    fs = z0.new_zeros(b, m, d)
    xs[:, 0] = z0
    fs[:, 0] = g(z0)
    res = float(_residual(fs[:, 0], xs[:, 0]).max())
    if res <= tol or max_iters <= 1:
        return fs[:, 0], 1, res
    z = fs[:, 0]
    for k in range(1, max_iters):
        n = min(k, m)
        gk = fs[:, :n] - xs[:, :n]  # (b, n, d)
        # [0 1^T; 1 G G^T] [mu; alpha] = [1; 0]
        h = z0.new_zeros(b, n + 1, n + 1)
        h[:, 0, 1:] = 1
        h[:, 1:, 0] = 1
        gram = gk @ gk.transpose(1, 2)
        scale = torch.diagonal(gram, dim1=1, dim2=2).mean(1)[:, None, None]
        scale = scale.clamp_min(torch.finfo(z0.dtype).tiny / lam)
        eye = torch.eye(n, dtype=z0.dtype, device=z0.device)
        h[:, 1:, 1:] = gram + lam * scale * eye
        rhs = z0.new_zeros(b, n + 1, 1)
        rhs[:, 0] = 1
        alpha = torch.linalg.solve(h, rhs)[:, 1:, 0]  # (b, n)
        z = beta * torch.einsum("bn,bnd->bd", alpha, fs[:, :n])
        if beta != 1.0:
            z = z + (1 - beta) * torch.einsum("bn,bnd->bd", alpha, xs[:, :n])
        j = k % m
        xs[:, j] = z
        fs[:, j] = g(z)
        res = float(_residual(fs[:, j], z).max())
        if res <= tol:
            return fs[:, j], k + 1, res
    return fs[:, (max_iters - 1) % m], max_iters, res


def broyden(
    g: Map, z0: torch.Tensor, *, max_iters: int = 50, tol: float = 1e-6, memory: int | None = None,
) -> tuple[torch.Tensor, int, float]:  # fmt: skip
    r"""Broyden's ("good") quasi-Newton method for the root of $r(z) = g(z) - z$ on
    ``(batch, D)`` states, with the inverse Jacobian kept as $-I + UV^\top$ and updated by
    Sherman–Morrison after each step (limited memory: the oldest pair is dropped). Returns
    the iterate, the iterations used and the largest relative residual."""
    b, d = z0.shape
    mem = max_iters if memory is None else memory
    us: list[torch.Tensor] = []
    vs: list[torch.Tensor] = []

    def inv_mul(x: torch.Tensor) -> torch.Tensor:  # J^{-1} x
        out = -x
        for u, v in zip(us, vs):
            out = out + u * (v * x).sum(1, keepdim=True)
        return out

    def mul_inv(x: torch.Tensor) -> torch.Tensor:  # x^T J^{-1}
        out = -x
        for u, v in zip(us, vs):
            out = out + v * (x * u).sum(1, keepdim=True)
        return out

    z = z0
    gz = g(z)
    r = gz - z
    res = float(_residual(gz, z).max())
    it = 1
    while res > tol and it < max_iters:
        dz = -inv_mul(r)
        z_new = z + dz
        g_new = g(z_new)
        r_new = g_new - z_new
        it += 1
        dr = r_new - r
        jdr = inv_mul(dr)
        vt = mul_inv(dz)
        denom = (vt * dr).sum(1, keepdim=True)
        ok = denom.abs() > 1e-30
        u = torch.where(ok, (dz - jdr) / torch.where(ok, denom, 1.0), 0.0)
        us.append(u)
        vs.append(vt)
        if len(us) > mem:
            us.pop(0)
            vs.pop(0)
        z, gz, r = z_new, g_new, r_new
        res = float(_residual(gz, z).max())
    return gz, it, res


class DEQ(nn.Module):
    r"""A deep equilibrium layer (Bai et al. 2019): the output is the fixed point
    $z^* = f_\theta(z^*, x)$, the limit of an infinitely deep weight-tied network, found by
    Anderson acceleration or Broyden's method.

    Gradients by the implicit function theorem, never through the iterations (memory does
    not grow with their number): for a loss $L(z^*)$,
    $\frac{dL}{d\theta} = u^\top \frac{\partial f}{\partial \theta}$ with
    $u = \big(\frac{\partial f}{\partial z}\big)^{\!\top} u + \frac{\partial L}{\partial z^*}$,
    a linear fixed point solved in the backward pass with the same method (as
    :class:`~torchnde.ImplicitAdjoint` does for an equilibrium of an ODE). It is attached as a
    gradient hook on one extra application $f(z^*, x)$, whose graph carries the gradient to
    $\theta$ and $x$.

    Args:
        f: ``f(z, x)`` returning the next ``z`` (shape of ``z``).
        method: ``"anderson"`` or ``"broyden"``.
        max_iters, tol: forward iteration budget and relative-residual tolerance.
        backward_max_iters, backward_tol: the same for the backward linear solve.
        memory: Anderson's history / Broyden's number of low-rank pairs.
        beta: Anderson damping.
        throw: raise ``RuntimeError`` when the forward (or backward) iteration does not reach
            its tolerance; ``False`` returns the last iterate (see ``last_stats``).

    ``forward(x, z0=None)`` starts from ``z0`` (zeros shaped like ``x`` by default); states
    have a leading batch dimension. ``self.last_stats`` holds ``iterations`` and
    ``residual`` (and ``backward_iterations`` after a backward pass).

    References:
        S. Bai, J. Z. Kolter, V. Koltun, "Deep equilibrium models", NeurIPS 2019.

        H. F. Walker, P. Ni, "Anderson acceleration for fixed-point iterations", SIAM J.
        Numer. Anal. 49(4), 2011.
    """

    def __init__(
        self,
        f: Any,
        method: str = "anderson",
        *,
        max_iters: int = 50,
        tol: float = 1e-6,
        backward_max_iters: int | None = None,
        backward_tol: float | None = None,
        memory: int = 5,
        beta: float = 1.0,
        throw: bool = True,
    ) -> None:
        super().__init__()
        if not callable(f):
            raise TypeError(f"DEQ: `f` must be a module f(z, x), got {describe(f)}.")
        if method not in ("anderson", "broyden"):
            raise ValueError(f"DEQ: `method` must be 'anderson' or 'broyden', got {method!r}.")
        if isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 1:
            raise ValueError(f"DEQ: `max_iters` must be a positive int, got {max_iters!r}.")
        if not tol > 0:
            raise ValueError(f"DEQ: `tol` must be positive, got {tol!r}.")
        self.f, self.method = f, method
        self.max_iters, self.tol = max_iters, tol
        self.backward_max_iters = max_iters if backward_max_iters is None else backward_max_iters
        self.backward_tol = tol if backward_tol is None else backward_tol
        self.memory, self.beta, self.throw = memory, beta, throw
        self.last_stats: dict[str, Any] = {}

    def _solve(self, g: Map, z0: torch.Tensor, max_iters: int, tol: float, what: str) -> Any:
        if self.method == "anderson":
            z, it, res = anderson(g, z0, max_iters=max_iters, tol=tol, memory=self.memory,
                                  beta=self.beta)  # fmt: skip
        else:
            z, it, res = broyden(g, z0, max_iters=max_iters, tol=tol, memory=self.memory * 4)
        if self.throw and res > tol:
            raise RuntimeError(
                f"DEQ: the {what} {self.method} iteration did not converge: relative residual "
                f"{res:.3g} > tol={tol:g} after {it} iterations; raise `max_iters`, make f "
                "more contractive, or pass throw=False."
            )
        return z, it, res

    def forward(self, x: torch.Tensor, z0: torch.Tensor | None = None) -> torch.Tensor:
        z_init = torch.zeros_like(x) if z0 is None else z0
        if z_init.ndim < 1:
            raise ValueError(f"DEQ: states need a batch dimension, got {describe(z_init)}.")
        shape, b = z_init.shape, z_init.shape[0]
        f = self.f

        def g(zf: torch.Tensor) -> torch.Tensor:
            return f(zf.reshape(shape), x).reshape(b, -1)

        with torch.no_grad():
            z_flat, it, res = self._solve(g, z_init.reshape(b, -1), self.max_iters, self.tol,
                                          "forward")  # fmt: skip
        self.last_stats = {"iterations": it, "residual": res}
        z_star = z_flat.reshape(shape)
        if not torch.is_grad_enabled():
            return z_star
        z = f(z_star, x)  # carries the gradient to theta and x; z_star itself is detached
        if not z.requires_grad:
            return z
        z_at = z.detach().requires_grad_(True)
        with torch.enable_grad():
            f_at = f(z_at, x)
        stats = self.last_stats

        def implicit(grad: torch.Tensor | None) -> torch.Tensor | None:
            if grad is None:  # an undefined incoming gradient stays undefined
                return None
            gflat = grad.reshape(b, -1)

            def lin(u: torch.Tensor) -> torch.Tensor:  # u -> J^T u + grad
                (jt,) = torch.autograd.grad(f_at, z_at, u.reshape(shape), retain_graph=True)
                return jt.reshape(b, -1) + gflat

            u, bit, _ = self._solve(lin, gflat, self.backward_max_iters, self.backward_tol,
                                    "backward")  # fmt: skip
            stats["backward_iterations"] = bit
            return u.reshape(shape)

        z.register_hook(implicit)  # type: ignore[arg-type]
        return z

    def extra_repr(self) -> str:
        return f"method={self.method!r}, max_iters={self.max_iters}, tol={self.tol:g}"
