"""Stiff solvers: order conditions, convergence, stiff references, Newton failure, gradients,
batching, AutoSwitch.

* ESDIRK tableaux satisfy the Runge–Kutta order conditions (every rooted tree, full stage
  matrix) of their declared order, their embedded solutions those of the order below.
* Every solver's global error falls at its declared order (log-log slope within 0.3) with
  constant steps, on a nonlinear non-autonomous problem with a closed-form solution.
* Robertson (to t = 1e5), Van der Pol (mu = 1000) and HIRES match SciPy's Radau at
  rtol = 1e-10 within step and Jacobian budgets, where Dopri5 runs out of steps.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

import catalogue
import torchnde as tn
from problems.stiff import CONV_T as T
from problems.stiff import STIFF, conv_exact, conv_vf, radau_reference
from test_tableaux import density, stage_weights, trees

# From the central catalogue (tests/catalogue.py).
ESDIRK = catalogue.classes(catalogue.Kind.IMPLICIT, "esdirk")
ROSENBROCK = catalogue.classes(catalogue.Kind.IMPLICIT, "rosenbrock")
SOLVERS = ESDIRK + ROSENBROCK


SLOW = pytest.mark.slow  # more than ~3 s each on 2 cores


def _ids(c: type) -> str:
    return c.__name__


# --- order conditions -------------------------------------------------------------------------


def _max_residual(a: np.ndarray, b: np.ndarray, order: int) -> float:
    return max(abs(float(b @ stage_weights(t, a)) - 1.0 / density(t)) for t in trees(order))


@pytest.mark.parametrize("solver_cls", ESDIRK, ids=_ids)
def test_esdirk_tableau_order_conditions(solver_cls: type) -> None:
    tab = solver_cls.tableau
    a = np.array(tab.full_a())
    b = np.array(tab.b)
    be = np.array(tab.b_embedded)
    assert np.allclose(a.sum(1), tab.c, atol=1e-12)
    for q in range(1, tab.order + 1):
        assert _max_residual(a, b, q) < 1e-10, (solver_cls.__name__, q)
    # The method has exactly its order: some condition of the next order fails.
    assert _max_residual(a, b, tab.order + 1) > 1e-6
    # The embedded solution has order error_order - 1.
    for q in range(1, tab.error_order):
        assert _max_residual(a, be, q) < 1e-10, (solver_cls.__name__, "embedded", q)


def _stability_function(a: np.ndarray, b: np.ndarray, z: complex) -> complex:
    """R(z) = 1 + z b^T (I - zA)^{-1} 1."""
    return complex(1 + z * b @ np.linalg.solve(np.eye(len(b)) - z * a, np.ones(len(b))))


@pytest.mark.parametrize(
    "solver_cls", [tn.ImplicitEuler, tn.Kvaerno3, tn.Kvaerno4, tn.Kvaerno5], ids=_ids
)
def test_esdirk_methods_are_l_stable(solver_cls: type) -> None:
    # R vanishes at z -> -inf (L-stability) and |R| <= 1 at samples of the left half-plane.
    tab = solver_cls.tableau
    a, b = np.array(tab.full_a()), np.array(tab.b)
    assert abs(_stability_function(a, b, -1e9)) < 1e-6
    for z in (-0.5, -3.0, -50.0, -1 + 5j, -0.01 + 40j):
        assert abs(_stability_function(a, b, z)) <= 1 + 1e-12, z


# --- convergence ------------------------------------------------------------------------------


CONV_STEPS = {
    tn.ImplicitEuler: 128,
    tn.Trapezoid: 16,
    tn.Kvaerno3: 16,
    tn.Kvaerno4: 8,
    tn.Kvaerno5: 8,
    tn.Ros3p: 16,
    tn.Rodas4: 32,
    tn.Rodas5: 24,
}


@pytest.mark.parametrize("solver_cls", SOLVERS, ids=_ids)
def test_global_error_order(solver_cls: type) -> None:
    n0 = CONV_STEPS[solver_cls]
    errs, hs = [], []
    for n in (n0, 2 * n0, 4 * n0):
        sol = tn.solve(
            tn.ODETerm(conv_vf), _tight(solver_cls), 0.0, T,
            torch.tensor([1.0, 1.0], dtype=torch.float64), dt0=T / n,
            controller=tn.ConstantStepSize(),
        )  # fmt: skip
        errs.append(float(np.abs(sol.ys[-1].numpy() - conv_exact(T)).max()))
        hs.append(T / n)
    errs_a = np.array(errs)
    assert errs_a.min() > 1e-12 and errs_a.max() < 0.1, errs_a
    slope = float(np.polyfit(np.log(hs), np.log(errs_a), 1)[0])
    assert abs(slope - solver_cls.order) <= 0.3, (solver_cls.__name__, slope, errs_a)


@pytest.mark.parametrize("solver_cls", [tn.Kvaerno5, tn.Rodas5], ids=_ids)
def test_dense_output_is_third_order_hermite(solver_cls: type) -> None:
    # Off-grid dense output error shrinks like h^4 locally (cubic Hermite), h^3+ globally.
    errs = []
    for n in (16, 32):
        sol = tn.solve(
            tn.ODETerm(conv_vf), solver_cls(), 0.0, T,
            torch.tensor([1.0, 1.0], dtype=torch.float64), dt0=T / n,
            controller=tn.ConstantStepSize(), saveat=tn.SaveAt(dense=True),
        )  # fmt: skip
        tq = (np.arange(n) + 0.37) * T / n
        ys = sol.evaluate(torch.tensor(tq)).numpy()
        errs.append(max(np.abs(ys[i] - conv_exact(t)).max() for i, t in enumerate(tq)))
    assert math.log2(errs[0] / errs[1]) > 3.5, errs


# --- stiff references -------------------------------------------------------------------------

# (problem, rtol, atol, error bound vs Radau, step budget, Jacobian budget)
STIFF_CASES = [
    ("robertson", 1e-6, 1e-10, 1e-5, 200, 200),
    ("vdp1000", 1e-6, 1e-6, 2e-3, 400, 400),
    ("hires", 1e-6, 1e-10, 1e-5, 250, 250),
]


def _stiff_solve(name, solver, rtol, atol, max_steps=100000):
    p = STIFF[name]
    return tn.solve(
        tn.ODETerm(lambda t, y, a: p.f(t, y)), solver, 0.0, p.t1,
        torch.tensor(p.y0, dtype=torch.float64),
        controller=tn.PIDController(rtol=rtol, atol=atol), max_steps=max_steps, throw=False,
    )  # fmt: skip


@pytest.mark.slow  # six stiff reference solves against Radau: about 10 s
@pytest.mark.parametrize("case", STIFF_CASES, ids=lambda c: c[0])
@pytest.mark.parametrize("solver_cls", [tn.Rodas5, tn.Kvaerno5], ids=_ids)
def test_stiff_reference_within_budget(case, solver_cls) -> None:
    name, rtol, atol, bound, steps, jacs = case
    sol = _stiff_solve(name, solver_cls(jacobian="finite_difference"), rtol, atol)
    assert int(sol.status) == tn.Status.SUCCESSFUL
    ref = radau_reference(name)
    # Componentwise: relative error `bound`, absolute floor ten times the solve's atol.
    assert np.allclose(sol.ys[-1].numpy(), ref, rtol=bound, atol=10 * atol), (
        sol.ys[-1].numpy(),
        ref,
    )
    assert sol.stats["num_steps"] <= steps, sol.stats
    assert sol.stats["num_jacobians"] <= jacs, sol.stats


@pytest.mark.slow  # 2000 Dopri5 steps on each problem: about 5 s
@pytest.mark.parametrize("name", ["robertson", "vdp1000", "hires"])
def test_explicit_solver_runs_out_of_steps_on_stiff_problems(name: str) -> None:
    case = next(c for c in STIFF_CASES if c[0] == name)
    sol = _stiff_solve(name, tn.Dopri5(), case[1], case[2], max_steps=2000)
    assert int(sol.status) == tn.Status.MAX_STEPS_REACHED


def test_user_jacobian_matches_autograd_and_checks_shape() -> None:
    p = STIFF["robertson"]

    def jac(t, y, args):
        return torch.as_tensor(p.jac(float(t), y.detach().numpy()))

    a = _stiff_solve("robertson", tn.Rodas5(jacobian=jac), 1e-6, 1e-10)
    b = _stiff_solve("robertson", tn.Rodas5(), 1e-6, 1e-10)
    assert torch.allclose(a.ys, b.ys, rtol=1e-9, atol=1e-14)
    with pytest.raises(ValueError, match="jacobian"):
        _stiff_solve("robertson", tn.Rodas5(jacobian=lambda t, y, a: torch.eye(2)), 1e-6, 1e-10)
    with pytest.raises(ValueError, match="jacobian"):
        tn.Kvaerno5(jacobian="numerical")


# --- Newton failure ---------------------------------------------------------------------------


def test_newton_failure_rejects_then_raises_solve_error() -> None:
    # One Newton iteration at a tolerance it cannot meet: every step fails and is rejected
    # and shrunk (factor 0.2 each time), until the step falls below dtmin.
    solver = tn.Kvaerno3(max_newton_iters=1, newton_rtol=1e-30, newton_atol=1e-30)
    term = tn.ODETerm(lambda t, y, a: -y * y)
    y0 = torch.tensor([1.0], dtype=torch.float64)
    ctrl = tn.PIDController(dtmin=1e-4)
    sol = tn.solve(term, solver, 0.0, 1.0, y0, dt0=0.1, controller=ctrl, throw=False)
    assert int(sol.status) == tn.Status.DT_UNDERFLOW
    assert sol.stats["num_accepted_steps"] == 0 and sol.stats["num_rejected_steps"] >= 4
    with pytest.raises(tn.SolveError, match="Newton"):
        tn.solve(term, solver, 0.0, 1.0, y0, dt0=0.1, controller=ctrl)
    # Fixed steps cannot shrink: the failed step is NaN, reported as NONFINITE.
    fixed = tn.solve(
        term, solver, 0.0, 1.0, y0, dt0=0.1, controller=tn.ConstantStepSize(), throw=False
    )
    assert int(fixed.status) == tn.Status.NONFINITE


def test_stale_jacobian_failure_is_retried_not_rejected() -> None:
    # Robertson changes its Jacobian by orders of magnitude; the solve recomputes Jacobians
    # only some of the time (reuse) and still succeeds.
    sol = _stiff_solve("robertson", tn.Kvaerno5(), 1e-6, 1e-10)
    assert int(sol.status) == tn.Status.SUCCESSFUL
    assert sol.stats["num_jacobians"] < sol.stats["num_steps"] / 2
    assert sol.stats["num_lu_factorisations"] < sol.stats["num_steps"]


# --- gradients --------------------------------------------------------------------------------


def _grad_field(t, y, args):
    k, A = args
    return -k * y * y.abs() + y @ A.T + torch.sin(t)


def _grad_inputs():
    y0 = torch.tensor([[0.5, -0.3], [0.2, 0.7]], dtype=torch.float64, requires_grad=True)
    k = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    A = torch.tensor([[-20.0, 1.0], [-1.0, -3.0]], dtype=torch.float64, requires_grad=True)
    return y0, k, A


def _tight(cls: type) -> tn.AbstractSolver:
    # Finite differences need the forward map smooth to well below their step: tight Newton.
    tight = {"newton_rtol": 1e-13, "newton_atol": 1e-13, "max_newton_iters": 40}
    return cls(**tight) if cls in ESDIRK else cls()


@pytest.mark.parametrize("solver_cls", SOLVERS, ids=_ids)
def test_gradcheck_direct_fixed_steps(solver_cls: type) -> None:
    def fn(y0, k, A):
        return tn.solve(
            tn.ODETerm(_grad_field), _tight(solver_cls), 0.0, 0.6, y0, (k, A), dt0=0.2,
            controller=tn.ConstantStepSize(), saveat=tn.SaveAt(ts=[0.2, 0.6]),
        ).ys  # fmt: skip

    assert gradcheck(fn, _grad_inputs(), eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=True)


@pytest.mark.parametrize(
    "adjoint",
    [tn.DirectAdjoint(), tn.CheckpointAdjoint(), pytest.param(tn.BacksolveAdjoint(), marks=SLOW)],
    ids=repr,
)
@pytest.mark.parametrize("solver_cls", [tn.Kvaerno5, tn.Rodas4], ids=_ids)
def test_gradcheck_adaptive_every_adjoint(solver_cls: type, adjoint) -> None:
    tol = 1e-9 if isinstance(adjoint, tn.BacksolveAdjoint) else 1e-4

    def fn(y0, k, A):
        return tn.solve(
            tn.ODETerm(_grad_field), _tight(solver_cls), 0.0, 0.5, y0, (k, A),
            controller=tn.PIDController(rtol=tol, atol=tol), saveat=tn.SaveAt(ts=[0.5]),
            adjoint=adjoint,
        ).ys  # fmt: skip

    assert gradcheck(fn, _grad_inputs(), eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


def test_implicit_gradient_does_not_unroll_newton() -> None:
    # The graph of one implicit stage holds one vector-field evaluation (the residual at the
    # converged point), however many Newton iterations the forward made.
    calls = {"n": 0}

    def f(t, y, args):
        if torch.is_grad_enabled() and args.requires_grad:
            calls["n"] += 1
        return -args * y**3

    p = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([1.0], dtype=torch.float64)
    solver = tn.ImplicitEuler(
        jacobian="finite_difference", newton_rtol=1e-13, newton_atol=1e-13, max_newton_iters=40
    )
    sol = tn.solve(
        tn.ODETerm(f), solver, 0.0, 0.5, y0, p, dt0=0.5, controller=tn.ConstantStepSize()
    )
    # init + one residual for the one implicit stage (Newton itself runs without a graph).
    assert calls["n"] == 2
    (g,) = torch.autograd.grad(sol.ys[-1].sum(), p)
    # y1 = y0 - h p y1^3  =>  dy1/dp = -h y1^3 / (1 + 3 h p y1^2)
    y1 = sol.ys[-1].detach()
    expect = -0.5 * y1**3 / (1 + 3 * 0.5 * 2.0 * y1**2)
    assert torch.allclose(g, expect.sum(), rtol=1e-10)


# --- batching ---------------------------------------------------------------------------------


@pytest.mark.parametrize("solver_cls", [tn.Kvaerno5, tn.Rodas5, tn.AutoSwitch], ids=_ids)
def test_per_sample_batch_equals_each_sample_alone(solver_cls: type) -> None:
    # Robertson with a per-sample rate constant k3 (1e5 .. 3e7): different stiffness.
    def f(t, y, k3):
        y1, y2, y3 = y[..., 0], y[..., 1], y[..., 2]
        r = k3 * y2 * y2
        return torch.stack([-0.04 * y1 + 1e4 * y2 * y3, 0.04 * y1 - 1e4 * y2 * y3 - r, r], -1)

    k3 = torch.tensor([3e7, 1e6, 1e5], dtype=torch.float64)
    y0 = torch.tensor([[1.0, 0.0, 0.0]] * 3, dtype=torch.float64)
    ctrl = tn.PIDController(rtol=1e-5, atol=1e-9, per_sample=True)
    both = tn.solve(tn.ODETerm(f), solver_cls(), 0.0, 40.0, y0, k3,
                    controller=ctrl, saveat=tn.SaveAt(ts=[10.0, 40.0]))  # fmt: skip
    for i in range(3):
        one = tn.solve(
            tn.ODETerm(f), solver_cls(), 0.0, 40.0,
            y0[i : i + 1], k3[i : i + 1], controller=ctrl, saveat=tn.SaveAt(ts=[10.0, 40.0]),
        )  # fmt: skip
        assert torch.allclose(both.ys[:, i], one.ys[:, 0], rtol=1e-12, atol=1e-16)
        assert int(both.stats["num_accepted_steps"][i]) == int(one.stats["num_accepted_steps"][0])


# --- AutoSwitch -------------------------------------------------------------------------------


def test_autoswitch_switches_to_stiff_on_robertson_and_is_correct() -> None:
    sol = _stiff_solve("robertson", tn.AutoSwitch(tn.Tsit5(), tn.Rodas5()), 1e-6, 1e-10)
    assert int(sol.status) == tn.Status.SUCCESSFUL
    assert sol.stats["num_stiff_switches"] >= 1
    assert np.allclose(sol.ys[-1].numpy(), radau_reference("robertson"), rtol=1e-5, atol=1e-9)
    # Far fewer steps than an explicit solver needs (which runs out of 2000).
    assert sol.stats["num_steps"] < 400


def test_autoswitch_stays_explicit_on_a_nonstiff_problem() -> None:
    sol = tn.solve(
        tn.ODETerm(conv_vf), tn.AutoSwitch(), 0.0, T,
        torch.tensor([1.0, 1.0], dtype=torch.float64),
        controller=tn.PIDController(rtol=1e-8, atol=1e-8),
    )  # fmt: skip
    assert sol.stats["num_stiff_switches"] == 0
    assert "num_jacobians" not in sol.stats
    assert np.allclose(sol.ys[-1].numpy(), conv_exact(T), rtol=1e-6)


def test_autoswitch_switches_back_when_stiffness_ends() -> None:
    # y' = -lam(t) (y - cos t) - sin t with lam = 1 + 1e4 e^{-20 t}: the solution is cos t
    # throughout; stiff at first, non-stiff once lam has decayed.
    def f(t, y, a):
        lam = 1 + 1e4 * torch.exp(-20 * t)
        return -lam * (y - torch.cos(t)) - torch.sin(t)

    sol = tn.solve(
        tn.ODETerm(f), tn.AutoSwitch(), 0.0, 20.0, torch.tensor([1.0], dtype=torch.float64),
        controller=tn.PIDController(rtol=1e-6, atol=1e-8), saveat=tn.SaveAt(ts=[0.2, 20.0]),
    )  # fmt: skip
    assert sol.stats["num_stiff_switches"] >= 1 and sol.stats["num_nonstiff_switches"] >= 1
    assert np.allclose(sol.ys[:, 0].numpy(), np.cos([0.2, 20.0]), atol=1e-5)


def test_autoswitch_rejects_unsuitable_methods() -> None:
    with pytest.raises(TypeError, match="nonstiff"):
        tn.AutoSwitch(tn.Euler(), tn.Rodas5())
    with pytest.raises(ValueError, match="last two stages"):
        tn.AutoSwitch(tn.Bosh3(), tn.Rodas5())
    with pytest.raises(TypeError, match="stiff"):
        tn.AutoSwitch(tn.Tsit5(), tn.Dopri5())


# --- convenience ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method",
    ["implicit_euler", "trapezoid", "kvaerno3", "kvaerno4", "kvaerno5", "ros3p", "rodas4",
     "rodas5", "radau5", "auto_switch"],
)  # fmt: skip
def test_odeint_method_strings(method: str) -> None:
    t = torch.linspace(0, 1, 3, dtype=torch.float64)
    ys = tn.odeint(lambda t, y: -50 * (y - torch.cos(t)), torch.ones(2, dtype=torch.float64), t,
                   method=method, rtol=1e-6, atol=1e-8)  # fmt: skip
    exact = (2500 * np.cos(1) + 50 * np.sin(1) + np.exp(-50)) / 2501
    tol = 3e-3 if method in ("implicit_euler", "trapezoid") else 1e-4
    assert abs(float(ys[-1, 0]) - exact) < tol


def test_per_sample_needs_blocks() -> None:
    with pytest.raises(ValueError, match="jacobian_blocks"):
        tn.solve(
            tn.ODETerm(lambda t, y, a: -y), tn.Kvaerno3(jacobian_blocks=False), 0.0, 1.0,
            torch.ones(2, 1, dtype=torch.float64),
            controller=tn.PIDController(per_sample=True),
        )  # fmt: skip


def test_gradcheck_autoswitch() -> None:
    def fn(y0, k, A):
        return tn.solve(
            tn.ODETerm(_grad_field), tn.AutoSwitch(switch_after=2), 0.0, 0.5, y0, (k, A),
            controller=tn.PIDController(rtol=1e-4, atol=1e-4), saveat=tn.SaveAt(ts=[0.5]),
        ).ys  # fmt: skip

    assert gradcheck(fn, _grad_inputs(), eps=1e-6, atol=1e-5, rtol=1e-4)
