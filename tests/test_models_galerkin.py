"""models.GalerkinLinear / GalerkinConv2d (depth-varying weights) and StableNeuralFlow."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import torchnde as tn
from torchnde import models as M
from torchnde.models.galerkin import basis_functions

F64 = torch.float64


def test_basis_functions():
    t = torch.tensor([0.0, 0.3], dtype=F64)
    w = 2 * math.pi / 2.0
    expect = torch.stack(
        [torch.ones(2, dtype=F64), torch.cos(w * t), torch.sin(w * t), torch.cos(2 * w * t)], -1
    )
    torch.testing.assert_close(basis_functions(t, "fourier", 4, 2.0), expect)
    torch.testing.assert_close(
        basis_functions(t, "polynomial", 3, 1.0), torch.stack([t**0, t, t**2], -1)
    )


@pytest.mark.parametrize("basis", ["fourier", "polynomial"])
def test_per_sample_depth_equals_one_depth_per_sample(basis):
    torch.manual_seed(0)
    lin = M.GalerkinLinear(3, 4, basis, 4).double()
    conv = M.GalerkinConv2d(2, 3, 3, basis, 4).double()
    t = torch.tensor([0.1, 0.7, 0.4], dtype=F64)
    x, img = torch.randn(3, 3, dtype=F64), torch.randn(3, 2, 5, 5, dtype=F64)
    lin_each = torch.cat([lin(t[i], x[i : i + 1]) for i in range(3)])
    conv_each = torch.cat([conv(t[i], img[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(lin(t, x), lin_each)
    torch.testing.assert_close(conv(t, img), conv_each)
    # W(t) = sum_k alpha_k psi_k(t)
    psi = basis_functions(t[1], basis, 4, 1.0)
    expect = (lin.coeff_weight * psi[:, None, None]).sum(0)
    torch.testing.assert_close(lin.weight(t[1]), expect)
    assert conv(t[0], img).shape == (3, 3, 5, 5)


def test_galerkin_errors():
    with pytest.raises(ValueError, match="`basis`"):
        M.GalerkinLinear(2, 2, "chebyshev")
    with pytest.raises(ValueError, match="`n_basis`"):
        M.GalerkinConv2d(2, 2, n_basis=0)


def _best_monotone_mse(y):
    """Smallest mean squared error of a monotone sequence fitted to y (pool adjacent
    violators, both directions)."""

    def increasing(v):
        blocks = []  # (mean, size)
        for x in v.tolist():
            blocks.append((x, 1))
            while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
                (m1, n1), (m2, n2) = blocks[-2], blocks[-1]
                blocks[-2:] = [((m1 * n1 + m2 * n2) / (n1 + n2), n1 + n2)]
        fit = torch.tensor([m for m, n in blocks for _ in range(n)], dtype=v.dtype)
        return (fit - v).pow(2).mean().item()

    return min(increasing(y), increasing(-y))


def _fit_trajectory(field, lr, iters=60):
    ts = torch.linspace(0, 1, 11)
    target = torch.sin(2 * math.pi * ts)[:, None, None]
    node = M.NeuralODE(field, solver=tn.RK4(), dt0=0.1, ts=ts)
    opt = torch.optim.Adam(node.parameters(), lr=lr)
    for _ in range(iters):
        loss = (node(torch.zeros(1, 1)) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (node(torch.zeros(1, 1)) - target).pow(2).mean().item(), target.reshape(-1)


def test_depth_varying_weights_fit_a_trajectory_no_autonomous_field_can():
    # Solutions of a 1-D autonomous ODE are monotone in t, so y(t) = sin(2 pi t) is out of
    # reach: the loss is at least that of the best monotone fit. A Galerkin layer with a
    # Fourier basis represents y' = 2 pi cos(2 pi t) exactly.
    torch.manual_seed(0)
    autonomous, target = _fit_trajectory(
        M.Autonomous(nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1))), 5e-2, 30
    )
    bound = _best_monotone_mse(target)
    galerkin, _ = _fit_trajectory(M.GalerkinLinear(1, 1, "fourier", 3), 0.2)
    assert autonomous > 0.95 * bound
    assert galerkin < 0.05 * bound


def test_stable_flow_is_minus_the_energy_gradient_and_dissipates():
    a = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=F64)

    class Quadratic(nn.Module):
        def forward(self, x):
            return 0.5 * torch.einsum("bi,ij,bj->b", x, a, x)

    x = torch.randn(4, 2, dtype=F64)
    torch.testing.assert_close(M.StableNeuralFlow(Quadratic())(torch.tensor(0.0), x), -x @ a)

    torch.manual_seed(0)
    energy = nn.Sequential(nn.Linear(2, 32), nn.Softplus(), nn.Linear(32, 1)).double()
    flow = M.StableNeuralFlow(energy)
    ts = torch.linspace(0, 3, 31, dtype=F64)
    traj = M.NeuralODE(flow, t1=3.0, ts=ts, rtol=1e-8, atol=1e-10)(torch.randn(8, 2, dtype=F64) * 2)
    e = energy(traj).squeeze(-1)  # (time, batch)
    assert bool((e.diff(dim=0) <= 1e-10).all())


def test_stable_flow_trains_with_a_continuous_adjoint():
    def grads(adjoint):
        torch.manual_seed(0)
        energy = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1)).double()
        node = M.NeuralODE(M.StableNeuralFlow(energy), adjoint=adjoint, rtol=1e-9, atol=1e-10)
        x = torch.tensor([[0.5, -1.0], [1.5, 0.2]], dtype=F64)
        params = list(energy.parameters())  # the output bias does not enter -grad E
        return torch.autograd.grad(node(x).pow(2).sum(), params, materialize_grads=True)

    for g, d in zip(grads(tn.BacksolveAdjoint()), grads(tn.DirectAdjoint())):
        torch.testing.assert_close(g, d, rtol=1e-5, atol=1e-7)


def test_stable_flow_rejects_a_vector_energy():
    with pytest.raises(ValueError, match="one value per sample"):
        M.StableNeuralFlow(nn.Linear(2, 2))(torch.tensor(0.0), torch.zeros(3, 2))
