r"""PDE-Net (Long, Lu, Ma, Dong 2018; PDE-Net 2.0, Long, Lu, Dong 2019): learn an evolution
PDE $u_t = F(u, \partial_x u, \partial_y u, \partial_{xx} u, \dots)$ on a periodic grid from
snapshots, with moment-constrained convolution filters for the derivatives and a symbolic
network for $F$.

**Moment-constrained filters.** A filter $q$ of size $N \times N$ acts as
$(q \circledast u)_{mn} = \sum_{k,l} q_{kl}\, u_{m+k,\,n+l}$ with offsets
$k, l \in \{-\tfrac{N-1}{2}, \dots, \tfrac{N-1}{2}\}$. Taylor's theorem gives
$q \circledast u = \sum_{a,b} M_{ab}\, h_x^a h_y^b\, \partial_x^a \partial_y^b u$ with the
moment matrix $M_{ab} = \tfrac{1}{a!\,b!} \sum_{k,l} k^a l^b q_{kl}$, i.e. $M = V q V^\top$
with $V_{ak} = k^a / a!$ (invertible). So $q \circledast u / (h_x^\alpha h_y^\beta)$
approximates $\partial_x^\alpha \partial_y^\beta u$ to order $r$ when
$M_{ab} = \delta_{(a,b),(\alpha,\beta)}$ for all $a + b \le \alpha + \beta + r - 1$; the other
moments are free (learned), and the filter is $q = V^{-1} M V^{-\top}$. Such a filter is exact
on polynomials of total degree $\le \alpha + \beta + r - 1$, whatever its free moments.

**Symbolic network** (SymNet, PDE-Net 2.0): from inputs $z^{(0)} \in \mathbb R^m$, layer $i$
appends the product of two affine maps, $z^{(i)} = (z^{(i-1)}, (w_i^\top z^{(i-1)} + c_i)
(\tilde w_i^\top z^{(i-1)} + \tilde c_i))$, and the output is affine in $z^{(L)}$: a polynomial
of degree $\le 2^L$ whose expanded form is read off symbolically (:meth:`SymNet.expression`).

**δt-blocks.** One block is a forward-Euler step $u \mapsto u + \delta t\, F(\dots)$; $K$
blocks (shared parameters) predict $K$ steps ahead, trained on the sum of the errors of all
of them. :class:`PDENet` is a vector field for ``torchnde.ODETerm``, so the blocks are
``torchnde.solve`` with ``Euler`` and ``ConstantStepSize`` (:meth:`PDENet.rollout`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MomentFilter", "PDENet", "SymNet", "derivative_name", "moment_matrix"]


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"`{name}` must be an int >= {low}, got {value!r}.")
    return value


def _vandermonde(kernel_size: int, dtype: torch.dtype) -> torch.Tensor:
    """``V[a, k] = k^a / a!`` over the offsets ``k = -(N-1)/2 .. (N-1)/2``."""
    half = (kernel_size - 1) // 2
    k = torch.arange(-half, half + 1, dtype=torch.float64)
    a = torch.arange(kernel_size, dtype=torch.float64)
    fact = torch.tensor([math.factorial(int(i)) for i in a], dtype=torch.float64)
    return (k[None, :] ** a[:, None] / fact[:, None]).to(dtype)


def moment_matrix(kernel: torch.Tensor) -> torch.Tensor:
    r"""The moment matrix $M = V q V^\top$ of a square filter ``kernel`` ``(N, N)`` (odd N)."""
    v = _vandermonde(kernel.shape[-1], kernel.dtype).to(kernel.device)
    return v @ kernel @ v.T


def derivative_name(alpha: int, beta: int, names: tuple[str, str] = ("x", "y")) -> str:
    """``u``, ``u_x``, ``u_xy``, ``u_yy``, ... for the derivative of orders ``(alpha, beta)``."""
    sub = names[0] * alpha + names[1] * beta
    return f"u_{sub}" if sub else "u"


class MomentFilter(nn.Module):
    r"""An ``N x N`` convolution filter approximating $\partial_x^\alpha \partial_y^\beta$ to
    order ``order`` on a grid of spacings ``(dx, dy)``, by its moment matrix (module docstring):
    the moments of total degree $< \alpha + \beta + \mathrm{order}$ are fixed, the others
    learned (``learnable=False`` freezes them; they start at zero).

    ``forward(u)`` takes ``u`` of shape ``(..., H, W)`` (``x`` along ``H``, ``y`` along ``W``)
    and returns the derivative estimate, same shape; ``padding="periodic"`` wraps around,
    ``"valid"`` returns the interior ``(..., H - N + 1, W - N + 1)`` only.

    Raises:
        ValueError: ``kernel_size`` not odd or too small for the derivative and order
            (it needs ``kernel_size >= alpha + beta + order``), bad orders or spacings.
    """

    def __init__(
        self,
        alpha: int,
        beta: int,
        *,
        kernel_size: int = 5,
        order: int = 2,
        dx: float = 1.0,
        dy: float | None = None,
        learnable: bool = True,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        self.alpha = _check_int("alpha", alpha, 0)
        self.beta = _check_int("beta", beta, 0)
        self.order = _check_int("order", order, 1)
        n = _check_int("kernel_size", kernel_size, 1)
        if n % 2 == 0:
            raise ValueError(f"`kernel_size` must be odd, got {kernel_size}.")
        fixed_degree = alpha + beta + order - 1
        if fixed_degree > n - 1:
            raise ValueError(
                f"`kernel_size` {n} is too small for the derivative ({alpha}, {beta}) to order "
                f"{order}: it must be >= alpha + beta + order = {fixed_degree + 1}."
            )
        dy = dx if dy is None else dy
        for name, value in (("dx", dx), ("dy", dy)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"`{name}` must be a number > 0, got {value!r}.")
        self.kernel_size, self.dx, self.dy = n, float(dx), float(dy)
        a = torch.arange(n)
        fixed = (a[:, None] + a[None, :]) <= fixed_degree
        target = torch.zeros(n, n, dtype=dtype)
        target[alpha, beta] = 1.0
        self.register_buffer("fixed_mask", fixed)
        self.register_buffer("fixed_moments", target)
        self.register_buffer("v_inv", torch.linalg.inv(_vandermonde(n, torch.float64)).to(dtype))
        free = torch.zeros(n, n, dtype=dtype)
        self.free_moments = nn.Parameter(free, requires_grad=learnable)

    def moments(self) -> torch.Tensor:
        """The moment matrix ``(N, N)``: fixed entries and the learned ones."""
        mask = cast(torch.Tensor, self.fixed_mask)
        return torch.where(mask, cast(torch.Tensor, self.fixed_moments), self.free_moments)

    def kernel(self) -> torch.Tensor:
        r"""The filter $q = V^{-1} M V^{-\top}$ divided by $h_x^\alpha h_y^\beta$, ``(N, N)``."""
        v_inv = cast(torch.Tensor, self.v_inv)
        scale = self.dx**self.alpha * self.dy**self.beta
        return v_inv @ self.moments() @ v_inv.T / scale

    def forward(self, u: torch.Tensor, padding: str = "periodic") -> torch.Tensor:
        return _convolve(u, self.kernel()[None], padding)[..., 0, :, :]


def _convolve(u: torch.Tensor, kernels: torch.Tensor, padding: str) -> torch.Tensor:
    """``u`` ``(..., H, W)`` correlated with ``kernels`` ``(C, N, N)``: ``(..., C, H', W')``."""
    if padding not in ("periodic", "valid"):
        raise ValueError(f"`padding` must be 'periodic' or 'valid', got {padding!r}.")
    if u.ndim < 2:
        raise ValueError(f"`u` must have shape (..., H, W), got shape {tuple(u.shape)}.")
    lead, (h, w) = u.shape[:-2], u.shape[-2:]
    x = u.reshape(-1, 1, h, w)
    p = (kernels.shape[-1] - 1) // 2
    if padding == "periodic":
        x = F.pad(x, (p, p, p, p), mode="circular")
    out = F.conv2d(x, kernels[:, None].to(x.dtype))
    return out.reshape(*lead, kernels.shape[0], *out.shape[-2:])


class SymNet(nn.Module):
    r"""The symbolic network of PDE-Net 2.0 (module docstring): ``num_layers`` product layers
    on ``num_inputs`` features, then an affine output; ``forward(z)`` maps ``(..., num_inputs)``
    to ``(...,)``. :meth:`expression` is the expanded polynomial. Weights start small
    (``init_scale``), so the network starts near zero."""

    def __init__(
        self,
        num_inputs: int,
        num_layers: int = 2,
        *,
        init_scale: float = 1e-2,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        m = _check_int("num_inputs", num_inputs, 1)
        _check_int("num_layers", num_layers, 0)
        self.num_inputs = m
        self.layers = nn.ModuleList(nn.Linear(m + i, 2, dtype=dtype) for i in range(num_layers))
        self.out = nn.Linear(m + num_layers, 1, dtype=dtype)
        for lin in [*self.layers, self.out]:
            nn.init.normal_(lin.weight, std=init_scale)
            nn.init.zeros_(lin.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        for lin in self.layers:
            ab = lin(z)
            z = torch.cat([z, (ab[..., 0] * ab[..., 1])[..., None]], -1)
        return self.out(z)[..., 0]

    def expression(self, names: Sequence[str] | None = None) -> dict[str, float]:
        """The expanded polynomial as ``{monomial: coefficient}`` (``"1"`` for the constant,
        ``"u*u_x"``, ``"u_x**2"``, ...), by sympy on the current weights."""
        import sympy

        names = list(names) if names is not None else [f"z{i}" for i in range(self.num_inputs)]
        if len(names) != self.num_inputs:
            raise ValueError(
                f"`names` must give {self.num_inputs} names, got {len(names)}: {names!r}."
            )
        syms = sympy.symbols(names)
        z: list[Any] = list(syms)

        def affine(w: torch.Tensor, b: torch.Tensor) -> Any:
            return sum(float(wi) * zi for wi, zi in zip(w.tolist(), z)) + float(b)

        with torch.no_grad():
            for layer in self.layers:
                lin = cast(nn.Linear, layer)
                w, b = lin.weight.double(), lin.bias.double()
                z.append(sympy.expand(affine(w[0], b[0]) * affine(w[1], b[1])))
            expr = sympy.expand(affine(self.out.weight.double()[0], self.out.bias.double()[0]))
        poly = sympy.Poly(expr, *syms)
        out: dict[str, float] = {}
        for powers, coef in zip(poly.monoms(), poly.coeffs()):
            parts = [n if p == 1 else f"{n}**{p}" for n, p in zip(names, powers) if p > 0]
            out["*".join(parts) or "1"] = float(coef)
        return out


class PDENet(nn.Module):
    r"""The PDE-Net vector field $u_t = F(u, D_{\alpha\beta} u, \dots)$ on a periodic grid:
    one :class:`MomentFilter` per derivative in ``derivatives`` (pairs $(\alpha, \beta)$, not
    $(0, 0)$: $u$ itself is always an input), a :class:`SymNet` for $F$. ``forward(t, u,
    args)`` (for ``torchnde.ODETerm``) maps ``u`` ``(batch, H, W)`` to $F$, same shape.

    Args:
        derivatives: the derivatives fed to $F$.
        dx, dy: the grid spacings.
        kernel_size, order: of every filter (PDE-Net 2.0 uses 5 or 7, order 2 or more).
        num_layers: product layers of the SymNet.
        learnable_filters: learn the free moments (``False``: fixed finite differences).
    """

    def __init__(
        self,
        derivatives: Sequence[tuple[int, int]] = ((1, 0), (0, 1), (2, 0), (1, 1), (0, 2)),
        *,
        dx: float,
        dy: float | None = None,
        kernel_size: int = 5,
        order: int = 2,
        num_layers: int = 2,
        learnable_filters: bool = True,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        derivs = [tuple(d) for d in derivatives]
        if not derivs or any(len(d) != 2 for d in derivs) or (0, 0) in derivs:
            raise ValueError(
                "`derivatives` must be a non-empty list of (alpha, beta) pairs other than "
                f"(0, 0) (u itself is always an input), got {derivatives!r}."
            )
        self.derivatives = [(int(a), int(b)) for a, b in derivs]
        self.filters = nn.ModuleList(
            MomentFilter(
                a,
                b,
                kernel_size=kernel_size,
                order=order,
                dx=dx,
                dy=dy,
                learnable=learnable_filters,
                dtype=dtype,
            )
            for a, b in self.derivatives
        )
        self.symnet = SymNet(1 + len(self.derivatives), num_layers, dtype=dtype)

    def feature_names(self) -> list[str]:
        """``["u", "u_x", "u_y", ...]``: the SymNet's inputs."""
        return ["u"] + [derivative_name(a, b) for a, b in self.derivatives]

    def features(self, u: torch.Tensor) -> torch.Tensor:
        """``u`` and its filtered derivatives, ``(batch, H, W, 1 + num_derivatives)``."""
        kernels = torch.stack([cast(MomentFilter, f).kernel() for f in self.filters])
        d = _convolve(u, kernels, "periodic")  # (batch, C, H, W)
        return torch.cat([u[..., None, :, :], d], -3).movedim(-3, -1)

    def forward(self, t: Any, u: torch.Tensor, args: Any = None) -> torch.Tensor:
        return self.symnet(self.features(u))

    def expression(self) -> dict[str, float]:
        """The learned right-hand side, expanded: ``{monomial: coefficient}``."""
        return self.symnet.expression(self.feature_names())

    def rollout(
        self, u0: torch.Tensor, dt: float, num_steps: int, solver: Any = None
    ) -> torch.Tensor:
        """``num_steps`` δt-blocks from ``u0`` ``(batch, H, W)`` with ``torchnde.solve``
        (``Euler`` by default, the paper's blocks; any fixed-step solver), constant step
        ``dt``. Returns ``(num_steps + 1, batch, H, W)``, time first."""
        import torchnde

        _check_int("num_steps", num_steps, 1)
        ts = torch.arange(num_steps + 1, dtype=torch.float64) * dt
        sol = torchnde.solve(
            torchnde.ODETerm(self),
            torchnde.Euler() if solver is None else solver,
            0.0,
            float(ts[-1]),
            u0,
            dt0=dt,
            saveat=torchnde.SaveAt(ts=ts.to(u0.device)),
            controller=torchnde.ConstantStepSize(),
            max_steps=num_steps + 10,
        )
        return cast(torch.Tensor, sol.ys)
