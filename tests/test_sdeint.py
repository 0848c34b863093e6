"""sdeint: shapes, method names, the latent-SDE KL term, and its errors."""

from __future__ import annotations

import math

import pytest
import torch

import torchnde as tn

TS = torch.linspace(0.0, 1.0, 5, dtype=torch.float64)


def _ou_drift(t, y):
    return -y


def _sigma(t, y):
    return 0.5 * torch.ones_like(y)


@pytest.mark.parametrize(
    "noise, method, calculus",
    [
        ("diagonal", None, "ito"),
        ("diagonal", "milstein", "ito"),
        ("diagonal", "milstein_derivative_free", "stratonovich"),
        ("diagonal", None, "stratonovich"),
        ("diagonal", "reversible_heun", "stratonovich"),
        ("diagonal", "euler_heun", "stratonovich"),
        ("scalar", None, "ito"),
        ("additive", None, "ito"),
        ("general", None, "ito"),
        ("general", "heun", "stratonovich"),
    ],
)
def test_sdeint_shapes_any_state_shape(noise, method, calculus):
    y0 = torch.ones(6, 2, 3, dtype=torch.float64)

    def g(t, y):
        return 0.3 * y[..., None].expand(*y.shape, 4) if noise == "general" else 0.3 * y

    ys = tn.sdeint(_ou_drift, g, y0, TS, noise=noise, method=method, calculus=calculus, dt=0.05)
    assert ys.shape == (5, 6, 2, 3)
    torch.testing.assert_close(ys[0], y0)
    assert bool(torch.isfinite(ys).all())


def test_sdeint_same_bm_same_path_and_ts_on_steps():
    bm = tn.BrownianInterval(0.0, 1.0, (8, 2), dtype=torch.float64, seed=3)
    y0 = torch.ones(8, 2, dtype=torch.float64)
    a = tn.sdeint(_ou_drift, _sigma, y0, TS, method="euler", dt=0.125, bm=bm)
    b = tn.sdeint(_ou_drift, _sigma, y0, TS, method="euler", dt=0.125, bm=bm)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # Euler–Maruyama by hand on the same Brownian motion: the 8 steps of 1/8, with ts on them.
    y = y0.clone()
    for k in range(8):
        lo, hi = k / 8, (k + 1) / 8
        y = y - y * (hi - lo) + 0.5 * bm(lo, hi)
        if (k + 1) % 2 == 0:
            torch.testing.assert_close(a[(k + 1) // 2], y)


def test_logqp_equals_closed_form_kl():
    # posterior drift f = -y + c, prior h = -y, g = σ: u = c/σ, KL(t) = ½ d (c/σ)² t.
    c, sigma, d = 0.7, 0.5, 3
    y0 = torch.zeros(4, d, dtype=torch.float64)
    ys, kl = tn.sdeint(
        lambda t, y: -y + c, lambda t, y: sigma * torch.ones_like(y), y0, TS,
        dt=0.05, logqp=True, prior_drift=lambda t, y: -y,
    )  # fmt: skip
    assert ys.shape == (5, 4, d) and kl.shape == (5, 4)
    expect = 0.5 * d * (c / sigma) ** 2 * TS[:, None].expand(5, 4)
    torch.testing.assert_close(kl, expect)


def test_logqp_gradients_stochastic_adjoint_close_to_direct():
    torch.manual_seed(0)
    net = torch.nn.Linear(2, 2).double()
    y0 = torch.full((8, 2), 0.1, dtype=torch.float64)
    bm = tn.BrownianInterval(0.0, 1.0, (8, 2), dtype=torch.float64, seed=1)

    def loss(adjoint):
        ys, kl = tn.sdeint(
            lambda t, y: torch.tanh(net(y)), lambda t, y: 0.3 * torch.cos(y), y0, TS,
            calculus="stratonovich", dt=2.0**-7, bm=bm, adjoint=adjoint, logqp=True,
            prior_drift=lambda t, y: -y,
        )  # fmt: skip
        return (ys[-1] ** 2).sum() + kl[-1].sum()

    direct = torch.autograd.grad(loss(tn.DirectAdjoint()), list(net.parameters()))
    adj = torch.autograd.grad(loss(tn.BacksolveAdjoint()), list(net.parameters()))
    for a, b in zip(adj, direct):
        assert float((a - b).norm() / b.norm()) < 0.02


def test_sdeint_adaptive():
    bm = tn.BrownianInterval(0.0, 1.0, (8, 2), dtype=torch.float64, seed=1)
    y0 = torch.ones(8, 2, dtype=torch.float64)
    ys = tn.sdeint(
        lambda t, y: 0.5 * y, lambda t, y: 0.8 * y, y0, TS, bm=bm, calculus="stratonovich",
        method="heun", adaptive=True, dt=0.1, rtol=1e-3, atol=1e-3,
    )  # fmt: skip
    exact = y0 * torch.exp(0.5 + 0.8 * bm(0.0, 1.0))
    assert float((ys[-1] - exact).abs().max()) < 0.05 * math.e


def test_sdeint_errors():
    y0 = torch.ones(2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="`method` must be one of"):
        tn.sdeint(_ou_drift, _sigma, y0, TS, method="rk45", dt=0.1)
    with pytest.raises(ValueError, match="`dt` is required"):
        tn.sdeint(_ou_drift, _sigma, y0, TS)
    with pytest.raises(ValueError, match="needs `prior_drift"):
        tn.sdeint(_ou_drift, _sigma, y0, TS, dt=0.1, logqp=True)
    with pytest.raises(ValueError, match="`ts` must be strictly increasing"):
        tn.sdeint(_ou_drift, _sigma, y0, TS.flip(0), dt=0.1)
    with pytest.raises(ValueError, match="`noise` must be one of"):
        tn.sdeint(_ou_drift, _sigma, y0, TS, dt=0.1, noise="diag")
    with pytest.raises(ValueError, match="converges to the Ito solution"):
        tn.sdeint(_ou_drift, lambda t, y: y, y0, TS, dt=0.1, method="sri2", calculus="stratonovich")
    with pytest.raises(ValueError, match="adaptive=True needs an error estimate"):
        tn.sdeint(_ou_drift, _sigma, y0, TS, dt=0.1, method="midpoint", adaptive=True,
                  calculus="stratonovich")  # fmt: skip


def _counting(fn, calls):
    def counted(t, y):
        calls.append(float(t))
        return fn(t, y)

    return counted


@pytest.mark.parametrize("method, calculus", [("euler", "ito"), ("heun", "stratonovich")])
def test_fixed_steps_on_t0_plus_k_dt_whatever_the_output_times(method, calculus):
    # torchsde's grid: 200 steps of 0.01 for 100 output times on [0, 2] (the output times
    # used to restart the grid: 297 steps).
    calls: list[float] = []
    ts = torch.linspace(0, 2, 100, dtype=torch.float64)
    y0 = torch.ones(3, 2, dtype=torch.float64)
    tn.sdeint(
        _counting(_ou_drift, calls), _sigma, y0, ts, method=method, calculus=calculus, dt=0.01
    )
    # Euler–Maruyama: one drift evaluation per step (at its start); Heun: the vector field at
    # t0, then two per step, both at its end.
    assert len(calls) == (200 if method == "euler" else 1 + 2 * 200)
    times = torch.tensor(sorted(set(calls)), dtype=torch.float64)
    grid = 0.01 * torch.arange(200 if method == "euler" else 201, dtype=torch.float64)
    torch.testing.assert_close(times, grid, rtol=0, atol=1e-14)


@pytest.mark.parametrize("method, calculus", [("euler", "ito"), ("heun", "stratonovich")])
def test_outputs_between_steps_interpolate_the_step_states_linearly(method, calculus):
    bm = tn.BrownianInterval(0.0, 1.0, (8, 2), dtype=torch.float64, seed=3)
    y0 = torch.ones(8, 2, dtype=torch.float64)
    grid = torch.linspace(0, 1, 9, dtype=torch.float64)  # the steps of 1/8
    ts = torch.tensor([0.0, 0.2, 0.3, 0.625, 1.0], dtype=torch.float64)
    kw = dict(method=method, calculus=calculus, dt=0.125, bm=bm)
    on_grid = tn.sdeint(_ou_drift, _sigma, y0, grid, **kw)
    ours = tn.sdeint(_ou_drift, _sigma, y0, ts, **kw)
    k = torch.searchsorted(grid, ts, right=True).clamp(max=8) - 1
    theta = ((ts - grid[k]) / 0.125)[:, None, None]
    expect = on_grid[k] + theta * (on_grid[(k + 1).clamp(max=8)] - on_grid[k])
    torch.testing.assert_close(ours, expect, rtol=1e-12, atol=1e-12)


def test_adaptive_times_given_to_the_vector_fields_do_not_require_grad():
    # latent_sde.py --adaptive builds torch.full_like(y, t): t must not require grad.
    p = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    seen: list[bool] = []

    def drift(t, y):
        seen.append(t.requires_grad)
        return -p * y + torch.full_like(y, t)

    ys = tn.sdeint(
        drift, lambda t, y: 0.3 * y, torch.ones(4, 2, dtype=torch.float64), TS,
        method="milstein", adaptive=True, dt=0.1,
    )  # fmt: skip
    ys.sum().backward()
    assert seen and not any(seen)
    assert p.grad is not None and bool(torch.isfinite(p.grad))


Y0 = torch.ones(4, 3, dtype=torch.float64)


def _g_general(t, y):
    return 0.1 * y[..., None].expand(*y.shape, 2)


@pytest.mark.parametrize(
    "drift, diffusion, noise, bm, match",
    [
        # the Brownian motion of one sample for four: all four got the same path
        (_ou_drift, _sigma, "diagonal", (1, 3), r"`bm` has shape \(1, 3\).*needs a Brownian "
         r"motion of shape \(4, 3\).*BrownianInterval\(t0, t1, \(4, 3\)\)"),
        (_ou_drift, _sigma, "diagonal", (4, 2), r"`bm` has shape \(4, 2\).*\(4, 3\)"),
        (_ou_drift, _sigma, "scalar", (4, 3), r"`bm` has shape \(4, 3\).*\(4, 1\)"),
        (_ou_drift, _g_general, "general", (4, 3),
         r"`bm` has shape \(4, 3\).*diffusion of shape \(4, 3, 2\).*\(4, 2\).*m = 2"),
        (lambda t, y: -y[:, :2], _sigma, "diagonal", None,
         r"`drift` must return .* shape \(4, 3\).*got shape \(4, 2\)"),
        (lambda t, y: -y[0], _sigma, "diagonal", None, r"`drift`.*got shape \(3,\)"),
        (_ou_drift, lambda t, y: 0.1 * y[:, :2], "diagonal", None,
         r"`diffusion` with noise='diagonal' must return the state's shape \(4, 3\), got "
         r"shape \(4, 2\)"),
        (_ou_drift, lambda t, y: 0.1 * y[:, :1], "scalar", None,
         r"`diffusion` with noise='scalar'.*\(4, 3\).*\(4, 1\)"),
        (_ou_drift, _sigma, "general", None,
         r"`diffusion` with noise='general' must return y0.shape \+ \(m,\).*got shape "
         r"\(4, 3\).*noise='diagonal'"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("method, calculus", [("euler", "ito"), ("heun", "stratonovich")])
def test_shape_mismatches_are_value_errors_naming_the_argument(
    drift, diffusion, noise, bm, match, method, calculus
):
    if bm is not None:
        bm = tn.BrownianInterval(0.0, 1.0, bm, dtype=torch.float64, seed=0)
    with pytest.raises(ValueError, match=match):
        tn.sdeint(drift, diffusion, Y0, TS, noise=noise, method=method, calculus=calculus,
                  dt=0.1, bm=bm)  # fmt: skip


def test_shape_checks_cost_no_extra_evaluation():
    bm = tn.BrownianInterval(0.0, 1.0, (4, 3), dtype=torch.float64, seed=0)
    drift_calls: list[float] = []
    diffusion_calls: list[float] = []
    tn.sdeint(
        _counting(_ou_drift, drift_calls), _counting(_sigma, diffusion_calls), Y0, TS,
        method="euler", dt=0.125, bm=bm,
    )  # fmt: skip
    assert len(drift_calls) == len(diffusion_calls) == 8


def test_log_ode_method_name():
    ys = tn.sdeint(_ou_drift, lambda t, y: 0.3 * torch.cos(y), Y0, TS, method="log_ode",
                   calculus="stratonovich", dt=0.05)  # fmt: skip
    assert ys.shape == (5, 4, 3) and bool(torch.isfinite(ys).all())
    # general noise: the default Brownian motion carries the Lévy area the method needs
    ys = tn.sdeint(_ou_drift, _g_general, Y0, TS, noise="general", method="log_ode",
                   calculus="stratonovich", dt=0.05)  # fmt: skip
    assert ys.shape == (5, 4, 3) and bool(torch.isfinite(ys).all())


def test_logqp_evaluates_the_diffusion_once_per_point():
    # The KL integrand needs g where f is evaluated: shared with the diffusion term, not
    # recomputed (it was twice per Euler step).
    calls: list[float] = []
    bm = tn.BrownianInterval(0.0, 1.0, (4, 3), dtype=torch.float64, seed=0)
    tn.sdeint(
        _ou_drift, _counting(_sigma, calls), Y0, TS, method="euler", dt=0.125, bm=bm,
        logqp=True, prior_drift=lambda t, y: -2 * y,
    )  # fmt: skip
    assert len(calls) == 8


def test_seed_seeds_the_default_brownian_motion_and_leaves_torch_stream_alone():
    y0 = torch.ones(8, 2, dtype=torch.float64)
    # Fixed-step Euler–Maruyama without an adjoint draws on the step grid (BrownianGrid,
    # issue 20 part 2; before it, BrownianInterval(seed=3), whose samples differ).
    bm = tn.BrownianGrid(0.0, 1.0, 0.125, (8, 2), dtype=torch.float64, seed=3)
    expected = tn.sdeint(_ou_drift, _sigma, y0, TS, method="euler", dt=0.125, bm=bm)
    torch.manual_seed(0)
    after_seed = torch.randn(4)
    torch.manual_seed(0)
    ys = tn.sdeint(_ou_drift, _sigma, y0, TS, method="euler", dt=0.125, seed=3)
    torch.testing.assert_close(ys, expected, rtol=0, atol=0)
    torch.testing.assert_close(torch.randn(4), after_seed, rtol=0, atol=0)
    with pytest.raises(TypeError, match=r"sdeint: `seed` must be an int or None, got float"):
        tn.sdeint(_ou_drift, _sigma, y0, TS, method="euler", dt=0.125, seed=3.0)
