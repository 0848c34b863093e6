"""Solving controlled differential equations: cdeint, CDETerm, ControlTerm, CDEStream.

Analytic solutions (dz = A dX and dz = z dX), gradients by gradcheck in float64, every
adjoint against the direct one, streaming against batch evaluation, and agreement with
torchcde.cdeint on a shared problem.
"""

from __future__ import annotations

import pytest
import torch

import torchnde as tn

F64 = torch.float64


def _data(batch=3, n=8, channels=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.cumsum(0.3 + torch.rand(n, generator=g, dtype=F64), 0)
    x = torch.randn(batch, n, channels, generator=g, dtype=F64).cumsum(1) * 0.5
    return x, t


def _path(kind, x, t):
    if kind == "linear":
        return tn.LinearInterpolation(tn.linear_interpolation_coeffs(x, t), t)
    if kind == "hermite":
        return tn.CubicSpline(tn.hermite_cubic_coeffs(x, t), t)
    return tn.CubicSpline(tn.natural_cubic_coeffs(x, t), t)


class Field(torch.nn.Module):
    """A small nonlinear CDE vector field returning (batch, hidden, channels)."""

    def __init__(self, hidden=3, channels=2, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.hidden, self.channels = hidden, channels
        self.w = torch.nn.Parameter(
            0.4 * torch.randn(hidden, hidden * channels, generator=g, dtype=F64)
        )
        self.b = torch.nn.Parameter(0.1 * torch.randn(hidden * channels, generator=g, dtype=F64))

    def forward(self, t, z):
        return torch.tanh(z @ self.w + self.b).reshape(*z.shape[:-1], self.hidden, self.channels)


@pytest.mark.parametrize(
    "kind, solver",
    [(k, s) for k in ("linear", "natural", "hermite") for s in ("rk4", "dopri5")]
    + [("linear", "euler")],
)
def test_constant_vector_field_integrates_the_path_exactly(kind, solver):
    # dz = A dX  =>  z(t) = z0 + A (X(t) - X(t0)); exact for RK4/dopri5 on cubic pieces, and
    # for any Runge-Kutta method (Euler too) on linear pieces (the steps land on the knots).
    x, t = _data()
    X = _path(kind, x, t)
    A = torch.tensor([[1.0, -2.0], [0.5, 0.25], [0.0, 3.0]], dtype=F64)
    z0 = torch.randn(3, 3, dtype=F64)
    ts = torch.stack([t[0], t[2] + 0.1, t[5], t[-1]])
    zs = tn.cdeint(
        X, lambda tt, z: A.expand(3, 3, 2), z0, ts, solver=solver, rtol=1e-10, atol=1e-12
    )
    for i, s in enumerate(ts):
        want = z0 + (X.evaluate(s) - X.evaluate(t[0])) @ A.T
        torch.testing.assert_close(zs[i], want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kind", ["linear", "natural"])
def test_linear_cde_has_the_exponential_solution(kind):
    # dz = z dX (one channel)  =>  z(t) = z0 exp(X(t) - X(t0))
    x, t = _data(batch=2, channels=1, seed=1)
    X = _path(kind, x, t)
    z0 = torch.tensor([[1.0], [2.0]], dtype=F64)
    zs = tn.cdeint(
        X, lambda tt, z: z.unsqueeze(-1), z0, t, solver=tn.Dopri5(), rtol=1e-11, atol=1e-12
    )
    for i, s in enumerate(t):
        want = z0 * torch.exp(X.evaluate(s) - X.evaluate(t[0]))
        torch.testing.assert_close(zs[i], want, rtol=1e-8, atol=1e-9)


def test_result_is_time_first_and_reverse_time_returns_to_the_start():
    x, t = _data()
    X = _path("linear", x, t)
    f = Field()
    z0 = torch.randn(3, 3, dtype=F64)
    zs = tn.cdeint(X, f, z0, t, method="dopri5", rtol=1e-10, atol=1e-12)
    assert zs.shape == (t.numel(), 3, 3)
    back = tn.cdeint(X, f, zs[-1], t.flip(0), method="dopri5", rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(back, zs.flip(0), rtol=1e-7, atol=1e-8)


def test_control_term_with_the_path_increments_agrees_on_a_linear_path():
    x, t = _data()
    X = _path("linear", x, t)
    f = Field()
    z0 = torch.randn(3, 3, dtype=F64)
    want = tn.cdeint(X, f, z0, t, solver="rk4", dt0=0.05)
    # ControlTerm contracts g with X(t1) - X(t0): on a linear piece that is X' dt exactly.
    sol = tn.solve(
        tn.ControlTerm(lambda tt, z, args: f(tt, z), X),
        tn.RK4(),
        t[0],
        t[-1],
        z0,
        dt0=0.05,
        saveat=tn.SaveAt(ts=t),
        controller=tn.ConstantStepSize(step_ts=t),
    )
    torch.testing.assert_close(sol.ys, want, rtol=1e-10, atol=1e-10)


def test_per_sample_observation_times_match_separate_solves():
    x, _ = _data(batch=3)
    ts = torch.stack([_data(seed=s)[1] for s in range(3)])
    X = tn.CubicSpline(tn.natural_cubic_coeffs(x, ts), ts)
    f = Field()
    z0 = torch.randn(3, 3, dtype=F64)
    grid = torch.linspace(float(ts[:, 0].max()), float(ts[:, -1].min()), 4, dtype=F64)
    zs = tn.cdeint(X, f, z0, grid, rtol=1e-10, atol=1e-12)
    for b in range(3):
        Xb = tn.CubicSpline(tn.natural_cubic_coeffs(x[b : b + 1], ts[b]), ts[b])
        zb = tn.cdeint(Xb, f, z0[b : b + 1], grid, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(zs[:, b], zb[:, 0], rtol=1e-7, atol=1e-8)


def test_gradcheck_through_coefficients_solver_and_parameters():
    x, t = _data(batch=2, n=5)
    f = Field(hidden=2)
    z0 = torch.randn(2, 2, dtype=F64, requires_grad=True)
    xg = x.clone().requires_grad_(True)

    def run(z0, xg, w):
        f.w.data = w.detach()
        X = tn.CubicSpline(tn.natural_cubic_coeffs(xg, t), t)
        field = lambda tt, z: torch.tanh(z @ w + f.b).reshape(*z.shape[:-1], 2, 2)
        return tn.cdeint(X, field, z0, t[[0, 2, 4]], solver="rk4", dt0=0.25)

    w = f.w.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(run, (z0, xg, w))


ADJOINTS = {
    "checkpoint": lambda: tn.CheckpointAdjoint(),
    "backsolve": lambda: tn.BacksolveAdjoint(),
    "interpolated": lambda: tn.InterpolatedAdjoint(),
}


@pytest.mark.parametrize("name", list(ADJOINTS))
def test_every_adjoint_matches_the_direct_gradient(name):
    x, t = _data(batch=2, n=6, seed=3)
    X = _path("natural", x, t)
    z0 = torch.randn(2, 3, dtype=F64)

    def grads(adjoint):
        f = Field(seed=3)
        z = z0.clone().requires_grad_(True)
        zs = tn.cdeint(X, f, z, t[[0, 3, 5]], rtol=1e-10, atol=1e-12, adjoint=adjoint)
        (zs**2).sum().backward()
        return [z.grad, f.w.grad, f.b.grad]

    for g, r in zip(grads(ADJOINTS[name]()), grads(tn.DirectAdjoint())):
        torch.testing.assert_close(g, r, rtol=1e-6, atol=1e-7)


def test_checkpoint_adjoint_on_a_linear_path_matches_direct():
    x, t = _data(batch=2, n=6, seed=4)
    X = _path("linear", x, t)
    z0 = torch.randn(2, 3, dtype=F64)

    def grads(adjoint):
        f = Field(seed=4)
        zs = tn.cdeint(X, f, z0, t, solver="rk4", adjoint=adjoint)
        zs[-1].sum().backward()
        return [f.w.grad, f.b.grad]

    for g, r in zip(grads(tn.CheckpointAdjoint()), grads(tn.DirectAdjoint())):
        torch.testing.assert_close(g, r)


def test_continuous_adjoint_on_a_linear_path_is_refused():
    x, t = _data()
    with pytest.raises(NotImplementedError, match="continuously differentiable path"):
        tn.cdeint(
            _path("linear", x, t),
            Field(),
            torch.zeros(3, 3, dtype=F64),
            t,
            adjoint=tn.BacksolveAdjoint(),
        )


@pytest.mark.parametrize("interpolation", ["linear", "hermite"])
def test_streaming_agrees_with_batch_evaluation(interpolation):
    g = torch.Generator().manual_seed(5)
    t = torch.arange(7, dtype=F64)
    x = torch.randn(2, 7, 2, generator=g, dtype=F64).cumsum(1)
    f = Field()
    z0 = torch.randn(2, 3, dtype=F64)
    kind = "linear" if interpolation == "linear" else "hermite"
    batch = tn.cdeint(_path(kind, x, t), f, z0, t, solver="rk4", dt0=0.25)
    stream = tn.CDEStream(f, z0, t[0], x[:, 0], interpolation=interpolation, solver="rk4", dt0=0.25)
    for i in range(1, 7):
        z = stream.update(t[i], x[:, i])
        torch.testing.assert_close(z, batch[i], rtol=1e-12, atol=1e-12)
    # adaptive: step sizes restart at each observation, so agreement is to the tolerance
    batch = tn.cdeint(_path(kind, x, t), f, z0, t, rtol=1e-9, atol=1e-9)
    stream = tn.CDEStream(f, z0, t[0], x[:, 0], interpolation=interpolation, rtol=1e-9, atol=1e-9)
    for i in range(1, 7):
        torch.testing.assert_close(stream.update(t[i], x[:, i]), batch[i], rtol=1e-6, atol=1e-6)


def test_stream_updates_do_not_recompute_the_past():
    calls = []
    f = Field()

    def counted(t, z):
        calls.append(1)
        return f(t, z)

    x, t = _data(n=30)
    stream = tn.CDEStream(counted, torch.zeros(3, 3, dtype=F64), t[0], x[:, 0], solver="rk4")
    per_update = []
    for i in range(1, 30):
        before = len(calls)
        stream.update(t[i], x[:, i])
        per_update.append(len(calls) - before)
    assert max(per_update) == min(per_update)  # constant work per observation


def test_log_ode_method_error_falls_with_the_depth():
    # Neural RDEs (Morrill et al. 2021): drive the CDE by the path of cumulative window
    # log-signatures, with the vector fields extended to the Lyndon brackets. For linear
    # fields z -> A z, z -> B z the bracket of the Lyndon word w maps to a matrix commutator
    # (later letters act on the left, so [e_u, e_v] -> -[M_u, M_v]). Against the fine solve on
    # the original path, the error falls from depth 1 (subsampling) to 2 to 3.
    g = torch.Generator().manual_seed(6)
    n = 201
    t = torch.linspace(0, 1, n, dtype=F64)
    x = (torch.randn(1, n, 2, generator=g, dtype=F64) * 0.05).cumsum(1)
    A = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=F64)
    B = torch.tensor([[0.5, 0.3], [0.0, -0.5]], dtype=F64)

    def br(P, Q):
        return P @ Q - Q @ P

    # Lyndon words by depth: 0, 1 | 01 | 001 = [0,[0,1]], 011 = [[0,1],1]
    mats = [A, B, -br(A, B), br(A, br(A, B)), br(br(A, B), B)]
    count = {1: 2, 2: 3, 3: 5}

    def field_of(depth):
        return lambda tt, z: torch.stack([z @ M.T for M in mats[: count[depth]]], dim=-1)

    z0 = torch.tensor([[1.0, 0.5]], dtype=F64)
    tight = dict(rtol=1e-11, atol=1e-12)
    exact = tn.cdeint(tn.LinearInterpolation(x, t), field_of(1), z0, t[[0, -1]], **tight)[-1]
    for window in (0.2, 0.05):
        errors = []
        for depth in (1, 2, 3):
            ls = tn.logsig_windows(x, depth, window, t, mode="brackets")
            m = ls.shape[-2]
            Xl = tn.LinearInterpolation(ls, torch.arange(m, dtype=F64))
            ends = torch.tensor([0.0, m - 1.0], dtype=F64)
            z = tn.cdeint(Xl, field_of(depth), z0, ends, **tight)[-1]
            errors.append(float((z - exact).abs().max()))
        assert errors[2] < errors[1] / 2 < errors[0] / 4, errors


torchcde = pytest.importorskip("torchcde")


@pytest.mark.parametrize("kind", ["natural", "linear"])
def test_agrees_with_torchcde_cdeint(kind):
    x, t = _data(batch=4, seed=7)
    f = Field(seed=7)
    z0 = torch.randn(4, 3, dtype=F64)
    X = _path(kind, x, t)
    ours = tn.cdeint(X, f, z0, t, rtol=1e-11, atol=1e-12)
    if kind == "linear":
        theirs_X = torchcde.LinearInterpolation(X.coeffs, t)
        opts = {"jump_t": t}
    else:
        theirs_X = torchcde.CubicSpline(X.coeffs, t)
        opts = {"step_t": t}
    with torch.no_grad():
        theirs = torchcde.cdeint(
            theirs_X, f, z0, t, adjoint=False, rtol=1e-11, atol=1e-12, options=opts
        )
    torch.testing.assert_close(ours, theirs.transpose(0, 1), rtol=1e-8, atol=1e-9)


ERRORS = [
    (
        dict(func=lambda t, z: torch.zeros(3, 3, 5, dtype=F64)),
        ValueError,
        r"must return shape \(3, 3, 2\)",
    ),
    (dict(z0=[0.0]), TypeError, "`z0` must be a floating-point tensor"),
    (dict(t=torch.zeros(2, 2, dtype=F64)), ValueError, "`t` must be a 1-D tensor"),
    (dict(X=object()), TypeError, "`X` must be a path"),
    (dict(solver="nope"), ValueError, "`method` must be one of"),
    (dict(solver=tn.RK4(), method="rk4"), ValueError, "not both"),
]


@pytest.mark.parametrize("i", range(len(ERRORS)))
def test_bad_input_raises_a_clear_error(i):
    x, t = _data()
    kw = dict(X=_path("natural", x, t), func=Field(), z0=torch.zeros(3, 3, dtype=F64), t=t)
    over, exc, match = ERRORS[i]
    kw.update(over)
    with pytest.raises(exc, match=match):
        tn.cdeint(kw.pop("X"), kw.pop("func"), kw.pop("z0"), kw.pop("t"), **kw)


def test_cde_term_with_per_sample_stepping_matches_joint_stepping():
    x, t = _data(seed=8)
    X = _path("natural", x, t)
    f = Field()
    z0 = torch.randn(3, 3, dtype=F64)
    joint = tn.cdeint(X, f, z0, t, rtol=1e-10, atol=1e-12)
    sol = tn.solve(
        tn.CDETerm(lambda tt, z, args: f(tt, z), X),
        tn.Dopri5(),
        t[0],
        t[-1],
        z0,
        saveat=tn.SaveAt(ts=t),
        controller=tn.PIDController(rtol=1e-10, atol=1e-12, step_ts=t, per_sample=True),
    )
    torch.testing.assert_close(sol.ys, joint, rtol=1e-8, atol=1e-9)


# -- the path's interval: solves outside it are an error, checked once at the boundary ----
@pytest.mark.parametrize("kind", ["linear", "natural", "hermite"])
def test_cdeint_with_times_outside_the_path_is_an_error_naming_the_interval(kind):
    x, t = _data()
    X = _path(kind, x, t)
    z0 = torch.zeros(3, 3, dtype=F64)
    lo, hi = float(t[0]), float(t[-1])
    where = rf"outside the interval \[{lo:.6g}, {hi:.6g}\] of the"
    for ts in ([lo, hi + 0.5], [lo - 0.5, hi], [hi, lo - 1.0], [lo, 0.5 * (lo + hi), hi + 2.0]):
        with pytest.raises(ValueError, match=rf"cdeint: `t` .*{where}.*extrapolate=True"):
            tn.cdeint(X, Field(), z0, torch.tensor(ts, dtype=F64))


@pytest.mark.parametrize(
    "make",
    [
        lambda f, X: tn.CDETerm(lambda tt, z, args: f(tt, z), X),
        lambda f, X: tn.ControlTerm(lambda tt, z, args: f(tt, z), X),
        lambda f, X: tn.MultiTerm(
            tn.ODETerm(lambda tt, z, args: -z), tn.ControlTerm(lambda tt, z, args: f(tt, z), X)
        ),
    ],
    ids=["CDETerm", "ControlTerm", "MultiTerm"],
)
def test_solve_checks_t0_and_t1_against_the_paths_interval(make):
    x, t = _data()
    X = _path("natural", x, t)
    term = make(Field(), X)
    z0 = torch.zeros(3, 3, dtype=F64)
    lo, hi = t[0], t[-1]
    kw = dict(dt0=0.1, controller=tn.ConstantStepSize())
    with pytest.raises(ValueError, match=rf"solve: `t1` = {float(hi) + 1:.6g} lies outside"):
        tn.solve(term, tn.RK4(), lo, hi + 1, z0, **kw)
    with pytest.raises(ValueError, match=rf"solve: `t0` = {float(lo) - 1:.6g} lies outside"):
        tn.solve(term, tn.RK4(), lo - 1, hi, z0, **kw)
    with pytest.raises(ValueError, match="solve: `t1` = .* lies outside"):  # backwards
        tn.solve(term, tn.RK4(), hi, lo - 1, z0, **kw)
    tn.solve(term, tn.RK4(), lo, hi, z0, **kw)  # the whole interval is fine


def test_per_sample_solves_check_each_samples_own_interval():
    x, _ = _data(batch=2)
    t = _data()[1]
    ts = torch.stack([t, t + 0.5])
    X = tn.CubicSpline(tn.natural_cubic_coeffs(x, ts), ts)
    f = Field()
    term = tn.CDETerm(lambda tt, z, args: f(tt, z), X)
    ctrl = tn.PIDController(rtol=1e-6, atol=1e-8, per_sample=True)
    z0 = torch.zeros(2, 3, dtype=F64)
    tn.solve(term, tn.Dopri5(), ts[:, 0], ts[:, -1], z0, controller=ctrl)  # each its own
    with pytest.raises(ValueError, match=r"`t0` = .* of sample 1 of the CubicSpline"):
        tn.solve(term, tn.Dopri5(), ts[0, 0].expand(2), ts[:, -1], z0, controller=ctrl)
    with pytest.raises(ValueError, match="of sample 1"):  # its union is not where it is defined
        tn.cdeint(X, f, z0, torch.stack([ts[0, 0], ts[1, -1]]))


def test_the_whole_interval_with_round_off_at_its_ends_solves_without_error():
    x, t = _data(batch=2, channels=1)
    X = _path("natural", x.float(), t.float())
    A = torch.tensor([[1.0], [-0.5]])
    eps = torch.finfo(torch.float32).eps
    lo, hi = X.interval.double()
    ts = torch.stack([lo * (1 - 2 * eps), hi * (1 + 2 * eps)])  # float64, off by round-off
    zs = tn.cdeint(X, lambda tt, z: A.expand(2, 2, 1), torch.zeros(2, 2), ts, solver="rk4")
    want = (X.evaluate(X.interval[1]) - X.evaluate(X.interval[0])) @ A.T
    torch.testing.assert_close(zs[-1], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["linear", "natural"])
def test_extrapolate_true_integrates_the_extended_path(kind):
    # dz = A dX  =>  z(t) = z0 + A (X(t) - X(t0)), also on the extended end pieces
    x, t = _data()
    fn, cls = (
        (tn.linear_interpolation_coeffs, tn.LinearInterpolation)
        if kind == "linear"
        else (tn.natural_cubic_coeffs, tn.CubicSpline)
    )
    X = cls(fn(x, t), t, extrapolate=True)
    A = torch.tensor([[1.0, -2.0], [0.5, 0.25], [0.0, 3.0]], dtype=F64)
    ts = torch.stack([t[0] - 0.5, t[-1] + 0.75])
    zs = tn.cdeint(X, lambda tt, z: A.expand(3, 3, 2), torch.zeros(3, 3, dtype=F64), ts, rtol=1e-10)
    torch.testing.assert_close(zs[-1], (X.evaluate(ts[1]) - X.evaluate(ts[0])) @ A.T)


def test_the_interval_is_checked_once_per_solve_not_at_every_stage(monkeypatch):
    import torchnde._cde.path as path_module

    calls = []
    original = path_module.check_within
    monkeypatch.setattr(
        path_module, "check_within", lambda *a, **k: calls.append(k) or original(*a, **k)
    )
    x, t = _data()
    X = _path("natural", x, t)
    f = Field()
    for term in (
        tn.CDETerm(lambda tt, z, args: f(tt, z), X),
        tn.ControlTerm(lambda tt, z, args: f(tt, z), X),
    ):
        calls.clear()
        sol = tn.solve(
            term,
            tn.Dopri5(),
            t[0],
            t[-1],
            torch.zeros(3, 3, dtype=F64),
            controller=tn.PIDController(rtol=1e-8, atol=1e-10),
        )
        assert sol.stats["num_steps"] > 5
        assert [c["what"] for c in calls] == ["`t0`", "`t1`"]


def test_rk4_locates_the_path_twice_a_step_and_stays_exact():
    # The two midpoint stages share one time, and a step's end is the next step's start:
    # the control slope is looked up once per distinct time (see CDETerm._control_slope).
    x, t = _data()
    X = _path("natural", x, t)
    located = []
    inner = X._derivative
    X._derivative = lambda tt, side: located.append(float(tt)) or inner(tt, side)
    A = torch.tensor([[1.0, -2.0], [0.5, 0.25], [0.0, 3.0]], dtype=F64)
    z0 = torch.randn(3, 3, dtype=F64)
    term = tn.CDETerm(lambda tt, z, args: A.expand(3, 3, 2), X)
    controller = tn.ConstantStepSize(step_ts=t)
    sol = tn.solve(term, tn.RK4(), t[0], t[-1], z0, dt0=0.3, controller=controller)
    steps = sol.stats["num_steps"]
    assert steps > t.numel()
    assert len(located) == 2 * steps + 1
    assert len(set(located)) == len(located)  # each distinct time once
    zs = sol.ys
    # Simpson's rule is exact on the quadratic slope of each cubic piece.
    want = z0 + (X.evaluate(t[-1]) - X.evaluate(t[0])) @ A.T
    torch.testing.assert_close(zs[-1], want, rtol=1e-12, atol=1e-12)


def test_the_slope_memo_follows_in_place_time_changes_and_the_grad_mode():
    x, t = _data()
    coeffs = tn.natural_cubic_coeffs(x, t).requires_grad_(True)
    X = tn.CubicSpline(coeffs, t)
    term = tn.CDETerm(lambda tt, z, args: torch.ones(3, 3, 2, dtype=F64), X)
    z = torch.zeros(3, 3, dtype=F64)
    s = t[1].clone() + 0.1
    with torch.no_grad():
        term.vf(s, z, None)
    # The same tensor, now with a graph recorded: the slope must carry the coefficients.
    out = term.vf(s, z, None)
    assert out.requires_grad
    torch.testing.assert_close(out, X.derivative(s).sum(-1, keepdim=True).expand(3, 3))
    # An in-place change of the time is a new time.
    with torch.no_grad():
        s.add_(0.7)
        moved = term.vf(s, z, None)
        torch.testing.assert_close(moved, X.derivative(s).sum(-1, keepdim=True).expand(3, 3))
    with torch.inference_mode():
        u = t[2] + 0.2
        torch.testing.assert_close(
            term.vf(u, z, None), X.derivative(u).sum(-1, keepdim=True).expand(3, 3)
        )


@pytest.mark.parametrize("differentiate", [False, True])
def test_cdeint_differentiates_step_sizes_only_when_asked(differentiate):
    # Like torchcde (torchdiffeq picks its steps under no_grad), the default gradient is that
    # of the solve on the mesh it took: the times the field sees carry no gradient (after
    # the initial step's trial evaluation, whose step is then detached).
    x, t = _data()
    X = _path("natural", x, t)
    f = Field()
    seen = []

    def field(tt, z):
        seen.append(tt.requires_grad)
        return f(tt, z)

    z0 = torch.randn(3, 3, dtype=F64, requires_grad=True)
    kwargs = {} if not differentiate else {"differentiate_steps": True}
    zs = tn.cdeint(X, field, z0, t[[0, -1]], solver="dopri5", rtol=1e-6, **kwargs)
    zs[-1].sum().backward()
    assert z0.grad is not None and bool(torch.isfinite(z0.grad).all())
    assert any(seen[2:]) == differentiate
    with pytest.raises(TypeError, match="differentiate_steps"):
        tn.cdeint(X, field, z0, t[[0, -1]], differentiate_steps="no")


@pytest.mark.parametrize("kind", ["natural", "hermite"])
def test_fixed_steps_without_a_graph_write_the_stages_in_place_with_the_same_values(
    kind, monkeypatch
):
    # Without a graph, RK4's fixed steps let the CDE term write each stage's product into
    # one stage tensor (CDETerm.vf_into), which the solution reads instead of a stack of the
    # stages: the same products, the same sums, so the same numbers bit for bit. (A linear
    # path's knots are jumps, which the general loop steps to.)
    x, t = _data(batch=4)
    X = _path(kind, x, t)
    field = Field()
    z0 = torch.randn(4, 3, dtype=F64)
    written = []
    inner = tn.CDETerm.vf_into

    def spy(self, tt, z, args, out):
        value = inner(self, tt, z, args, out)
        written.append(value is out)
        return value

    # Save times inside steps too: their dense output reads the step's first stage, from a
    # stage tensor the next step writes again.
    inside = torch.sort(torch.cat([t, (t[1:] + t[:-1]) / 2 + 0.01])).values
    monkeypatch.setattr(tn.CDETerm, "vf_into", spy)
    with torch.no_grad():
        zs = tn.cdeint(X, field, z0, t, solver="rk4")
        zs_inside = tn.cdeint(X, field, z0, inside, solver="rk4", dt0=0.1)
    assert written and all(written)
    monkeypatch.setattr(tn.CDETerm, "writes_vf_into", False)
    with torch.no_grad():
        stacked = tn.cdeint(X, field, z0, t, solver="rk4")
        stacked_inside = tn.cdeint(X, field, z0, inside, solver="rk4", dt0=0.1)
    assert torch.equal(zs, stacked)
    assert torch.equal(zs_inside, stacked_inside)


def test_a_field_that_cannot_be_written_into_a_stage_slot_is_stacked_as_before():
    # A matrix shared by the batch (shape (1, hidden, channels)) broadcasts against the
    # path: the term returns its product as a new tensor and the step stacks the stages.
    # Simpson's rule is exact on the quadratic slope of each cubic piece.
    x, t = _data()
    X = _path("natural", x, t)
    A = torch.tensor([[[1.0, -2.0], [0.5, 0.25], [0.0, 3.0]]], dtype=F64)
    z0 = torch.randn(3, 3, dtype=F64)
    with torch.no_grad():
        zs = tn.cdeint(X, lambda tt, z: A, z0, t, solver="rk4", dt0=0.1)
    want = z0 + (X.evaluate(t[-1]) - X.evaluate(t[0])) @ A[0].T
    torch.testing.assert_close(zs[-1], want, rtol=1e-12, atol=1e-12)
