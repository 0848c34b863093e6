"""The stochastic models of the zoo: LatentSDE (Li et al. 2020), SDEGAN (Kidger et al. 2021)
and NeuralSDE (Liu et al. 2019): shapes, the KL and the Wasserstein objective, gradients
against float64 finite differences, batch independence, small fits."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import torchnde as tn
from torchnde.models import SDEGAN, Autonomous, LatentSDE, NeuralSDE

F64 = torch.float64


def _walk(batch: int, channels: int, t1: float, n: int, seed: int) -> tuple[torch.Tensor, ...]:
    """A Brownian random walk on ``n`` steps of ``[0, t1]``: (coeffs, grid) of its linear
    interpolation, so that a sub-batch gets exactly the same noise as in the full batch."""
    gen = torch.Generator().manual_seed(seed)
    grid = torch.linspace(0, t1, n + 1, dtype=F64)
    inc = torch.randn(batch, n, channels, generator=gen, dtype=F64) * math.sqrt(t1 / n)
    walk = torch.cat([torch.zeros(batch, 1, channels, dtype=F64), inc.cumsum(1)], dim=1)
    return tn.linear_interpolation_coeffs(walk, grid), grid


def _tiny_latent(**kw) -> LatentSDE:
    torch.manual_seed(0)
    return LatentSDE(2, 2, 3, 8, dt=0.25, **kw).to(F64)


# --------------------------------------------------------------------------------- LatentSDE


def test_latent_sde_shapes_and_the_elbo_is_its_terms():
    model = _tiny_latent()
    ts = torch.linspace(0, 1, 5, dtype=F64)
    xs = torch.randn(5, 3, 2, dtype=F64)
    out = model(ts, xs)
    assert out.log_px.shape == out.kl_z0.shape == out.kl_path.shape == (3,)
    assert out.zs.shape == (5, 3, 2)
    torch.testing.assert_close(out.elbo, out.log_px - out.kl_z0 - out.kl_path)
    assert model.sample(ts, 7).shape == (5, 7, 2)
    assert model.sample_latent(ts, 7).shape == (5, 7, 2)


def test_latent_sde_kl_is_nonnegative_and_zero_when_the_posterior_drift_is_the_prior():
    model = _tiny_latent()
    ts = torch.linspace(0, 1, 5, dtype=F64)
    xs = torch.randn(5, 4, 2, dtype=F64)
    out = model(ts, xs)
    assert bool((out.kl_path > 0).all()) and bool((out.kl_z0 >= 0).all())
    # Posterior drift = prior drift: copy the prior's layers, ignore the context.
    post, prior = model.posterior_drift, model.prior_drift
    with torch.no_grad():
        post[0].weight.zero_()
        post[0].weight[:, :2] = prior[0].weight
        post[0].bias.copy_(prior[0].bias)
        for i in (2, 4):
            post[i].load_state_dict(prior[i].state_dict())
    out = model(ts, xs)
    torch.testing.assert_close(out.kl_path, torch.zeros(4, dtype=F64), atol=1e-12, rtol=0)


def test_latent_sde_elbo_gradients_match_float64_finite_differences():
    model = _tiny_latent(learn_obs_std=True, obs_std=0.5)
    ts = torch.linspace(0, 1, 4, dtype=F64)
    bm = tn.BrownianInterval(0.0, 1.0, (2, 2), dtype=F64, seed=0)
    eps = torch.randn(2, 2, dtype=F64)
    xs = torch.randn(4, 2, 2, dtype=F64, requires_grad=True)
    w = model.posterior_drift[0].weight.detach().clone().requires_grad_(True)

    def elbo(xs, w):
        out = torch.func.functional_call(
            model, {"posterior_drift.0.weight": w}, (ts, xs), {"bm": bm, "eps": eps}
        )
        return out.elbo

    assert torch.autograd.gradcheck(elbo, (xs, w), fast_mode=True)


def test_latent_sde_elbo_of_a_sequence_does_not_depend_on_its_batch():
    model = _tiny_latent()
    ts = torch.linspace(0, 1, 5, dtype=F64)
    xs = torch.randn(5, 4, 2, dtype=F64)
    coeffs, grid = _walk(4, 2, 1.0, 4, seed=1)
    eps = torch.randn(4, 2, dtype=F64)
    full = model.elbo(ts, xs, bm=tn.LinearInterpolation(coeffs, grid), eps=eps)
    part = model.elbo(ts, xs[:, 1:3], bm=tn.LinearInterpolation(coeffs[1:3], grid), eps=eps[1:3])
    torch.testing.assert_close(part, full[1:3], rtol=1e-12, atol=1e-12)


def test_latent_sde_fits_curves_of_random_amplitude():
    """x(t) = a cos(3t) + noise, a ~ U(0.5, 1.5): 40 steps take the posterior's
    reconstruction error below 15% of the data's variance (the encoder reads a) and the test
    bound far below the untrained model's."""
    torch.manual_seed(0)
    ts = torch.linspace(0, 1, 10)

    def data(n):
        a = torch.rand(n) + 0.5
        return (a * torch.cos(3 * ts[:, None]))[..., None] + 0.05 * torch.randn(10, n, 1)

    train, test = data(64), data(64)
    model = LatentSDE(1, 2, 4, 16, dt=0.1, obs_std=0.1)
    with torch.no_grad():
        nll_untrained = -model.elbo(ts, test).mean()
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    for step in range(40):
        out = model(ts, train[:, torch.randint(0, 64, (32,))])
        loss = -(out.log_px - min(1.0, step / 20) * (out.kl_z0 + out.kl_path)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = model(ts, test)
        mse = ((model.projector(out.zs) - test) ** 2).mean()
    assert mse < 0.15 * test.var(), (float(mse), float(test.var()))
    assert -out.elbo.mean() < 0.25 * nll_untrained, (float(-out.elbo.mean()), float(nll_untrained))


def test_latent_sde_errors_name_the_argument():
    model = _tiny_latent()
    ts = torch.linspace(0, 1, 5, dtype=F64)
    with pytest.raises(ValueError, match=r"`xs` must have shape \(len\(ts\), batch, 2\)"):
        model(ts, torch.randn(5, 3, 4, dtype=F64))
    with pytest.raises(ValueError, match="`xs` has 6 times"):
        model(ts, torch.randn(6, 3, 2, dtype=F64))
    with pytest.raises(TypeError, match="`xs` must be a floating-point tensor"):
        model(ts, [[1.0]])
    with pytest.raises(ValueError, match="`ts` must be a 1-D strictly increasing"):
        model(ts.flip(0), torch.randn(5, 3, 2, dtype=F64))
    with pytest.raises(ValueError, match="`eps` must have shape"):
        model(ts, torch.randn(5, 3, 2, dtype=F64), eps=torch.randn(2, 2, dtype=F64))
    with pytest.raises(ValueError, match="`latent_size` must be an int >= 1"):
        LatentSDE(2, 0)
    with pytest.raises(ValueError, match="`dt` must be a positive number"):
        LatentSDE(2, dt=0.0)
    with pytest.raises(ValueError, match="`method` must be one of"):
        LatentSDE(2, method="rk45")
    with pytest.raises(TypeError, match="`adjoint` must be an adjoint"):
        LatentSDE(2, adjoint="backsolve")
    with pytest.raises(ValueError, match="`batch_size` must be an int >= 1"):
        model.sample(ts, 0)


# ------------------------------------------------------------------------------------ SDEGAN


def _tiny_gan(**kw) -> SDEGAN:
    torch.manual_seed(0)
    sizes = {"initial_noise_size": 2, "noise_size": 2, "hidden_size": 3, "mlp_size": 4}
    return SDEGAN(1, **{**sizes, **kw}).to(F64)


def test_sde_gan_shapes():
    gan = _tiny_gan()
    ts = torch.linspace(0, 4, 5, dtype=F64)
    fake = gan.sample(ts, 6)
    assert fake.shape == (5, 6, 1)
    assert gan.score(ts, fake).shape == (6,)
    assert gan.loss(ts, torch.randn(5, 6, 1, dtype=F64)).shape == (6,)


def test_sde_gan_loss_trains_the_critic_and_reverses_the_generators_gradient():
    gan = _tiny_gan()
    ts = torch.linspace(0, 4, 5, dtype=F64)
    real = torch.randn(5, 3, 1, dtype=F64)
    noise = torch.randn(3, 2, dtype=F64)
    bm = tn.BrownianInterval(0.0, 4.0, (3, 2), dtype=F64, seed=0)
    g_params, d_params = gan.parameter_groups()
    params = g_params + d_params
    grads = torch.autograd.grad(
        gan.loss(ts, real, initial_noise=noise, bm=bm).sum(), params, allow_unused=True
    )
    fake_score = gan.score(ts, gan.sample(ts, 3, initial_noise=noise, bm=bm)).sum()
    critic = fake_score - gan.score(ts, real).sum()
    want_g = torch.autograd.grad(fake_score, g_params, retain_graph=True)
    want_d = torch.autograd.grad(critic, d_params)
    for got, want in zip(grads, [-g for g in want_g] + list(want_d)):
        torch.testing.assert_close(got, want)


def test_sde_gan_reversible_adjoint_gradients_equal_direct_ones():
    ts = torch.linspace(0, 4, 5, dtype=F64)
    real = torch.randn(5, 3, 1, dtype=F64)
    noise = torch.randn(3, 2, dtype=F64)
    grads = []
    for adjoint in (tn.ReversibleAdjoint(), tn.DirectAdjoint()):
        gan = _tiny_gan(adjoint=adjoint)
        bm = tn.BrownianInterval(0.0, 4.0, (3, 2), dtype=F64, seed=0)
        loss = gan.loss(ts, real, initial_noise=noise, bm=bm).sum()
        grads.append(torch.autograd.grad(loss, list(gan.parameters())))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_sde_gan_gradients_match_float64_finite_differences():
    gan = _tiny_gan()
    ts = torch.linspace(0, 3, 4, dtype=F64)
    ys = torch.randn(4, 2, 1, dtype=F64, requires_grad=True)
    noise = torch.randn(2, 2, dtype=F64, requires_grad=True)
    bm = tn.BrownianInterval(0.0, 3.0, (2, 2), dtype=F64, seed=0)
    assert torch.autograd.gradcheck(lambda y: gan.score(ts, y), (ys,), fast_mode=True)
    assert torch.autograd.gradcheck(
        lambda v: gan.sample(ts, 2, initial_noise=v, bm=bm), (noise,), fast_mode=True
    )


def test_sde_gan_score_of_a_path_does_not_depend_on_its_batch():
    gan = _tiny_gan()
    ts = torch.linspace(0, 4, 5, dtype=F64)
    ys = torch.randn(5, 6, 1, dtype=F64)
    torch.testing.assert_close(gan.score(ts, ys[:, 2:4]), gan.score(ts, ys)[2:4])


def test_sde_gan_weight_clipping_and_gradient_penalty():
    gan = _tiny_gan()
    with torch.no_grad():
        for p in gan.discriminator.parameters():
            p.mul_(10)
    gan.constrain_()
    for m in gan.discriminator.modules():
        if isinstance(m, nn.Linear):
            assert float(m.weight.detach().abs().max()) <= 1 / m.out_features + 1e-15
    gp = _tiny_gan(lipschitz="gp", gp_weight=10.0)
    ts = torch.linspace(0, 4, 5, dtype=F64)
    real = torch.randn(5, 3, 1, dtype=F64)
    pen = gp.gradient_penalty(ts, real, gp.sample(ts, 3))
    assert pen.shape == (3,) and bool((pen >= 0).all())
    before = [p.detach().clone() for p in gp.discriminator.parameters()]
    gp.constrain_()  # no-op with the penalty
    for a, b in zip(before, gp.discriminator.parameters()):
        torch.testing.assert_close(a, b.detach())
    gp.loss(ts, real).mean().backward()  # the double backward of the penalty runs
    assert all(p.grad is not None for p in gp.discriminator.parameters())


@pytest.mark.slow  # ~4 s alone (~11 s on the loaded 2-core machine): 150 GAN steps
def test_sde_gan_learns_a_shifted_marginal():
    """Target: constant paths at N(2, 0.5^2). The generator starts near 0; 150 steps move the
    final marginal most of the way."""
    torch.manual_seed(0)
    ts = torch.linspace(0, 5, 6)
    gan = SDEGAN(1, hidden_size=8, mlp_size=8, adjoint=tn.DirectAdjoint())
    g, d = gan.parameter_groups()
    opt = torch.optim.Adam(
        [{"params": g, "lr": 5e-3}, {"params": d, "lr": 1e-2}], betas=(0.5, 0.99)
    )
    with torch.no_grad():
        start = gan.sample(ts, 512)[-1]
    for _ in range(150):
        real = (2 + 0.5 * torch.randn(1, 64, 1)).expand(6, 64, 1)
        loss = gan.loss(ts, real).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        gan.constrain_()
    with torch.no_grad():
        end = gan.sample(ts, 512)[-1]
    assert abs(float(end.mean()) - 2) < 0.5 * abs(float(start.mean()) - 2), (
        start.mean(),
        end.mean(),
    )


def test_sde_gan_errors_name_the_argument():
    with pytest.raises(ValueError, match="`lipschitz` must be 'clip'"):
        SDEGAN(1, lipschitz="spectral")
    with pytest.raises(ValueError, match="only DirectAdjoint supports"):
        SDEGAN(1, lipschitz="gp", adjoint=tn.ReversibleAdjoint())
    with pytest.raises(ValueError, match="ReversibleAdjoint needs a reversible solver"):
        SDEGAN(1, solver=tn.Heun())
    with pytest.raises(ValueError, match="`hidden_size` must be an int >= 1"):
        SDEGAN(1, hidden_size=0)
    with pytest.raises(ValueError, match="`gp_weight` must be a number >= 0"):
        SDEGAN(1, gp_weight=-1.0)
    gan = _tiny_gan()
    ts = torch.linspace(0, 4, 5, dtype=F64)
    with pytest.raises(ValueError, match=r"`ys` must have shape \(5, batch, 1\)"):
        gan.score(ts, torch.randn(3, 5, 1, dtype=F64))
    with pytest.raises(ValueError, match="`initial_noise` must have shape"):
        gan.sample(ts, 2, initial_noise=torch.randn(3, 2, dtype=F64))


# --------------------------------------------------------------------------------- NeuralSDE


def _field() -> Autonomous:
    torch.manual_seed(0)
    return Autonomous(nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)))


def test_neural_sde_is_noisy_in_training_and_the_deterministic_ode_in_eval():
    block = NeuralSDE(_field(), noise="additive", sigma=0.3)
    x = torch.randn(6, 2)
    assert not torch.allclose(block(x), block(x))
    block.eval()
    y = block(x)
    torch.testing.assert_close(block(x), y)
    torch.testing.assert_close(block(x[2:4]), y[2:4])  # independent of the batch
    torch.testing.assert_close(y, block.ode(x))
    block.train()
    block.sigma = 0.0
    torch.testing.assert_close(block(x), y)  # no noise: the ODE


def test_neural_sde_average_mode_is_the_mean_of_the_noisy_solves():
    """Linear drift and additive noise: Euler-Maruyama's mean is exactly Euler's solution, so
    the average of many solves matches the deterministic block within 4 standard errors."""
    lin = nn.Linear(2, 2)
    block = NeuralSDE(Autonomous(lin), noise="additive", sigma=0.5, dt0=0.1)
    block.eval_mode, block.num_eval_samples = "average", 4000
    x = torch.randn(3, 2)
    with torch.no_grad():
        avg = block.eval()(x)
        det = block.ode(x)
        block.train()
        samples = torch.stack([block(x) for _ in range(50)])
    se = samples.std(0) / math.sqrt(4000)
    assert bool(((avg - det).abs() < 4 * se).all()), (avg - det, se)


@pytest.mark.parametrize("noise", ["multiplicative", "dropout"])
def test_neural_sde_noise_models_have_their_variance(noise):
    """Constant drift c and sigma: multiplicative noise G = s h (f = 0) has
    Var h(1) = h0^2 ((1 + s^2 dt)^N - 1) under Euler-Maruyama; dropout noise
    G = sqrt(p / (1 - p)) f with f = c has Var = p / (1 - p) c^2 t1."""

    class Const(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.c = c

        def forward(self, t, h):
            return torch.full_like(h, self.c)

    n, dt = 20000, 0.1
    if noise == "multiplicative":
        block = NeuralSDE(Const(0.0), noise=noise, sigma=0.4, dt0=dt)
        x = torch.full((n, 1), 1.5, dtype=F64)
        want = 1.5**2 * ((1 + 0.4**2 * dt) ** 10 - 1)
    else:
        block = NeuralSDE(Const(2.0), noise=noise, sigma=0.2, dt0=dt)
        x = torch.zeros(n, 1, dtype=F64)
        want = 0.2 / 0.8 * 4.0
    with torch.no_grad():
        var = float(block(x).var())
    assert abs(var - want) < 4 * want * math.sqrt(2 / n) * 1.5, (var, want)


def test_neural_sde_classifier_fits_two_blobs():
    torch.manual_seed(0)
    x = torch.cat([torch.randn(64, 2) + 2, torch.randn(64, 2) - 2])
    y = torch.cat([torch.zeros(64), torch.ones(64)]).long()
    block = NeuralSDE(_field(), noise="additive", sigma=0.5, dt0=0.25)
    head = nn.Linear(2, 2)
    opt = torch.optim.Adam([*block.parameters(), *head.parameters()], lr=3e-2)
    for _ in range(40):
        loss = nn.functional.cross_entropy(head(block(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    block.eval()
    with torch.no_grad():
        acc = (head(block(x)).argmax(1) == y).float().mean()
    assert acc > 0.95, acc


def test_neural_sde_errors_name_the_argument():
    with pytest.raises(ValueError, match="`noise` must be one of"):
        NeuralSDE(_field(), noise="levy")
    with pytest.raises(ValueError, match="dropout rate p and must lie in"):
        NeuralSDE(_field(), noise="dropout", sigma=1.0)
    with pytest.raises(ValueError, match="`sigma` must be a number >= 0"):
        NeuralSDE(_field(), sigma=-0.1)
    with pytest.raises(ValueError, match="`eval_mode` must be one of"):
        NeuralSDE(_field(), eval_mode="median")
    with pytest.raises(ValueError, match="need t1 > t0"):
        NeuralSDE(_field(), t0=1.0, t1=1.0)
    with pytest.raises(TypeError, match="is an nn.Sequential"):
        NeuralSDE(nn.Sequential(nn.Linear(2, 2)))
