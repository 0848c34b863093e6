r"""Natural cubic splines, and the cubic path class shared with Hermite cubics.

On segment $i$ the path is $X(t) = a_i + b_i s + c_i s^2 + d_i s^3$ with $s = t - t_i$;
coefficients are stored as ``(a, b, 2c, 3d)`` concatenated along the channels, so
$X'(t) = b + 2c\,s + 3d\,s^2$ needs no extra products (torchcde's layout, so coefficients
can be exchanged).

The natural cubic spline (zero second derivative at both ends) solves a tridiagonal system
for the knot derivatives $k_i$ (de Boor, *A Practical Guide to Splines*, IV):

$$ \frac{k_{i-1}}{h_{i-1}} + 2\Big(\frac{1}{h_{i-1}} + \frac{1}{h_i}\Big)k_i
   + \frac{k_{i+1}}{h_i} = 3\Big(\frac{\Delta_{i-1}}{h_{i-1}^2} + \frac{\Delta_i}{h_i^2}\Big), $$

with $h_i = t_{i+1} - t_i$, $\Delta_i = x_{i+1} - x_i$ (one-sided at the ends).
"""

from __future__ import annotations

import torch

from ._checks import check_path, describe
from .missing import fill_ends
from .path import AbstractInterpolation
from .tridiagonal import shared_inverse, thomas

__all__ = ["natural_cubic_coeffs", "CubicSpline"]

#: Up to this length one shared system is solved as one dense matrix product.
_DENSE_MAX = 512


def _system(
    h_inv: torch.Tensor, p: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The knot-derivative system along the last dimension from ``1/h`` (length n-1, zero on
    padding) and ``p = 3Δ/h²`` (length n-1): returns lower, diag, upper, rhs of length n."""
    zero = torch.zeros_like(h_inv[..., :1])
    left = torch.cat([zero, h_inv], dim=-1)  # 1/h_{i-1}
    right = torch.cat([h_inv, zero], dim=-1)  # 1/h_i
    diag = 2 * (left + right)
    # Rows beyond a series' last observation (padding) are decoupled: 1·k = 0.
    diag = torch.where(diag == 0, torch.ones_like(diag), diag)
    zp = torch.zeros_like(p[..., :1])
    rhs = torch.cat([zp, p], dim=-1) + torch.cat([p, zp], dim=-1)
    return left, diag, right, rhs


def _pieces(
    x: torch.Tensor, h_inv: torch.Tensor, k: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(a, b, 2c, 3d) on every segment from values, 1/h and knot derivatives (last dim)."""
    slope = (x[..., 1:] - x[..., :-1]) * h_inv
    k0, k1 = k[..., :-1], k[..., 1:]
    two_c = (6 * slope - 4 * k0 - 2 * k1) * h_inv
    three_d = (-6 * slope + 3 * (k0 + k1)) * h_inv * h_inv
    return x[..., :-1], k0, two_c, three_d


def _shift(
    a: torch.Tensor, b: torch.Tensor, two_c: torch.Tensor, three_d: torch.Tensor, s: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The same cubic re-centred ``s`` later (Taylor shift)."""
    a_new = a + s * (b + s * (two_c / 2 + s * three_d / 3))
    b_new = b + s * (two_c + s * three_d)
    return a_new, b_new, two_c + 2 * three_d * s, three_d


def _flush_negligible(g: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``g`` in ``dtype`` with its negligible entries set to zero: those below ``eps³`` of the
    largest in their row (and every one that would be subnormal in ``dtype``).

    The inverse of a spline's system decays geometrically away from the diagonal (by about
    ``2 - √3`` per row), so a float32 matrix for a long grid holds entries near and below
    ``finfo.tiny``; a CPU multiplies subnormal operands, and products that come out
    subnormal, tens of times slower (the product took 1.2 ms instead of 0.27 ms at length
    100 when only the subnormal entries were flushed: entries just above ``tiny`` times
    increments of 0.1 are subnormal products). A row's dropped entries change its result by
    at most ``(length - 1) eps³ max|g_i| max|Δx|``: ``(length - 1) eps²`` times the normwise
    rounding of the product itself."""
    if not dtype.is_floating_point:
        return g.to(dtype)
    info = torch.finfo(dtype)
    bound = (g.abs().amax(dim=-1, keepdim=True) * info.eps**3).clamp(min=info.tiny)
    return torch.where(g.abs() < bound, 0, g).to(dtype)


def _shared_system(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For one time grid: ``G`` with ``k = G @ Δx`` (the knot derivatives from the
    increments: the system's inverse with the right-hand side folded in), and ``1/h``."""
    h_inv = 1 / (t[1:] - t[:-1])
    zero = torch.zeros_like(h_inv[:1])
    left = torch.cat([zero, h_inv])
    right = torch.cat([h_inv, zero])
    inv = shared_inverse(left, 2 * (left + right), right)
    # rhs_i = p_{i-1} + p_i with p = 3 Δx / h²: k = (inv[:, 1:] + inv[:, :-1]) diag(3/h²) Δx
    g = (inv[:, :-1] + inv[:, 1:]) * (3 * h_inv.to(inv.dtype) ** 2)
    return g, h_inv


#: The factors of the last few time grids, keyed on (device, dtypes, time values): a dataset
#: reuses one grid for every batch, so a repeated call skips building them.
_FACTORS: dict[tuple, tuple[torch.Tensor, ...]] = {}
_FACTORS_SIZE = 8


def _shared_factors(t: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """``(G, 1/h, 6/h, -1/h²)`` in ``dtype`` for one grid, the ``1/h`` terms as columns.

    Cached by value unless ``t`` takes part in a gradient; built outside inference mode so
    that a matrix made under ``torch.inference_mode`` can be saved for a later backward."""
    if t.requires_grad and torch.is_grad_enabled():
        return _factors(t, dtype)
    key = (str(t.device), t.dtype, dtype, tuple(t.tolist()))
    hit = _FACTORS.pop(key, None)
    if hit is None:
        with torch.inference_mode(False), torch.no_grad():
            hit = _factors(t.clone(), dtype)
        if len(_FACTORS) >= _FACTORS_SIZE:
            _FACTORS.pop(next(iter(_FACTORS)))
    _FACTORS[key] = hit  # (re)inserted last: the oldest is evicted first
    return hit


def _factors(t: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    g, h_inv = _shared_system(t)
    h = h_inv.to(dtype).unsqueeze(-1)
    return _flush_negligible(g, dtype), h, 6 * h, -h * h


def _coeffs_shared(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """No missing values, one time grid: x of shape (..., length, channels)."""
    batch, (length, channels) = x.shape[:-2], x.shape[-2:]
    # Time first, (length, batch..., channels) contiguous: every series is a column of one
    # matrix, and every step below is one pass over contiguous memory.
    xt = x.movedim(-2, 0).contiguous()
    dx = xt[1:] - xt[:-1]
    flat = dx.view(length - 1, -1)
    if length <= _DENSE_MAX:
        g, h, h6, nh2 = _shared_factors(t, x.dtype)
        # One (length, length - 1) x (length - 1, batch * channels) product solves every series.
        k = g @ flat
    else:
        h_inv = 1 / (t[1:] - t[:-1])
        zero = torch.zeros_like(h_inv[:1])
        left = torch.cat([zero, h_inv])
        right = torch.cat([h_inv, zero])
        p = 3 * flat * (h_inv * h_inv).unsqueeze(-1)
        zp = torch.zeros_like(p[:1])
        rhs = torch.cat([zp, p]) + torch.cat([p, zp])
        diag = 2 * (left + right)
        k = thomas(left.unsqueeze(-1), diag.unsqueeze(-1), right.unsqueeze(-1), rhs)
        h = h_inv.to(x.dtype).unsqueeze(-1)
        h6, nh2 = 6 * h, -h * h
    k0, k1 = k[:-1], k[1:]
    # 2c = (6 Δx/h - 4 k0 - 2 k1) / h and 3d = (3 (k0 + k1) - 6 Δx/h) / h², in few passes.
    slope6 = flat * h6
    both = k0 + k1
    two_c = torch.add(slope6, torch.add(k0, both), alpha=-2) * h
    three_d = torch.add(slope6, both, alpha=-3) * nh2
    # Each piece is written once into the output layout (..., length - 1, 4, channels).
    out = x.new_empty(batch + (length - 1, 4, channels))
    out[..., 0, :] = x[..., :-1, :]
    by_time = out.movedim(-3, 0)
    for j, piece in ((1, k0), (2, two_c), (3, three_d)):
        by_time[..., j, :] = piece.view(dx.shape)
    return out.view(batch + (length - 1, 4 * channels))


def _coeffs_general(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Missing values and/or per-sample times. Works on the layout (..., channels, length):
    every channel of every sample is a series with its own observed knots, compressed to the
    front, solved with one batched Thomas sweep, then mapped back to every original segment."""
    xs = x.transpose(-1, -2)  # (..., C, L)
    length = xs.shape[-1]
    tt = t.unsqueeze(-2) if t.ndim > 1 else t
    tt = tt.expand(xs.shape)
    xs, observed = fill_ends(xs)
    rank = observed.cumsum(dim=-1) - 1  # index among observations, at or before each time
    n_obs = observed.sum(dim=-1, keepdim=True)
    slot = torch.where(observed, rank, length)  # unobserved go to a dropped extra slot
    pad = torch.zeros(xs.shape[:-1] + (length + 1,), dtype=xs.dtype, device=xs.device)
    xc = pad.scatter(-1, slot, torch.where(observed, xs, 0))[..., :length]
    tc = pad.scatter(-1, slot, tt)[..., :length]
    seg = torch.arange(length - 1, device=x.device)
    valid = seg < n_obs - 1
    hc = tc[..., 1:] - tc[..., :-1]
    h_inv = torch.where(valid, 1 / torch.where(valid, hc, torch.ones_like(hc)), 0)
    dx = (xc[..., 1:] - xc[..., :-1]) * valid
    lower, diag, upper, rhs = _system(h_inv, 3 * dx * h_inv * h_inv)
    k = thomas(*(v.movedim(-1, 0) for v in (lower, diag, upper, rhs))).movedim(0, -1)
    a, b, two_c, three_d = _pieces(xc, h_inv, k)
    # Segment j of the original grid lies in compressed piece rank[j] (clamped to the last).
    piece = rank[..., :-1].clamp(min=0)
    piece = torch.minimum(piece, (n_obs - 2).clamp(min=0))
    a, b, two_c, three_d = (v.gather(-1, piece) for v in (a, b, two_c, three_d))
    s = tt[..., :-1] - tc.gather(-1, piece)
    a, b, two_c, three_d = _shift(a, b, two_c, three_d, s)
    return torch.cat([v.transpose(-1, -2) for v in (a, b, two_c, three_d)], dim=-1)


def natural_cubic_coeffs(x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
    r"""Coefficients of the natural cubic spline through a (batch of) time series.

    Kidger et al. (2020), *Neural Controlled Differential Equations for Irregular Time
    Series*. Missing values (NaN): each channel's spline passes through that channel's
    observations only; before the first (after the last) observation the path is constant at
    it; a channel never observed is zero. Compute once per dataset.

    The knot derivatives come from one tridiagonal solve per series, vectorised over all
    series: with one time grid and no missing values a single matrix product with the
    system's inverse, otherwise a batched Thomas sweep.

    Args:
        x: shape ``(..., length, channels)``.
        t: observation times, ``(length,)`` or per sample ``(..., length)``; ``0, ...,
            length - 1`` when omitted.

    Returns:
        Shape ``(..., length - 1, 4 * channels)``, for :class:`CubicSpline` with the same
        ``t``.
    """
    x, t = check_path("natural_cubic_coeffs", x, t)
    # One reduction instead of isnan(x).any(): NaN propagates through the sum.
    if t.ndim == 1 and not bool(torch.isnan(x.sum())):
        return _coeffs_shared(x, t)
    return _coeffs_general(x, t)


class CubicSpline(AbstractInterpolation):
    r"""A piecewise-cubic path: the natural cubic spline of :func:`natural_cubic_coeffs` or
    the Hermite cubic of :func:`hermite_cubic_coeffs`.

    Both are continuously differentiable, so a CDE solve needs no restarts at the knots
    (:func:`cdeint` passes :attr:`knots` as ``step_ts``, where the second derivative jumps).

    Args:
        coeffs: shape ``(..., length - 1, 4 * channels)``.
        t: the times given to the coefficient function (default ``0, ..., length - 1``).
        extrapolate: let :meth:`evaluate`, :meth:`derivative` and solves go outside the
            interval of ``t``, extending the first and last cubic (which grows like the cube
            of the distance); by default a time outside is a ``ValueError``.

    Example:
        >>> X = CubicSpline(natural_cubic_coeffs(x, t), t)
        >>> X.derivative(torch.tensor(0.3)).shape  # (..., channels)
    """

    continuous_derivative = True

    def __init__(
        self, coeffs: torch.Tensor, t: torch.Tensor | None = None, *, extrapolate: bool = False
    ) -> None:
        if not isinstance(coeffs, torch.Tensor) or coeffs.ndim < 2 or coeffs.shape[-1] % 4:
            raise ValueError(
                "CubicSpline: `coeffs` must be a tensor of shape (..., length - 1, 4 * channels) "
                f"from natural_cubic_coeffs or hermite_cubic_coeffs, got {describe(coeffs)}."
            )
        segments = coeffs.shape[-2]
        if t is None:
            t = torch.arange(segments + 1, dtype=coeffs.dtype, device=coeffs.device)
        elif not isinstance(t, torch.Tensor):
            t = torch.as_tensor(t, dtype=coeffs.dtype, device=coeffs.device)
        if t.ndim == 0 or t.shape[-1] != segments + 1:
            raise ValueError(
                f"CubicSpline: `t` must have {segments + 1} times to match coefficients of shape "
                f"{tuple(coeffs.shape)} ({segments} segments), got {describe(t)}."
            )
        if t.ndim > 1:
            t = t.expand(coeffs.shape[:-2] + (segments + 1,))
        self.channels = coeffs.shape[-1] // 4
        self._coeffs = coeffs
        c = self.channels
        self._a = coeffs[..., :c]
        # b, 2c, 3d time first, (segments, 3, ..., channels): a derivative's rows for the
        # whole batch are then three contiguous blocks (views for a 0-d time) instead of one
        # row per sample, a page apart.
        pieces = coeffs[..., c:].unflatten(-1, (3, c))
        self._d_by_time = pieces.movedim((-3, -2), (0, 1)).contiguous()
        # Each segment's (b, 2c, 3d) views, made on the segment's first use where no
        # gradient flows through the coefficients (a view made once then serves every grad
        # mode); otherwise made at every use.
        self._segment_pieces: list[tuple[torch.Tensor, ...] | None] | None = None
        if not self._d_by_time.requires_grad:
            self._segment_pieces = [None] * segments
        super().__init__(t.to(coeffs.device), coeffs, extrapolate)

    @property
    def coeffs(self) -> torch.Tensor:
        return self._coeffs

    def _pieces(self, idx: torch.Tensor | int) -> tuple[torch.Tensor, ...]:
        """``(b, 2c, 3d)`` of segment ``idx`` (0-d or per sample), each ``(..., channels)``."""
        d = self._d_by_time
        if isinstance(idx, int) and self._segment_pieces is not None:
            views = self._segment_pieces[idx]
            if views is None:
                views = self._segment_pieces[idx] = d[idx].unbind(0)
            return views
        if isinstance(idx, int) or idx.ndim == 0:
            return d[idx].unbind(0)
        index = idx.reshape((1, 1) + idx.shape + (1,))
        return d.gather(0, index.expand((1,) + d.shape[1:-1] + (d.shape[-1],)))[0].unbind(0)

    def _value(self, idx: torch.Tensor | int, s: torch.Tensor) -> torch.Tensor:
        a = self._rows(self._a, idx)
        b, two_c, three_d = self._pieces(idx)
        return a + s * (b + s * (two_c / 2 + s * (three_d / 3)))

    def _slope(self, idx: torch.Tensor | int, s: torch.Tensor | float) -> torch.Tensor:
        if isinstance(s, float):
            # b + s (2c + s 3d) with the offset as the operations' scalar: two fused
            # multiply-adds, where a 0-d tensor offset costs an operation to make it.
            views = self._segment_pieces
            pieces = views[idx] if views is not None else None  # type: ignore[index]
            b, two_c, three_d = pieces if pieces is not None else self._pieces(idx)
            return torch.add(b, torch.add(two_c, three_d, alpha=s), alpha=s)
        b, two_c, three_d = self._pieces(idx)
        return torch.addcmul(b, s, torch.addcmul(two_c, s, three_d))
