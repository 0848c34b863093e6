"""Adams–Bashforth–Moulton methods: FixedAdams (fixed order, fixed step) and Adams (variable
step, variable order).

* FixedAdams converges at its declared order (log-log slope of the global error on DETEST B5,
  whose solution is a triple of Jacobi elliptic functions), for every order 1..8, as
  predictor-corrector and as the explicit Adams–Bashforth method; its dense output too.
* Adams meets its tolerance against SciPy's DOP853 at 3e-14 on reference problems, with
  fewer vector-field evaluations than Dopri5 on a smooth problem.
* Gradients: gradcheck in float64 with DirectAdjoint, CheckpointAdjoint and
  BacksolveAdjoint, and agreement with the analytic derivative of a linear oscillator.
* Per-sample stepping gives each sample the result of its own solve.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

import torchnde as tn
from problems.reference import get

F64 = torch.float64
SLOPE_TOL = 0.3
_B5 = get("B5")
T = 10.0


def _b5(t, y, args):
    return _B5.f(t, y)


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


# Smallest number of steps of each sweep (then 2x and 4x) over [0, 10], inside the
# asymptotic range (errors between about 1e-12 and 1e-2).
STEPS = {1: 128, 2: 128, 3: 64, 4: 64, 5: 64, 6: 128, 7: 160, 8: 128}


@functools.cache
def _fixed_sweep(order: int, iters: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ns = [STEPS[order] * m for m in (1, 2, 4)]
    errs, dense_errs = [], []
    for n in ns:
        h = T / n
        sol = tn.solve(
            tn.ODETerm(_b5),
            tn.FixedAdams(order=order, corrector_iterations=iters),
            0.0,
            T,
            _B5.y0_tensor(),
            dt0=h,
            saveat=tn.SaveAt(steps=True, dense=True),
        )
        assert sol.stats["num_steps"] == n
        errs.append(float(np.abs(sol.ys.numpy() - _B5.exact(sol.ts.numpy())).max()))
        # Off-grid points in 40 steps spread over the interval.
        tq = (np.arange(0, n, n // 40) + 0.37) * h
        dense = sol.evaluate(torch.tensor(tq, dtype=F64)).numpy()
        dense_errs.append(float(np.abs(dense - _B5.exact(tq)).max()))
    return np.array([T / n for n in ns]), np.array(errs), np.array(dense_errs)


@pytest.mark.parametrize("order", range(1, 9))
def test_fixed_adams_pece_converges_at_its_order(order: int) -> None:
    hs, errs, _ = _fixed_sweep(order, 1)
    assert errs.min() > 1e-13 and errs.max() < 0.5, errs
    assert abs(_slope(hs, errs) - order) <= SLOPE_TOL, (order, errs)


@pytest.mark.parametrize("order", [1, 2, 4, 6])
def test_fixed_adams_bashforth_converges_at_its_order(order: int) -> None:
    hs, errs, _ = _fixed_sweep(order, 0)
    assert errs.min() > 1e-13 and errs.max() < 0.5, errs
    assert abs(_slope(hs, errs) - order) <= SLOPE_TOL, (order, errs)


@pytest.mark.parametrize("order", [2, 4, 6])
def test_fixed_adams_dense_output_converges_at_its_order(order: int) -> None:
    hs, _, dense = _fixed_sweep(order, 1)
    assert abs(_slope(hs, dense) - order) <= SLOPE_TOL, (order, dense)


def test_fixed_adams_costs_iterations_plus_one_evaluation_per_step() -> None:
    calls = []

    def f(t, y, args):
        calls.append(1)
        return -y

    for iters in (0, 1, 3):
        calls.clear()
        sol = tn.solve(
            tn.ODETerm(f),
            tn.FixedAdams(order=3, corrector_iterations=iters),
            0.0,
            1.0,
            torch.ones(2, dtype=F64),
            dt0=0.05,
        )
        # init 1; two RK4 start-up steps of 4; then (iters + 1) per step.
        expected = 1 + 2 * 4 + 18 * (iters + 1)
        assert len(calls) == expected == sol.stats["num_fevals"]


def test_fixed_adams_keeps_its_order_on_a_nonuniform_grid() -> None:
    # Every step clipped to a smoothly graded grid (steps varying by a factor of about 2.6):
    # the variable-coefficient formulas keep order 4.
    errs, hs = [], []
    for n in (256, 512, 1024):
        u = np.linspace(0, 1, n + 1)[1:]
        grid = torch.tensor(T * (u + 0.2 * np.sin(2 * np.pi * u)), dtype=F64)
        sol = tn.solve(
            tn.ODETerm(_b5),
            tn.FixedAdams(order=4),
            0.0,
            T,
            _B5.y0_tensor(),
            dt0=T,
            controller=tn.ConstantStepSize(step_ts=grid),
        )
        assert sol.stats["num_steps"] == n
        errs.append(float(np.abs(sol.ys[-1].numpy() - _B5.exact(np.array([T]))[0]).max()))
        hs.append(T / n)
    assert abs(_slope(np.array(hs), np.array(errs)) - 4) <= SLOPE_TOL, errs


def test_variable_step_formulas_integrate_polynomials_exactly() -> None:
    # y' = t^(p-1) on a random grid: Adams–Bashforth/Moulton of order p (and the RK4 start)
    # integrate it exactly, whatever the steps.
    grid = np.append(np.sort(np.random.default_rng(1).uniform(0, 2, 20)), 2.0)
    for order in (1, 2, 3, 4):
        for iters in (0, 1):
            sol = tn.solve(
                tn.ODETerm(lambda t, y, a, q=order - 1: (t**q) * torch.ones_like(y)),
                tn.FixedAdams(order=order, corrector_iterations=iters),
                0.0,
                2.0,
                torch.zeros(1, dtype=F64),
                dt0=2.0,
                controller=tn.ConstantStepSize(step_ts=torch.tensor(grid)),
                saveat=tn.SaveAt(steps=True),
            )
            exact = sol.ts**order / order
            assert (sol.ys[:, 0] - exact).abs().max() < 1e-13, (order, iters)


# --------------------------------------------------------------------------- adaptive


def _error(name: str, sol: tn.Solution) -> float:
    p = get(name)
    ref = p.reference()
    return float((np.abs(sol.ys.numpy() - ref) / (1 + np.abs(ref))).max())


def _adaptive(name: str, solver: tn.AbstractSolver, tol: float) -> tn.Solution:
    p = get(name)
    return tn.solve(
        tn.ODETerm(p.vector_field()),
        solver,
        p.t0,
        p.t1,
        p.y0_tensor(),
        saveat=tn.SaveAt(ts=p.ts_tensor()),
        controller=tn.PIDController(rtol=tol, atol=tol),
    )


# Allowed global error as a multiple of the tolerance: the same factors as
# test_reference_problems.py uses for the Runge–Kutta methods.
@pytest.mark.parametrize("name, factor", [("A3", 100), ("B5", 300), ("C1", 100), ("A4", 100)])
def test_adams_meets_tolerance_against_scipy(name: str, factor: float) -> None:
    errs = []
    for tol in (1e-5, 1e-8):
        errs.append(_error(name, _adaptive(name, tn.Adams(), tol)))
        assert errs[-1] <= factor * tol, (name, tol, errs)
    # Tolerance proportionality: 1000x tighter tolerance, at least 30x smaller error.
    assert errs[1] <= errs[0] / 30, errs


def test_adams_needs_fewer_evaluations_than_dopri5_on_a_smooth_problem() -> None:
    tol = 1e-8
    adams = _adaptive("B5", tn.Adams(), tol)
    dopri = _adaptive("B5", tn.Dopri5(), tol)
    assert _error("B5", adams) <= 300 * tol
    # Measured: about 350 against 1000.
    assert adams.stats["num_fevals"] < 0.5 * dopri.stats["num_fevals"]


def test_adams_raises_its_order_on_a_smooth_problem() -> None:
    # The order is in the carried state; a loop run shows how high it went.
    p = get("B5")
    term = tn.ODETerm(p.vector_field())
    controller = tn.PIDController(rtol=1e-10, atol=1e-10)
    from torchnde._core.loop import Loop

    solver = tn.Adams()
    loop = Loop(
        term,
        solver,
        controller.prepare(1.0, F64, torch.device("cpu")),
        torch.tensor(0.0, dtype=F64),
        torch.tensor(5.0, dtype=F64),
        None,
        None,
        None,
        ts=None,
        save_steps=False,
        save_dense=False,
        event=None,
        max_steps=10_000,
        progress=None,
        to_user_time=lambda t: t,
    )
    st, host, _, _ = loop.init(p.y0_tensor())
    orders = []
    while host.keep_going:
        st, host, _, _ = loop.body(st, host)
        orders.append(int(st.fstate[4]))
    assert orders[0] <= 2 and max(orders) >= 8, orders


def test_adams_dense_output_and_reverse_time() -> None:
    def rot(t, y, args):
        return torch.stack([y[1], -y[0]])

    sol = tn.solve(
        tn.ODETerm(rot),
        tn.Adams(),
        0.0,
        -6.0,
        torch.tensor([1.0, 0.0], dtype=F64),
        controller=tn.PIDController(rtol=1e-10, atol=1e-10),
        saveat=tn.SaveAt(ts=[-1.0, -6.0], dense=True),
    )
    for t in (-1.0, -6.0):
        exact = torch.tensor([math.cos(t), -math.sin(t)], dtype=F64)
        assert (sol.ys[0 if t == -1.0 else 1] - exact).abs().max() < 1e-8
    tq = torch.linspace(-5.9, -0.1, 37, dtype=F64)
    exact = torch.stack([torch.cos(tq), -torch.sin(tq)], -1)
    assert (sol.evaluate(tq) - exact).abs().max() < 1e-8


def test_adams_with_low_max_order_still_meets_tolerance() -> None:
    sol = _adaptive("A4", tn.Adams(max_order=2), 1e-6)
    assert _error("A4", sol) < 100 * 1e-6


# --------------------------------------------------------------------------- batching


def _forced(t, y, args):
    tt = t.reshape(t.shape + (1,) * (y.ndim - t.ndim)) if t.ndim else t
    return -args * y + torch.sin(tt)


Y0 = torch.tensor([[1.0, -0.5], [2.0, 0.3], [0.1, 4.0]], dtype=F64)
RATES = torch.tensor([[0.5], [3.0], [20.0]], dtype=F64)


@pytest.mark.parametrize(
    "solver, controller, dt0",
    [
        (tn.Adams(), tn.PIDController(rtol=1e-7, atol=1e-9, per_sample=True), None),
        (tn.FixedAdams(order=5), tn.ConstantStepSize(per_sample=True), 0.01),
    ],
    ids=["Adams", "FixedAdams"],
)
def test_per_sample_equals_separate_solves(solver, controller, dt0) -> None:
    kw = dict(controller=controller, dt0=dt0, saveat=tn.SaveAt(ts=[0.3, 0.8, 1.5]))
    t0 = torch.tensor([0.0, 0.1, 0.2], dtype=F64)
    batch = tn.solve(tn.ODETerm(_forced), solver, t0, 1.5, Y0, RATES, **kw)
    for i in range(3):
        alone = tn.solve(
            tn.ODETerm(_forced), solver, t0[i : i + 1], 1.5, Y0[i : i + 1], RATES[i : i + 1], **kw
        )
        torch.testing.assert_close(batch.ys[:, i], alone.ys[:, 0], rtol=1e-13, atol=1e-13)
        for key in ("num_accepted_steps", "num_rejected_steps"):
            assert int(batch.stats[key][i]) == int(alone.stats[key][0])
    if isinstance(solver, tn.Adams):
        acc = batch.stats["num_accepted_steps"]
        assert acc[2] > 2 * acc[0]  # the stiffer sample really stepped on its own


def test_joint_batch_solve_of_a_tuple_state() -> None:
    def osc(t, y, args):
        x, v = y
        return v, -x

    sol = tn.solve(
        tn.ODETerm(osc),
        tn.Adams(),
        0.0,
        3.0,
        (torch.ones(4, dtype=F64), torch.zeros(4, dtype=F64)),
        controller=tn.PIDController(rtol=1e-10, atol=1e-10),
    )
    x, v = sol.ys
    assert (x[-1] - math.cos(3.0)).abs().max() < 1e-8
    assert (v[-1] + math.sin(3.0)).abs().max() < 1e-8


# --------------------------------------------------------------------------- gradients

ADJOINTS = [tn.DirectAdjoint(), tn.CheckpointAdjoint(), tn.BacksolveAdjoint()]


_FIXED4 = (tn.FixedAdams(order=4), dict(dt0=0.05))
_AB3 = (tn.FixedAdams(order=3, corrector_iterations=0), dict(dt0=0.05))
_ADAMS = (tn.Adams(), dict(controller=tn.PIDController(rtol=1e-9, atol=1e-9)))


@pytest.mark.parametrize(
    "solver, kw, adjoint",
    [
        (*_FIXED4, tn.DirectAdjoint()),
        (*_FIXED4, tn.CheckpointAdjoint()),
        (*_FIXED4, tn.BacksolveAdjoint()),
        (*_AB3, tn.DirectAdjoint()),
        (*_ADAMS, tn.DirectAdjoint()),
        (*_ADAMS, tn.CheckpointAdjoint()),
        (*_ADAMS, tn.BacksolveAdjoint()),
    ],
    ids=lambda x: type(x).__name__ if not isinstance(x, dict) else "",
)
def test_gradcheck(solver, kw, adjoint) -> None:
    w = torch.tensor([[-0.3, 1.0], [-1.0, -0.2]], dtype=F64, requires_grad=True)

    def fn(y0, w):
        field = lambda t, y, args: torch.tanh(y @ args.T)
        sol = tn.solve(
            tn.ODETerm(field),
            solver,
            0.0,
            0.5,
            y0,
            w,
            adjoint=adjoint,
            saveat=tn.SaveAt(ts=torch.tensor([0.2, 0.5], dtype=F64)),
            **kw,
        )
        return sol.ys

    y0 = torch.tensor([0.4, -0.3], dtype=F64, requires_grad=True)
    # Backsolve re-solves backwards: its gradient is exact only to the solve's accuracy.
    tol = 1e-5 if isinstance(adjoint, tn.BacksolveAdjoint) else 1e-7
    assert gradcheck(fn, (y0, w), eps=1e-6, atol=tol, rtol=1e-4)


@pytest.mark.parametrize("adjoint", ADJOINTS, ids=lambda a: type(a).__name__)
def test_adams_gradient_matches_the_analytic_derivative(adjoint) -> None:
    # x'' = -k x, x(0) = 1, x'(0) = 0: x(T) = cos(sqrt(k) T),
    # dx(T)/dk = -T sin(sqrt(k) T) / (2 sqrt(k)).
    k = torch.tensor(0.7, dtype=F64, requires_grad=True)
    T_end = 2.0
    sol = tn.solve(
        tn.ODETerm(lambda t, y, a: torch.stack([y[1], -a * y[0]])),
        tn.Adams(),
        0.0,
        T_end,
        torch.tensor([1.0, 0.0], dtype=F64),
        k,
        adjoint=adjoint,
        controller=tn.PIDController(rtol=1e-10, atol=1e-10),
    )
    (g,) = torch.autograd.grad(sol.ys[-1, 0], k)
    sk = math.sqrt(0.7)
    exact = -T_end * math.sin(sk * T_end) / (2 * sk)
    assert abs(float(g) - exact) < 1e-7 * 100


# --------------------------------------------------------------------------- interfaces


def test_method_names() -> None:
    y0 = torch.tensor([1.0], dtype=F64)
    t = torch.linspace(0, 1, 11, dtype=F64)
    for method in ("adams", "fixed_adams", "explicit_adams", "implicit_adams"):
        opts = None if method == "adams" else {"step_size": 0.01}
        ys = tn.odeint(lambda t, y: -y, y0, t, method=method, options=opts)
        assert (ys[:, 0] - torch.exp(-t)).abs().max() < 1e-6, method


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: tn.FixedAdams(order=9), ValueError, "`order` must be between 1 and 8"),
        (lambda: tn.FixedAdams(order=2.0), TypeError, "`order` must be an int"),
        (lambda: tn.FixedAdams(corrector_iterations=-1), ValueError, "corrector_iterations"),
        (lambda: tn.Adams(max_order=13), ValueError, "`max_order` must be between 1 and 12"),
    ],
)
def test_bad_arguments(make, error, match) -> None:
    with pytest.raises(error, match=match):
        make()


def test_fixed_adams_restarts_after_a_jump() -> None:
    # A vector field with a jump at t = 0.5: the history is reset there, so the method keeps
    # its order on each smooth piece (a multistep formula across the jump would not).
    def f(t, y, args):
        return torch.where(t <= 0.5, -y, 2 * y)

    def exact(t):
        return math.exp(-0.5) * math.exp(2 * (t - 0.5))

    errs, hs = [], [1 / 64, 1 / 128, 1 / 256]
    for h in hs:
        sol = tn.solve(
            tn.ODETerm(f),
            tn.FixedAdams(order=4),
            0.0,
            1.0,
            torch.ones(1, dtype=F64),
            dt0=h,
            controller=tn.ConstantStepSize(jump_ts=[0.5]),
        )
        errs.append(abs(float(sol.ys[-1, 0]) - exact(1.0)))
    assert abs(_slope(np.array(hs), np.array(errs)) - 4) <= SLOPE_TOL, errs


def test_fixed_adams_per_sample_restarts_mix_starter_and_adams_steps() -> None:
    # Per-sample clocks that reach the jump at different iterations: within one batched step
    # some samples take a Runge–Kutta start-up step and others an Adams step. Each sample
    # must still get the result of its own solve.
    def f(t, y, args):
        tt = t.reshape(t.shape + (1,) * (y.ndim - t.ndim)) if t.ndim else t
        return torch.where(tt <= 0.5, -y, 0.5 * y) + torch.sin(tt)

    t0 = torch.tensor([0.0, 0.13, 0.31], dtype=F64)
    kw = dict(
        dt0=0.05,
        controller=tn.ConstantStepSize(jump_ts=[0.5], per_sample=True),
        saveat=tn.SaveAt(ts=[0.4, 0.7, 1.0], dense=True),
    )
    batch = tn.solve(tn.ODETerm(f), tn.FixedAdams(order=4), t0, 1.0, Y0, **kw)
    for i in range(3):
        alone = tn.solve(
            tn.ODETerm(f), tn.FixedAdams(order=4), t0[i : i + 1], 1.0, Y0[i : i + 1], **kw
        )
        torch.testing.assert_close(batch.ys[:, i], alone.ys[:, 0], rtol=1e-13, atol=1e-13)
        tq = torch.full((3,), 0.83, dtype=F64)
        torch.testing.assert_close(
            batch.evaluate(tq)[i], alone.evaluate(tq[:1])[0], rtol=1e-13, atol=1e-13
        )
