"""The flow models: CP-Flow, Monge-Ampere flow, the equivariant CNF and TrajectoryNet."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import torchnde as tn
from torchnde.models import (
    CNF,
    ICNN,
    CPFlow,
    DepthCat,
    EGNNField,
    EquivariantCNF,
    MongeAmpereFlow,
    PotentialGradient,
    TrajectoryNet,
)
from torchnde.models.cpflow import _grad, _hessian, conjugate_gradient

D64 = torch.float64


def _cpflow(seed: int = 0, blocks: int = 2) -> CPFlow:
    torch.manual_seed(seed)
    f = CPFlow(2, hidden=12, num_layers=2, num_blocks=blocks).double()
    for p in f.parameters():  # away from the near-quadratic initialisation
        p.data.add_(0.3 * torch.randn_like(p))
    return f


@pytest.mark.parametrize("method", ["newton", "lbfgs"])
def test_cpflow_map_is_invertible_to_tolerance(method):
    f = _cpflow()
    x = 2 * torch.randn(16, 2, dtype=D64)
    with torch.no_grad():
        z = f(x)
    tol = 1e-10
    x_back = f.inverse(z, method=method, tol=tol)
    torch.testing.assert_close(x_back, x, rtol=0, atol=1e-7)
    # Each block is inverted to a gradient residual of at most `tol` (max norm); the first
    # block's residual reaches z through the second block's map, amplified by at most its
    # Hessian's spectral norm there (times sqrt(D) from the max norm to the 2-norm).
    first, second = f.blocks
    u = _grad(first, x_back, False)[1]
    ug, g = _grad(second, u, True)
    lip = float(torch.linalg.matrix_norm(_hessian(g, ug, False), ord=2).max())
    bound = tol * (1 + math.sqrt(2) * lip)
    with torch.no_grad():
        assert float((f(x_back) - z).abs().max()) <= bound
    assert f.sample(5).shape == (5, 2)


def test_icnn_is_strongly_convex():
    torch.manual_seed(1)
    F = ICNN(3, hidden=8, num_layers=3, min_convexity=0.05).double()
    for p in F.parameters():
        p.data.add_(torch.randn_like(p))
    for x in torch.randn(20, 3, dtype=D64) * 3:
        h = torch.autograd.functional.hessian(lambda u: F(u.unsqueeze(0)).sum(), x)
        torch.testing.assert_close(h, h.T)
        assert float(torch.linalg.eigvalsh(h).min()) >= 0.05 - 1e-10


def test_cpflow_log_prob_is_the_change_of_variables():
    f = _cpflow(2)
    x = torch.randn(6, 2, dtype=D64)
    lp = f.log_prob(x)
    for i in range(6):
        jac = torch.autograd.functional.jacobian(lambda u: f(u.unsqueeze(0))[0], x[i])
        z = f(x[i : i + 1])[0]
        ref = -0.5 * z.pow(2).sum() - math.log(2 * math.pi) + torch.linalg.slogdet(jac)[1]
        torch.testing.assert_close(lp[i], ref.detach(), rtol=1e-10, atol=1e-10)


def test_cpflow_log_prob_gradient_matches_finite_differences():
    f = _cpflow(3, blocks=1)
    x = torch.randn(3, 2, dtype=D64, requires_grad=True)
    assert torch.autograd.gradcheck(f.log_prob, (x,), fast_mode=True)


def test_conjugate_gradient_solves_spd_systems():
    a = torch.randn(4, 5, 5, dtype=D64)
    a = a @ a.transpose(1, 2) + 0.5 * torch.eye(5, dtype=D64)
    b = torch.randn(4, 5, dtype=D64)
    w = conjugate_gradient(lambda v: (a @ v.unsqueeze(-1)).squeeze(-1), b, tol=1e-12)
    torch.testing.assert_close(w, torch.linalg.solve(a, b), rtol=1e-8, atol=1e-8)


def test_cpflow_stochastic_log_det_gradient_is_unbiased():
    # The mean over probes of the surrogate's gradient is the gradient of the exact log p.
    f = _cpflow(4)
    x = torch.randn(64, 2, dtype=D64)
    params = list(f.parameters())
    exact = torch.autograd.grad(f.log_prob(x).mean(), params)
    torch.manual_seed(0)
    n = 60
    mean = [torch.zeros_like(p) for p in params]
    for _ in range(n):
        g = torch.autograd.grad(f.surrogate_log_prob(x).mean(), params)
        mean = [m + gi / n for m, gi in zip(mean, g)]
    num = torch.sqrt(sum(((m - e) ** 2).sum() for m, e in zip(mean, exact)))
    den = torch.sqrt(sum((e**2).sum() for e in exact))
    assert float(num / den) < 0.02


class _Quadratic(nn.Module):
    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.a = nn.Parameter(a)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * torch.einsum("bi,ij,bj->b", x, self.a, x)


def test_monge_ampere_with_a_quadratic_potential_is_the_linear_flow():
    # phi = x^T A x / 2: v = A x, z(1) = exp(A) x, log p = log N(exp(A) x) + tr A.
    a = torch.tensor([[0.3, -0.2], [-0.2, -0.4]], dtype=D64)
    flow = MongeAmpereFlow(_Quadratic(a), 2, rtol=1e-10, atol=1e-10)
    x = torch.randn(5, 2, dtype=D64)
    z = x @ torch.linalg.matrix_exp(a).T
    ref = -0.5 * (z**2).sum(1) - math.log(2 * math.pi) + torch.trace(a)
    torch.testing.assert_close(flow.log_prob(x), ref, rtol=1e-8, atol=1e-8)


def test_monge_ampere_field_is_curl_free():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1))
    flow = MongeAmpereFlow(DepthCat(net), 3).double()
    t = torch.tensor(0.4, dtype=D64)
    for x in torch.randn(5, 3, dtype=D64):
        jac = torch.autograd.functional.jacobian(
            lambda u: flow.vector_field(t, u.unsqueeze(0))[0], x
        )
        assert float(jac.abs().max()) > 1e-3
        torch.testing.assert_close(jac, jac.T, rtol=1e-12, atol=1e-12)
    out = flow.log_prob(torch.randn(4, 3, dtype=D64))
    out.sum().backward()  # trains through the Hessian trace
    # All but the last bias (a constant shift of the potential moves nothing).
    assert all(p.grad is not None for p in list(net.parameters())[:-1])
    assert flow.sample(3).shape == (3, 3)


def _orthogonal(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=D64))
    q = q * torch.sign(torch.diagonal(r))
    q[:, 0] = -q[:, 0]  # include a reflection
    return q


def _egnn(n: int, d: int) -> EGNNField:
    torch.manual_seed(0)
    f = EGNNField(n, d, hidden=8, num_layers=2).double()
    for p in f.parameters():
        p.data.normal_(0, 0.4)
    return f


@pytest.mark.parametrize("d", [2, 3])
def test_egnn_field_commutes_with_rotations_permutations_and_shifts(d):
    n = 5
    f = _egnn(n, d)
    x = torch.randn(3, n, d, dtype=D64)
    t = torch.tensor(0.3, dtype=D64)
    v = f(t, x)
    assert float(v.detach().abs().max()) > 1e-2
    q = _orthogonal(d, d)
    torch.testing.assert_close(f(t, x @ q.T), v @ q.T, rtol=1e-11, atol=1e-11)
    perm = torch.randperm(n)
    torch.testing.assert_close(f(t, x[:, perm]), v[:, perm], rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(f(t, x + torch.randn(d, dtype=D64)), v, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(v.sum(1), torch.zeros(3, d, dtype=D64), rtol=0, atol=1e-12)


def test_equivariant_cnf_density_is_invariant_and_starts_at_the_mean_free_normal():
    n, d = 4, 2
    f = EGNNField(n, d, hidden=8).double()
    flow = EquivariantCNF(f, n, d, solver=tn.RK4(), dt0=0.25)
    x = torch.randn(3, n, d, dtype=D64)
    xc = x - x.mean(1, keepdim=True)
    # The coordinate heads start at zero: the zero field, so the base density itself.
    base = -0.5 * (xc**2).sum((1, 2)) - 0.5 * (n - 1) * d * math.log(2 * math.pi)
    torch.testing.assert_close(flow.log_prob(x), base)
    for p in f.parameters():
        p.data.normal_(0, 0.4)
    lp = flow.log_prob(x)
    q, perm = _orthogonal(d, 7), torch.tensor([2, 0, 3, 1])
    moved = x[:, perm] @ q.T + torch.tensor([0.7, -1.2], dtype=D64)
    torch.testing.assert_close(flow.log_prob(moved), lp, rtol=1e-7, atol=1e-7)
    s = flow.sample(6)
    assert s.shape == (6, n, d)
    torch.testing.assert_close(s.sum(1), torch.zeros(6, d, dtype=D64), rtol=0, atol=1e-10)


class _Linear(nn.Module):
    def __init__(self, a: float) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a, dtype=D64))

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.a * x


def test_trajectorynet_density_and_kinetic_energy_of_a_linear_field():
    # f = a x: z(t_b) = x exp(-a (t - t_b)), log p_t = log N(z(t_b)) - a D (t - t_b), and
    # the kinetic energy is a |x|^2 (1 - exp(-2 a (t - t_b))) / 2.
    a, tb, t = 0.4, -1.0, 2.0
    model = TrajectoryNet(_Linear(a), 2, base_time=tb, rtol=1e-10, atol=1e-10)
    x = torch.randn(5, 2, dtype=D64)
    lp, kin = model(x, t)
    z = x * math.exp(-a * (t - tb))
    ref = -0.5 * (z**2).sum(1) - math.log(2 * math.pi) - 2 * a * (t - tb)
    torch.testing.assert_close(lp, ref)
    ref_kin = a * (x**2).sum(1) * (1 - math.exp(-2 * a * (t - tb))) / 2
    torch.testing.assert_close(kin, ref_kin)
    y = model.transport(x, 0.0, 1.5)
    torch.testing.assert_close(y, x * math.exp(a * 1.5))
    torch.testing.assert_close(model.transport(y, 1.5, 0.0), x)
    assert model.sample(4, 1.0).shape == (4, 2)
    assert [n for n, _ in model.named_parameters()] == ["vector_field.a"]


def test_flows_train_a_step():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 8), nn.Softplus(), nn.Linear(8, 2))
    tj = TrajectoryNet(DepthCat(net), 2, base_time=-1.0, solver=tn.RK4(), dt0=0.5)
    lp, kin = tj(torch.randn(8, 2), 1.0)
    (-lp + kin).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    state = {k: v.clone() for k, v in tj.state_dict().items()}
    tj2 = TrajectoryNet(DepthCat(nn.Sequential(nn.Linear(3, 8), nn.Softplus(), nn.Linear(8, 2))),
                        2, base_time=-1.0, solver=tn.RK4(), dt0=0.5)  # fmt: skip
    tj2.load_state_dict(state)
    x = torch.randn(3, 2)
    torch.testing.assert_close(tj2.log_prob(x, 1.0), tj.log_prob(x, 1.0))
    assert isinstance(tj._cnf, CNF)


def test_documented_errors():
    with pytest.raises(ValueError, match="`method` must be 'newton' or 'lbfgs'"):
        CPFlow(2).inverse(torch.zeros(1, 2), method="bfgs")
    with pytest.raises(ValueError, match=r"`z` must have shape \(batch, 2\)"):
        CPFlow(2).inverse(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="`num_blocks` must be a positive int"):
        CPFlow(2, num_blocks=0)
    with pytest.raises(ValueError, match="`min_convexity` must be a positive number"):
        ICNN(2, min_convexity=0.0)
    with pytest.raises(TypeError, match="`potential` must be a module or callable"):
        PotentialGradient(nn.Sequential(nn.Linear(2, 1)))
    bad = PotentialGradient(lambda t, x: x)
    with pytest.raises(ValueError, match="must return one value per sample"):
        bad(torch.tensor(0.0), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="`num_particles` must be >= 2"):
        EGNNField(1, 2)
    with pytest.raises(ValueError, match="`num_particles` must be >= 2"):
        EquivariantCNF(EGNNField(2, 2), 1, 2)
    tj = TrajectoryNet(_Linear(0.1), 2, base_time=0.0)
    with pytest.raises(ValueError, match="`time` must be after base_time=0.0"):
        tj.log_prob(torch.zeros(1, 2, dtype=D64), -1.0)
    with pytest.raises(TypeError, match="`base_time` must be a number"):
        TrajectoryNet(_Linear(0.1), 2, base_time="0")  # type: ignore[arg-type]


def test_flow_log_prob_gradients_match_finite_differences():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 1)).double()
    ma = MongeAmpereFlow(DepthCat(net), 2, solver=tn.RK4(), dt0=0.5)
    x = torch.randn(2, 2, dtype=D64, requires_grad=True)
    assert torch.autograd.gradcheck(ma.log_prob, (x,), fast_mode=True)
    f = EGNNField(3, 2, hidden=6, num_layers=1).double()
    for p in f.parameters():  # a moderate field (the zero-initialised heads made non-zero)
        p.data.add_(0.2 * torch.randn_like(p))
    eq = EquivariantCNF(f, 3, 2, solver=tn.RK4(), dt0=0.5)
    y = torch.randn(2, 3, 2, dtype=D64, requires_grad=True)
    assert torch.autograd.gradcheck(eq.log_prob, (y,), fast_mode=True)
