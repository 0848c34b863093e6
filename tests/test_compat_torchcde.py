"""``torchnde.compat.torchcde`` behaves as torchcde 0.2.5: same results, shapes, defaults and
error types; unsupported options raise ``NotImplementedError``.

torchcde's own test suite (GitHub patrick-kidger/torchcde, ``test/``) is run against the
compat module by ``test_upstream_torchcde_suite`` when a checkout of that folder is named by
the environment variable ``TORCHNDE_TORCHCDE_TESTS`` (it is not vendored here).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import torchnde.compat.torchcde as cc

torchcde = pytest.importorskip("torchcde")

F64 = torch.float64


def _data(batch=3, n=9, channels=2, seed=0, nan=False):
    g = torch.Generator().manual_seed(seed)
    t = torch.cumsum(0.3 + torch.rand(n, generator=g, dtype=F64), 0)
    x = torch.randn(batch, n, channels, generator=g, dtype=F64).cumsum(1) * 0.5
    if nan:
        x[0, 3, 1] = x[1, :2, 0] = x[2, -2:, 1] = x[2, 4:6, 0] = float("nan")
    return x, t


@pytest.mark.parametrize(
    "name",
    [
        "natural_cubic_coeffs",
        "natural_cubic_spline_coeffs",
        "linear_interpolation_coeffs",
        "hermite_cubic_coefficients_with_backward_differences",
    ],
)
@pytest.mark.parametrize("use_t", [True, False])
def test_coefficients_match_torchcde(name, use_t):
    x, t = _data(nan=True)
    tt = t if use_t else None
    torch.testing.assert_close(getattr(cc, name)(x, tt), getattr(torchcde, name)(x, tt))


def test_rectilinear_matches_torchcde_and_rejects_nan_times():
    x, t = _data(nan=False)
    x = torch.cat([t.expand(3, -1).unsqueeze(-1), x], dim=-1)
    x[1, 3, 1] = x[2, 5:7, 2] = float("nan")
    torch.testing.assert_close(
        cc.linear_interpolation_coeffs(x, rectilinear=0),
        torchcde.linear_interpolation_coeffs(x, rectilinear=0),
    )
    x[0, 2, 0] = float("nan")
    with pytest.raises(AssertionError, match="nan values in the time column"):
        cc.linear_interpolation_coeffs(x, rectilinear=0)
    with pytest.raises(ValueError, match="nan values in the time column"):
        cc.linear_interpolation_coeffs(x, rectilinear=0)


@pytest.mark.parametrize("kind", ["CubicSpline", "LinearInterpolation"])
def test_paths_match_torchcde_for_time_tensors_of_any_shape(kind):
    x, t = _data()
    coeffs = (cc.natural_cubic_coeffs if kind == "CubicSpline" else cc.linear_interpolation_coeffs)(
        x, t
    )
    ours, theirs = getattr(cc, kind)(coeffs, t), getattr(torchcde, kind)(coeffs, t)
    torch.testing.assert_close(ours.interval, theirs.interval)
    torch.testing.assert_close(ours.grid_points, theirs.grid_points)
    for shape in [(), (4,), (2, 3)]:
        s = torch.rand(shape, dtype=F64) * 4 + 0.5
        torch.testing.assert_close(ours.evaluate(s), theirs.evaluate(s))
        torch.testing.assert_close(ours.derivative(s), theirs.derivative(s))
    torch.testing.assert_close(ours.derivative(t[3]), theirs.derivative(t[3]))  # left limit


class Field(torch.nn.Module):
    def __init__(self, hidden=3, channels=2):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.hidden, self.channels = hidden, channels
        self.w = torch.nn.Parameter(
            0.4 * torch.randn(hidden, hidden * channels, generator=g, dtype=F64)
        )

    def forward(self, t, z):
        return torch.tanh(z @ self.w).reshape(*z.shape[:-1], self.hidden, self.channels)


@pytest.mark.parametrize(
    "kind, kwargs",
    [
        ("cubic", dict(method="rk4", options=dict(step_size=0.25))),
        ("cubic", dict(method="dopri5", rtol=1e-10, atol=1e-12)),
        ("linear", dict(method="dopri5", rtol=1e-10, atol=1e-12, options="jump")),
        ("linear", dict(method="rk4", options=dict(step_size=0.2))),
        ("cubic", dict(method="euler", options=dict(step_size=0.1))),
        ("cubic", dict(method="midpoint")),
    ],
)
def test_cdeint_matches_torchcde_values_and_gradients(kind, kwargs):
    x, t = _data(batch=2, seed=2)
    if kind == "cubic":
        coeffs = cc.natural_cubic_coeffs(x, t)
        paths = cc.CubicSpline(coeffs, t), torchcde.CubicSpline(coeffs, t)
    else:
        coeffs = cc.linear_interpolation_coeffs(x, t)
        paths = cc.LinearInterpolation(coeffs, t), torchcde.LinearInterpolation(coeffs, t)
    if kwargs.get("options") == "jump":
        kwargs = dict(
            kwargs,
            options=dict(jump_t=t) if kwargs["method"] != "rk4" else dict(step_size=0.2, jump_t=t),
        )
    z0 = torch.randn(2, 3, dtype=F64, generator=torch.Generator().manual_seed(2))
    outs, grads = [], []
    for lib, X in zip((cc, torchcde), paths):
        f = Field()
        z = z0.clone().requires_grad_(True)
        out = lib.cdeint(X, f, z, t, adjoint=False, **kwargs)
        out.pow(2).sum().backward()
        outs.append(out)
        grads.append((z.grad, f.w.grad))
    assert outs[0].shape == (2, t.numel(), 3)
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-7, atol=1e-8)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_adjoint_true_matches_backpropagation():
    x, t = _data(batch=2, seed=3)
    X = cc.CubicSpline(cc.natural_cubic_coeffs(x, t), t)
    z0 = torch.randn(2, 3, dtype=F64)
    grads = []
    for adjoint in (True, False):
        f = Field()
        z = z0.clone().requires_grad_(True)
        out = cc.cdeint(X, f, z, t, adjoint=adjoint, rtol=1e-10, atol=1e-12)
        out[..., -1, :].sum().backward()
        grads.append((z.grad, f.w.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_func_prod_and_the_torchsde_backend():
    x, t = _data(batch=2, channels=1, seed=4)
    X = cc.CubicSpline(cc.natural_cubic_coeffs(x))

    class F:
        def prod(self, t, z, dxdt):
            return -z * dxdt

    z0 = torch.rand(2, 3, dtype=F64)
    out = cc.cdeint(X, F(), z0, X.interval, adjoint=False, rtol=1e-10, atol=1e-12)
    want = z0 * torch.exp(-(X.evaluate(X.interval[1]) - X.evaluate(X.interval[0])))
    torch.testing.assert_close(out[:, -1], want, rtol=1e-7, atol=1e-8)
    f = Field(channels=1)
    a = cc.cdeint(X, f, z0, X.interval, method="midpoint", options=dict(step_size=1.0))
    b = cc.cdeint(X, f, z0, X.interval, backend="torchsde", method="midpoint", dt=1.0)
    torch.testing.assert_close(a, b)


def test_logsig_windows_and_signature_helpers():
    x, t = _data(batch=2, n=12, channels=2, seed=5)
    v1 = cc.logsig_windows(x, 3, 2.0, t)
    assert v1.shape == (2, v1.shape[1], cc.logsignature_channels(2, 3))
    v0, new_t = cc.logsignature_windows(x, 3, 2.0, t)
    scale = new_t.diff()
    torch.testing.assert_close(v0.diff(dim=-2), v1.diff(dim=-2) * scale[:, None])
    path = x[0]
    torch.testing.assert_close(cc.signature(path, 3, inverse=True), cc.signature(path.flip(-2), 3))
    sig = cc.signature(path, 2, scalar_term=True)
    assert sig.shape[-1] == cc.signature_channels(2, 2, scalar_term=True) and sig[..., 0] == 1
    torch.testing.assert_close(cc.logsignature(path, 3, inverse=True), -cc.logsignature(path, 3))


def test_unsupported_options_raise_not_implemented():
    x, t = _data()
    X = cc.CubicSpline(cc.natural_cubic_coeffs(x, t), t)
    f = Field()
    z0 = torch.zeros(3, 3, dtype=F64)
    with pytest.raises(NotImplementedError, match="method='log_ode'"):
        cc.cdeint(X, f, z0, t, backend="torchsde", method="log_ode", dt=0.1)
    with pytest.raises(ValueError, match="z0 is a tuple/list and so X.derivative must return"):
        cc.cdeint(X, TupleField(), (z0, z0[:, 0]), t)
    with pytest.raises(NotImplementedError, match="grid_constructor"):
        cc.cdeint(X, f, z0, t, method="rk4", options=dict(grid_constructor=None))
    with pytest.raises(NotImplementedError, match="adaptive=True"):
        cc.cdeint(X, f, z0, t, backend="torchsde", method="midpoint", dt=0.1, adaptive=True)
    with pytest.raises(ValueError, match="Unrecognised backend"):
        cc.cdeint(X, f, z0, t, backend="jax")
    with pytest.raises(ValueError, match="number of hidden channels"):
        cc.cdeint(X, lambda tt, z: torch.zeros(3, 4, 2, dtype=F64), z0, t)


def _tuple_problem():
    g = torch.Generator().manual_seed(6)
    xa = torch.rand(2, 10, 2, generator=g, dtype=F64)
    xb = torch.rand(10, 1, generator=g, dtype=F64)
    coeffs = cc.natural_cubic_coeffs(xa), cc.natural_cubic_coeffs(xb)
    z0 = torch.rand(2, 3, generator=g, dtype=F64), torch.rand(5, generator=g, dtype=F64)
    return coeffs, z0


class TupleField(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor([[0.5, -1.0]], dtype=F64))
        self.b = torch.nn.Parameter(torch.tensor([0.7], dtype=F64))

    def forward(self, t, z):
        za, zb = z
        return torch.sigmoid(za).unsqueeze(-1) * self.a, torch.tanh(zb).unsqueeze(-1) * self.b


def _tuple_solve(lib, coeffs, z0, adjoint, step):
    X = lib.TupleControl(*(lib.CubicSpline(c) for c in coeffs))
    f = TupleField()
    z = tuple(p.clone().requires_grad_(True) for p in z0)
    kw = dict(adjoint_params=tuple(f.parameters())) if adjoint else {}
    opts = dict(method="rk4", options=dict(step_size=step))
    out = lib.cdeint(X, f, z, X.interval, adjoint=adjoint, **opts, **kw)
    (out[0].pow(2).sum() + out[1].sin().sum()).backward()
    return out, torch.cat([p.grad.reshape(-1) for p in [*z, *f.parameters()]])


def test_tuple_controls_match_torchcde_values_and_gradients():
    coeffs, z0 = _tuple_problem()
    ours, our_grad = _tuple_solve(cc, coeffs, z0, False, 0.5)
    theirs, their_grad = _tuple_solve(torchcde, coeffs, z0, False, 0.5)  # the same grid
    assert isinstance(ours, tuple) and ours[0].shape == (2, 2, 3) and ours[1].shape == (2, 5)
    for a, b in zip([*ours, our_grad], [*theirs, their_grad]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.slow  # about 5 s
def test_tuple_controls_adjoint_converges_to_the_discrete_gradient():
    coeffs, z0 = _tuple_problem()
    errors = []
    for step in (0.5, 0.25, 0.125):
        exact = _tuple_solve(cc, coeffs, z0, False, step)[1]
        adjoint = _tuple_solve(cc, coeffs, z0, True, step)[1]
        errors.append(float((adjoint - exact).norm() / exact.norm()))
    # the backward solve's error falls with the step (RK4: about 2^-4 per halving)
    assert errors[0] / errors[1] > 8 and errors[1] / errors[2] > 8 and errors[2] < 1e-5
    # torchcde's test_tuple_input: a component the loss does not reach gets a zero gradient
    X = cc.TupleControl(*(cc.CubicSpline(c) for c in coeffs))
    z = (z0[0], z0[1].clone().requires_grad_(True))
    out = cc.cdeint(X, TupleField(), z, X.interval, adjoint_params=())
    out[0].sum().backward()
    assert z[1].grad is not None and bool((z[1].grad == 0).all())


def test_tuple_control_checks_like_torchcde():
    coeffs, z0 = _tuple_problem()
    X = cc.TupleControl(*(cc.CubicSpline(c) for c in coeffs))
    torch.testing.assert_close(X.grid_points, torch.arange(10.0, dtype=F64))
    assert len(X.evaluate(1.5)) == 2
    with pytest.raises(ValueError, match="one or more controls"):
        cc.TupleControl()
    short = cc.CubicSpline(cc.natural_cubic_coeffs(torch.rand(4, 1, dtype=F64)))
    with pytest.raises(ValueError, match="same interval"):
        cc.TupleControl(cc.CubicSpline(coeffs[0]), short)
    with pytest.raises(ValueError, match="same number of hidden channels"):
        wrong = (torch.zeros(2, 4, 2, dtype=F64), torch.zeros(5, 1, dtype=F64))
        cc.cdeint(X, lambda t, z: wrong, z0, X.interval)


def test_times_outside_the_controls_interval_are_an_error():
    x, t = _data()
    X = cc.CubicSpline(cc.natural_cubic_coeffs(x, t), t)
    f, z0 = Field(), torch.zeros(3, 3, dtype=F64)
    lo, hi = float(t[0]), float(t[-1])
    for ts in ([lo, hi + 0.5], [lo - 1.0, hi], [lo, 0.5 * (lo + hi), hi + 3.0]):
        with pytest.raises(ValueError, match=rf"`t` runs .* outside X.interval = \[{lo:.6g}, "):
            cc.cdeint(X, f, z0, torch.tensor(ts, dtype=F64), method="rk4")
    # the paths themselves extrapolate, as torchcde's contract says ("this is fine")
    torch.testing.assert_close(
        X.evaluate(hi + 1.0), torchcde.CubicSpline(X_coeffs(X), t).evaluate(hi + 1.0)
    )
    # round-off at the ends (float32 times against the float64 interval) is inside
    Y = cc.CubicSpline(cc.natural_cubic_coeffs(x.float()))
    end = torch.tensor(float(Y.interval[1]) * (1 + 1e-7), dtype=F64)
    cc.cdeint(Y, Field().float(), z0.float(), torch.stack([end * 0, end]), method="rk4")


def X_coeffs(X):
    c = X._a.size(-1)
    return torch.cat([X._a, X._b, X._two_c, X._three_d], dim=-1)[..., : 4 * c]


class SDEField(Field):
    def __init__(self, sde_type="stratonovich"):
        super().__init__()
        self.sde_type = sde_type


SDE_CASES = [
    (m, "stratonovich") for m in ("midpoint", "heun", "euler_heun", "milstein", "reversible_heun")
] + [(m, "ito") for m in ("euler", "milstein", "srk")]


@pytest.mark.parametrize("method, sde_type", SDE_CASES)
@pytest.mark.parametrize("kind", ["cubic", "linear"])
def test_torchsde_backend_matches_torchcde_on_torchsdes_grid(method, sde_type, kind):
    # dt does not divide the interval and outputs fall between grid points: torchsde steps on
    # t0 + k dt and interpolates linearly, and so must the compat layer
    x, _ = _data(batch=2, n=11, seed=9)
    if kind == "cubic":
        coeffs = cc.natural_cubic_coeffs(x)
        paths = cc.CubicSpline(coeffs), torchcde.CubicSpline(coeffs)
    else:
        coeffs = cc.linear_interpolation_coeffs(x)
        paths = cc.LinearInterpolation(coeffs), torchcde.LinearInterpolation(coeffs)
    ts = torch.tensor([0.0, 0.45, 2.0, 7.1, 10.0], dtype=F64)
    z0 = torch.randn(2, 3, dtype=F64, generator=torch.Generator().manual_seed(9))
    outs, grads = [], []
    for lib, X in zip((cc, torchcde), paths):
        f = SDEField(sde_type)
        out = lib.cdeint(X, f, z0, ts, adjoint=False, backend="torchsde", method=method, dt=0.3)
        out.pow(2).sum().backward()
        outs.append(out)
        grads.append(f.w.grad)
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-12)


def test_torchsde_backend_defaults_and_sde_type_checks_are_torchsdes():
    x, _ = _data(batch=2, n=5, seed=10)
    t = torch.linspace(0, 0.02, 5, dtype=F64)
    coeffs = cc.linear_interpolation_coeffs(x, t)
    X, Y = cc.LinearInterpolation(coeffs, t), torchcde.LinearInterpolation(coeffs, t)
    z0 = torch.randn(2, 3, dtype=F64)
    with torch.no_grad():  # method midpoint (Stratonovich), dt 1e-3, adjoint=True
        torch.testing.assert_close(
            cc.cdeint(X, Field(), z0, t, backend="torchsde"),
            torchcde.cdeint(Y, Field(), z0, t, backend="torchsde"),
        )
    for method, sde_type in [("euler", "stratonovich"), ("reversible_heun", "ito")]:
        for lib, path in [(cc, X), (torchcde, Y)]:
            with pytest.raises(ValueError, match=f"SDE is of type {sde_type} but solver is for"):
                lib.cdeint(path, SDEField(sde_type), z0, t, backend="torchsde", method=method)
    with pytest.warns(UserWarning, match="Unexpected arguments"):
        cc.cdeint(X, Field(), z0, t, adjoint=False, backend="torchsde", adjoint_params=())


@pytest.mark.slow  # about 4 s each
@pytest.mark.parametrize("kind", ["cubic", "linear"])
def test_reversible_heun_adjoint_gradients_match_finite_differences(kind):
    # as sde_gan.py's discriminator: the data (through coefficients computed outside the
    # solve), the initial state and the parameters, on the ReversibleAdjoint
    g = torch.Generator().manual_seed(11)
    x = torch.randn(2, 6, 2, generator=g, dtype=F64).cumsum(1) * 0.3
    z0 = torch.randn(2, 3, generator=g, dtype=F64)
    w = 0.4 * torch.randn(3, 6, generator=g, dtype=F64)
    ts = torch.tensor([0.0, 1.7, 5.0], dtype=F64)
    make = (
        (cc.natural_cubic_coeffs, cc.CubicSpline)
        if kind == "cubic"
        else (cc.linear_interpolation_coeffs, cc.LinearInterpolation)
    )

    def run(x, z0, w, adjoint=True):
        coeffs = make[0](x)
        f = Field()
        del f.w
        f.w = w
        out = cc.cdeint(
            make[1](coeffs), f, z0, ts, adjoint=adjoint, backend="torchsde",
            method="reversible_heun", dt=0.4, adjoint_method="adjoint_reversible_heun",
            adjoint_params=(coeffs, w),
        )  # fmt: skip
        return out.pow(2).sum(-1)

    inputs = tuple(v.clone().requires_grad_(True) for v in (x, z0, w))
    assert torch.autograd.gradcheck(run, inputs, atol=1e-7, rtol=1e-6)
    with torch.no_grad():
        theirs_X = (torchcde.CubicSpline if kind == "cubic" else torchcde.LinearInterpolation)(
            make[0](x)
        )
        f = Field()
        f.w.copy_(w)
        theirs = torchcde.cdeint(
            theirs_X, f, z0, ts, backend="torchsde", method="reversible_heun", dt=0.4,
            adjoint_method="adjoint_reversible_heun",
        )  # fmt: skip
    torch.testing.assert_close(run(x, z0, w), theirs.pow(2).sum(-1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("adjoint", [False, True])
def test_torchsde_backend_draws_the_random_streams_as_torchcde(adjoint):
    # sde_gan.py's discriminator: reversible Heun on the linear interpolation of NaN-holding
    # data. torchcde's solve makes a torchsde Brownian motion, whose entropy is one draw from
    # NumPy's global generator, and leaves torch's generator alone; so must the compat one.
    import numpy as np

    x, t = _data(nan=True)
    kwargs = {"backend": "torchsde", "method": "reversible_heun", "dt": 0.4}
    if adjoint:
        kwargs["adjoint_method"] = "adjoint_reversible_heun"
    z0 = torch.linspace(-0.5, 0.5, 9, dtype=F64).reshape(3, 3)
    outs, streams = [], []
    for lib in (torchcde, cc):
        X = lib.LinearInterpolation(lib.linear_interpolation_coeffs(x, t), t)
        torch.manual_seed(0)
        np.random.seed(1)  # noqa: NPY002
        with torch.no_grad():
            outs.append(lib.cdeint(X, Field(), z0, X.interval, adjoint=adjoint, **kwargs))
        streams.append((torch.randn(4), np.random.randint(0, 2**31 - 1)))  # noqa: NPY002
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(streams[1][0], streams[0][0], rtol=0, atol=0)
    assert streams[1][1] == streams[0][1]


#: torchcde tests that cannot pass against torchnde, and why.
UPSTREAM_EXCLUDED = {
    "test_log_ode.py": "compares against Signatory, which does not install on PyTorch 2",
    "test_example.py": "runs torchcde's example scripts from the repository, not the API",
    "test_path.py": "tests the pre-0.2 torchcontroldiffeq API (Path, ComputedParameter)",
    "test_tricks.py::test_grad_paths": (
        "adjoint=True with adjoint_params=(coeffs, t) where coeffs is computed from t: "
        "BacksolveAdjoint's vector-Jacobian products do not retain the graph upstream of their "
        "parameters (torchdiffeq passes retain_graph=True, and counts t's gradient twice)"
    ),
}
UPSTREAM_FILES = [
    "test_cdeint.py",
    "test_linear_interpolation.py",
    "test_natural_cubic_spline.py",
    "test_hermite_cubic.py",
    "test_misc.py",
    "test_tricks.py",
]


@pytest.mark.slow  # torchcde's own suite in a subprocess (when TORCHNDE_TORCHCDE_TESTS is set)
def test_upstream_torchcde_suite(tmp_path):
    folder = os.environ.get("TORCHNDE_TORCHCDE_TESTS")
    if not folder or not os.path.isdir(folder):
        pytest.skip(
            "set TORCHNDE_TORCHCDE_TESTS to a checkout of torchcde's test/ folder to run its "
            "suite against torchnde.compat.torchcde (not vendored)"
        )
    files = [
        os.path.join(folder, f) for f in UPSTREAM_FILES if os.path.exists(os.path.join(folder, f))
    ]
    (tmp_path / "conftest.py").write_text(
        textwrap.dedent(
            """
            import sys
            import torchnde.compat.torchcde as _compat
            sys.modules["torchcde"] = _compat
            sys.modules["torchcde.misc"] = _compat.misc
            """
        )
    )
    excluded = [name.split("::")[1] for name in UPSTREAM_EXCLUDED if "::" in name]
    deselect = ["-k", " and ".join(f"not {name}" for name in excluded)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
         "--confcutdir", str(tmp_path), "-c", os.devnull, *deselect, *files],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
