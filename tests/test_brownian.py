"""Brownian motions: law of the increments (KS tests, covariances, bridge conditionals, Lévy
areas), exact additivity, determinism whatever the query order, bit-identical reconstruction,
shapes, dtypes, reverse time, per-sample times and errors.

Statistical checks use fixed seeds (so they are deterministic) and tolerances of about five
standard errors of the estimated quantity.
"""

from __future__ import annotations

import math
import random

import pytest
import torch
from scipy import stats

import torchnde as tn
from torchnde._brownian.bridge import join

F64 = torch.float64
ALL = [tn.BrownianInterval, tn.VirtualBrownianTree, tn.BrownianPath]
# both BrownianInterval and VirtualBrownianTree give the same samples whatever the query order
ORDER_FREE = [tn.BrownianInterval, tn.VirtualBrownianTree]
N = 20000  # samples (batch) for the statistical tests


def make(cls, shape=(N,), t0=0.0, t1=1.0, **kw):
    kw.setdefault("seed", 1234)
    kw.setdefault("dtype", F64)
    return cls(t0, t1, shape, **kw)


def assert_close(x: torch.Tensor, y: torch.Tensor, atol: float) -> None:
    """|x - y| <= atol elementwise, same shape and dtype (torch.testing.assert_close costs a
    multi-second import of torch.distributed on first use)."""
    assert x.shape == y.shape and x.dtype == y.dtype
    err = float((x - y).abs().max()) if x.numel() else 0.0
    assert err <= atol, f"max abs difference {err:.3g} > {atol:.3g}"


def se_var(var: float, n: int = N) -> float:
    """Standard error of a sample variance of n Gaussian samples."""
    return var * math.sqrt(2.0 / n)


# ------------------------------------------------------------------------------------- law
@pytest.mark.parametrize("cls", ALL)
def test_increments_are_normal_with_variance_equal_to_the_time_step(cls):
    bm = make(cls, t0=-1.0, t1=2.0)
    for ta, tb in [(-1.0, 2.0), (0.1, 0.35), (1.3, 1.3001), (-0.7, 1.9)]:
        W = bm(ta, tb)
        z = (W / math.sqrt(tb - ta)).numpy()
        assert stats.kstest(z, "norm").pvalue > 1e-3, (ta, tb)
        assert abs(z.var() - 1.0) < 5 * se_var(1.0)


@pytest.mark.parametrize("cls", ALL)
def test_covariance_is_min_s_t_under_random_access(cls):
    # W(t) queried at times in a random order: Cov(W(s), W(t)) = min(s, t) - t0.
    times = [0.9, 0.05, 0.5, 0.31, 0.77, 0.2]
    bm = make(cls)
    W = torch.stack([bm(t) for t in times])  # (6, N)
    cov = torch.cov(W)
    expect = torch.tensor([[min(s, t) for t in times] for s in times], dtype=F64)
    # se of a covariance estimate <= sqrt((var_s var_t + cov^2) / N) <= sqrt(2 / N)
    assert torch.allclose(cov, expect, atol=5 * math.sqrt(2.0 / N))


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("midpoint_first", [False, True])
def test_bridge_midpoint_has_the_conditional_mean_and_variance(cls, midpoint_first):
    # Given W(a, b), W(a, m) ~ N((m - a)/(b - a) W(a, b), (m - a)(b - m)/(b - a)).
    a, m, b = 0.2, 0.35, 0.9
    bm = make(cls)
    if midpoint_first:
        Wam = bm(a, m)
        Wab = bm(a, b)
    else:
        Wab = bm(a, b)
        Wam = bm(a, m)
    slope = float((Wab * Wam).sum() / (Wab * Wab).sum())
    resid = Wam - slope * Wab
    var = (m - a) * (b - m) / (b - a)
    # se of a least-squares slope: sqrt(resid_var / sum(x^2))
    assert abs(slope - (m - a) / (b - a)) < 5 * math.sqrt(var / (N * (b - a)))
    assert abs(float(resid.var()) - var) < 5 * se_var(var)


@pytest.mark.parametrize("cls", ALL)
def test_increments_over_disjoint_intervals_are_uncorrelated(cls):
    bm = make(cls)
    grid = [0.0, 0.13, 0.4, 0.41, 0.8, 1.0]
    W = torch.stack([bm(s, t) for s, t in zip(grid[:-1], grid[1:])])
    W = W / W.std(dim=1, keepdim=True)
    corr = torch.corrcoef(W)
    off = corr - torch.eye(len(grid) - 1, dtype=F64)
    assert off.abs().max() < 5 / math.sqrt(N)


# ------------------------------------------------------------------------------- structure
@pytest.mark.parametrize("cls", ALL)
def test_increments_are_additive_over_splits_to_round_off(cls):
    rng = random.Random(0)
    bm = make(cls, shape=(64, 3))
    for _ in range(30):
        a, b, c = sorted(rng.uniform(0.0, 1.0) for _ in range(3))
        Wac = bm(a, c)
        assert_close(bm(a, b) + bm(b, c), Wac, atol=1e-13)
    assert_close(bm(0.25), bm(0.0, 0.25), atol=0)


def grid_queries(n=100):
    ts = torch.linspace(0.0, 1.0, n + 1, dtype=F64)
    return [(ts[i], ts[i + 1]) for i in range(n)]


@pytest.mark.parametrize("cls", ORDER_FREE)
def test_fixed_step_samples_do_not_depend_on_the_query_order(cls):
    queries = grid_queries()
    bm = make(cls, shape=(8, 4))
    ref = [bm(a, b) for a, b in queries]
    for order_seed in range(3):
        order = list(range(len(queries)))
        random.Random(order_seed).shuffle(order)
        fresh = make(cls, shape=(8, 4))
        got = {i: fresh(*queries[i]) for i in order}
        assert all(torch.equal(got[i], ref[i]) for i in range(len(queries)))
    # backwards, from a fresh object
    fresh = make(cls, shape=(8, 4))
    back = [fresh(a, b) for a, b in reversed(queries)][::-1]
    assert all(torch.equal(x, y) for x, y in zip(back, ref))


def test_virtual_tree_samples_are_a_function_of_seed_and_time_only():
    rng = random.Random(3)
    pts = [rng.uniform(0.0, 1.0) for _ in range(20)]
    bm = make(tn.VirtualBrownianTree, shape=(4, 2), tol=1e-3)
    ref = [bm(t) for t in pts]
    for order_seed in range(2):
        order = list(range(len(pts)))
        random.Random(order_seed).shuffle(order)
        fresh = make(tn.VirtualBrownianTree, shape=(4, 2), tol=1e-3, cache_size=3)
        got = {i: fresh(pts[i]) for i in order}
        assert all(torch.equal(got[i], ref[i]) for i in range(len(pts)))


def test_dyadic_nodes_of_brownian_interval_do_not_depend_on_the_queries():
    # Dyadic times cut before any query time lands near them have the same value, whatever
    # was asked before (here 0.013 forces dyadic cuts of [0, 1] down to width < 0.013).
    a = make(tn.BrownianInterval, shape=(5,))
    b = make(tn.BrownianInterval, shape=(5,))
    for t in [0.013, 0.77, 0.3]:
        b(t)
    for t in [0.5, 0.25, 0.125, 1.0]:
        assert torch.equal(a(t), b(t))


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("levy_area", [None, "space-time"])
def test_backward_pass_reconstructs_the_forward_increments_bit_for_bit(cls, levy_area):
    kw = {} if cls is tn.BrownianPath else {"cache_size": 2}  # tiny cache: recompute a lot
    if cls is tn.VirtualBrownianTree:
        kw["tol"] = 1e-3
    bm = make(cls, shape=(6, 3), levy_area=levy_area, **kw)
    rng = random.Random(1)
    ts = sorted({0.0, 1.0, *(rng.uniform(0, 1) for _ in range(40))})
    pairs = list(zip(ts[:-1], ts[1:]))

    def query(a, b):
        return bm.increment(a, b) if levy_area else (bm(a, b),)

    fwd = [query(a, b) for a, b in pairs]
    bwd = [query(a, b) for a, b in reversed(pairs)][::-1]
    for f, g in zip(fwd, bwd):
        for x, y in zip(f, g):
            assert (x is None and y is None) or torch.equal(x, y)
    # reverse-time queries give the negated increment, bit for bit
    for (a, b), f in zip(pairs, fwd):
        assert torch.equal(bm(b, a), -f[0])


@pytest.mark.parametrize("n", [100, 1000])
def test_brownian_interval_sweeps_cost_a_bounded_number_of_draws_per_step(n):
    # No dt hint and no cliff: a fixed-step sweep and its backward sweep each cost O(1)
    # Gaussian draws per step (counted, not timed), whatever n.
    bm = tn.BrownianInterval(0.0, 1.0, (1,), seed=0)
    draws = [0]
    randn = bm._randn

    def counting(*a, **k):
        draws[0] += 1
        return randn(*a, **k)

    bm._randn = counting  # type: ignore[method-assign]
    ts = [k / n for k in range(n + 1)]
    pairs = list(zip(ts[:-1], ts[1:]))
    for a, b in pairs:
        bm(a, b)
    forward, draws[0] = draws[0], 0
    for a, b in reversed(pairs):
        bm(a, b)
    assert forward / n < 3.5 and draws[0] / n < 3.5


def test_brownian_path_is_reproducible_for_a_query_sequence():
    seq = [0.5, 0.1, 0.9, 0.3, 0.95]
    a = make(tn.BrownianPath, shape=(3,))
    b = make(tn.BrownianPath, shape=(3,))
    assert all(torch.equal(a(t), b(t)) for t in seq)


# ----------------------------------------------------------------------------- Lévy areas
@pytest.mark.parametrize("cls", ALL)
def test_space_time_levy_area_has_variance_h_over_12_and_is_independent_of_W(cls):
    bm = make(cls, levy_area="space-time")
    for ta, tb in [(0.0, 1.0), (0.21, 0.46)]:
        W, H, A = bm.increment(ta, tb)
        h = tb - ta
        assert A is None
        z = (H / math.sqrt(h / 12)).numpy()
        assert stats.kstest(z, "norm").pvalue > 1e-3
        assert abs(float(H.var()) - h / 12) < 5 * se_var(h / 12)
        # independent: uncorrelated with W and with W^2 (Gaussian pair, so enough)
        assert abs(float(torch.corrcoef(torch.stack([W, H]))[0, 1])) < 5 / math.sqrt(N)
        assert abs(float(torch.corrcoef(torch.stack([W * W, H]))[0, 1])) < 5 / math.sqrt(N)


@pytest.mark.parametrize("cls", ALL)
def test_space_time_levy_area_is_the_time_integral_of_the_path(cls):
    # H = (1/h) int (W_u - W_a - (u - a)/h W_ab) du. The trapezoid rule on a grid of step dt
    # misses exactly sum_k (dt/h) H_k (the sub-intervals' own areas), of standard deviation
    # dt / sqrt(12) for h = 1; an H unrelated to the path would be off by sqrt(1/12).
    n, B = 256, 256
    dt = 1.0 / n
    kw = {"tol": 2.0**-10} if cls is tn.VirtualBrownianTree else {}
    bm = make(cls, shape=(B,), levy_area="space-time", **kw)
    W_ab, H, _ = bm.increment(0.0, 1.0)
    dW = torch.stack([bm(k * dt, (k + 1) * dt) for k in range(n)])
    Wt = torch.cat([torch.zeros(1, B, dtype=F64), dW.cumsum(0)])  # W at the grid, (n + 1, B)
    u = torch.linspace(0.0, 1.0, n + 1, dtype=F64)[:, None]
    f = Wt - u * W_ab
    H_trap = dt * (f[1:] + f[:-1]).sum(0) / 2
    assert (H - H_trap).abs().max() < 6 * dt / math.sqrt(12)


@pytest.mark.parametrize("cls", ALL)
def test_split_pieces_have_the_unconditional_joint_law(cls):
    # Split [0, 1] at 0.2 after sampling it whole: (W1, H1, W2, H2) must be independent with
    # variances (h1, h1/12, h2, h2/12): checks the conditional (W, H) bridge.
    bm = make(
        cls, levy_area="space-time", **({"tol": 0.3} if cls is tn.VirtualBrownianTree else {})
    )
    bm.increment(0.0, 1.0)
    m = 0.25 if cls is tn.VirtualBrownianTree else 0.2  # a tree node time for the tree
    W1, H1, _ = bm.increment(0.0, m)
    W2, H2, _ = bm.increment(m, 1.0)
    X = torch.stack([W1, H1, W2, H2])
    sd = torch.tensor([m, m / 12, 1 - m, (1 - m) / 12], dtype=F64).sqrt()
    corr = torch.cov(X) / (sd[:, None] * sd[None, :])
    assert (corr - torch.eye(4, dtype=F64)).abs().max() < 5 * math.sqrt(2.0 / N)


@pytest.mark.parametrize("cls", ALL)
def test_space_time_levy_area_is_consistent_over_splits(cls):
    kw = {"tol": 1e-3} if cls is tn.VirtualBrownianTree else {}
    bm = make(cls, shape=(16, 3), levy_area="space-time", **kw)
    rng = random.Random(2)
    for _ in range(20):
        a, b, c = sorted(rng.uniform(0.0, 1.0) for _ in range(3))
        if cls is tn.VirtualBrownianTree and min(b - a, c - b) < 2e-3:
            continue  # closer than tol: approximate by design
        W1, H1, _ = bm.increment(a, b)
        W2, H2, _ = bm.increment(b, c)
        W, H, _ = bm.increment(a, c)
        Wj, Hj = join(W1, H1, b - a, W2, H2, c - b)
        assert_close(Wj, W, atol=1e-12)
        assert_close(Hj, H, atol=1e-12)


@pytest.mark.parametrize("kind", ["davie", "foster"])
def test_full_levy_area_has_the_right_mean_variance_and_antisymmetry(kind):
    h = 0.5
    bm = make(tn.BrownianInterval, shape=(N, 2), levy_area=kind)
    W, H, A = bm.increment(0.25, 0.25 + h)
    assert A is not None and A.shape == (N, 2, 2)
    assert_close(A, -A.transpose(-1, -2), atol=0)
    a = A[:, 0, 1]
    # Var A_ij = h^2 / 4 for the true Lévy area; both approximations match it
    assert abs(float(a.var()) - h * h / 4) < 5 * se_var(h * h / 4)
    mean = H[:, 0] * W[:, 1] - W[:, 0] * H[:, 1]
    resid = a - mean
    assert abs(float((resid * mean).mean())) < 5 * math.sqrt(h * h / 12 * h * h / 6 / N)
    if kind == "foster":
        # conditional variance h^2/20 + h/5 (H_0^2 + H_1^2): regress resid^2 on the H term
        x = H[:, 0] ** 2 + H[:, 1] ** 2
        slope, intercept = torch.linalg.lstsq(
            torch.stack([x, torch.ones_like(x)], 1), (resid**2)[:, None]
        ).solution[:, 0]
        assert abs(float(slope) - h / 5) < 0.15 * h / 5
        assert abs(float(intercept) - h * h / 20) < 0.15 * h * h / 20
    # reverse time: W and A change sign, H does not
    Wr, Hr, Ar = bm.increment(0.25 + h, 0.25)
    assert torch.equal(Wr, -W) and torch.equal(Hr, H) and torch.equal(Ar, -A)


# ------------------------------------------------------------------- shapes, dtypes, times
@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_and_dtype_of_samples(cls, dtype):
    bm = cls(0.0, 1.0, (5, 2, 3), dtype=dtype, seed=0, levy_area="foster")
    W, H, A = bm.increment(torch.tensor(0.1), torch.tensor(0.6, dtype=torch.float32))
    assert W.shape == H.shape == (5, 2, 3) and A.shape == (5, 2, 3, 3)
    assert W.dtype == H.dtype == A.dtype == dtype
    assert bm(0.3).shape == (5, 2, 3)
    assert torch.equal(bm(0.4, 0.4), torch.zeros(5, 2, 3, dtype=dtype))


@pytest.mark.parametrize("cls", ALL)
def test_per_sample_times_give_each_sample_its_own_increment(cls):
    bm = make(cls, shape=(4, 3))
    ta = torch.tensor([0.0, 0.1, 0.1, 0.7])
    tb = torch.tensor([0.5, 0.3, 0.3, 0.2])  # the last one runs backwards
    W = bm(ta, tb)
    for i in range(4):
        assert torch.equal(W[i], bm(float(ta[i]), float(tb[i]))[i])
    # a scalar time broadcasts against per-sample ones
    W0 = bm(0.0, tb)
    assert torch.equal(W0[3], bm(0.0, float(tb[3]))[3])


@pytest.mark.parametrize("cls", ALL)
def test_per_sample_times_with_levy_area(cls):
    bm = make(cls, shape=(3, 2), levy_area="foster")
    ta = torch.tensor([0.1, 0.6, 0.3], dtype=F64)
    tb = torch.tensor([0.4, 0.2, 0.9], dtype=F64)
    inc = bm.increment(ta, tb)
    for i in range(3):
        one = bm.increment(float(ta[i]), float(tb[i]))
        assert torch.equal(inc.W[i], one.W[i])
        for got, ref in zip(inc[1:], one[1:]):
            if cls is tn.BrownianPath:
                # its H joins the gaps between the times stored *now*: equal to round-off
                assert_close(got[i], ref[i], atol=1e-12)
            else:
                assert torch.equal(got[i], ref[i])


def test_seed_none_follows_torch_manual_seed():
    torch.manual_seed(7)
    a = tn.BrownianInterval(0.0, 1.0, (3,))(0.5)
    torch.manual_seed(7)
    b = tn.BrownianInterval(0.0, 1.0, (3,))(0.5)
    assert torch.equal(a, b)


def test_numpy_scalars_are_accepted_as_times():
    np = pytest.importorskip("numpy")
    bm = make(tn.BrownianInterval, shape=(3,))
    assert torch.equal(bm(np.float32(0.25), np.float64(0.5)), bm(0.25, 0.5))


@pytest.mark.parametrize("cls", ALL)
def test_control_term_reads_the_brownian_increment(cls):
    bm = make(cls, shape=(3, 2))
    term = tn.ControlTerm(lambda t, y, args: torch.ones_like(y), bm, noise="diagonal")
    t0, t1 = torch.tensor(0.2, dtype=F64), torch.tensor(0.45, dtype=F64)
    assert_close(term.contr(t0, t1), bm(0.2, 0.45), atol=0)


@pytest.mark.parametrize("cls", ALL)
def test_solving_dy_equals_sigma_dW_returns_sigma_W(cls):
    # Heun on a Stratonovich SDE with constant diffusion: y(1) = y0 + sigma W(1), exactly.
    bm = make(cls, shape=(7, 2))
    y0 = torch.zeros(7, 2, dtype=F64)
    terms = tn.MultiTerm(
        tn.ODETerm(lambda t, y, args: torch.zeros_like(y)),
        tn.ControlTerm(lambda t, y, args: 0.5 * torch.ones_like(y), bm, noise="diagonal"),
    )
    sol = tn.solve(terms, tn.Heun(), 0.0, 1.0, y0, dt0=0.05, controller=tn.ConstantStepSize())
    assert_close(sol.ys[-1], 0.5 * bm(0.0, 1.0), atol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("cls", ALL)
def test_samples_live_on_the_requested_cuda_device(cls):
    bm = cls(0.0, 1.0, (8, 3), device="cuda", seed=0, levy_area="foster")
    W, H, A = bm.increment(torch.tensor(0.1, device="cuda"), torch.tensor(0.9, device="cuda"))
    assert W.device.type == H.device.type == A.device.type == "cuda"
    assert_close(bm(0.1, 0.5) + bm(0.5, 0.9), W, atol=1e-6)


# ---------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("cls", ALL)
def test_bad_input_raises_a_clear_error(cls):
    bm = cls(0.0, 1.0, (4, 2), seed=0)
    with pytest.raises(ValueError, match=r"`tb`=1.5 is outside the interval \[t0, t1\]"):
        bm(0.2, 1.5)
    with pytest.raises(ValueError, match=r"`ta` must have shape \(\) or \(batch,\) = \(4,\)"):
        bm(torch.zeros(3), 0.5)
    with pytest.raises(TypeError, match="`ta` must be a number or a tensor"):
        bm("0.1", 0.5)
    with pytest.raises(ValueError, match="levy_area=None"):
        bm.increment(0.1, 0.2)
    with pytest.raises(ValueError, match="need t0 < t1"):
        cls(1.0, 1.0, (4,))
    with pytest.raises(ValueError, match="`shape` must be a non-empty tuple of positive ints"):
        cls(0.0, 1.0, (4, 0))
    with pytest.raises(TypeError, match="`shape` must be a tuple of ints"):
        cls(0.0, 1.0, "4")
    with pytest.raises(TypeError, match="`dtype` must be a floating-point"):
        cls(0.0, 1.0, (4,), dtype=torch.int64)
    with pytest.raises(ValueError, match="`levy_area` must be one of"):
        cls(0.0, 1.0, (4,), levy_area="full")
    with pytest.raises(TypeError, match="`seed` must be an int"):
        cls(0.0, 1.0, (4,), seed=1.5)


def test_bad_tree_parameters_raise_clear_errors():
    with pytest.raises(ValueError, match="`cache_size` must be a positive int"):
        tn.BrownianInterval(0.0, 1.0, (4,), cache_size=0)
    with pytest.raises(ValueError, match="`tol` must be a positive number"):
        tn.VirtualBrownianTree(0.0, 1.0, (4,), tol=0.0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_device_this_machine_lacks_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot create a random generator on `device`='cuda'"):
        tn.BrownianInterval(0.0, 1.0, (4,), device="cuda")


def test_times_a_round_off_outside_the_interval_are_clipped():
    bm = make(tn.BrownianInterval, shape=(3,))
    t_end = 0.1 * 3 + 0.7  # 1.0000000000000002
    assert torch.equal(bm(0.5, t_end), bm(0.5, 1.0))


@pytest.mark.parametrize("cls", [tn.BrownianInterval, tn.VirtualBrownianTree, tn.BrownianPath])
@pytest.mark.parametrize(
    "query, match",
    [
        ((math.nan,), r"query time `t`=nan is not finite.*\[t0, t1\] = \[0.0, 1.0\]"),
        ((torch.tensor(math.nan),), r"`t`=nan is not finite"),
        ((0.0, math.nan), r"`tb`=nan is not finite"),
        ((math.nan, 0.5), r"`ta`=nan is not finite"),
        ((math.inf,), r"`t`=inf is not finite"),
        ((0.2, torch.tensor([0.5, math.nan])), r"`tb`=nan is not finite"),
        ((1.5,), r"`t`=1.5 is outside the interval \[t0, t1\] = \[0.0, 1.0\]"),
        ((-0.5, 0.5), r"`ta`=-0.5 is outside the interval"),
    ],
)
def test_query_times_that_are_not_finite_or_outside_the_interval_are_value_errors(
    cls, query, match
):
    bm = cls(0.0, 1.0, (2, 3), seed=0)
    with pytest.raises(ValueError, match=match):
        bm(*query)
