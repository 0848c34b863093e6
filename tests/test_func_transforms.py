"""DirectAdjoint works under torch.func's gradient transforms."""

from __future__ import annotations

import torch

import torchnde as tn

F64 = torch.float64


def _riccati(solver, **kw):
    # y' = -y^2, y(1) = y0 / (1 + y0): d y(1) / d y0 = 1 / (1 + y0)^2.
    def final(y0):
        return tn.solve(tn.ODETerm(lambda t, y, args: -y * y), solver, 0.0, 1.0, y0, **kw).ys[-1]

    return final


def test_jacrev_through_a_fixed_step_solve_matches_the_analytic_jacobian():
    y0 = torch.tensor([0.5, 1.0], dtype=F64)
    jac = torch.func.jacrev(_riccati(tn.RK4(), dt0=0.01))(y0)
    torch.testing.assert_close(jac, torch.diag(1 / (1 + y0) ** 2), rtol=1e-7, atol=1e-12)


def test_func_grad_through_an_adaptive_solve_matches_the_analytic_gradient():
    y0 = torch.tensor([0.5, 1.0], dtype=F64)
    final = _riccati(tn.Dopri5(), controller=tn.PIDController(rtol=1e-10, atol=1e-12))
    grad = torch.func.grad(lambda y: final(y).sum())(y0)
    torch.testing.assert_close(grad, 1 / (1 + y0) ** 2, rtol=1e-8, atol=1e-12)
