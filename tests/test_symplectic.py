"""Symplectic solvers: order, bounded energy error, reversibility, gradients."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

import torchnde as tn

F64 = torch.float64
PENDULUM = tn.ODETerm(lambda t, y, args: (y[1], -torch.sin(y[0])))
SYMPLECTIC = [(tn.SemiImplicitEuler, 1), (tn.Leapfrog, 2), (tn.Yoshida4, 4)]


def _energy(q, p):
    return 0.5 * p**2 - torch.cos(q)


def _solve(solver, t1, dt, q0=1.0, p0=0.0, **kw):
    y0 = (torch.tensor([q0], dtype=F64), torch.tensor([p0], dtype=F64))
    return tn.solve(
        PENDULUM, solver, 0.0, t1, y0, dt0=dt, controller=tn.ConstantStepSize(),
        max_steps=100_000, **kw,
    )  # fmt: skip


@pytest.mark.parametrize(("solver_cls", "order"), SYMPLECTIC, ids=lambda x: str(x))
def test_symplectic_solver_converges_with_its_order(solver_cls, order):
    # Harmonic oscillator q' = p, p' = -q from (1, 0): q = cos t, p = -sin t.
    term = tn.ODETerm(lambda t, y, args: (y[1], -y[0]))
    y0 = (torch.ones(1, dtype=F64), torch.zeros(1, dtype=F64))
    hs, errs = [], []
    for n in (20, 40, 80, 160):
        sol = tn.solve(term, solver_cls(), 0.0, 2.0, y0, dt0=2.0 / n,
                       controller=tn.ConstantStepSize())  # fmt: skip
        err = abs(float(sol.ys[0][-1, 0]) - math.cos(2.0)) + abs(
            float(sol.ys[1][-1, 0]) + math.sin(2.0)
        )
        hs.append(2.0 / n)
        errs.append(err)
    slope = np.polyfit(np.log(hs), np.log(errs), 1)[0]
    assert abs(slope - order) < 0.3, (slope, errs)


@functools.cache
def _rk4_energy() -> torch.Tensor:
    return _energy(*_solve(tn.RK4(), 1000.0, 0.1, saveat=tn.SaveAt(ts=_ENERGY_TS)).ys)


_ENERGY_TS = torch.arange(1, 201, dtype=F64) * 5.0


@pytest.mark.slow  # 10^4 steps of each method and of RK4: 7-14 s each
@pytest.mark.parametrize("solver_cls", [tn.Leapfrog, tn.Yoshida4], ids=lambda c: c.__name__)
def test_energy_error_stays_bounded_where_rk4_drifts(solver_cls):
    # 10^4 steps of the pendulum: the symplectic error oscillates without growing, RK4's
    # (dissipative) error grows steadily at the same step.
    symplectic = _energy(*_solve(solver_cls(), 1000.0, 0.1, saveat=tn.SaveAt(ts=_ENERGY_TS)).ys)
    rk4 = _rk4_energy()
    e0 = _energy(torch.tensor(1.0, dtype=F64), torch.tensor(0.0, dtype=F64))
    early, late = slice(0, 20), slice(100, None)
    drift_s = (symplectic[late] - e0).abs().max() / (symplectic[early] - e0).abs().max()
    drift_rk4 = (rk4[late] - e0).abs().max() / (rk4[early] - e0).abs().max()
    assert drift_s < 1.2, drift_s
    assert drift_rk4 > 5.0, drift_rk4
    # RK4 loses energy monotonically.
    assert bool((rk4[1:] - rk4[:-1] <= 1e-15).all())


@pytest.mark.parametrize("solver_cls", [tn.Leapfrog, tn.Yoshida4], ids=lambda c: c.__name__)
def test_time_symmetric_methods_retrace_their_steps_backwards(solver_cls):
    forward = _solve(solver_cls(), 10.0, 0.05)
    q1, p1 = (x[-1] for x in forward.ys)
    back = tn.solve(
        PENDULUM, solver_cls(), 10.0, 0.0, (q1, p1), dt0=0.05, controller=tn.ConstantStepSize()
    )
    torch.testing.assert_close(back.ys[0][-1], torch.tensor([1.0], dtype=F64), rtol=0, atol=1e-11)
    torch.testing.assert_close(back.ys[1][-1], torch.tensor([0.0], dtype=F64), rtol=0, atol=1e-11)


def _pendulum_final(solver, adjoint, q0, k, dt0=0.1):
    term = tn.ODETerm(lambda t, y, args: (y[1], -args * torch.sin(y[0])))
    sol = tn.solve(
        term, solver, 0.0, 1.0, (q0, torch.zeros_like(q0)), k, dt0=dt0,
        controller=tn.ConstantStepSize(), saveat=tn.SaveAt(ts=[0.5, 1.0]), adjoint=adjoint,
    )  # fmt: skip
    return sol.ys[0]


# Leapfrog in the default run (the gradient matrix covers all three there too); the
# dt = 0.001 Backsolve comparison makes each case several seconds.
@pytest.mark.parametrize(
    ("solver_cls", "order"),
    [s if s[0] is tn.Leapfrog else pytest.param(*s, marks=pytest.mark.slow) for s in SYMPLECTIC],
    ids=lambda x: str(x),
)
def test_symplectic_gradients_pass_gradcheck_and_adjoints_agree(solver_cls, order):
    q0 = torch.tensor([0.7, -0.3], dtype=F64, requires_grad=True)
    k = torch.tensor(1.3, dtype=F64, requires_grad=True)
    assert gradcheck(lambda q, a: _pendulum_final(solver_cls(), None, q, a), (q0, k))
    direct = torch.autograd.grad(_pendulum_final(solver_cls(), None, q0, k).sum(), (q0, k))
    ckpt = torch.autograd.grad(
        _pendulum_final(solver_cls(), tn.CheckpointAdjoint(), q0, k).sum(), (q0, k)
    )
    for gd, gc in zip(direct, ckpt):
        torch.testing.assert_close(gc, gd, rtol=1e-12, atol=1e-14)
    # Backsolve differentiates the exact flow (its backward pass uses RK4 for a symplectic
    # forward solver): close to Direct at a small step, to the forward solver's accuracy.
    fine = torch.autograd.grad(_pendulum_final(solver_cls(), None, q0, k, dt0=0.001).sum(), (q0, k))
    back = torch.autograd.grad(
        _pendulum_final(solver_cls(), tn.BacksolveAdjoint(), q0, k, dt0=0.001).sum(), (q0, k)
    )
    for gf, gb in zip(fine, back):
        torch.testing.assert_close(gb, gf, rtol=0, atol=10 * 0.001**order + 1e-9)


def test_symplectic_solvers_need_a_q_p_tuple_state():
    with pytest.raises(ValueError, match=r"tuple \(q, p\)"):
        tn.solve(tn.ODETerm(lambda t, y, args: -y), tn.Leapfrog(), 0.0, 1.0, torch.ones(2), dt0=0.1)


def test_symplectic_solvers_count_their_evaluations():
    for solver, per_step in ((tn.SemiImplicitEuler(), 2), (tn.Leapfrog(), 2), (tn.Yoshida4(), 6)):
        calls = []

        def field(t, y, args, calls=calls):
            calls.append(1)
            return (y[1], -torch.sin(y[0]))

        sol = tn.solve(
            tn.ODETerm(field), solver, 0.0, 1.0,
            (torch.ones(1, dtype=F64), torch.zeros(1, dtype=F64)), dt0=0.1,
        )  # fmt: skip
        assert sol.stats["num_fevals"] == len(calls) == 1 + 10 * per_step
