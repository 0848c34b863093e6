r"""Fourier neural operators (Li et al. 2021): FNO1d and FNO2d, and the Fourier layer as a
vector field for neural ODEs/PDEs in time.

An FNO maps a function sampled on a grid to a function on the same grid:

1. lifting: the input channels and the grid coordinates (``grid``) are mapped pointwise to
   ``width`` channels;
2. ``layers`` Fourier layers $v \mapsto \sigma(K v + W v)$, with $K$ a spectral convolution
   (:class:`~torchnde.operators.SpectralConv1d`) keeping ``modes`` Fourier modes, $W$ a
   pointwise linear map and $\sigma$ the GELU (not after the last layer);
3. projection: pointwise to ``proj_width`` channels, GELU, then to the output channels.

The spectral weights act on Fourier coefficients, so a model trained at one resolution is
evaluated at another (zero-shot super-resolution): give it any ``n >= 2 * modes``.
``padding`` zero-pads the right end of each axis before the Fourier layers (and crops after),
for non-periodic problems such as Darcy flow, as in Li et al.'s 2-D code.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_input, nonnegative_int, positive_int
from ._grid import append_grid, check_grid
from .spectral import SpectralConv1d, SpectralConv2d

__all__ = ["FNO1d", "FNO2d", "FourierField"]


class _FNO(nn.Module):
    ndim: int

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        modes: tuple[int, ...],
        width: int,
        layers: int,
        proj_width: int,
        grid: str,
        padding: int,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        self.in_channels = positive_int(owner, "in_channels", in_channels)
        self.out_channels = positive_int(owner, "out_channels", out_channels)
        self.width = positive_int(owner, "width", width)
        self.num_layers = positive_int(owner, "layers", layers)
        positive_int(owner, "proj_width", proj_width)
        self.grid = check_grid(owner, grid)
        self.padding = nonnegative_int(owner, "padding", padding)
        for m in modes:
            positive_int(owner, "modes", m)
        extra = 0 if self.grid == "none" else self.ndim
        conv = nn.Conv1d if self.ndim == 1 else nn.Conv2d
        self.lift = conv(in_channels + extra, width, 1)
        if self.ndim == 1:
            self.spectral = nn.ModuleList(
                SpectralConv1d(width, width, *modes) for _ in range(layers)
            )
        else:
            self.spectral = nn.ModuleList(
                SpectralConv2d(width, width, *modes) for _ in range(layers)
            )
        self.pointwise = nn.ModuleList(conv(width, width, 1) for _ in range(layers))
        self.proj1 = conv(width, proj_width, 1)
        self.proj2 = conv(proj_width, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: shape ``(batch, in_channels, *spatial)``; returns
        ``(batch, out_channels, *spatial)``."""
        check_input(type(self).__name__, x, self.in_channels, self.ndim)
        v = self.lift(append_grid(x, self.grid))
        p = self.padding
        if p:
            v = F.pad(v, (0, p) * self.ndim)
        for i, (k, w) in enumerate(zip(self.spectral, self.pointwise)):
            v = k(v) + w(v)
            if i < self.num_layers - 1:
                v = F.gelu(v)
        if p:
            v = v[..., :-p] if self.ndim == 1 else v[..., :-p, :-p]
        return self.proj2(F.gelu(self.proj1(v)))


class FNO1d(_FNO):
    r"""Fourier neural operator on 1-D grids: ``(batch, in_channels, n) ->
    (batch, out_channels, n)``.

    Args:
        in_channels, out_channels: channels of the input and output functions.
        modes: Fourier modes kept by each spectral convolution (16 in Li et al.'s Burgers).
        width: channels of the Fourier layers (64 in Li et al.'s Burgers).
        layers: number of Fourier layers (4).
        proj_width: hidden channels of the projection (128).
        grid: coordinate features appended to the input: ``"periodic"`` ($x_j = j/n$, the
            points of resolutions $n$ and $kn$ coincide), ``"closed"`` ($x_j = j/(n-1)$) or
            ``"none"``.
        padding: zero padding at the right end before the Fourier layers (0: periodic).

    References:
        Z. Li, N. Kovachki, K. Azizzadenesheli, B. Liu, K. Bhattacharya, A. Stuart,
        A. Anandkumar, "Fourier Neural Operator for Parametric Partial Differential Equations",
        ICLR 2021.
    """

    ndim = 1

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        modes: int = 16,
        width: int = 64,
        layers: int = 4,
        *,
        proj_width: int = 128,
        grid: str = "periodic",
        padding: int = 0,
    ) -> None:
        super().__init__(
            in_channels, out_channels, (modes,), width, layers, proj_width, grid, padding
        )


class FNO2d(_FNO):
    r"""Fourier neural operator on 2-D grids: ``(batch, in_channels, n1, n2) ->
    (batch, out_channels, n1, n2)``.

    Args:
        in_channels, out_channels: channels of the input and output functions.
        modes: ``(modes1, modes2)`` or one int for both (12 in Li et al.'s Darcy flow); the
            first axis keeps its positive and negative low modes.
        width: channels of the Fourier layers (32 in Li et al.'s Darcy flow).
        layers, proj_width, grid, padding: as for :class:`FNO1d` (Li et al.'s Darcy code
            uses a closed grid and ``padding=9`` at 85 x 85).

    References:
        Li et al., ICLR 2021 (see :class:`FNO1d`).
    """

    ndim = 2

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        modes: int | tuple[int, int] = 12,
        width: int = 32,
        layers: int = 4,
        *,
        proj_width: int = 128,
        grid: str = "closed",
        padding: int = 0,
    ) -> None:
        m = (modes, modes) if isinstance(modes, int) else tuple(modes)
        if len(m) != 2:
            raise ValueError(f"FNO2d: `modes` must be an int or a pair of ints, got {modes!r}.")
        super().__init__(in_channels, out_channels, m, width, layers, proj_width, grid, padding)


class FourierField(nn.Module):
    r"""A Fourier layer as a vector field: $f(t, u) = W_2\,\sigma(K u + W_1 u + b)$ on a state
    $u$ of shape ``(batch, channels, *spatial)``, for an FNO-parameterised neural ODE/PDE in
    time, $\partial_t u = f(t, u)$, solved by :func:`torchnde.solve` with ``ODETerm``.

    $K$ is a spectral convolution with ``modes`` (1-D: an int; 2-D: a pair), $W_1$, $W_2$ are
    pointwise linear maps and $\sigma$ the GELU. With ``time=True`` the time $t$ is one more
    input channel (a non-autonomous field). The initial weights of $W_2$ are ``out_scale``
    times PyTorch's default (below 1: a gentler initial flow).

    Args:
        channels: channels of the state.
        modes: Fourier modes kept (int for 1-D, pair for 2-D).
        ndim: 1 or 2 spatial dimensions.
        hidden: channels inside the layer (default: ``channels``).
        time: append $t$ as an input channel.
        out_scale: factor on the initial weights of $W_2$.
    """

    def __init__(
        self,
        channels: int,
        modes: int | tuple[int, int],
        *,
        ndim: int = 1,
        hidden: int | None = None,
        time: bool = False,
        out_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if ndim not in (1, 2):
            raise ValueError(f"FourierField: `ndim` must be 1 or 2, got {ndim!r}.")
        self.channels = positive_int("FourierField", "channels", channels)
        self.ndim = ndim
        self.hidden = positive_int("FourierField", "hidden", channels if hidden is None else hidden)
        self.time = bool(time)
        c_in = channels + int(self.time)
        conv = nn.Conv1d if ndim == 1 else nn.Conv2d
        if ndim == 1:
            if not isinstance(modes, int):
                raise ValueError(f"FourierField: `modes` must be an int for ndim=1, got {modes!r}.")
            self.spectral: nn.Module = SpectralConv1d(c_in, self.hidden, modes)
        else:
            m = (modes, modes) if isinstance(modes, int) else tuple(modes)
            self.spectral = SpectralConv2d(c_in, self.hidden, *m)
        self.pointwise = conv(c_in, self.hidden, 1)
        self.out = conv(self.hidden, channels, 1)
        with torch.no_grad():
            self.out.weight.mul_(out_scale)
            if self.out.bias is not None:
                self.out.bias.mul_(out_scale)

    def forward(self, t: torch.Tensor, u: torch.Tensor, args: Any = None) -> torch.Tensor:
        check_input("FourierField", u, self.channels, self.ndim, name="u")
        if self.time:
            tt = torch.as_tensor(t, dtype=u.dtype, device=u.device)
            tt = tt.reshape(-1, *([1] * (self.ndim + 1))) if tt.ndim else tt
            u = torch.cat([u, tt.expand(u.shape[0], 1, *u.shape[2:])], dim=1)
        return self.out(F.gelu(self.spectral(u) + self.pointwise(u)))
