"""GP-ODE: the whitened sparse-GP field is the GP posterior mean, its KL, sampled fields and
gradients through torchnde.solve."""

from __future__ import annotations

import pytest
import torch

import torchnde
from torchnde.discovery import GPODEField

D = torch.float64


def _field(m: int = 9) -> GPODEField:
    side = torch.linspace(-2, 2, int(m**0.5), dtype=D)
    gp = GPODEField(torch.cartesian_prod(side, side), lengthscale=1.3, variance=0.7)
    with torch.no_grad():
        gp.mean.normal_(generator=torch.Generator().manual_seed(0))
        gp.log_lengthscale.copy_(torch.tensor([0.2, -0.1], dtype=D))
    return gp


def test_the_field_is_the_gp_posterior_mean_of_the_unwhitened_values():
    gp = _field()
    z = gp.inducing
    kzz = gp.kernel(z, z) + gp.jitter * torch.eye(len(z), dtype=D)
    u = torch.linalg.cholesky(kzz) @ gp.mean  # the values at Z
    x = torch.randn(5, 2, dtype=D)
    want = gp.kernel(x, z) @ torch.linalg.solve(kzz, u)
    torch.testing.assert_close(gp(0.0, x), want)
    # it interpolates its inducing values
    torch.testing.assert_close(gp(0.0, z), u, atol=1e-4, rtol=0)


def test_the_kl_is_that_of_the_gaussians():
    gp = _field()
    with torch.no_grad():
        gp.log_std.uniform_(-1, 0.5, generator=torch.Generator().manual_seed(1))
    q = torch.distributions.Normal(gp.mean, gp.log_std.exp())
    p = torch.distributions.Normal(torch.zeros_like(gp.mean), torch.ones_like(gp.mean))
    torch.testing.assert_close(gp.kl(), torch.distributions.kl_divergence(q, p).sum())
    with torch.no_grad():
        gp.mean.zero_()
        gp.log_std.zero_()
    assert float(gp.kl().detach()) == 0.0


def test_sampled_fields_are_one_per_trajectory():
    gp = _field()
    gp.sample(3, torch.Generator().manual_seed(2))
    x = torch.randn(1, 2, dtype=D).expand(3, 2)
    out = gp(0.0, x)
    assert out.shape == (3, 2) and not torch.allclose(out[0], out[1])
    with pytest.raises(ValueError, match="sample\\(\\) drew 3 fields but the state has batch 2"):
        gp(0.0, x[:2])
    gp.use_mean()
    torch.testing.assert_close(gp(0.0, x[:1]), _field()(0.0, x[:1]))


def test_gradient_matching_recovers_a_field_at_the_data():
    gp = _field(25)
    x = torch.rand(60, 2, dtype=D, generator=torch.Generator().manual_seed(3)) * 3 - 1.5
    x_dot = torch.stack([x[:, 1], -x[:, 0] - 0.3 * x[:, 1]], -1)
    gp.init_from_derivatives(x, x_dot, noise_variance=1e-4)
    err = float((gp(0.0, x) - x_dot).abs().max())
    assert err < 0.05, err


def test_gradients_through_the_solver_match_finite_differences():
    gp = _field()
    y0 = torch.tensor([[0.5, -0.3]], dtype=D)

    def f(mean, log_ell):
        params = {"mean": mean, "log_lengthscale": log_ell}

        def field(t, y, args):
            return torch.func.functional_call(gp, params, (t, y))

        sol = torchnde.solve(
            torchnde.ODETerm(field), torchnde.Dopri5(), 0.0, 0.5, y0,
            saveat=torchnde.SaveAt(t1=True),
            controller=torchnde.PIDController(rtol=1e-10, atol=1e-12),
        )  # fmt: skip
        return sol.ys

    mean = gp.mean.detach().clone().requires_grad_()
    log_ell = gp.log_lengthscale.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(f, (mean, log_ell), fast_mode=True, atol=1e-6)


def test_gp_ode_bad_inputs():
    with pytest.raises(ValueError, match=r"`inducing` must be a tensor of shape \(M, D\)"):
        GPODEField(torch.zeros(4))
    with pytest.raises(ValueError, match="`lengthscale` must be a number > 0"):
        GPODEField(torch.zeros(4, 2), lengthscale=0.0)
    with pytest.raises(ValueError, match=r"must both have shape \(N, 2\)"):
        _field().init_from_derivatives(torch.zeros(3, 2, dtype=D), torch.zeros(3, 3, dtype=D))
