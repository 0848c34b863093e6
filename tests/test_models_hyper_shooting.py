"""models.HyperSolver and models.MultipleShooting."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchnde as tn
from torchnde import models as M

F64 = torch.float64


class Pendulum(nn.Module):
    def forward(self, t, x):
        return torch.stack([x[:, 1], -torch.sin(x[:, 0])], 1)


class Correction(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 2))

    def forward(self, t, x, dx):
        return self.net(torch.cat([x, dx], 1))


def _reference(x0, ts):
    term = tn.ODETerm(lambda t, y, args: Pendulum()(t, y))
    ctrl = tn.PIDController(rtol=1e-9, atol=1e-11)
    return tn.solve(term, tn.Dopri5(), 0.0, float(ts[-1]), x0, saveat=tn.SaveAt(ts=ts),
                    controller=ctrl).ys  # fmt: skip


def test_uncorrected_hypersolver_is_its_base_method():
    ts = torch.linspace(0, 2, 9, dtype=F64)
    x = torch.randn(3, 2, dtype=F64)
    hs = M.HyperSolver(Pendulum(), Correction().double(), tn.RK4())
    base = tn.solve(
        tn.ODETerm(lambda t, y, args: Pendulum()(t, y)), tn.RK4(), 0.0, 2.0, x,
        dt0=0.25, saveat=tn.SaveAt(ts=ts),
    ).ys  # fmt: skip
    torch.testing.assert_close(hs(x, ts, corrected=False), base)
    assert hs.nfe == 4 * 8  # exactly s evaluations per step


@pytest.mark.parametrize("base", [tn.Euler(), tn.Heun()], ids=["euler", "heun"])
def test_trained_hypersolver_beats_its_base_at_equal_evaluations(base):
    torch.manual_seed(0)
    ts = torch.linspace(0, 3, 16)
    box = torch.tensor([2.0, 1.5])
    x_train = (torch.rand(256, 2) * 2 - 1) * box
    y_train = _reference(x_train, ts)
    hs = M.HyperSolver(Pendulum(), Correction(), base)
    opt = torch.optim.Adam(hs.parameters(), lr=1e-2)
    for _ in range(200):
        loss = hs.residual_loss(ts, y_train)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x_test = (torch.rand(64, 2) * 2 - 1) * box
    y_test = _reference(x_test, ts)
    with torch.no_grad():
        err_hyper = (hs(x_test, ts) - y_test).abs().max().item()
        nfe_hyper = hs.nfe
        err_base = (hs(x_test, ts, corrected=False) - y_test).abs().max().item()
        nfe_base = hs.nfe
    assert nfe_hyper == nfe_base
    assert err_hyper < 0.25 * err_base


def test_hypersolver_errors():
    with pytest.raises(TypeError, match="explicit Runge-Kutta"):
        M.HyperSolver(Pendulum(), Correction(), tn.Dopri5)
    with pytest.raises(ValueError, match="len\\(ts\\)"):
        M.HyperSolver(Pendulum(), Correction(), tn.Euler()).residual_loss(
            torch.linspace(0, 1, 3), torch.zeros(2, 4, 2)
        )


def _field():
    torch.manual_seed(0)
    return M.Autonomous(nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2)).double())


@pytest.mark.parametrize("method", ["newton", "zeroth", "parareal"])
def test_multiple_shooting_reproduces_the_sequential_solve(method):
    f = _field()
    x = torch.randn(3, 2, dtype=F64)
    n, m, t1 = 16, 4, 4.0
    dt = t1 / (n * m)
    seq = tn.solve(tn.ODETerm(lambda t, y, args: f(t, y)), tn.RK4(), 0.0, t1, x, dt0=dt)
    msl = M.MultipleShooting(f, n, method, t1=t1, solver=tn.RK4(), dt0=dt, tol=1e-11)
    with torch.no_grad():
        bnd = msl.shoot(x)
    assert bnd.shape == (n + 1, 3, 2)
    torch.testing.assert_close(bnd[-1], seq.ys[-1], rtol=1e-10, atol=1e-10)
    assert msl.last_stats["iterations"] <= n
    if method == "newton":  # quadratic convergence: far fewer sequential evaluations
        assert msl.last_stats["sequential_fevals"] < 0.5 * seq.stats["num_fevals"]


def test_multiple_shooting_gradient_is_the_sequential_gradient():
    f = _field()
    x = torch.randn(3, 2, dtype=F64, requires_grad=True)
    msl = M.MultipleShooting(f, 8, t1=2.0, solver=tn.RK4(), dt0=0.0625, tol=1e-12)
    params = [x, *f.parameters()]
    got = torch.autograd.grad(msl(x).pow(2).sum(), params)
    seq = tn.solve(tn.ODETerm(lambda t, y, args: f(t, y)), tn.RK4(), 0.0, 2.0, x, dt0=0.0625)
    expect = torch.autograd.grad(seq.ys[-1].pow(2).sum(), params)
    for g, e in zip(got, expect):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-11)
    # with autograd the final differentiable step is counted, and it is still parallel in time
    assert msl.last_stats["sequential_fevals"] < seq.stats["num_fevals"]


def test_multiple_shooting_errors():
    with pytest.raises(ValueError, match="`method`"):
        M.MultipleShooting(_field(), 4, "gauss-newton")
    with pytest.raises(ValueError, match="num_segments"):
        M.MultipleShooting(_field(), 0)
    with pytest.raises(ValueError, match=r"\(batch, d\)"):
        M.MultipleShooting(_field(), 2, solver=tn.RK4(), dt0=0.1)(torch.zeros(2, 2, 2))


@pytest.mark.parametrize("base", ["tableau", "instance", "fsal"])
def test_hypersolver_steps_on_the_core_engine_at_s_evaluations_per_step(base):
    # Heun's tableau given three ways, and Dopri5 (first same as last): each step costs exactly
    # its s stages, and the uncorrected step is the core solver's constant step.
    heun = tn.Heun.tableau
    solver = {"tableau": heun, "instance": tn.ExplicitRungeKutta(heun), "fsal": tn.Dopri5()}[base]
    ts = torch.linspace(0, 1, 5, dtype=F64)
    x = torch.randn(3, 2, dtype=F64)
    hs = M.HyperSolver(Pendulum(), Correction().double(), solver)
    ref_solver = tn.Dopri5() if base == "fsal" else tn.Heun()
    ref = tn.solve(
        tn.ODETerm(lambda t, y, args: Pendulum()(t, y)), ref_solver, 0.0, 1.0, x, dt0=0.25,
        saveat=tn.SaveAt(ts=ts), controller=tn.ConstantStepSize(),
    ).ys  # fmt: skip
    torch.testing.assert_close(hs(x, ts, corrected=False), ref, rtol=1e-13, atol=1e-13)
    assert hs.nfe == (7 if base == "fsal" else 2) * 4
