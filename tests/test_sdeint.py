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
