"""Interpolation of time series for CDEs: coefficients, paths, missing values.

Checked against mathematics (exactness on linear functions, interpolation and continuity
conditions, natural boundary conditions, finite differences), SciPy's natural cubic spline,
and torchcde's coefficient functions (same layout, so the numbers must agree).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torchnde as tn

F64 = torch.float64
scipy_interp = pytest.importorskip("scipy.interpolate")


def _irregular_t(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.cumsum(0.2 + torch.rand(n, generator=g, dtype=F64), 0)


def _series(batch: int, n: int, channels: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, n, channels, generator=g, dtype=F64)


COEFFS = {
    "linear": (tn.linear_interpolation_coeffs, tn.LinearInterpolation),
    "natural": (tn.natural_cubic_coeffs, tn.CubicSpline),
    "hermite": (tn.hermite_cubic_coeffs, tn.CubicSpline),
}


def _path(
    kind: str, x: torch.Tensor, t: torch.Tensor | None, **kw: bool
) -> tn.AbstractInterpolation:
    fn, cls = COEFFS[kind]
    return cls(fn(x, t), t, **kw)


def _inside_times(t: torch.Tensor, per_segment: int = 3) -> list[torch.Tensor]:
    """Times strictly inside segments."""
    out = []
    for i in range(t.numel() - 1):
        for f in torch.linspace(0.1, 0.9, per_segment, dtype=F64):
            out.append(t[i] + f * (t[i + 1] - t[i]))
    return out


@pytest.mark.parametrize("kind", list(COEFFS))
def test_every_interpolation_is_exact_on_linear_functions(kind):
    t = _irregular_t(9)
    alpha = torch.tensor([0.5, -1.0, 2.0], dtype=F64)
    beta = torch.tensor([1.5, 0.25, -3.0], dtype=F64)
    x = (alpha + t[:, None] * beta).expand(2, 9, 3)
    X = _path(kind, x, t)
    for s in _inside_times(t):
        torch.testing.assert_close(X.evaluate(s), (alpha + s * beta).expand(2, 3))
        torch.testing.assert_close(X.derivative(s), beta.expand(2, 3))
    X = _path(kind, x, t, extrapolate=True)  # the end pieces extended: still the line
    for s in [t[0] - 0.3, t[-1] + 0.4]:
        torch.testing.assert_close(X.evaluate(s), (alpha + s * beta).expand(2, 3))
        torch.testing.assert_close(X.derivative(s), beta.expand(2, 3))


@pytest.mark.parametrize("kind", list(COEFFS))
def test_path_passes_through_the_observations(kind):
    t = _irregular_t(8, 1)
    x = _series(3, 8, 2, 1)
    X = _path(kind, x, t)
    for i in range(8):
        torch.testing.assert_close(X.evaluate(t[i]), x[:, i], rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", list(COEFFS))
def test_derivative_matches_central_finite_differences(kind):
    t = _irregular_t(7, 2)
    x = _series(2, 7, 3, 2)
    X = _path(kind, x, t)
    eps = 1e-6
    for s in _inside_times(t):
        fd = (X.evaluate(s + eps) - X.evaluate(s - eps)) / (2 * eps)
        torch.testing.assert_close(X.derivative(s), fd, rtol=1e-6, atol=1e-7)


def test_linear_derivative_takes_the_requested_side_at_a_knot():
    t = torch.tensor([0.0, 1.0, 3.0], dtype=F64)
    x = torch.tensor([[0.0], [2.0], [3.0]], dtype=F64)
    X = tn.LinearInterpolation(tn.linear_interpolation_coeffs(x, t), t)
    one = torch.tensor(1.0, dtype=F64)
    assert X.derivative(one, "left").item() == 2.0
    assert X.derivative(one, "right").item() == 0.5


@pytest.mark.parametrize("kind", ["linear", "natural"])
@pytest.mark.parametrize("time_dtype", [torch.float32, torch.float64])
def test_one_time_for_the_batch_finds_the_segment_a_time_per_sample_finds(kind, time_dtype):
    # A 0-d time on the CPU is located on the host; one time per sample by searchsorted.
    # Both must take the same segment: at every knot from either side, between knots, at
    # the ends and beyond them (extrapolating), for times in another dtype than the knots.
    t = torch.tensor([0.0, 0.5, 1.25, 2.0, 3.5], dtype=torch.float32)
    x = _series(3, 5, 2, 1).float()
    X = _path(kind, x, t, extrapolate=True)
    probes = torch.cat([t, (t[1:] + t[:-1]) / 2, torch.tensor([-0.7, 4.1])]).to(time_dtype)
    probes = torch.cat(
        [probes, torch.nextafter(probes, probes + 1), torch.nextafter(probes, probes - 1)]
    )
    for v in probes:
        for side in ("left", "right"):
            one = X.derivative(v, side)
            each = X.derivative(v.repeat(3), side)
            assert torch.equal(one, each), (float(v), side)
        assert torch.equal(X.evaluate(v), X.evaluate(v.repeat(3)))
    nan = torch.tensor(float("nan"), dtype=time_dtype)  # searched by the tensor route
    for side in ("left", "right"):
        want = X.derivative(nan.repeat(3), side)
        torch.testing.assert_close(X.derivative(nan, side), want, rtol=0, atol=0, equal_nan=True)


def test_a_segment_first_met_under_inference_mode_still_gives_gradients_in_time():
    # A cubic remembers each segment's rows as views, made on first use.
    t = _irregular_t(6, 2)
    coeffs = tn.natural_cubic_coeffs(_series(2, 6, 3, 2), t)
    X, fresh = tn.CubicSpline(coeffs, t), tn.CubicSpline(coeffs, t)
    at = t[2] + 0.3
    with torch.inference_mode():
        X.derivative(at.clone())
    grads = []
    for path in (X, fresh):
        s = at.clone().requires_grad_(True)
        path.derivative(s).sum().backward()
        grads.append(s.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_natural_cubic_agrees_with_scipy_natural_spline(seed):
    t = _irregular_t(12, seed)
    x = _series(2, 12, 3, seed)
    X = tn.CubicSpline(tn.natural_cubic_coeffs(x, t), t)
    ref = scipy_interp.CubicSpline(t.numpy(), x.numpy(), axis=1, bc_type="natural")
    for s in _inside_times(t, 2):
        v = float(s)
        np.testing.assert_allclose(X.evaluate(s).numpy(), ref(v), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(X.derivative(s).numpy(), ref(v, 1), rtol=1e-11, atol=1e-11)


def test_natural_cubic_is_twice_differentiable_with_natural_ends():
    t = _irregular_t(10, 3)
    x = _series(2, 10, 2, 3)
    c = tn.natural_cubic_coeffs(x, t)
    ch = 2
    b, two_c, three_d = c[..., ch : 2 * ch], c[..., 2 * ch : 3 * ch], c[..., 3 * ch :]
    h = (t[1:] - t[:-1])[:, None]
    # second derivative 2c + 6d s at the start and end of every segment
    second_start = two_c
    second_end = two_c + 2 * three_d * h
    torch.testing.assert_close(second_start[:, 0], torch.zeros_like(second_start[:, 0]))
    torch.testing.assert_close(second_end[:, -1], torch.zeros_like(second_end[:, -1]))
    torch.testing.assert_close(second_end[:, :-1], second_start[:, 1:])
    first_end = b + two_c * h + three_d * h * h
    torch.testing.assert_close(first_end[:, :-1], b[:, 1:])


def test_hermite_is_continuously_differentiable_and_online_safe():
    t = _irregular_t(9, 4)
    x = _series(2, 9, 3, 4)
    c = tn.hermite_cubic_coeffs(x, t)
    ch = 3
    b, two_c, three_d = c[..., ch : 2 * ch], c[..., 2 * ch : 3 * ch], c[..., 3 * ch :]
    h = (t[1:] - t[:-1])[:, None]
    torch.testing.assert_close((b + two_c * h + three_d * h * h)[:, :-1], b[:, 1:])
    # Online: coefficients of the first 5 points equal the first segments of all 9.
    c5 = tn.hermite_cubic_coeffs(x[:, :5], t[:5])
    torch.testing.assert_close(c5, c[:, :4], rtol=0, atol=0)


def test_linear_fills_missing_values_linearly_in_time_and_constant_at_the_ends():
    t = torch.tensor([0.0, 1.0, 3.0, 4.0, 8.0], dtype=F64)
    nan = float("nan")
    x = torch.tensor([[nan], [1.0], [nan], [5.0], [nan]], dtype=F64)
    c = tn.linear_interpolation_coeffs(x, t)
    torch.testing.assert_close(c[:, 0], torch.tensor([1.0, 1.0, 11 / 3, 5.0, 5.0], dtype=F64))


def test_natural_cubic_with_missing_values_is_the_spline_of_each_channels_observations():
    # Interior NaNs are skipped: the spline of the channel's own observations. Before the
    # first (after the last) observation the grid points take that observation's value.
    t = _irregular_t(11, 5)
    x = _series(2, 11, 2, 5)
    x[0, [2, 3, 7], 0] = float("nan")
    x[1, [0, 1], 1] = float("nan")
    x[1, [9, 10], 0] = float("nan")
    X = tn.CubicSpline(tn.natural_cubic_coeffs(x, t), t)
    for b in range(2):
        for ch in range(2):
            col = x[b, :, ch].clone()
            obs = ~torch.isnan(col)
            first, last = int(obs.nonzero().min()), int(obs.nonzero().max())
            col[:first], col[last + 1 :] = col[first], col[last]
            obs[:first] = obs[last + 1 :] = True
            ref = scipy_interp.CubicSpline(t[obs].numpy(), col[obs].numpy(), bc_type="natural")
            for s in _inside_times(t, 2):
                got = float(X.evaluate(s)[b, ch])
                assert got == pytest.approx(float(ref(float(s))), rel=1e-10, abs=1e-10)


def test_a_channel_never_observed_is_zero():
    x = _series(1, 6, 2)
    x[0, :, 1] = float("nan")
    for kind in COEFFS:
        X = _path(kind, x, None)
        assert float(X.evaluate(torch.tensor(2.5, dtype=F64))[0, 1]) == 0.0


@pytest.mark.parametrize("kind", list(COEFFS))
def test_per_sample_times_match_separate_series(kind):
    x = _series(3, 7, 2, 6)
    ts = torch.stack([_irregular_t(7, s) for s in range(3)])
    # A time of sample b may lie outside another sample's interval: only sample b is compared.
    X = _path(kind, x, ts, extrapolate=True)
    for b in range(3):
        Xb = _path(kind, x[b : b + 1], ts[b])
        for s in _inside_times(ts[b], 1):
            torch.testing.assert_close(X.evaluate(s)[b], Xb.evaluate(s)[0])
            torch.testing.assert_close(X.derivative(s)[b], Xb.derivative(s)[0])
    # one time per sample (as a per-sample solve passes them)
    tq = torch.stack([ts[b, 2] + 0.1 for b in range(3)])
    got = X.evaluate(tq)
    for b in range(3):
        torch.testing.assert_close(got[b], X.evaluate(tq[b])[b])


def test_knots_are_exposed_for_the_step_size_controller():
    t = _irregular_t(5)
    X = tn.CubicSpline(tn.natural_cubic_coeffs(_series(1, 5, 1), t), t)
    torch.testing.assert_close(X.knots, t)
    torch.testing.assert_close(X.interval, torch.stack([t[0], t[-1]]))
    ts = torch.stack([t, t + 0.05])
    Y = tn.LinearInterpolation(tn.linear_interpolation_coeffs(_series(2, 5, 1), ts), ts)
    torch.testing.assert_close(Y.knots, torch.sort(torch.cat([t, t + 0.05])).values)


def test_rectilinear_moves_time_first_then_values():
    t = torch.tensor([0.0, 1.0, 3.0], dtype=F64)
    nan = float("nan")
    x = torch.tensor([[1.0, 2.0], [nan, 4.0], [5.0, nan]], dtype=F64)
    c = tn.rectilinear_interpolation_coeffs(x, t)
    want = torch.tensor(
        [[0, 1, 2], [1, 1, 2], [1, 1, 4], [3, 1, 4], [3, 5, 4]], dtype=F64
    )  # (time, channel 0, channel 1); missing values filled forward
    torch.testing.assert_close(c, want)
    # the same with the time already a channel
    xt = torch.cat([t[:, None], x], dim=-1)
    torch.testing.assert_close(tn.rectilinear_interpolation_coeffs(xt, time_channel=0), want)


def test_fill_forward_and_observation_counts():
    nan = float("nan")
    x = torch.tensor([[[nan, 1.0], [2.0, nan], [nan, nan], [3.0, 4.0]]], dtype=F64)
    ff = tn.fill_forward(x)
    want = torch.tensor([[[nan, 1.0], [2.0, 1.0], [2.0, 1.0], [3.0, 4.0]]], dtype=F64)
    torch.testing.assert_close(ff, want, equal_nan=True)
    counts = tn.add_observation_counts(x)[..., 2:]
    torch.testing.assert_close(counts[0], torch.tensor([[0, 1], [1, 1], [1, 1], [2, 2]], dtype=F64))


def test_coefficients_are_differentiable():
    t = _irregular_t(6)
    x = _series(1, 6, 2).requires_grad_(True)

    def f(x):
        X = tn.CubicSpline(tn.natural_cubic_coeffs(x, t), t)
        return X.evaluate(torch.tensor(2.1, dtype=F64)), X.derivative(torch.tensor(3.3, dtype=F64))

    assert torch.autograd.gradcheck(f, (x,))


def test_coefficients_are_differentiable_in_the_times():
    t = _irregular_t(6).requires_grad_(True)
    x = _series(1, 6, 2)

    def f(t):
        return tn.natural_cubic_coeffs(x, t)

    assert torch.autograd.gradcheck(f, (t,))


def test_coefficients_for_times_seen_before_are_the_same_and_usable_for_gradients():
    # The shared grid's matrix is cached by the times' values: a grid first met under
    # inference mode must still serve a later call that is differentiated.
    t = _irregular_t(7, 3)
    x = _series(2, 7, 3, 4)
    with torch.inference_mode():
        first = tn.natural_cubic_coeffs(x, t.clone())
    xg = x.clone().requires_grad_(True)
    again = tn.natural_cubic_coeffs(xg, t.clone())
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    again.pow(2).sum().backward()
    assert xg.grad is not None and bool(torch.isfinite(xg.grad).all())
    moved = t.clone()
    moved[3] += 0.01  # other times, other spline
    assert not torch.equal(tn.natural_cubic_coeffs(x, moved), first)


def test_natural_cubic_keeps_every_batch_dimension():
    t = _irregular_t(9, 2)
    x = _series(6, 9, 2, 3).view(2, 3, 9, 2)
    got = tn.natural_cubic_coeffs(x, t)
    assert got.shape == (2, 3, 8, 8)
    torch.testing.assert_close(got.view(6, 8, 8), tn.natural_cubic_coeffs(x.view(6, 9, 2), t))
    torch.testing.assert_close(
        got[1, 2], tn.natural_cubic_coeffs(x[1, 2], t), rtol=1e-14, atol=1e-14
    )


def test_long_series_use_the_thomas_route_with_the_same_result():
    from torchnde._cde import cubic

    x = _series(2, 40, 2, 7)
    t = _irregular_t(40, 7)
    dense = tn.natural_cubic_coeffs(x, t)
    old = cubic._DENSE_MAX
    try:
        cubic._DENSE_MAX = 8
        torch.testing.assert_close(tn.natural_cubic_coeffs(x, t), dense)
    finally:
        cubic._DENSE_MAX = old


torchcde = pytest.importorskip("torchcde")


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (tn.natural_cubic_coeffs, "natural_cubic_coeffs"),
        (tn.linear_interpolation_coeffs, "linear_interpolation_coeffs"),
        (tn.hermite_cubic_coeffs, "hermite_cubic_coefficients_with_backward_differences"),
    ],
)
def test_coefficients_agree_with_torchcde_including_missing_values(ours, theirs):
    t = _irregular_t(10, 8)
    x = _series(3, 10, 2, 8)
    x[0, 3, 1] = x[1, :2, 0] = x[2, 8:, 1] = x[2, 4:6, 0] = float("nan")
    torch.testing.assert_close(ours(x, t), getattr(torchcde, theirs)(x, t), rtol=1e-9, atol=1e-9)


ERRORS = [
    (lambda: tn.natural_cubic_coeffs(torch.zeros(5)), ValueError, r"`x` must have shape"),
    (lambda: tn.natural_cubic_coeffs(torch.zeros(1, 2)), ValueError, r"at least 2 observations"),
    (lambda: tn.linear_interpolation_coeffs(torch.zeros(4, 2), torch.zeros(3)), ValueError, "`t`"),
    (
        lambda: tn.linear_interpolation_coeffs(torch.zeros(4, 2), torch.tensor([0.0, 2, 1, 3])),
        ValueError,
        "strictly increasing",
    ),
    (lambda: tn.hermite_cubic_coeffs(torch.zeros(4, 2, dtype=torch.int64)), TypeError, "`x`"),
    (lambda: tn.CubicSpline(torch.zeros(3, 5)), ValueError, "4 \\* channels"),
    (
        lambda: tn.rectilinear_interpolation_coeffs(
            torch.zeros(3, 2), torch.arange(3.0), time_channel=0
        ),
        ValueError,
        "not both",
    ),
]


@pytest.mark.parametrize("i", range(len(ERRORS)))
def test_bad_input_raises_a_clear_error(i):
    fn, exc, match = ERRORS[i]
    with pytest.raises(exc, match=match):
        fn()


# -- the interval: times outside are an error unless the path extrapolates ---------------
def _every_path(t: torch.Tensor, **kw: bool) -> dict[str, tn.AbstractInterpolation]:
    x = _series(2, t.numel(), 2, 3)
    paths = {kind: _path(kind, x, t, **kw) for kind in COEFFS}
    # rectilinear: observation i sits at knot 2 i of the default times 0, 1, ..., 2 n - 2
    rect = tn.rectilinear_interpolation_coeffs(x, t)
    paths["rectilinear"] = tn.LinearInterpolation(rect, **kw)
    return paths


@pytest.mark.parametrize("kind", [*COEFFS, "rectilinear"])
def test_a_time_outside_the_interval_is_an_error_naming_the_interval(kind):
    t = torch.linspace(0.0, 1.0, 6, dtype=F64)
    X = _every_path(t)[kind]
    lo, hi = (float(v) for v in X.interval)
    outside = [lo - 0.5, hi + 0.5, hi + 4.0]
    for s in outside:
        where = rf"\[{lo:.6g}, {hi:.6g}\]"
        with pytest.raises(ValueError, match=rf"evaluate: `t0` = {s:.6g} lies outside .*{where}"):
            X.evaluate(s)
        with pytest.raises(ValueError, match=rf"derivative: `t` = {s:.6g} lies outside .*{where}"):
            X.derivative(torch.tensor(s, dtype=F64))
        with pytest.raises(ValueError, match="`t1` = .* extrapolate=True"):
            X.evaluate(torch.tensor(lo, dtype=F64), torch.tensor(s, dtype=F64))
    with pytest.raises(ValueError, match=rf"`t0` has 2 times from -1 to {hi + 2:.6g} outside"):
        X.evaluate(torch.tensor([-1.0, lo, hi + 2], dtype=F64))


@pytest.mark.parametrize("kind", [*COEFFS, "rectilinear"])
def test_the_end_points_and_round_off_at_them_are_inside(kind):
    # float32 times and data: the ends known to float32 round-off, queried in float64
    t = torch.linspace(0.0, 3.0, 7, dtype=torch.float32) * 0.1
    x = _series(2, 7, 2, 3).float()
    if kind == "rectilinear":
        X = tn.LinearInterpolation(tn.rectilinear_interpolation_coeffs(x, t))
        last = torch.cat([t[-1:].expand(2, 1), x[:, -1]], dim=-1)
    else:
        X, last = _path(kind, x, t), x[:, -1]
    lo, hi = X.interval.double()
    eps = torch.finfo(torch.float32).eps
    for s in [lo, hi, hi * (1 + 2 * eps), float(hi) + 1e-8 * float(hi), float(lo) - 1e-9]:
        X.evaluate(s)
        X.derivative(torch.as_tensor(s))
    # exactly at the end: the last observation
    torch.testing.assert_close(X.evaluate(X.interval[1]), last)
    with pytest.raises(ValueError, match="outside"):
        X.evaluate(hi * (1 + 100 * eps))


def test_extrapolate_true_extends_the_end_pieces_as_scipy_does():
    t = _irregular_t(7, 2)
    x = _series(1, 7, 1, 2)
    X = tn.CubicSpline(tn.natural_cubic_coeffs(x, t), t, extrapolate=True)
    ref = scipy_interp.CubicSpline(t.numpy(), x[0, :, 0].numpy(), bc_type="natural")
    for s in [float(t[0]) - 0.7, float(t[-1]) + 1.3]:
        torch.testing.assert_close(X.evaluate(s)[0, 0].item(), float(ref(s)), rtol=1e-12, atol=0)
        got = X.derivative(torch.tensor(s, dtype=F64))[0, 0].item()
        torch.testing.assert_close(got, float(ref(s, 1)), rtol=1e-12, atol=0)
    with pytest.raises(TypeError, match="`extrapolate` must be True or False"):
        tn.LinearInterpolation(x, t, extrapolate="yes")  # type: ignore[arg-type]


def test_per_sample_times_are_checked_against_each_samples_own_interval():
    t = _irregular_t(5)
    ts = torch.stack([t, t + 0.5])
    X = tn.LinearInterpolation(tn.linear_interpolation_coeffs(_series(2, 5, 1), ts), ts)
    # the interval is where every sample is defined
    torch.testing.assert_close(X.interval, torch.stack([t[0] + 0.5, t[-1]]))
    X.evaluate(torch.stack([t[0], t[0] + 0.5]))  # one time per sample, each inside its own
    with pytest.raises(ValueError, match=r"outside the interval \[.*\] of sample 1 .*where every"):
        X.evaluate(t[0])  # one time for both: before sample 1's first observation
    with pytest.raises(ValueError, match="of sample 0"):
        X.derivative(torch.stack([t[-1] + 0.1, t[-1]]))


def test_float32_natural_cubic_on_a_long_grid_matches_float64_and_holds_no_subnormals():
    # The shared system's inverse decays geometrically off the diagonal: in float32 its far
    # entries would be subnormal, or give subnormal products (slow to multiply); those below
    # eps³ of their row's largest are flushed to zero, which changes the coefficients by far
    # less than float32 rounding.
    from torchnde._cde.cubic import _flush_negligible, _shared_system

    t = torch.arange(100, dtype=torch.float32)
    g, _ = _shared_system(t)
    g32 = _flush_negligible(g, torch.float32)
    info = torch.finfo(torch.float32)
    assert not bool(((g32 != 0) & (g32.abs() < info.tiny)).any())
    bound = g.abs().amax(dim=-1, keepdim=True) * info.eps**3
    kept = g.abs() >= bound
    assert torch.equal(g32[kept], g.to(torch.float32)[kept])
    assert bool((g32[~kept] == 0).all())
    assert float(g32[g32 != 0].abs().min()) > 1e6 * info.tiny  # products with Δx ~ 1e-6 stay normal
    x = _series(4, 100, 3, seed=5)
    got = tn.natural_cubic_coeffs(x.float(), t)
    want = tn.natural_cubic_coeffs(x, t.double())
    scale = want.abs().amax(dim=-2, keepdim=True)
    assert float(((got.double() - want).abs() / scale).max()) < 1e-5
    x_s, t_s = x[0, :, 0].numpy(), t.double().numpy()
    spline = scipy_interp.CubicSpline(t_s, x_s, bc_type="natural")
    path = tn.CubicSpline(got, t)
    for s in (3.3, 50.5, 98.9):
        value = float(path.evaluate(torch.tensor(s))[0, 0])
        assert abs(value - float(spline(s))) < 2e-5 * np.abs(x_s).max()
