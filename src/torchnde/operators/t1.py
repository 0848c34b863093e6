r"""Transform Once (Poli et al. 2022): learn directly in the frequency domain, with one forward
transform of the input and one inverse transform of the output.

An FNO transforms and inverse-transforms in every layer. T1 transforms the input once with a
real transform (the orthonormal DCT-II along each axis, here as a small matrix product),
keeps the lowest ``modes`` coefficients, runs every layer on that reduced spectrum, and
inverts once:

$$\hat z_0 = \mathcal{T}_m(x),\qquad
  \hat z_{l+1} = \sigma\big(A_l \hat z_l + B_l M_l \hat z_l + b_l\big)\ (l < L),\qquad
  y = \mathcal{T}_m^{-1}\big(P \hat z_L\big),$$

with $A_l$ a per-mode channel mixing (a weight per kept mode, like FNO's spectral weights),
$M_l$ a dense mixing of the kept modes (shared by the channels; it starts as the identity),
$B_l$ a channel mixing shared by all modes, $\sigma$ the GELU (not after the last layer) and
$P$ the projection to the output channels; the lifting (to ``width`` channels) is the first
layer's input map. The coefficients are normalised as $\hat x_k = (C x)_k / \sqrt{n}$ with
$C$ the orthonormal DCT, which approximate the continuous cosine coefficients, so a model is
evaluated at any resolution with ``n >= modes`` points.

**Variance-preserving initialisation.** With an orthonormal transform and $m$ of $n$
coefficients kept, an input of i.i.d. entries with variance $\sigma^2$ has coefficients of
variance $\sigma^2/n$, and the inverse of a spectrum with $m$ non-zero coefficients of
variance $s^2$ has entries of mean variance $m s^2$. Layers initialised to preserve the
variance of the coefficients (variance $1/\text{fan-in}$, as usual) therefore shrink the
output by $m/n$: the collapse the paper derives for reduced-order frequency-domain models.
Its remedy, used here, scales the variance of one map by $n/m$: the projection $P$ is
initialised with variance $n / (m\,\text{fan-in})$, with $n$ and $m$ the points and modes of
the training ``resolution`` (products over the axes in 2-D). A linear T1 then keeps the
output variance equal to the input's (tested).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_input, positive_int
from ._grid import append_grid, check_grid

__all__ = ["T1", "dct_matrix"]


def dct_matrix(n: int, m: int, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    r"""The first ``m`` rows of the orthonormal DCT-II matrix of size ``n``:
    $C_{kj} = \sqrt{(2 - \delta_{k0})/n}\,\cos(\pi k (j + 1/2) / n)$, shape ``(m, n)``."""
    j = torch.arange(n, dtype=torch.float64, device=device)
    k = torch.arange(m, dtype=torch.float64, device=device)[:, None]
    c = torch.cos(math.pi * k * (j + 0.5) / n) * math.sqrt(2.0 / n)
    c[0] /= math.sqrt(2.0)
    return c.to(dtype)


def _pair(owner: str, name: str, value: int | tuple[int, ...], ndim: int) -> tuple[int, ...]:
    vals = (value,) * ndim if isinstance(value, int) else tuple(value)
    if len(vals) != ndim:
        raise ValueError(f"{owner}: `{name}` must be an int or {ndim} ints, got {value!r}.")
    return tuple(positive_int(owner, name, v) for v in vals)


class T1(nn.Module):
    r"""A Transform Once operator on 1-D or 2-D grids: ``(batch, in_channels, *spatial) ->
    (batch, out_channels, *spatial)``.

    Args:
        in_channels, out_channels: channels of the input and output functions.
        modes: coefficients kept per axis (an int, or one per axis).
        width: channels of the frequency-domain layers.
        layers: number of frequency-domain layers $L$ (0: a linear model, lift then project).
        resolution: the grid the variance-preserving initialisation is for (the training
            resolution; an int or one per axis).
        ndim: 1 or 2.
        grid: coordinate features appended before the transform (``"closed"``,
            ``"periodic"`` or ``"none"``, see :class:`~torchnde.operators.FNO1d`).
        init: ``"variance-preserving"`` (the paper's) or ``"standard"`` (every map with
            variance $1/\text{fan-in}$: the output collapses by $m/n$).

    References:
        M. Poli, S. Massaroli, F. Berto, J. Park, T. Dao, C. Ré, S. Ermon, "Transform Once:
        Efficient Operator Learning in Frequency Domain", NeurIPS 2022.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        modes: int | tuple[int, ...] = 12,
        width: int = 32,
        layers: int = 4,
        *,
        resolution: int | tuple[int, ...],
        ndim: int = 2,
        grid: str = "closed",
        init: str = "variance-preserving",
    ) -> None:
        super().__init__()
        if ndim not in (1, 2):
            raise ValueError(f"T1: `ndim` must be 1 or 2, got {ndim!r}.")
        if init not in ("variance-preserving", "standard"):
            raise ValueError(
                f"T1: `init` must be 'variance-preserving' or 'standard', got {init!r}."
            )
        self.ndim = ndim
        self.in_channels = positive_int("T1", "in_channels", in_channels)
        self.out_channels = positive_int("T1", "out_channels", out_channels)
        self.width = positive_int("T1", "width", width)
        if isinstance(layers, bool) or not isinstance(layers, int) or layers < 0:
            raise ValueError(f"T1: `layers` must be an int >= 0, got {layers!r}.")
        self.num_layers = layers
        self.modes = _pair("T1", "modes", modes, ndim)
        self.resolution = _pair("T1", "resolution", resolution, ndim)
        for m, n in zip(self.modes, self.resolution):
            if m > n:
                raise ValueError(
                    f"T1: `modes` {self.modes} exceed the `resolution` {self.resolution}."
                )
        self.grid = check_grid("T1", grid)
        self.init = init
        c0 = in_channels + (0 if self.grid == "none" else ndim)
        self.mode_weights = nn.ParameterList()
        self.mixers = nn.ModuleList()
        self.mode_mixers = nn.ParameterList()
        n_modes = math.prod(self.modes)
        c = c0
        for _ in range(layers):
            # per-mode and shared channel mixing, each half of the usual 1 / fan-in variance
            w = torch.randn(c, width, *self.modes) / math.sqrt(2 * c)
            self.mode_weights.append(nn.Parameter(w))
            mix = nn.Linear(c, width)
            nn.init.normal_(mix.weight, std=1 / math.sqrt(2 * c))
            nn.init.zeros_(mix.bias)
            self.mixers.append(mix)
            self.mode_mixers.append(nn.Parameter(torch.eye(n_modes)))
            c = width
        self.proj = nn.Linear(c, out_channels)
        n_points = math.prod(self.resolution)
        gain = n_points / n_modes if init == "variance-preserving" else 1.0
        nn.init.normal_(self.proj.weight, std=math.sqrt(gain / c))
        nn.init.zeros_(self.proj.bias)

    def _matrices(self, x: torch.Tensor) -> list[torch.Tensor]:
        spatial = x.shape[2:]
        for n, m in zip(spatial, self.modes):
            if n < m:
                raise ValueError(
                    f"T1: the input grid {tuple(spatial)} has fewer points than the modes "
                    f"{self.modes}."
                )
        return [
            dct_matrix(n, m, dtype=x.dtype, device=x.device) for n, m in zip(spatial, self.modes)
        ]

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised reduced spectrum ``(batch, c, *modes)`` of ``x`` (``(batch, c, *n)``)."""
        mats = self._matrices(x)
        scale = math.sqrt(math.prod(x.shape[2:]))
        if self.ndim == 1:
            return torch.einsum("bcj,kj->bck", x, mats[0]) / scale
        return torch.einsum("bcij,ki,lj->bckl", x, mats[0], mats[1]) / scale

    def inverse(self, z: torch.Tensor, spatial: tuple[int, ...]) -> torch.Tensor:
        """The grid function ``(batch, c, *spatial)`` of the reduced spectrum ``z``."""
        mats = [
            dct_matrix(n, m, dtype=z.dtype, device=z.device) for n, m in zip(spatial, self.modes)
        ]
        scale = math.sqrt(math.prod(spatial))
        if self.ndim == 1:
            return torch.einsum("bck,kj->bcj", z, mats[0]) * scale
        return torch.einsum("bckl,ki,lj->bcij", z, mats[0], mats[1]) * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input("T1", x, self.in_channels, self.ndim)
        spatial = tuple(x.shape[2:])
        self._matrices(x)
        z = self.transform(append_grid(x, self.grid))  # the one forward transform
        eq = "bix,iox->box" if self.ndim == 1 else "bixy,ioxy->boxy"
        for i, (w, mix, modes) in enumerate(zip(self.mode_weights, self.mixers, self.mode_mixers)):
            mixed = torch.einsum("bck,jk->bcj", z.flatten(2), modes).reshape(z.shape)
            shared = mix(mixed.movedim(1, -1)).movedim(-1, 1)
            z = torch.einsum(eq, z, w) + shared
            if i < self.num_layers - 1:
                z = F.gelu(z)
        z = self.proj(z.movedim(1, -1)).movedim(-1, 1)
        return self.inverse(z, spatial)  # the one inverse transform
