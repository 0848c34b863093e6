r"""The deep BSDE method for high-dimensional semilinear parabolic PDEs (Han, Jentzen, E 2018).

For $u: [0, T] \times \mathbb{R}^d \to \mathbb{R}$ with

$$\partial_t u + \tfrac12 \operatorname{Tr}(\sigma\sigma^\top \nabla^2 u) + \mu \cdot \nabla u
  + f(t, x, u, \sigma^\top \nabla u) = 0, \qquad u(T, x) = g(x),$$

the nonlinear Feynman-Kac formula says that along $dX_t = \mu\,dt + \sigma\,dW_t$, $X_0 = x_0$,
the pair $Y_t = u(t, X_t)$, $Z_t = \sigma^\top \nabla u(t, X_t)$ solves the backward SDE
$dY_t = -f(t, X_t, Y_t, Z_t)\,dt + Z_t \cdot dW_t$. On a grid $t_0 < \dots < t_N = T$ the
method draws Euler-Maruyama paths of $X$, makes $Y_0 \approx u(0, x_0)$ and $Z_0$ learnable
numbers and $Z_n = \mathrm{NN}_n(X_n)$ one network per step, runs

$$Y_{n+1} = Y_n - f(t_n, X_n, Y_n, Z_n)\,\Delta t + Z_n \cdot \Delta W_n,$$

and minimises $\mathbb{E}\,|Y_N - g(X_N)|^2$ (clipped to linear growth beyond ``delta_clip``, as
the authors' code does). After training, ``y0`` estimates $u(0, x_0)$.

The networks follow the paper: two hidden layers of width $d + 10$, ReLU, batch
normalisation before the input, after every linear layer and on the output, outputs divided
by $d$; $Y_0$ initialised uniformly in ``y_init_range``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = ["DeepBSDE", "allen_cahn", "hjb", "hjb_reference"]

Generator = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Terminal = Callable[[torch.Tensor], torch.Tensor]


def _bn(n: int) -> nn.BatchNorm1d:
    # TF's momentum 0.99 is torch's 0.01; the authors' initialisation of scale and shift.
    bn = nn.BatchNorm1d(n, eps=1e-6, momentum=0.01)
    with torch.no_grad():
        bn.weight.uniform_(0.1, 0.5)
        bn.bias.normal_(0.0, 0.1)
    return bn


class _SubNet(nn.Module):
    def __init__(self, dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = [_bn(dim)]
        sizes = [dim, *hidden]
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b, bias=False), _bn(b), nn.ReLU()]
        layers += [nn.Linear(sizes[-1], dim, bias=False), _bn(dim)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DeepBSDE(nn.Module):
    r"""Han, Jentzen, E's deep BSDE solver (module docstring) for constant diffusion
    $\sigma I$ and drift ``drift(t, x)`` (default zero).

    Args:
        dim: the dimension $d$.
        total_time: $T$.
        num_time_interval: $N$, the number of Euler steps.
        x0: the point $x_0$ (a number, for all coordinates, or a ``(d,)`` tensor).
        sigma: the constant diffusion coefficient $\sigma$.
        f: the generator $f(t, x, y, z)$ with ``x``, ``z`` of shape ``(batch, d)``, ``y``
            ``(batch, 1)``, returning ``(batch, 1)``.
        g: the terminal value $g(x)$, ``(batch, d) -> (batch, 1)``.
        drift: $\mu(t, x)$, ``(batch, d)``; ``None`` for zero.
        hidden: hidden widths of each $Z_n$ network (default two of $d + 10$).
        y_init_range: $Y_0$ starts uniformly in this range.
        delta_clip: beyond this misfit the loss grows linearly.

    Example::

        model = hjb(dim=100)            # the paper's HJB equation
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(2000):
            opt.zero_grad(); model.loss(64).mean().backward(); opt.step()
        model.y0                          # about 4.59

    Reference: J. Han, A. Jentzen, W. E, "Solving high-dimensional partial differential
    equations using deep learning", PNAS 115 (34), 2018.
    """

    x0: torch.Tensor

    def __init__(
        self,
        dim: int,
        total_time: float,
        num_time_interval: int,
        x0: float | torch.Tensor,
        sigma: float,
        f: Generator,
        g: Terminal,
        drift: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        hidden: Sequence[int] | None = None,
        y_init_range: tuple[float, float] = (0.0, 1.0),
        delta_clip: float = 50.0,
    ) -> None:
        super().__init__()
        for name, v in (("dim", dim), ("num_time_interval", num_time_interval)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"`{name}` must be an int >= 1, got {v!r}.")
        if not (isinstance(total_time, (int, float)) and total_time > 0):
            raise ValueError(f"`total_time` must be a positive number, got {total_time!r}.")
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma)):
            raise TypeError(f"`sigma` must be a number, got {sigma!r}.")
        if not (callable(f) and callable(g)):
            raise TypeError("`f` and `g` must be functions: f(t, x, y, z) and g(x).")
        lo, hi = y_init_range
        if not hi >= lo:
            raise ValueError(f"`y_init_range` must be (low, high), got {y_init_range!r}.")
        self.dim, self.total_time, self.num_time_interval = (
            dim,
            float(total_time),
            num_time_interval,
        )
        self.dt = self.total_time / num_time_interval
        self.sigma, self.f, self.g, self.drift = float(sigma), f, g, drift
        self.delta_clip = float(delta_clip)
        x0t = torch.as_tensor(x0, dtype=torch.get_default_dtype())
        if x0t.ndim == 0:
            x0t = x0t.expand(dim).clone()
        if x0t.shape != (dim,):
            raise ValueError(f"`x0` must be a number or shape ({dim},), got {tuple(x0t.shape)}.")
        self.register_buffer("x0", x0t)
        widths = list(hidden) if hidden is not None else [dim + 10, dim + 10]
        self.y_init = nn.Parameter(torch.empty(1).uniform_(lo, hi))
        self.z_init = nn.Parameter(torch.empty(1, dim).uniform_(-0.1, 0.1))
        self.subnets = nn.ModuleList(_SubNet(dim, widths) for _ in range(num_time_interval - 1))

    @property
    def y0(self) -> float:
        """The current estimate of $u(0, x_0)$."""
        return float(self.y_init.detach())

    def forward(self, num_sample: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Simulate ``num_sample`` paths: ``(Y_N, g(X_N))``, each ``(num_sample, 1)``."""
        x = self.x0.expand(num_sample, self.dim)
        dt, sqrt_dt = self.dt, math.sqrt(self.dt)
        y = self.y_init.expand(num_sample, 1)
        z = self.z_init.expand(num_sample, self.dim)
        for n in range(self.num_time_interval):
            t = torch.full((num_sample, 1), n * dt, dtype=x.dtype, device=x.device)
            dw = sqrt_dt * torch.randn_like(x)
            if n > 0:
                z = self.subnets[n - 1](x) / self.dim
            y = y - dt * self.f(t, x, y, z) + (z * dw).sum(1, keepdim=True)
            x = (
                x + self.sigma * dw
                if self.drift is None
                else x + self.drift(t, x) * dt + self.sigma * dw
            )
        return y, self.g(x)

    def loss(self, num_sample: int) -> torch.Tensor:
        """The per-path loss ``(num_sample,)``: $|Y_N - g(X_N)|^2$, linear beyond the clip."""
        y, gx = self(num_sample)
        d = (y - gx).reshape(-1)
        c = self.delta_clip
        return torch.where(d.abs() < c, d * d, 2 * c * d.abs() - c * c)


def hjb(
    dim: int = 100,
    lambd: float = 1.0,
    total_time: float = 1.0,
    num_time_interval: int = 20,
    **kwargs: object,
) -> DeepBSDE:
    r"""The paper's Hamilton-Jacobi-Bellman equation of a linear-quadratic control problem:
    $\partial_t u + \Delta u - \lambda |\nabla u|^2 = 0$, $g(x) = \ln\frac{1 + |x|^2}{2}$,
    $x_0 = 0$, $\sigma = \sqrt2$ (so $f = -\lambda |z|^2 / 2$). Exactly,
    $u(0, x) = -\frac1\lambda \ln \mathbb{E}\, e^{-\lambda g(x + \sqrt2 W_T)}$
    (:func:`hjb_reference`)."""

    def f(t: torch.Tensor, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return -lambd * z.pow(2).sum(1, keepdim=True) / 2

    def g(x: torch.Tensor) -> torch.Tensor:
        return torch.log((1 + x.pow(2).sum(1, keepdim=True)) / 2)

    return DeepBSDE(dim, total_time, num_time_interval, 0.0, math.sqrt(2.0), f, g, **kwargs)  # type: ignore[arg-type]


def hjb_reference(
    dim: int = 100,
    lambd: float = 1.0,
    total_time: float = 1.0,
    num_samples: int = 1_000_000,
    seed: int = 0,
) -> tuple[float, float]:
    r"""Monte Carlo value of :func:`hjb`'s $u(0, 0)$ by the Cole-Hopf formula, in float64,
    with its standard error (delta method): ``(value, std_error)``."""
    gen = torch.Generator().manual_seed(seed)
    chunk = 100_000
    vals = []
    left = num_samples
    while left > 0:
        m = min(chunk, left)
        w = torch.randn(m, dim, generator=gen, dtype=torch.float64) * math.sqrt(2 * total_time)
        gx = torch.log((1 + w.pow(2).sum(1)) / 2)
        vals.append(torch.exp(-lambd * gx))
        left -= m
    e = torch.cat(vals)
    mean, std = float(e.mean()), float(e.std())
    return -math.log(mean) / lambd, std / math.sqrt(num_samples) / (lambd * mean)


def allen_cahn(
    dim: int = 100, total_time: float = 0.3, num_time_interval: int = 20, **kwargs: object
) -> DeepBSDE:
    r"""The paper's Allen-Cahn equation $\partial_t u + \Delta u + u - u^3 = 0$ with
    $g(x) = 1 / (2 + 0.4 |x|^2)$, $x_0 = 0$, $T = 0.3$, $\sigma = \sqrt 2$ ($f = y - y^3$);
    the paper's reference $u(0, 0) \approx 0.052802$ (branching diffusion)."""

    def f(t: torch.Tensor, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return y - y.pow(3)

    def g(x: torch.Tensor) -> torch.Tensor:
        return 1 / (2 + 0.4 * x.pow(2).sum(1, keepdim=True))

    kwargs.setdefault("y_init_range", (0.3, 0.6))
    return DeepBSDE(dim, total_time, num_time_interval, 0.0, math.sqrt(2.0), f, g, **kwargs)  # type: ignore[arg-type]
