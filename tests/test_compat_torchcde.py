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
    z0 = torch.randn(2, 3, dtype=F64)
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
    with pytest.raises(NotImplementedError, match="tuple"):
        cc.cdeint(X, f, (z0, z0), t)
    with pytest.raises(NotImplementedError, match="TupleControl"):
        cc.TupleControl(X, X)
    with pytest.raises(NotImplementedError, match="grid_constructor"):
        cc.cdeint(X, f, z0, t, method="rk4", options=dict(grid_constructor=None))
    with pytest.raises(NotImplementedError, match="adaptive=True"):
        cc.cdeint(X, f, z0, t, backend="torchsde", method="euler", dt=0.1, adaptive=True)
    with pytest.raises(ValueError, match="Unrecognised backend"):
        cc.cdeint(X, f, z0, t, backend="jax")
    with pytest.raises(ValueError, match="number of hidden channels"):
        cc.cdeint(X, lambda tt, z: torch.zeros(3, 4, 2, dtype=F64), z0, t)


#: torchcde tests that cannot pass against torchnde, and why.
UPSTREAM_EXCLUDED = {
    "test_cdeint.py::test_tuple_input": "tuple states / TupleControl are not supported",
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
