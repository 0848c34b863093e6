"""torchnde.diffusion against closed forms: Gaussian data have an exact score."""

from __future__ import annotations

import math

import pytest
import torch

import torchnde as tn
from torchnde import diffusion as dn

MU = torch.tensor([1.0, -0.5], dtype=torch.float64)
CHOL = torch.tensor([[1.0, 0.0], [0.6, 0.5]], dtype=torch.float64)
COV = CHOL @ CHOL.T

SDES = {
    "vp": lambda: dn.VPSDE(),
    "ve": lambda: dn.VESDE(sigma_min=0.01, sigma_max=20.0),
    "subvp": lambda: dn.SubVPSDE(),
}


def gaussian_score(sde, mu=MU, cov=COV):
    """The exact score of p_t = N(alpha mu, alpha^2 cov + sigma^2 I)."""

    def score(x, t):
        a, s = sde.marginal(t)
        c = a[:, None, None] ** 2 * cov + s[:, None, None] ** 2 * torch.eye(2, dtype=x.dtype)
        return -torch.linalg.solve(c, (x - a[:, None] * mu).unsqueeze(-1)).squeeze(-1)

    return score


def gaussian_data(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return MU + torch.randn(n, 2, generator=g, dtype=torch.float64) @ CHOL.T


@pytest.mark.parametrize("name", list(SDES))
def test_the_diffusion_coefficient_solves_the_variance_ode(name):
    """g^2 = d sigma^2/dt - 2 f sigma^2 and f = d log alpha/dt, by autograd."""
    sde = SDES[name]()
    t = torch.linspace(0.05, 1.0, 7, dtype=torch.float64, requires_grad=True)
    var = sde.std(t) ** 2
    (dvar,) = torch.autograd.grad(var.sum(), t)
    la = sde.log_mean_scale(t)
    (dlog_a,) = torch.autograd.grad(la.sum(), t) if la.requires_grad else (torch.zeros_like(t),)
    f = sde.drift_coefficient(t)
    torch.testing.assert_close(sde.diffusion_squared(t), dvar - 2 * f * var)
    torch.testing.assert_close(f, dlog_a)


@pytest.mark.parametrize("name", list(SDES))
def test_t_from_log_snr_inverts_log_snr(name):
    sde = SDES[name]()
    t = torch.linspace(sde.eps, 1.0, 11, dtype=torch.float64)
    torch.testing.assert_close(sde.t_from_log_snr(sde.log_snr(t)), t, rtol=1e-9, atol=1e-12)
    lam = sde.log_mean_scale(t) - sde.std(t).log()
    torch.testing.assert_close(sde.log_snr(t), lam)


def test_the_forward_terms_reproduce_the_marginal():
    """Euler-Maruyama on sde.terms from a point mass: mean alpha x0, variance sigma^2."""
    sde = dn.VPSDE(beta_max=5.0)
    n, t1 = 4000, 0.6
    x0 = torch.full((n, 2), 2.0, dtype=torch.float64)
    bm = tn.BrownianInterval(0.0, t1, (n, 2), dtype=torch.float64, seed=3)
    sol = tn.solve(sde.terms(bm), tn.EulerMaruyama(), 0.0, t1, x0, dt0=t1 / 200)
    x = sol.ys[-1]
    a, s = sde.marginal(t1)
    se = float(s) / math.sqrt(n)
    assert float((x.mean(0) - 2 * a).abs().max()) < 4 * se + 5e-3
    assert float((x.var(0) / s**2 - 1).abs().max()) < 4 * math.sqrt(2 / n) + 1e-2


@pytest.mark.parametrize(
    ("sde", "mu"),
    [
        (dn.VPSDE(beta_max=40.0), MU),
        # VE's prior N(0, sigma_max^2) misses p_T by O(|mu| / sigma_max) nats: centred data.
        (dn.VESDE(sigma_max=300.0), torch.zeros(2, dtype=torch.float64)),
        (dn.SubVPSDE(beta_max=40.0), MU),
    ],
)
def test_pf_ode_log_likelihood_is_the_gaussian_log_density(sde, mu):
    """With the exact score the probability-flow ODE is an exact flow from p_eps to p_T; the
    schedules are chosen so that p_T is the prior to < 1e-3 nats."""
    x = gaussian_data(64) - MU + mu
    a, s = sde.marginal(torch.tensor(sde.eps, dtype=torch.float64))
    true = torch.distributions.MultivariateNormal(
        a * mu, a**2 * COV + s**2 * torch.eye(2, dtype=torch.float64)
    ).log_prob(x)
    stats: dict = {}
    score = gaussian_score(sde, mu=mu)
    lp = dn.log_prob(sde, score, x, rtol=1e-8, atol=1e-8, stats=stats).detach()
    assert stats["nfe"] > 0
    torch.testing.assert_close(lp, true, atol=2e-3, rtol=0)


def test_hutchinson_log_prob_is_unbiased():
    sde = dn.VPSDE(beta_max=40.0)
    x = gaussian_data(8).repeat(64, 1)
    exact = dn.log_prob(sde, gaussian_score(sde), x[:8], rtol=1e-6, atol=1e-6).detach()
    torch.manual_seed(0)
    est = dn.log_prob(sde, gaussian_score(sde), x, trace="hutchinson", rtol=1e-6, atol=1e-6)
    est = est.detach().reshape(64, 8)
    se = est.std(0) / 8
    assert bool(((est.mean(0) - exact).abs() < 4 * se + 1e-3).all())


# (sampler, steps): the reverse-SDE samplers need more steps for their O(h) weak bias.
SAMPLER_STEPS = [
    ("pf_ode", None),
    ("euler_maruyama", 200),
    ("srk", 100),
    ("reversible_heun", 200),
    ("pc", 200),
    ("ddim", 50),
    ("heun", 20),
    ("dpm_solver", 20),
    ("dpm_solver++", 20),
]


def _check_moments(sde, sampler, steps, n=4000, **kw):
    g = torch.Generator().manual_seed(1)
    stats: dict = {}
    x = dn.sample(
        sde, gaussian_score(sde), (n, 2), sampler=sampler, steps=steps, generator=g,
        dtype=torch.float64, stats=stats, **kw,
    )  # fmt: skip
    # 5 standard errors of the sample mean / covariance entries, plus 0.02 of bias.
    se_mean = torch.sqrt(torch.diagonal(COV) / n)
    assert bool(((x.mean(0) - MU).abs() < 5 * se_mean + 0.02).all()), x.mean(0)
    se_cov = torch.sqrt((COV**2 + torch.outer(torch.diagonal(COV), torch.diagonal(COV))) / n)
    assert bool(((torch.cov(x.T) - COV).abs() < 5 * se_cov + 0.02).all()), torch.cov(x.T)
    assert stats["nfe"] >= (steps or 1)


@pytest.mark.parametrize(("sampler", "steps"), SAMPLER_STEPS)
def test_every_sampler_reproduces_the_mean_and_covariance_vp(sampler, steps):
    _check_moments(dn.VPSDE(), sampler, steps)


# slow: 18 sampling runs of 4000 samples, the SDE ones with 100-200 steps (~15 s).
@pytest.mark.slow
@pytest.mark.parametrize(("sampler", "steps"), SAMPLER_STEPS)
@pytest.mark.parametrize("name", ["ve", "subvp"])
def test_every_sampler_reproduces_the_mean_and_covariance(name, sampler, steps):
    _check_moments(SDES[name](), sampler, steps)


def test_ddim_with_eta_one_reproduces_the_moments():
    _check_moments(dn.VPSDE(), "ddim", 100, eta=1.0)


def _order(sde, sampler, steps_list, schedule=None):
    x_T = sde.prior_sample((64, 2), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    score = gaussian_score(sde)
    ref = dn.sample(sde, score, x_T.shape, sampler="pf_ode", x_T=x_T, rtol=1e-10, atol=1e-10)
    errs = []
    for n in steps_list:
        x = dn.sample(sde, score, x_T.shape, sampler=sampler, steps=n, x_T=x_T, schedule=schedule)
        errs.append(float((x - ref).abs().max()))
    slopes = [
        math.log(errs[i] / errs[i + 1]) / math.log(steps_list[i + 1] / steps_list[i])
        for i in range(len(errs) - 1)
    ]
    return errs, slopes


def test_ddim_eta_zero_converges_to_the_pf_ode_at_first_order():
    errs, slopes = _order(dn.VPSDE(), "ddim", [20, 40, 80, 160])
    assert all(0.85 < s < 1.3 for s in slopes[1:]), (errs, slopes)


@pytest.mark.parametrize("sampler", ["heun", "dpm_solver++", "dpm_solver"])
def test_second_order_samplers_converge_at_second_order(sampler):
    # DPM-Solver's first step is first order, which costs a constant, not the order.
    errs, slopes = _order(dn.VPSDE(), sampler, [20, 40, 80, 160])
    assert all(1.7 < s < 2.5 for s in slopes[1:]), (errs, slopes)


def test_ddim_eta_zero_is_euler_on_the_karras_ode():
    """DDIM is Euler's method for d(x/alpha)/d(sigma/alpha) = eps_hat, on torchnde's engine."""
    sde = dn.SubVPSDE()
    score = gaussian_score(sde)
    x_T = sde.prior_sample((16, 2), dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    ts = dn.time_grid(sde, 12)
    ddim = dn.sample(sde, score, x_T.shape, sampler="ddim", steps=12, x_T=x_T)
    sig = sde.sigma_tilde(ts)
    sol = tn.solve(
        tn.ODETerm(dn.karras_ode(sde, score)), tn.Euler(), sig[0], sig[-1],
        x_T / sde.marginal(ts[0])[0], dt0=sig[-1] - sig[0],
        controller=tn.ConstantStepSize(step_ts=sig[1:-1].tolist()),
    )  # fmt: skip
    torch.testing.assert_close(ddim, sde.marginal(ts[-1])[0] * sol.ys[-1])


def test_dsm_loss_is_smallest_at_the_true_score_and_importance_sampling_keeps_its_mean():
    sde = dn.VPSDE()
    x = gaussian_data(20000, seed=4)
    score = gaussian_score(sde)

    def worse(x, t):
        return 1.1 * score(x, t)

    g = torch.Generator().manual_seed(0)
    best = dn.dsm_loss(sde, score, x, generator=g).mean()
    g = torch.Generator().manual_seed(0)
    assert float(dn.dsm_loss(sde, worse, x, generator=g).mean()) > float(best)
    g = torch.Generator().manual_seed(1)
    plain = dn.dsm_loss(sde, worse, x, weighting="likelihood", generator=g)
    g = torch.Generator().manual_seed(2)
    imp = dn.dsm_loss(sde, worse, x, weighting="likelihood", importance_sampling=True, generator=g)
    se = math.sqrt(plain.var() / len(x) + imp.var() / len(x))
    assert abs(float(plain.mean() - imp.mean())) < 4 * se
    assert float(imp.std()) < float(plain.std())  # the point of importance sampling


def test_dsm_loss_gradient_matches_finite_differences():
    sde = dn.VESDE(sigma_max=5.0)
    x = gaussian_data(6)
    t = torch.linspace(0.1, 0.9, 6, dtype=torch.float64)
    z = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def f(w):
        return dn.dsm_loss(
            sde, lambda x, t: -w * x / (1 + sde.std(t)[:, None] ** 2), x,
            weighting="likelihood", t=t, noise=z,
        )  # fmt: skip

    w = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (w,))


def test_log_prob_gradient_matches_finite_differences():
    sde = dn.VPSDE(beta_max=10.0)
    x = gaussian_data(2)

    def f(w):
        def score(x, t):
            return -w * x / (1 + 0 * t[:, None])

        return dn.log_prob(sde, score, x, solver=tn.RK4(), steps=20)

    w = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (w,), fast_mode=True)


def test_bits_per_dim_is_the_dequantised_log_prob():
    sde = dn.VPSDE(beta_max=40.0)
    score = gaussian_score(sde, mu=torch.zeros(2, dtype=torch.float64))
    k = torch.tensor([[3, 4], [0, 7], [5, 5]], dtype=torch.float64)
    bpd = dn.bits_per_dim(
        sde,
        score,
        k,
        num_levels=8,
        scale=2.0,
        shift=-1.0,
        generator=torch.Generator().manual_seed(0),
    ).detach()
    u = torch.rand(k.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = 2.0 * (k + u) / 8 - 1.0
    lp = dn.log_prob(sde, score, x).detach()
    torch.testing.assert_close(bpd, -(lp + 2 * math.log(2.0) - 2 * math.log(8)) / (2 * math.log(2)))


def test_noise_predictor_score_and_the_predictions_agree():
    sde = dn.VPSDE()
    net = dn.ScoreMLP(2, sde, hidden=8, depth=1).double()
    wrapped = dn.NoisePredictorScore(net.noise, sde)
    x = gaussian_data(5)
    t = torch.full((5,), 0.3, dtype=torch.float64)
    torch.testing.assert_close(wrapped(x, t), net(x, t))
    torch.testing.assert_close(dn.noise_prediction(sde, net, x, t), net.noise(x, t))
    a, s = sde.marginal(t)
    x0 = dn.data_prediction(sde, net, x, t)
    torch.testing.assert_close(a[:, None] * x0 + s[:, None] * net.noise(x, t), x)


@pytest.mark.parametrize("schedule", dn.SCHEDULES)
def test_time_grids_decrease_from_T_to_eps(schedule):
    sde = dn.VESDE()
    ts = dn.time_grid(sde, 10, schedule)
    assert ts.shape == (11,) and float(ts[0]) == 1.0 and float(ts[-1]) == sde.eps
    assert bool((ts.diff() < 0).all())


def test_errors_name_the_argument():
    sde = dn.VPSDE()
    score = gaussian_score(sde)
    with pytest.raises(ValueError, match="`sampler` must be one of"):
        dn.sample(sde, score, (4, 2), sampler="nope")
    with pytest.raises(ValueError, match="needs `steps=`"):
        dn.sample(sde, score, (4, 2), sampler="ddim")
    with pytest.raises(ValueError, match="`eta` applies to sampler='ddim' only"):
        dn.sample(sde, score, (4, 2), sampler="heun", steps=4, eta=0.5)
    with pytest.raises(ValueError, match="`schedule` must be one of"):
        dn.sample(sde, score, (4, 2), sampler="ddim", steps=4, schedule="cosine")
    with pytest.raises(ValueError, match="fixed-step solver"):
        dn.sample(sde, score, (4, 2), sampler="pf_ode", solver=tn.Euler())
    with pytest.raises(ValueError, match="`x_T` must have shape"):
        dn.sample(sde, score, (4, 2), sampler="ddim", steps=3, x_T=torch.zeros(3, 2))
    with pytest.raises(TypeError, match="`sde` must be a forward SDE"):
        dn.sample("vp", score, (4, 2))
    with pytest.raises(TypeError, match="`score` must be callable"):
        dn.log_prob(sde, 3, torch.zeros(2, 2))
    with pytest.raises(ValueError, match="`trace` must be"):
        dn.log_prob(sde, score, torch.zeros(2, 2), trace="hutch")
    with pytest.raises(ValueError, match="`weighting` must be one of"):
        dn.dsm_loss(sde, score, torch.zeros(2, 2), weighting="snr")
    with pytest.raises(ValueError, match="applies to weighting='likelihood' only"):
        dn.dsm_loss(sde, score, torch.zeros(2, 2), importance_sampling=True)
    with pytest.raises(ValueError, match="need sigma_max > sigma_min"):
        dn.VESDE(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="need beta_max >= beta_min"):
        dn.VPSDE(beta_min=2.0, beta_max=1.0)
    with pytest.raises(ValueError, match="must hold integers in"):
        dn.bits_per_dim(sde, score, torch.tensor([[9, 0]]), num_levels=8)
    with pytest.raises(ValueError, match=r"`score\(x, t\)` must return"):
        dn.sample(sde, lambda x, t: x[:, :1], (4, 2), sampler="ddim", steps=2)
