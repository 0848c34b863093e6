"""ODE-RNN, the RNN baselines, the latent ODE and ODE2VAE: shapes, masks, batch
independence, gradients against finite differences, small fits and the errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import torchnde as tn
from torchnde import models as M

PER_SAMPLE = tn.PIDController(rtol=1e-7, atol=1e-9, per_sample=True)


def _batch(b: int = 4, t: int = 6, c: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ts = torch.sort(torch.rand(b, t, generator=g) * 3, dim=1).values
    x = torch.randn(b, t, c, generator=g)
    mask = torch.rand(b, t, c, generator=g) < 0.6
    mask[:, 0] = True
    return ts, x, mask


RECURRENT = [
    lambda: M.ODERNN(2, 5, hidden_units=8, controller=PER_SAMPLE),
    lambda: M.RNN(2, 5),
    lambda: M.RNNDecay(2, 5),
]


@pytest.mark.parametrize("make", RECURRENT, ids=["ODERNN", "RNN", "RNNDecay"])
def test_recurrent_models_shapes_masks_and_batch_independence(make):
    torch.manual_seed(0)
    model = make()
    ts, x, mask = _batch()
    final, hs = model(ts, x, mask)
    assert final.shape == (4, 5) and hs.shape == (4, 6, 5)
    assert torch.equal(final, hs[:, -1])
    assert model.predictive_states(ts, x, mask).shape == (4, 6, 5)
    # masked values never matter, NaN included
    x2 = x.clone()
    x2[~mask] = float("nan")
    torch.testing.assert_close(model(ts, x2, mask)[1], hs, rtol=0, atol=0)
    # a sample's output does not depend on the rest of the batch
    torch.testing.assert_close(model(ts[1:2], x[1:2], mask[1:2])[1], hs[1:2], rtol=1e-6, atol=1e-6)
    # a fully masked padding time at the end leaves the last state unchanged
    ts_p = torch.cat([ts, ts[:, -1:]], 1)
    x_p = torch.cat([x, torch.full_like(x[:, :1], float("nan"))], 1)
    m_p = torch.cat([mask, torch.zeros_like(mask[:, :1])], 1)
    torch.testing.assert_close(model(ts_p, x_p, m_p)[0], final, rtol=1e-6, atol=1e-6)


def test_odernn_union_of_times_matches_per_sample_stepping():
    torch.manual_seed(0)
    ps = M.ODERNN(2, 5, hidden_units=8, controller=PER_SAMPLE)
    joint = M.ODERNN(2, 5, hidden_units=8, rtol=1e-7, atol=1e-9)
    joint.load_state_dict(ps.state_dict())
    ts, x, mask = _batch()
    torch.testing.assert_close(joint(ts, x, mask)[1], ps(ts, x, mask)[1], rtol=1e-5, atol=1e-5)
    assert joint.num_solves == ts.numel() - 1 and ps.num_solves == ts.shape[1] - 1


def test_odernn_runs_backwards_in_time_and_matches_a_hand_rolled_loop():
    torch.manual_seed(0)
    model = M.ODERNN(1, 3, hidden_units=4, solver=tn.RK4(), dt0=0.05)
    ts = torch.tensor([2.0, 1.5, 0.4])
    x = torch.randn(2, 3, 1)
    final, _ = model(ts, x)
    h = torch.zeros(2, 3)
    for i in range(3):
        if i:
            h = model.evolve(h, ts[i - 1], ts[i])
        h = model.cell(torch.cat([x[:, i], torch.ones(2, 1)], -1), h)
    torch.testing.assert_close(final, h)


@pytest.mark.parametrize("poisson", [False, True])
def test_latent_ode_shapes_masks_and_batch_independence(poisson):
    torch.manual_seed(0)
    model = M.LatentODE(2, 3, encoder_hidden=5, hidden_units=8, poisson=poisson,
                        controller=PER_SAMPLE)  # fmt: skip
    ts, x, mask = _batch()
    grid = torch.linspace(0, 4, 7)
    torch.manual_seed(1)
    elbo = model.elbo(ts, x, mask, num_samples=2)
    assert elbo.shape == (4,) and torch.isfinite(elbo).all()
    assert set(model.last) == ({"loglik", "kl", "poisson"} if poisson else {"loglik", "kl"})
    x2 = x.clone()
    x2[~mask] = float("nan")
    torch.manual_seed(1)
    torch.testing.assert_close(model.elbo(ts, x2, mask, num_samples=2), elbo, rtol=0, atol=0)
    pred = model(ts, x, mask, ts_pred=grid, t0=0.0)
    assert pred.shape == (4, 7, 2)
    one = model(ts[2:3], x[2:3], mask[2:3], ts_pred=grid, t0=0.0)
    torch.testing.assert_close(one, pred[2:3], rtol=1e-5, atol=1e-6)
    # extrapolation: the points after the middle of the range do not reach the encoder
    x3 = x.clone()
    late = ts >= 0.5 * (ts[:, :1] + ts[:, -1:])
    x3[late] = 100.0
    torch.manual_seed(1)
    e1 = model.elbo(ts, x, mask, mode="extrapolate")
    mean1 = model.encode(ts, x, mask * ~late[..., None])[0]
    mean3 = model.encode(ts, x3, mask * ~late[..., None])[0]
    torch.testing.assert_close(mean1, mean3, rtol=0, atol=0)
    assert e1.shape == (4,)


def test_latent_ode_union_of_times_decoder_matches_per_sample():
    torch.manual_seed(0)
    a = M.LatentODE(2, 3, encoder="rnn", encoder_hidden=5, hidden_units=8, controller=PER_SAMPLE)
    b = M.LatentODE(2, 3, encoder="rnn", encoder_hidden=5, hidden_units=8, rtol=1e-7, atol=1e-9)
    b.load_state_dict(a.state_dict())
    ts, x, mask = _batch()
    torch.testing.assert_close(a(ts, x, mask), b(ts, x, mask), rtol=1e-5, atol=1e-5)


def test_poisson_term_is_the_constant_rate_log_likelihood():
    # intensity softplus(0 * z + beta) = lam: log p = sum m log lam - C lam (t_N - t_0)
    torch.manual_seed(0)
    model = M.LatentODE(2, 3, encoder_hidden=5, hidden_units=8, poisson=True, rtol=1e-8,
                        atol=1e-10)  # fmt: skip
    assert model.intensity is not None
    with torch.no_grad():
        for layer in model.intensity:
            if isinstance(layer, nn.Linear):
                layer.weight.zero_()
                layer.bias.fill_(0.3)
    lam = math.log1p(math.exp(model.intensity[2].bias[0].item()))
    ts = torch.tensor([0.0, 0.5, 1.2, 2.0])
    x = torch.randn(3, 4, 2)
    mask = torch.rand(3, 4, 2) < 0.7
    model.elbo(ts, x, mask)
    expect = (mask.sum(dim=(1, 2)) * math.log(lam) - 2 * lam * 2.0).mean()
    torch.testing.assert_close(model.last["poisson"], expect.float(), rtol=1e-5, atol=1e-5)


def test_ode2vae_shapes_masks_and_weight_kl():
    torch.manual_seed(0)
    model = M.ODE2VAE(2, 2, hidden_units=8, encoder_hidden=5, controller=PER_SAMPLE)
    ts, x, mask = _batch()
    torch.manual_seed(1)
    elbo = model.elbo(ts, x, mask, dataset_size=10)
    assert elbo.shape == (4,) and set(model.last) == {"loglik", "kl_z0", "kl_weights"}
    x2 = x.clone()
    x2[~mask] = float("nan")
    torch.manual_seed(1)
    torch.testing.assert_close(model.elbo(ts, x2, mask, dataset_size=10), elbo, rtol=0, atol=0)
    pred = model(ts, x, mask)
    assert pred.shape == (4, 6, 2)
    torch.testing.assert_close(model(ts[:1], x[:1], mask[:1]), pred[:1], rtol=1e-5, atol=1e-6)
    # KL(q || p) is 0 when the posterior is the prior, and grows with the means
    with torch.no_grad():
        for layer in model.acceleration.layers:
            for mu, rho in ((layer.weight_mu, layer.weight_rho), (layer.bias_mu, layer.bias_rho)):
                mu.zero_()
                rho.fill_(math.log(math.expm1(1.0)))
    assert abs(float(model.weight_kl().detach())) < 1e-5
    with torch.no_grad():
        model.acceleration.l1.bias_mu.fill_(1.0)
    torch.testing.assert_close(model.weight_kl(), torch.tensor(0.5 * 8), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------- gradients


def test_odernn_gradients_match_finite_differences():
    torch.manual_seed(0)
    model = M.ODERNN(1, 2, hidden_units=3, solver=tn.RK4(), dt0=0.1).double()
    ts = torch.tensor([0.0, 0.35, 0.8], dtype=torch.float64)
    x = torch.randn(2, 3, 1, dtype=torch.float64, requires_grad=True)
    w = model.vector_field.net[0].weight.detach().clone().requires_grad_(True)

    def f(x, w):
        return torch.func.functional_call(model, {"vector_field.net.0.weight": w}, (ts, x))[0]

    assert torch.autograd.gradcheck(f, (x, w), fast_mode=True)


def test_latent_ode_and_ode2vae_elbo_gradients_match_finite_differences():
    torch.manual_seed(0)
    ts = torch.tensor([0.0, 0.3, 0.7], dtype=torch.float64)
    x = torch.randn(2, 3, 1, dtype=torch.float64, requires_grad=True)
    for model in (
        M.LatentODE(1, 2, encoder_hidden=2, hidden_units=3, poisson=True, obs_std=0.5,
                    solver=tn.RK4(), dt0=0.1),
        M.ODE2VAE(1, 1, encoder_hidden=2, hidden_units=3, obs_std=0.5, solver=tn.RK4(), dt0=0.1),
    ):  # fmt: skip
        model = model.double()

        def f(x, model=model):
            torch.manual_seed(3)  # the same draws of z0 (and W) at every evaluation
            return model.elbo(ts, x)

        assert torch.autograd.gradcheck(f, (x,), fast_mode=True)


# ------------------------------------------------------------------------------ small fits


def _fit(model: nn.Module, loss_fn, steps: int, lr: float = 2e-2) -> tuple[float, float]:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    first = None
    for _ in range(steps):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = float(loss.detach()) if first is None else first
    return first, float(loss_fn().detach())  # type: ignore[return-value]


FITTING = [
    lambda: M.ODERNN(
        2,
        5,
        hidden_units=8,
        solver=tn.RK4(),
        dt0=0.5,
        controller=tn.ConstantStepSize(per_sample=True),
    ),  # fmt: skip
    lambda: M.RNN(2, 5),
    lambda: M.RNNDecay(2, 5),
]


@pytest.mark.parametrize("make", FITTING, ids=["ODERNN", "RNN", "RNNDecay"])
def test_recurrent_models_fit_the_time_since_the_last_observation(make):
    # target: the elapsed time from each series' last observation to t = 3 (needs the times)
    torch.manual_seed(0)
    rnn = make()
    head = nn.Linear(5, 1)
    ts, x, mask = _batch(b=16, t=5)
    model = nn.ModuleList([rnn, head])
    target = (3.0 - ts[:, -1:]) + 0.5 * x[:, -1, :1]

    def loss():
        return ((head(rnn(ts, x)[0]) - target) ** 2).mean()

    first, last = _fit(model, loss, steps=120)
    assert last < 0.2 * first, (first, last)


def test_latent_ode_fits_exponential_decays_from_half_their_points():
    torch.manual_seed(0)
    ts = torch.linspace(0, 2, 12)
    amp = torch.linspace(0.5, 2.0, 8)[:, None, None]
    x = amp * torch.exp(-ts)[None, :, None]
    mask = torch.rand(8, 12, 1) < 0.5
    mask[:, 0] = True
    model = M.LatentODE(1, 2, encoder="rnn", encoder_hidden=8, hidden_units=16, obs_std=0.1,
                        solver=tn.RK4(), dt0=0.25)  # fmt: skip

    def loss():
        return -model.elbo(ts, x, mask, ts_target=ts, x_target=x).mean() / 12

    _fit(model, loss, steps=150)
    with torch.no_grad():
        mse = float(((model(ts, x, mask) - x) ** 2).mean())
    assert mse < 0.1 * float(x.var()), mse


def test_ode2vae_fits_oscillations_of_different_phase():
    torch.manual_seed(0)
    ts = torch.linspace(0, 3, 12)
    phase = torch.linspace(0, 1.5, 8)[:, None]
    x = torch.sin(2 * ts + phase)[..., None]
    model = M.ODE2VAE(1, 1, encoder_hidden=8, hidden_units=16, obs_std=0.1, solver=tn.RK4(),
                      dt0=0.25)  # fmt: skip

    def loss():
        return -model.elbo(ts, x, dataset_size=8).mean() / 12

    _fit(model, loss, steps=150)
    with torch.no_grad():
        mse = float(((model(ts, x) - x) ** 2).mean())
    assert mse < 0.25 * float(x.var()), mse


# ----------------------------------------------------------------------------------- errors


def test_the_documented_errors():
    ts, x, mask = _batch()
    rnn = M.ODERNN(2, 4)
    with pytest.raises(ValueError, match="has 3 channels"):
        rnn(ts, torch.randn(4, 6, 3))
    with pytest.raises(ValueError, match=r"`ts` must have shape \(6,\)"):
        rnn(torch.linspace(0, 1, 5), x)
    with pytest.raises(ValueError, match="strictly monotone"):
        rnn(torch.tensor([0.0, 1, 1, 2, 3, 4]), x)
    with pytest.raises(ValueError, match="NaNs but no `mask`"):
        rnn(ts, torch.full_like(x, float("nan")))
    with pytest.raises(ValueError, match="`mask` must have the shape"):
        rnn(ts, x, mask[..., :1])
    with pytest.raises(ValueError, match="`hidden_size` must be a positive int"):
        M.RNN(2, 0)
    lo = M.LatentODE(2, 3)
    with pytest.raises(ValueError, match='`mode` must be "interpolate" or "extrapolate"'):
        lo.elbo(ts, x, mode="forecast")
    with pytest.raises(ValueError, match="must not come after the first observation"):
        lo.elbo(ts, x, t0=10.0)
    with pytest.raises(ValueError, match="target times start before t0"):
        lo(ts, x, ts_pred=torch.tensor([-1.0, 0.0]))
    with pytest.raises(ValueError, match="pass both `ts_target` and `x_target`"):
        lo.elbo(ts, x, ts_target=ts)
    with pytest.raises(ValueError, match="`ts` must be increasing"):
        lo.elbo(ts.flip(-1), x)
    with pytest.raises(ValueError, match='`encoder` must be "odernn", "rnn" or a module'):
        M.LatentODE(2, 3, encoder="gru")
    with pytest.raises(TypeError, match="needs an int attribute `hidden_size`"):
        M.LatentODE(2, 3, encoder=nn.Linear(2, 2))
    with pytest.raises(ValueError, match="`obs_std` must be a positive number"):
        M.ODE2VAE(2, 2, obs_std=0.0)
    with pytest.raises(ValueError, match="`dataset_size` must be a positive int"):
        M.ODE2VAE(2, 2).elbo(ts, x, dataset_size=0)
