"""torchnde.discovery: SINDy libraries, regressors, derivative estimators."""

from __future__ import annotations

import io
import math

import pytest
import torch

import torchnde
from torchnde.discovery import (
    SR3,
    STLSQ,
    CustomLibrary,
    EnsembleSINDy,
    FiniteDifference,
    FourierLibrary,
    PolynomialLibrary,
    SINDy,
    SmoothedFiniteDifference,
    SplineDerivative,
)

D = torch.float64


def lorenz(t, y, args=None):
    x, yy, z = y[..., 0], y[..., 1], y[..., 2]
    return torch.stack([10 * (yy - x), x * (28 - z) - yy, x * yy - 8 / 3 * z], -1)


def lotka(t, y, args=None):
    x, yy = y[..., 0], y[..., 1]
    return torch.stack([1.5 * x - 1.0 * x * yy, -3.0 * yy + 1.0 * x * yy], -1)


def trajectory(f, y0, t1, n):
    ts = torch.linspace(0, t1, n, dtype=D)
    sol = torchnde.solve(
        torchnde.ODETerm(f),
        torchnde.Dopri5(),
        0.0,
        t1,
        torch.tensor(y0, dtype=D),
        saveat=torchnde.SaveAt(ts=ts),
        controller=torchnde.PIDController(rtol=1e-11, atol=1e-12),
    )
    return ts, sol.ys


LORENZ_TRUE = {
    0: {"x0": -10.0, "x1": 10.0},
    1: {"x0": 28.0, "x1": -1.0, "x0 x2": -1.0},
    2: {"x2": -8 / 3, "x0 x1": 1.0},
}
LV_TRUE = {0: {"x0": 1.5, "x0 x1": -1.0}, 1: {"x1": -3.0, "x0 x1": 1.0}}


def true_matrix(true, names):
    xi = torch.zeros(len(true), len(names), dtype=D)
    for i, row in true.items():
        for name, c in row.items():
            xi[i, names.index(name)] = c
    return xi


def rel_err(model, true):
    xi = true_matrix(true, model.get_feature_names())
    return float((model.coefficients() - xi).abs().max() / xi.abs().max()), xi


@pytest.mark.parametrize(
    "optimizer", [STLSQ(threshold=0.1, alpha=0.0), SR3(threshold=0.05, nu=1.0)]
)
def test_sindy_recovers_lorenz_from_exact_derivatives(optimizer):
    ts, xs = trajectory(lorenz, [-8.0, 8.0, 27.0], 5.0, 2001)
    model = SINDy(optimizer=optimizer, feature_library=PolynomialLibrary(degree=2)).fit(
        xs, t=ts, x_dot=lorenz(0, xs)
    )
    err, xi = rel_err(model, LORENZ_TRUE)
    assert err < 1e-6
    assert torch.equal(model.coefficients() != 0, xi != 0)


def test_sindy_recovers_lorenz_from_finite_differences_to_1e_3():
    ts, xs = trajectory(lorenz, [-8.0, 8.0, 27.0], 5.0, 10001)
    model = SINDy(optimizer=STLSQ(threshold=0.1, alpha=0.0)).fit(xs, t=ts)
    err, xi = rel_err(model, LORENZ_TRUE)
    assert err < 1e-3
    assert torch.equal(model.coefficients() != 0, xi != 0)


def test_sindy_recovers_lotka_volterra_from_clean_data_to_1e_3():
    ts, xs = trajectory(lotka, [1.0, 1.0], 10.0, 4001)
    model = SINDy(optimizer=STLSQ(threshold=0.1, alpha=0.0)).fit(xs, t=float(ts[1] - ts[0]))
    err, xi = rel_err(model, LV_TRUE)
    assert err < 1e-3
    assert torch.equal(model.coefficients() != 0, xi != 0)
    # and the fitted model, simulated through torchnde.solve, follows the data
    sim = model.simulate(xs[0], ts[:400])
    assert float((sim - xs[:400]).abs().max()) < 1e-2


def test_ensemble_sindy_recovers_lotka_volterra_from_one_percent_noise():
    ts, xs = trajectory(lotka, [1.0, 1.0], 10.0, 2001)
    g = torch.Generator().manual_seed(0)
    noisy = xs + 0.01 * xs.std(0) * torch.randn(xs.shape, generator=g, dtype=D)
    model = EnsembleSINDy(
        optimizer=STLSQ(threshold=0.2, alpha=0.0),
        differentiation_method=SmoothedFiniteDifference(window_length=41, polyorder=3),
        num_models=10,
        generator=g,
    ).fit(noisy, t=ts)
    err, xi = rel_err(model, LV_TRUE)
    assert err < 0.05
    probs = model.inclusion_probabilities()
    assert bool((probs[xi != 0] == 1).all())
    assert probs.shape == xi.shape


def test_equations_and_print_follow_pysindy_format():
    ts, xs = trajectory(lotka, [1.0, 1.0], 10.0, 4001)
    model = SINDy(optimizer=STLSQ(threshold=0.1, alpha=0.0)).fit(xs, t=ts, x_dot=lotka(0, xs))
    assert model.equations(precision=2) == ["1.50 x0 + -1.00 x0 x1", "-3.00 x1 + 1.00 x0 x1"]
    buf = io.StringIO()
    lines = model.print(precision=1, file=buf)
    assert lines == ["(x0)' = 1.5 x0 + -1.0 x0 x1", "(x1)' = -3.0 x1 + 1.0 x0 x1"]
    assert buf.getvalue() == "\n".join(lines) + "\n"
    named = SINDy(optimizer=STLSQ(0.1, 0.0), feature_names=["u", "v"]).fit(xs, x_dot=lotka(0, xs))
    assert named.equations(1) == ["1.5 u + -1.0 u v", "-3.0 v + 1.0 u v"]


def test_predict_matches_the_true_vector_field():
    ts, xs = trajectory(lotka, [1.0, 1.0], 10.0, 1001)
    model = SINDy(optimizer=STLSQ(0.1, 0.0)).fit(xs, x_dot=lotka(0, xs))
    torch.testing.assert_close(model.predict(xs), lotka(0, xs), rtol=1e-9, atol=1e-9)


def test_library_feature_names_follow_pysindy():
    assert PolynomialLibrary(degree=2).feature_names(num_features=2) == [
        "1",
        "x0",
        "x1",
        "x0^2",
        "x0 x1",
        "x1^2",
    ]
    assert PolynomialLibrary(degree=3, include_bias=False).feature_names(num_features=2)[-4:] == [
        "x0^3",
        "x0^2 x1",
        "x0 x1^2",
        "x1^3",
    ]
    assert FourierLibrary(n=2).feature_names(num_features=2) == [
        "sin(1 x0)",
        "cos(1 x0)",
        "sin(1 x1)",
        "cos(1 x1)",
        "sin(2 x0)",
        "cos(2 x0)",
        "sin(2 x1)",
        "cos(2 x1)",
    ]
    custom = CustomLibrary([torch.exp], [lambda s: f"exp({s})"])
    assert custom.feature_names(["u", "v"], num_features=2) == ["exp(u)", "exp(v)"]
    both = PolynomialLibrary(1, include_bias=False) + custom
    assert both.feature_names(num_features=2) == ["x0", "x1", "exp(x0)", "exp(x1)"]
    prod = PolynomialLibrary(1, include_bias=False) * FourierLibrary(1, include_cos=False)
    assert prod.feature_names(num_features=2) == [
        "x0 sin(1 x0)",
        "x0 sin(1 x1)",
        "x1 sin(1 x0)",
        "x1 sin(1 x1)",
    ]


def test_library_values_match_their_names():
    x = torch.tensor([[0.5, -2.0], [1.5, 3.0]], dtype=D)
    a, b = x[:, 0], x[:, 1]
    expected = torch.stack([torch.ones_like(a), a, b, a * a, a * b, b * b], 1)
    torch.testing.assert_close(PolynomialLibrary(2)(x), expected)
    prod = PolynomialLibrary(1, include_bias=False) * FourierLibrary(1, include_cos=False)
    torch.testing.assert_close(
        prod(x),
        torch.stack([a * torch.sin(a), a * torch.sin(b), b * torch.sin(a), b * torch.sin(b)], 1),
    )
    both = FourierLibrary(1) + CustomLibrary([torch.exp], [lambda s: f"exp({s})"])
    assert both(x).shape == (2, 6)
    torch.testing.assert_close(both(x)[:, 4:], torch.exp(x))


def _errors(method, ns):
    errs = []
    for n in ns:
        t = torch.linspace(0, 2 * math.pi, n, dtype=D)
        d = method(torch.sin(t)[:, None], t)[:, 0]
        errs.append(float((d - torch.cos(t)).abs().max()))
    return errs


@pytest.mark.parametrize("order", [1, 2])
def test_finite_difference_converges_at_its_order_on_sin(order):
    e1, e2 = _errors(FiniteDifference(order=order), [201, 401])
    slope = math.log2(e1 / e2)
    assert abs(slope - order) < 0.15


def test_smoothed_finite_difference_converges_at_second_order_on_sin():
    e1, e2 = _errors(SmoothedFiniteDifference(window_length=7, polyorder=3), [401, 801])
    assert abs(math.log2(e1 / e2) - 2) < 0.2


def test_smoothed_finite_difference_reproduces_cubics_exactly():
    t = torch.linspace(0, 1, 50, dtype=D)
    x = (t**3 - 2 * t)[:, None]
    torch.testing.assert_close(SmoothedFiniteDifference(11, 3).smooth(x), x)


def test_spline_derivative_converges_on_sin():
    e1, e2 = _errors(SplineDerivative(s=0.0), [101, 201])
    assert e2 < 1e-5
    assert math.log2(e1 / e2) > 2.5


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="`degree` must be an int >= 0, got -1"):
        PolynomialLibrary(degree=-1)
    with pytest.raises(ValueError, match="`n` .* must be an int >= 1, got 0"):
        FourierLibrary(n=0)
    with pytest.raises(ValueError, match="`names` must have one entry per function"):
        CustomLibrary([torch.sin], [])
    with pytest.raises(ValueError, match="`threshold` must be a number >= 0, got -0.1"):
        STLSQ(threshold=-0.1)
    with pytest.raises(ValueError, match="`max_iter` must be an int >= 1"):
        STLSQ(max_iter=0)
    with pytest.raises(ValueError, match="`nu` must be > 0"):
        SR3(nu=0)
    with pytest.raises(
        ValueError, match=r"`x` must have shape \(num_samples, num_features\), got shape \(5,\)"
    ):
        SINDy().fit(torch.zeros(5), t=0.1)
    with pytest.raises(TypeError, match="`x` must be a torch.Tensor, got list"):
        SINDy().fit([[1.0]], t=0.1)
    with pytest.raises(ValueError, match="give `t`"):
        SINDy().fit(torch.zeros(5, 2))
    with pytest.raises(ValueError, match=r"`t` must be .* 1-D tensor of 5 times"):
        SINDy().fit(torch.zeros(5, 2), t=torch.zeros(4))
    with pytest.raises(ValueError, match="`t` must be strictly increasing"):
        FiniteDifference()(torch.zeros(3, 1), torch.tensor([0.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match="`x_dot` must be a tensor of the shape of `x`"):
        SINDy().fit(torch.zeros(5, 2), x_dot=torch.zeros(5, 3))
    with pytest.raises(TypeError, match="`optimizer` must be a AbstractOptimizer"):
        SINDy(optimizer="stlsq")
    with pytest.raises(RuntimeError, match="not fitted yet"):
        SINDy().equations()
    with pytest.raises(ValueError, match="`window_length` must be an odd int >= 3, got 4"):
        SmoothedFiniteDifference(window_length=4)
    with pytest.raises(ValueError, match="`order` must be 1 or 2, got 3"):
        FiniteDifference(order=3)
    model = SINDy().fit(torch.rand(20, 2, dtype=D), t=0.1)
    with pytest.raises(ValueError, match=r"`x` must have 2 features \(as in fit\)"):
        model.predict(torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"`x0` must be a tensor of shape \(2,\)"):
        model.simulate(torch.zeros(3), torch.linspace(0, 1, 5))
    with pytest.raises(ValueError, match="`feature_names` has 3 names but `x` has 2 features"):
        SINDy(feature_names=["a", "b", "c"]).fit(torch.rand(20, 2), t=0.1)
    with pytest.raises(ValueError, match="`num_models` must be an int >= 1"):
        EnsembleSINDy(num_models=0)
