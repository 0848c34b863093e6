"""Gradients through a solve with DirectAdjoint, against finite differences (float64).

DirectAdjoint differentiates the computed solution exactly, including how adaptive step
sizes depend on the inputs, so ``torch.autograd.gradcheck`` holds for adaptive solvers too as
long as no accept/reject decision flips within the finite-difference step.
"""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck
from torch.func import functional_call

import torchnde as tn

F64 = torch.float64

FIXED = [tn.Euler, tn.RK4]
ADAPTIVE = [tn.Dopri5, tn.Tsit5]


def _setup(solver_cls):
    """Solver, controller and dt0 for a small, cheap solve."""
    if solver_cls().is_adaptive:
        return solver_cls(), tn.PIDController(rtol=1e-6, atol=1e-8), None
    return solver_cls(), tn.ConstantStepSize(), 0.1


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).to(
        F64
    )


def _ts(*times: float) -> torch.Tensor:
    return torch.tensor(times, dtype=F64)


def _y0() -> torch.Tensor:
    return torch.tensor([0.4, -0.3], dtype=F64, requires_grad=True)


@pytest.mark.parametrize("solver_cls", FIXED + ADAPTIVE, ids=lambda c: c.__name__)
def test_gradcheck_wrt_y0_and_module_parameters(solver_cls):
    module = _mlp()
    names = [n for n, _ in module.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in module.parameters()]
    solver, controller, dt0 = _setup(solver_cls)

    def fn(y0, *ps):
        field = lambda t, y, args: functional_call(module, dict(zip(names, ps)), (y,))
        sol = tn.solve(
            tn.ODETerm(field),
            solver,
            0.0,
            0.6,
            y0,
            dt0=dt0,
            controller=controller,
            saveat=tn.SaveAt(ts=_ts(0.25, 0.6)),
        )
        return sol.ys

    assert gradcheck(fn, (_y0(), *params), eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("solver_cls", FIXED + ADAPTIVE, ids=lambda c: c.__name__)
def test_gradcheck_wrt_args_tensors(solver_cls):
    solver, controller, dt0 = _setup(solver_cls)

    def field(t, y, args):
        k, w = args
        return -k * y + torch.sin(w * t)

    def fn(y0, k, w):
        sol = tn.solve(
            tn.ODETerm(field),
            solver,
            0.0,
            0.7,
            y0,
            (k, w),
            dt0=dt0,
            controller=controller,
            saveat=tn.SaveAt(ts=_ts(0.3, 0.7), t1=True),
        )
        return sol.ys

    k = torch.tensor([0.5, 2.0], dtype=F64, requires_grad=True)
    w = torch.tensor(3.0, dtype=F64, requires_grad=True)
    assert gradcheck(fn, (_y0(), k, w), eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("solver_cls", FIXED + ADAPTIVE, ids=lambda c: c.__name__)
def test_gradcheck_wrt_t1(solver_cls):
    solver, controller, dt0 = _setup(solver_cls)
    field = lambda t, y, args: torch.stack([y[1], -y[0] + torch.cos(t)])

    def fn(y0, t1):
        return tn.solve(tn.ODETerm(field), solver, 0.0, t1, y0, dt0=dt0, controller=controller).ys

    t1 = torch.tensor(0.55, dtype=F64, requires_grad=True)
    assert gradcheck(fn, (_y0(), t1), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradient_wrt_t1_is_the_vector_field_at_t1():
    field = lambda t, y, args: -y * (1 + t)
    y0 = torch.tensor([1.0, 2.0], dtype=F64)
    t1 = torch.tensor(0.8, dtype=F64, requires_grad=True)
    sol = tn.solve(
        tn.ODETerm(field), tn.Tsit5(), 0.0, t1, y0, controller=tn.PIDController(1e-10, 1e-12)
    )
    (grad,) = torch.autograd.grad(sol.ys[-1].sum(), t1)
    expect = field(t1.detach(), sol.ys[-1].detach(), None).sum()
    torch.testing.assert_close(grad, expect, rtol=1e-7, atol=1e-9)


def test_gradient_wrt_y0_of_a_linear_system_is_the_matrix_exponential():
    a = torch.tensor([[-0.5, 1.0], [-1.0, -0.2]], dtype=F64)
    y0 = torch.tensor([1.0, 0.0], dtype=F64, requires_grad=True)
    sol = tn.solve(
        tn.ODETerm(lambda t, y, args: a @ y),
        tn.Dopri5(),
        0.0,
        2.0,
        y0,
        controller=tn.PIDController(rtol=1e-10, atol=1e-12),
    )
    jac = torch.stack(
        [torch.autograd.grad(sol.ys[-1, i], y0, retain_graph=True)[0] for i in range(2)]
    )
    torch.testing.assert_close(jac, torch.linalg.matrix_exp(2.0 * a), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("solver_cls", [tn.Dopri5, tn.Tsit5], ids=lambda c: c.__name__)
def test_gradcheck_per_sample_mode(solver_cls):
    k = torch.tensor([[0.5], [3.0]], dtype=F64)

    def fn(y0):
        sol = tn.solve(
            tn.ODETerm(lambda t, y, args: -args * y * y),
            solver_cls(),
            0.0,
            torch.tensor([0.5, 1.0], dtype=F64),
            y0,
            k,
            controller=tn.PIDController(rtol=1e-6, atol=1e-8, per_sample=True),
            saveat=tn.SaveAt(ts=torch.tensor([[0.2, 0.5], [0.4, 1.0]], dtype=F64), t1=True),
        )
        return sol.ys

    y0 = torch.tensor([[1.0, 0.5], [-0.3, 0.8]], dtype=F64, requires_grad=True)
    assert gradcheck(fn, (y0,), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradcheck_through_a_tuple_state():
    def fn(x0, v0):
        sol = tn.solve(
            tn.ODETerm(lambda t, y, args: (y[1], -torch.sin(y[0]))),
            tn.Tsit5(),
            0.0,
            1.0,
            (x0, v0),
            controller=tn.PIDController(rtol=1e-6, atol=1e-8),
            saveat=tn.SaveAt(ts=_ts(0.5, 1.0)),
        )
        return sol.ys

    x0 = torch.tensor([0.3, 1.0], dtype=F64, requires_grad=True)
    v0 = torch.tensor([0.0, -0.5], dtype=F64, requires_grad=True)
    assert gradcheck(fn, (x0, v0), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradcheck_through_dense_output():
    def fn(y0):
        sol = tn.solve(
            tn.ODETerm(lambda t, y, args: -y + torch.sin(3 * t)),
            tn.Dopri5(),
            0.0,
            1.0,
            y0,
            controller=tn.PIDController(rtol=1e-6, atol=1e-8),
            saveat=tn.SaveAt(dense=True),
        )
        return sol.evaluate(torch.tensor([0.13, 0.5, 0.91], dtype=F64))

    assert gradcheck(fn, (_y0(),), eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("method", ["rk4", "euler", "dopri5", "tsit5"])
def test_gradcheck_of_odeint_output(method):
    def fn(y0, k):
        return tn.odeint(
            lambda t, y: -k * y + torch.cos(t),
            y0,
            torch.tensor([0.0, 0.3, 0.8], dtype=F64),
            method=method,
            rtol=1e-6,
            atol=1e-8,
            options={"step_size": 0.1} if method in ("rk4", "euler") else None,
        )

    k = torch.tensor(1.5, dtype=F64, requires_grad=True)
    assert gradcheck(fn, (_y0(), k), eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("solver_cls", FIXED, ids=lambda c: c.__name__)
def test_gradgradcheck_through_a_fixed_step_solve(solver_cls):
    def fn(y0, k):
        sol = tn.solve(
            tn.ODETerm(lambda t, y, args: -args * y * y + torch.sin(t)),
            solver_cls(),
            0.0,
            0.5,
            y0,
            k,
            dt0=0.1,
            saveat=tn.SaveAt(ts=_ts(0.2, 0.5)),
        )
        return sol.ys

    k = torch.tensor(0.7, dtype=F64, requires_grad=True)
    assert gradgradcheck(fn, (_y0(), k), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_no_grad_solve_records_nothing():
    y0 = _y0()
    with torch.no_grad():
        sol = tn.solve(tn.ODETerm(lambda t, y, args: -y), tn.Tsit5(), 0.0, 1.0, y0)
    assert not sol.ys.requires_grad


def test_steps_chosen_without_gradients_give_the_gradient_on_the_fixed_mesh():
    # With differentiate_steps=False the gradient is that of a solve on the same mesh held
    # fixed: replaying the accepted step times as step_ts must reproduce it to round-off.
    w = torch.tensor([[0.3, -1.2], [0.8, 0.1]], dtype=F64, requires_grad=True)
    y0 = torch.tensor([[1.0, 0.5], [-0.3, 2.0]], dtype=F64)

    def field(t, y, args):
        return torch.tanh(y @ w) * torch.cos(3 * t)

    ctrl = tn.PIDController(rtol=1e-6, atol=1e-8, differentiate_steps=False)
    sol = tn.solve(tn.ODETerm(field), tn.Dopri5(), 0.0, 2.0, y0, controller=ctrl,
                   saveat=tn.SaveAt(steps=True))  # fmt: skip
    mesh = sol.ts.detach()
    assert len(mesh) > 5
    (g_adaptive,) = torch.autograd.grad(sol.ys[-1].pow(2).sum(), w)
    fixed = tn.ConstantStepSize(step_ts=mesh)
    sol_fixed = tn.solve(tn.ODETerm(field), tn.Dopri5(), 0.0, 2.0, y0, dt0=4.0, controller=fixed)
    torch.testing.assert_close(sol_fixed.ys[-1], sol.ys[-1], rtol=1e-13, atol=1e-13)
    (g_fixed,) = torch.autograd.grad(sol_fixed.ys[-1].pow(2).sum(), w)
    torch.testing.assert_close(g_adaptive, g_fixed, rtol=1e-12, atol=1e-13)
    # The default also differentiates the step sizes: a different (exact) derivative. (The
    # same steps: the solve above took them with the control on the host, this one in the
    # general loop, so the values agree to the rounding of the control arithmetic.)
    ctrl_default = tn.PIDController(rtol=1e-6, atol=1e-8)
    sol_default = tn.solve(tn.ODETerm(field), tn.Dopri5(), 0.0, 2.0, y0, controller=ctrl_default)
    assert sol_default.stats == sol.stats
    torch.testing.assert_close(sol_default.ys[-1], sol.ys[-1], rtol=1e-13, atol=1e-14)
    (g_default,) = torch.autograd.grad(sol_default.ys[-1].pow(2).sum(), w)
    assert not torch.allclose(g_default, g_fixed, rtol=1e-12, atol=1e-13)
    with pytest.raises(TypeError, match="differentiate_steps"):
        tn.PIDController(differentiate_steps="no")  # type: ignore[arg-type]


@pytest.mark.parametrize("solver_cls", [tn.Dopri5, tn.Tsit5, tn.Bosh3])
@pytest.mark.parametrize("record", ["state", "late"], ids=["y0-requires-grad", "field-late"])
def test_gradients_whether_the_first_stage_records_a_graph_or_not(solver_cls, record):
    # The engine's step keeps its increments as a list when the first stage records a graph
    # and writes them into K otherwise (a solve under grad mode that needs none); a field
    # whose parameter enters only after the first evaluation (a Python branch on t) takes
    # the second route with later stages that do record one. Both against gradcheck
    # (float64 central differences) on a fixed grid.
    torch.manual_seed(0)
    y0 = torch.randn(3, 2, dtype=F64, requires_grad=record == "state")
    W = torch.randn(2, 2, dtype=F64, requires_grad=True)

    def loss(W: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
        def f(t, y, args):
            return torch.tanh(y @ W) if float(t) > 0.01 else -y

        ctrl, saveat = tn.ConstantStepSize(), tn.SaveAt(ts=[0.25, 0.5])
        term = tn.ODETerm(f)
        return tn.solve(
            term, solver_cls(), 0.0, 0.5, y0, dt0=0.05, controller=ctrl, saveat=saveat
        ).ys

    inputs = (W, y0) if record == "state" else (W,)
    fn = loss if record == "state" else (lambda W: loss(W, y0))
    assert gradcheck(fn, inputs, eps=1e-6, atol=1e-8, rtol=1e-6)
