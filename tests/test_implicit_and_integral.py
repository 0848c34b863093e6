"""ImplicitAdjoint (steady states) and running-cost integrals."""

from __future__ import annotations

import math

import pytest
import torch

import torchnde as tn

F64 = torch.float64


def _equilibrium_grads(adjoint, t1=40.0):
    torch.manual_seed(0)
    w = (0.3 * torch.randn(4, 4, dtype=F64)).requires_grad_()
    b = torch.randn(4, dtype=F64).requires_grad_()
    term = tn.ODETerm(lambda t, y, args: -y + torch.tanh(y @ w.T + b))
    sol = tn.solve(
        term, tn.Tsit5(), 0.0, t1, torch.zeros(3, 4, dtype=F64),
        controller=tn.PIDController(rtol=1e-12, atol=1e-14), adjoint=adjoint,
    )  # fmt: skip
    y = sol.ys[-1]
    return torch.autograd.grad((y**2).sum() + y.sum(), (w, b)), y


def test_implicit_adjoint_matches_backpropagation_at_an_equilibrium():
    # Backpropagation differentiates the numerical solve: it meets the equilibrium's exact
    # gradient to about the solve's accuracy (3e-9 to 6e-9 apart at rtol 1e-10, the rounding
    # of a step's combination moving it within that; 2e-10 to 6e-10 at the 1e-12 used here).
    implicit, y = _equilibrium_grads(tn.ImplicitAdjoint())
    direct, _ = _equilibrium_grads(tn.DirectAdjoint())
    for gi, gd in zip(implicit, direct):
        torch.testing.assert_close(gi, gd, rtol=1e-7, atol=1e-9)


def test_implicit_adjoint_matches_the_closed_form_linear_equilibrium():
    # y' = -A y + c: y* = A^{-1} c, dL/dc = A^{-T} dL/dy*.
    a = torch.tensor([[2.0, 0.5], [0.0, 1.0]], dtype=F64)
    c = torch.tensor([1.0, -1.0], dtype=F64, requires_grad=True)
    sol = tn.solve(
        tn.ODETerm(lambda t, y, args: -y @ a.T + args), tn.Dopri5(), 0.0, 60.0,
        torch.zeros(2, dtype=F64), c, controller=tn.PIDController(rtol=1e-10, atol=1e-12),
        adjoint=tn.ImplicitAdjoint(),
    )  # fmt: skip
    (g,) = torch.autograd.grad(sol.ys[-1].sum(), c)
    expect = torch.linalg.solve(a.T, torch.ones(2, dtype=F64))
    torch.testing.assert_close(g, expect, rtol=1e-8, atol=1e-10)


def test_implicit_adjoint_warns_when_not_at_an_equilibrium():
    with pytest.warns(UserWarning, match="not at an equilibrium"):
        _equilibrium_grads(tn.ImplicitAdjoint(), t1=0.5)


def test_implicit_adjoint_only_differentiates_the_final_state():
    y0 = torch.zeros(2, dtype=F64, requires_grad=True)
    with pytest.raises(ValueError, match="final state only"):
        tn.solve(
            tn.ODETerm(lambda t, y, args: -y), tn.Dopri5(), 0.0, 1.0, y0,
            saveat=tn.SaveAt(ts=[0.5, 1.0]), adjoint=tn.ImplicitAdjoint(),
        )  # fmt: skip


ADJOINTS = [
    tn.DirectAdjoint(),
    tn.CheckpointAdjoint(),
    tn.BacksolveAdjoint(),
    tn.InterpolatedAdjoint(),
]


@pytest.mark.parametrize("adjoint", ADJOINTS, ids=lambda a: type(a).__name__)
def test_integral_of_running_cost_and_its_gradient_are_exact(adjoint):
    # y' = -y: int_0^t |y|^2 = |y0|^2 (1 - e^{-2t}) / 2, d/dy0 = y0 (1 - e^{-2t}).
    y0 = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    sol = tn.solve(
        tn.ODETerm(lambda t, y, args: -y), tn.Dopri5(), 0.0, 1.0, y0,
        saveat=tn.SaveAt(ts=[0.5, 1.0]), integral=lambda t, y, args: (y**2).sum(),
        controller=tn.PIDController(rtol=1e-10, atol=1e-12), adjoint=adjoint,
    )  # fmt: skip
    assert sol.ys.shape == (2, 2)
    expect = [5 * (1 - math.exp(-2 * t)) / 2 for t in (0.5, 1.0)]
    torch.testing.assert_close(sol.integral, torch.tensor(expect, dtype=F64), rtol=1e-8, atol=0)
    (g,) = torch.autograd.grad(sol.integral[-1], y0)
    torch.testing.assert_close(g, y0.detach() * (1 - math.exp(-2)), rtol=1e-7, atol=0)


def test_integral_with_per_sample_costs_and_tuple_state():
    q0 = torch.tensor([[1.0], [2.0]], dtype=F64)
    p0 = torch.zeros(2, 1, dtype=F64)
    sol = tn.solve(
        tn.ODETerm(lambda t, y, args: (y[1], -y[0])), tn.Tsit5(), 0.0, math.pi, (q0, p0),
        integral=lambda t, y, args: y[0][:, 0] ** 2,  # one cost per sample
        controller=tn.PIDController(rtol=1e-10, atol=1e-12), saveat=tn.SaveAt(t1=True, dense=True),
    )  # fmt: skip
    assert isinstance(sol.ys, tuple) and len(sol.ys) == 2
    # int_0^pi q0^2 cos^2 = q0^2 pi / 2.
    torch.testing.assert_close(sol.integral[-1], q0[:, 0] ** 2 * math.pi / 2, rtol=1e-8, atol=0)
    assert isinstance(sol.evaluate(1.0), tuple)


def test_integral_must_be_callable():
    with pytest.raises(TypeError, match="integral"):
        tn.solve(
            tn.ODETerm(lambda t, y, args: -y), tn.Dopri5(), 0.0, 1.0, torch.ones(2),
            integral=3.0,
        )  # fmt: skip
