"""ReversibleHeun and ReversibleAdjoint: reversal is exact, the method has order 2, and the
reversible adjoint gives DirectAdjoint's gradients to round-off."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import torchnde as tn

F64 = torch.float64


def _field(t, y, args):
    return torch.stack([y[..., 1], -torch.sin(y[..., 0]) + 0.1 * torch.cos(t)], dim=-1)


def test_reversible_heun_step_inverts_exactly():
    solver = tn.ReversibleHeun()
    term = tn.ODETerm(_field)
    y0 = torch.tensor([[0.3, -0.2], [1.0, 0.5]], dtype=F64)
    t0, t1 = torch.tensor(0.2, dtype=F64), torch.tensor(0.45, dtype=F64)
    state = solver.init(term, t0, y0, None)
    # Take a few steps so that z drifts away from y, then undo the last one.
    y, st = y0, state
    for k in range(3):
        y, _, _, st = solver.step(term, t0 + 0.1 * k, t0 + 0.1 * (k + 1), y, None, st)
    y_next, _, _, st_next = solver.step(term, t0 + 0.3, t1, y, None, st)
    y_back, st_back = solver.reverse(term, t0 + 0.3, t1, y_next, None, st_next)
    torch.testing.assert_close(y_back, y, rtol=0, atol=1e-15)
    torch.testing.assert_close(st_back[0], st[0], rtol=0, atol=1e-15)


def test_reversible_heun_converges_with_order_2():
    # y' = -y + sin(t): y(t) = (y0 + 1/2) e^{-t} + (sin t - cos t) / 2.
    def exact(t):
        return 1.5 * math.exp(-t) + 0.5 * (math.sin(t) - math.cos(t))

    term = tn.ODETerm(lambda t, y, args: -y + torch.sin(t))
    errors, hs = [], []
    for n in (40, 80, 160, 320):
        sol = tn.solve(
            term, tn.ReversibleHeun(), 0.0, 2.0, torch.ones(1, dtype=F64), dt0=2.0 / n,
            controller=tn.ConstantStepSize(),
        )  # fmt: skip
        errors.append(abs(float(sol.ys[-1, 0]) - exact(2.0)))
        hs.append(2.0 / n)
    slope = np.polyfit(np.log(hs), np.log(errors), 1)[0]
    assert abs(slope - 2) < 0.3, (slope, errors)


def test_reversible_heun_adaptive_solve_meets_tolerance():
    term = tn.ODETerm(lambda t, y, args: -y + torch.sin(t))
    sol = tn.solve(
        term, tn.ReversibleHeun(), 0.0, 2.0, torch.ones(1, dtype=F64),
        controller=tn.PIDController(rtol=1e-6, atol=1e-8),
        saveat=tn.SaveAt(ts=torch.tensor([0.5, 1.0, 2.0], dtype=F64)),
    )  # fmt: skip
    exact = torch.tensor(
        [1.5 * math.exp(-t) + 0.5 * (math.sin(t) - math.cos(t)) for t in (0.5, 1.0, 2.0)],
        dtype=F64,
    )
    assert float((sol.ys[:, 0] - exact).abs().max()) < 1e-4


def _grads(adjoint, **kw):
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)
    ).double()
    y0 = torch.randn(4, 3, dtype=F64, requires_grad=True)
    t1 = torch.tensor(2.0, dtype=F64, requires_grad=True)
    ts = torch.linspace(0.2, 1.8, 5, dtype=F64)
    sol = tn.solve(
        tn.ODETerm(lambda t, y, args: net(y)), tn.ReversibleHeun(), 0.0, t1, y0,
        saveat=tn.SaveAt(ts=ts, t1=True), adjoint=adjoint, **kw,
    )  # fmt: skip
    return torch.autograd.grad((sol.ys**2).sum(), [y0, t1, *net.parameters()]), sol


@pytest.mark.parametrize(
    "kw",
    [
        dict(dt0=0.02, controller=tn.ConstantStepSize()),
        dict(controller=tn.PIDController(rtol=1e-5, atol=1e-7)),
        dict(controller=tn.PIDController(rtol=1e-5, atol=1e-7, per_sample=True)),
    ],
    ids=["constant", "adaptive", "per-sample"],
)
def test_reversible_adjoint_equals_direct_to_round_off(kw):
    direct, sol = _grads(tn.DirectAdjoint(), **kw)
    rev, sol_r = _grads(tn.ReversibleAdjoint(), **kw)
    assert sol.stats["num_steps"] > 50
    torch.testing.assert_close(sol_r.ys, sol.ys, rtol=0, atol=0)
    for gd, gr in zip(direct, rev):
        torch.testing.assert_close(gr, gd, rtol=1e-11, atol=1e-12)


def test_reversible_adjoint_needs_a_reversible_solver():
    y0 = torch.ones(2, dtype=F64, requires_grad=True)
    with pytest.raises(ValueError, match="reversible solver"):
        tn.solve(
            tn.ODETerm(lambda t, y, args: -y), tn.Dopri5(), 0.0, 1.0, y0,
            adjoint=tn.ReversibleAdjoint(),
        )  # fmt: skip


def test_reversible_adjoint_rejects_events():
    y0 = torch.ones(2, dtype=F64, requires_grad=True)
    with pytest.raises(NotImplementedError, match="events"):
        tn.solve(
            tn.ODETerm(lambda t, y, args: -y), tn.ReversibleHeun(), 0.0, 1.0, y0, dt0=0.1,
            event=tn.Event(lambda t, y, args: y[0] - 0.5), adjoint=tn.ReversibleAdjoint(),
        )  # fmt: skip


def test_alf_converges_with_order_2_and_inverts_exactly():
    term = tn.ODETerm(lambda t, y, args: -y + torch.sin(t))
    exact = 1.5 * math.exp(-2.0) + 0.5 * (math.sin(2.0) - math.cos(2.0))
    hs, errors = [], []
    for n in (40, 80, 160, 320):
        sol = tn.solve(term, tn.ALF(), 0.0, 2.0, torch.ones(1, dtype=F64), dt0=2.0 / n)
        hs.append(2.0 / n)
        errors.append(abs(float(sol.ys[-1, 0]) - exact))
    slope = np.polyfit(np.log(hs), np.log(errors), 1)[0]
    assert abs(slope - 2) < 0.3, (slope, errors)

    solver = tn.ALF()
    y0 = torch.tensor([[0.3, -1.2]], dtype=F64)
    t0, t1 = torch.tensor(0.1, dtype=F64), torch.tensor(0.35, dtype=F64)
    state = solver.init(term, t0, y0, None)
    y1, _, _, state1 = solver.step(term, t0, t1, y0, None, state)
    y_back, state_back = solver.reverse(term, t0, t1, y1, None, state1)
    torch.testing.assert_close(y_back, y0, rtol=0, atol=1e-15)
    torch.testing.assert_close(state_back, state, rtol=0, atol=1e-15)


def test_reversible_adjoint_with_alf_equals_direct_to_round_off():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)
    ).double()
    y0 = torch.randn(4, 3, dtype=F64, requires_grad=True)

    def grads(adjoint):
        sol = tn.solve(
            tn.ODETerm(lambda t, y, args: net(y)), tn.ALF(), 0.0, 2.0, y0, dt0=0.02,
            adjoint=adjoint, saveat=tn.SaveAt(ts=[0.5, 1.3, 2.0]),
        )  # fmt: skip
        return torch.autograd.grad((sol.ys**2).sum(), [y0, *net.parameters()])

    for gd, gr in zip(grads(tn.DirectAdjoint()), grads(tn.ReversibleAdjoint())):
        torch.testing.assert_close(gr, gd, rtol=1e-11, atol=1e-12)
