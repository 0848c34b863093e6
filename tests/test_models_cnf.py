"""models.CNF: change of variables, trace estimators, sampling, adjoints, RNODE."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import torchnde as tn
from torchnde import models as M

F64 = torch.float64


class Linear(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.a = nn.Parameter(a.clone())

    def forward(self, t, y):
        return y @ self.a.T


def _net(dtype=F64, hidden=16, scale=1.0, seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, hidden), nn.Tanh(), nn.Linear(hidden, 2)).to(dtype)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(scale)
    return M.DepthCat(net)


def _std_normal(z):
    return -0.5 * z.pow(2).sum(-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


def test_log_prob_of_a_linear_flow_matches_the_closed_form():
    # z(1) = e^A x, so log p(x) = log N(e^A x) + tr A.
    a = torch.tensor([[0.3, -1.0], [0.4, -0.6]], dtype=F64)
    cnf = M.CNF(Linear(a), 2, rtol=1e-10, atol=1e-12)
    x = torch.randn(6, 2, dtype=F64)
    expect = _std_normal(x @ torch.linalg.matrix_exp(a).T) + torch.trace(a)
    torch.testing.assert_close(cnf.log_prob(x), expect)


def test_density_integrates_to_one():
    cnf = M.CNF(_net(scale=1.5), 2, rtol=1e-7, atol=1e-9)
    h = 0.1
    g = torch.arange(-7, 7 + h / 2, h, dtype=F64)
    grid = torch.cartesian_prod(g, g)
    with torch.no_grad():
        mass = cnf.log_prob(grid).exp().sum() * h * h
    torch.testing.assert_close(mass, torch.tensor(1.0, dtype=F64), rtol=2e-3, atol=0)


@pytest.mark.parametrize("noise", ["gaussian", "rademacher"])
def test_hutchinson_trace_agrees_with_the_exact_trace_in_expectation(noise):
    f = _net(scale=1.5)
    x = torch.tensor([[0.5, -1.0]], dtype=F64).expand(4000, 2)
    with torch.no_grad():
        exact = M.CNF(f, 2, rtol=1e-8, atol=1e-10).log_prob(x[:1])
        torch.manual_seed(0)
        hutch = M.CNF(f, 2, trace="hutchinson", noise=noise, rtol=1e-8, atol=1e-10).log_prob(x)
    se = hutch.std() / math.sqrt(x.shape[0])
    assert float(hutch.std()) > 0  # the estimate does vary per draw
    assert abs(float(hutch.mean() - exact[0])) < 5 * float(se)


def test_sample_inverts_the_flow_and_keeps_dtype():
    for dtype in (torch.float32, F64):
        cnf = M.CNF(_net(dtype=dtype, scale=1.5), 2, rtol=1e-7, atol=1e-9)
        x = cnf.sample(16, generator=torch.Generator().manual_seed(0))
        assert x.shape == (16, 2) and x.dtype == dtype
        z_expect = torch.randn(16, 2, dtype=dtype, generator=torch.Generator().manual_seed(0))
        z, _, _ = cnf.flow(x)
        tol = 1e-4 if dtype == torch.float32 else 1e-6
        torch.testing.assert_close(z, z_expect, rtol=tol, atol=tol)


def _grads(adjoint, solver=None, dt0=None, trace="hutchinson"):
    f = _net(seed=1)
    kw = dict(rtol=1e-9, atol=1e-10) if dt0 is None else dict(dt0=dt0)
    cnf = M.CNF(
        f, 2, trace=trace, adjoint=adjoint, solver=solver,
        regularisers=[M.KineticEnergy(), M.JacobianFrobenius()], **kw,
    )  # fmt: skip
    x = torch.tensor([[0.1, 0.2], [-1.0, 0.5], [0.7, -0.3]], dtype=F64)
    torch.manual_seed(0)
    loss = -cnf.log_prob(x).mean() + 0.1 * sum(cnf.regularisation.values())
    return torch.autograd.grad(loss, list(f.parameters()))


@pytest.mark.parametrize(
    "adjoint",
    [tn.CheckpointAdjoint(), tn.BacksolveAdjoint(), tn.InterpolatedAdjoint()],
    ids=["checkpoint", "backsolve", "interpolated"],
)
def test_every_adjoint_gives_the_direct_gradient(adjoint):
    for g, d in zip(_grads(adjoint), _grads(tn.DirectAdjoint())):
        torch.testing.assert_close(g, d, rtol=1e-5, atol=1e-7)


def test_reversible_adjoint_gives_the_direct_gradient():
    rev = _grads(tn.ReversibleAdjoint(), tn.ReversibleHeun(), dt0=0.1, trace="exact")
    direct = _grads(tn.DirectAdjoint(), tn.ReversibleHeun(), dt0=0.1, trace="exact")
    for g, d in zip(rev, direct):
        torch.testing.assert_close(g, d, rtol=1e-9, atol=1e-11)


def test_rnode_regularisers_match_their_closed_forms():
    a = torch.tensor([[0.3, -1.0], [0.4, -0.6]], dtype=F64)
    cnf = M.CNF(
        Linear(a), 2, rtol=1e-10, atol=1e-12,
        regularisers=[M.KineticEnergy(), M.JacobianFrobenius("exact")],
    )  # fmt: skip
    x = torch.tensor([[1.0, 0.0], [0.5, -2.0]], dtype=F64)
    cnf.log_prob(x)
    n = 2001
    t = torch.linspace(0, 1, n, dtype=F64)
    w = torch.ones(n, dtype=F64)
    w[1:-1:2], w[2:-1:2] = 4, 2
    y = torch.einsum("nij,bj->nbi", torch.linalg.matrix_exp(t[:, None, None] * a), x)
    kinetic = ((y @ a.T).pow(2).sum(-1) * w[:, None]).sum(0).mean() / (3 * (n - 1))
    torch.testing.assert_close(cnf.regularisation["kinetic_energy"], kinetic, rtol=1e-8, atol=0)
    torch.testing.assert_close(cnf.regularisation["jacobian_frobenius"], a.pow(2).sum())


def _moons(n, g):
    t = torch.rand(n, generator=g) * math.pi
    upper = torch.rand(n, generator=g) < 0.5
    x = torch.where(upper, torch.cos(t), 1 - torch.cos(t))
    y = torch.where(upper, torch.sin(t), 0.5 - torch.sin(t))
    return torch.stack([x, y], 1) + 0.08 * torch.randn(n, 2, generator=g)


def test_short_training_beats_a_gaussian_fit_on_two_moons():
    g = torch.Generator().manual_seed(0)
    train, test = _moons(1024, g), _moons(1024, g)
    gauss = torch.distributions.MultivariateNormal(train.mean(0), torch.cov(train.T))
    baseline = gauss.log_prob(test).mean().item()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 2))
    cnf = M.CNF(M.DepthCat(net), 2, solver=tn.RK4(), dt0=0.25)
    opt = torch.optim.Adam(cnf.parameters(), lr=1e-2)
    for _ in range(100):
        idx = torch.randint(0, 1024, (128,), generator=g)
        loss = -cnf.log_prob(train[idx]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        ll = cnf.log_prob(test).mean().item()
    assert ll > baseline + 0.3  # nats per sample


def test_errors_and_state_dict_round_trip():
    with pytest.raises(ValueError, match="`trace`"):
        M.CNF(_net(), 2, trace="approx")
    with pytest.raises(ValueError, match="`noise`"):
        M.CNF(_net(), 2, noise="uniform")
    with pytest.raises(ValueError, match=r"shape \(batch, \*\(2,\)\)"):
        M.CNF(_net(), 2).log_prob(torch.zeros(3, 3, dtype=F64))
    a, b = M.CNF(_net(seed=0), 2), M.CNF(_net(seed=1), 2)
    b.load_state_dict(a.state_dict())
    x = torch.randn(4, 2, dtype=F64)
    torch.testing.assert_close(b.log_prob(x), a.log_prob(x))
