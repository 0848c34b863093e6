r"""Spectral convolutions (Li et al. 2021): a convolution whose kernel lives on the lowest Fourier
modes, evaluated as ``irfft(W * rfft(x))`` with the modes above the cutoff set to zero.

With $\hat x_k$ the discrete Fourier coefficients of the input (``torch.fft.rfft``, no
normalisation) the output is

$$\hat y_{o,k} = \sum_i W_{i,o,k}\, \hat x_{i,k}\quad (k < \text{modes}),\qquad
\hat y_{o,k} = 0\quad\text{otherwise},$$

so the layer is the circular convolution with the band-limited kernel whose coefficients are
$W$ (tested against that dense convolution). The complex $W$ is stored as a real parameter
with a trailing axis of size 2 (``weight``; its complex view is :meth:`complex_weight`), so
that every adjoint and optimiser sees real parameters only. The weights act on Fourier
coefficients, not on grid values, so one layer is evaluated at any resolution with at least
``2 * modes`` points; for band-limited input the outputs at two resolutions agree on the
shared points.
"""

from __future__ import annotations

import torch
from torch import nn

from ._checks import check_input, positive_int

__all__ = ["SpectralConv1d", "SpectralConv2d"]


def _complex_weight(in_channels: int, out_channels: int, *modes: int) -> nn.Parameter:
    """Complex weights stored as a real parameter with a trailing axis of 2 (real, imaginary):
    every adjoint, optimiser and ``DistributedDataParallel`` then sees real parameters only.
    Li et al.'s initialisation: both parts uniform in [0, 1 / (in * out))."""
    scale = 1.0 / (in_channels * out_channels)
    return nn.Parameter(scale * torch.rand(in_channels, out_channels, *modes, 2))


def _weight(w: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The complex view of the real weight ``w``, in the precision of ``like``."""
    if w.dtype != like.dtype:
        w = w.to(like.dtype)
    return torch.view_as_complex(w)


class SpectralConv1d(nn.Module):
    r"""1-D spectral convolution: ``(batch, in_channels, n) -> (batch, out_channels, n)``.

    Args:
        in_channels, out_channels: channels of the input and the output.
        modes: the Fourier modes kept, $k = 0, \dots, \text{modes} - 1$; the input needs
            ``n >= 2 * modes`` points (``ValueError`` otherwise).
    """

    def __init__(self, in_channels: int, out_channels: int, modes: int) -> None:
        super().__init__()
        self.in_channels = positive_int("SpectralConv1d", "in_channels", in_channels)
        self.out_channels = positive_int("SpectralConv1d", "out_channels", out_channels)
        self.modes = positive_int("SpectralConv1d", "modes", modes)
        self.weight = _complex_weight(in_channels, out_channels, modes)

    def complex_weight(self) -> torch.Tensor:
        """The weights $W_{i,o,k}$ as a complex tensor ``(in, out, modes)`` (a view)."""
        return torch.view_as_complex(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input("SpectralConv1d", x, self.in_channels, 1)
        n = x.shape[-1]
        if n < 2 * self.modes:
            raise ValueError(
                f"SpectralConv1d: the input has {n} points but `modes` is {self.modes}: it needs "
                f"at least 2 * modes = {2 * self.modes} points (or fewer modes)."
            )
        x_ft = torch.fft.rfft(x)
        w = _weight(self.weight, x)
        out_ft = x_ft.new_zeros(x.shape[0], self.out_channels, n // 2 + 1)
        out_ft[:, :, : self.modes] = torch.einsum("bik,iok->bok", x_ft[:, :, : self.modes], w)
        return torch.fft.irfft(out_ft, n=n)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, modes={self.modes}"


class SpectralConv2d(nn.Module):
    r"""2-D spectral convolution: ``(batch, in_channels, n1, n2) -> (batch, out_channels, n1, n2)``.

    Keeps the modes $|k_1| < \text{modes1}$ of the first axis (both the positive
    $0, \dots, \text{modes1} - 1$ and the negative $-\text{modes1}, \dots, -1$, one weight
    block each, as in Li et al.) and $0 \le k_2 < \text{modes2}$ of
    the last axis (``rfft2``: the negative ones are the complex conjugates).

    Args:
        in_channels, out_channels: channels of the input and the output.
        modes1, modes2: modes kept on each axis; the input needs ``n1 >= 2 * modes1`` and
            ``n2 >= 2 * modes2``.
    """

    def __init__(self, in_channels: int, out_channels: int, modes1: int, modes2: int) -> None:
        super().__init__()
        self.in_channels = positive_int("SpectralConv2d", "in_channels", in_channels)
        self.out_channels = positive_int("SpectralConv2d", "out_channels", out_channels)
        self.modes1 = positive_int("SpectralConv2d", "modes1", modes1)
        self.modes2 = positive_int("SpectralConv2d", "modes2", modes2)
        self.weight1 = _complex_weight(in_channels, out_channels, modes1, modes2)
        self.weight2 = _complex_weight(in_channels, out_channels, modes1, modes2)

    def complex_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The weights of the positive and the negative first-axis modes as complex tensors
        ``(in, out, modes1, modes2)`` (views)."""
        return torch.view_as_complex(self.weight1), torch.view_as_complex(self.weight2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input("SpectralConv2d", x, self.in_channels, 2)
        n1, n2 = x.shape[-2:]
        m1, m2 = self.modes1, self.modes2
        if n1 < 2 * m1 or n2 < 2 * m2:
            raise ValueError(
                f"SpectralConv2d: the input has {n1} x {n2} points but the modes are "
                f"({m1}, {m2}): it needs at least {2 * m1} x {2 * m2} points (or fewer modes)."
            )
        x_ft = torch.fft.rfft2(x)
        out_ft = x_ft.new_zeros(x.shape[0], self.out_channels, n1, n2 // 2 + 1)
        w1, w2 = _weight(self.weight1, x), _weight(self.weight2, x)
        out_ft[:, :, :m1, :m2] = torch.einsum("bixy,ioxy->boxy", x_ft[:, :, :m1, :m2], w1)
        out_ft[:, :, -m1:, :m2] = torch.einsum("bixy,ioxy->boxy", x_ft[:, :, -m1:, :m2], w2)
        return torch.fft.irfft2(out_ft, s=(n1, n2))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, modes=({self.modes1}, {self.modes2})"
