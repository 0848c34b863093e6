"""Every explicit solver against every adjoint (float64): finite differences, agreement
between adjoints, undeclared parameters and ``odeint``.

One small problem is used throughout: a (2, 2) state, a non-autonomous nonlinear field with a
parameter ``k`` passed through ``args`` and a matrix ``w`` captured by closure,

    dy/dt = -k[:, None] * y + tanh(y @ w) * cos(2 t),

on [t0, t1] = [0.1, 0.79], saved at ts = (0.347, 0.561) and at t1, so that gradients reach
``y0``, ``args``, a closure tensor, ``t0``, ``t1`` and ``ts`` at once.

Fixed step sizes and the time gradients. With ``ConstantStepSize`` the grid is
t0, t0 + dt0, ... and the last step is cut at t1; the number of steps jumps when t1 - t0
crosses a multiple of dt0, and the dense output used at ``ts`` is only continuous (not
differentiable) at the grid points. Every step size used here keeps t1 - t0, ts - t0 and
(for the backward solves of the continuous adjoints) the spans between consecutive save
times at least 4% of a step away from a multiple of dt0 (checked by ``_check_off_grid``),
so a finite-difference perturbation (eps = 1e-6) changes no step count and crosses no grid
point: the computed solution is a smooth function of t0, t1 and ts there, and gradcheck
w.r.t. the times is meaningful for fixed-step solvers too. (An exact multiple is not stable:
one side of the central difference adds a tiny extra step, the other shortens the last one,
and the two one-sided derivatives differ by the local error of a step.)

Tolerances. DirectAdjoint, CheckpointAdjoint and ReversibleAdjoint differentiate the
computed solution exactly, so they are checked at cheap, loose solver settings with
gradcheck's usual atol. BacksolveAdjoint and InterpolatedAdjoint give the gradient of the
exact solution up to the error of the forward and backward solves, while gradcheck's finite
differences see the computed solution; the two differ by the discretisation error of the
sensitivities. Each solver therefore gets settings (``CONTINUOUS``) where that error was
measured well below gradcheck's atol = 1e-5: rtol 1e-10 / atol 1e-12 for Dopri5, Tsit5 and
Dopri8, dt0 = 0.02 for RK4/RK38, rtol 1e-7 for Bosh3 (largest Jacobian entry error 1e-7).
The low-order methods cannot reach that in a test's budget (Euler needs ~1e5 steps for
1e-5), so they get an atol of about 3x their measured Jacobian error (the table lists both),
and ``test_continuous_adjoint_mismatch_is_discretisation_error`` shows that the mismatch
shrinks at the method's order when the step halves (or with the tolerance), so it is
discretisation error and not a mistake in the adjoint (which would not vanish).

``fast_mode=True`` checks a random projection u^T J v of the Jacobian (any wrong entry
shows up) at a fraction of the cost of the element-by-element check.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import pytest
import torch
from torch.autograd import gradcheck

import catalogue
import torchnde as tn

F64 = torch.float64

# From the central catalogue: every explicit Runge-Kutta method, and ReversibleHeun (the
# other kinds are covered by tests/test_gradient_matrix.py, on problems that suit them).
SOLVERS = [s.cls for s in catalogue.SOLVERS if s.kind is catalogue.Kind.EXPLICIT_RK] + [
    tn.ReversibleHeun
]
ADAPTIVE = [s for s in SOLVERS if s().is_adaptive]
CONTINUOUS_ADJOINTS = [a.cls for a in catalogue.approximate_adjoints()]

T0, T1, TS = 0.1, 0.79, (0.347, 0.561)
GC: dict[str, Any] = dict(eps=1e-6, rtol=1e-4, fast_mode=True)


def _name(x) -> str:
    return x.__name__ if isinstance(x, type) else type(x).__name__


def _inputs() -> tuple[torch.Tensor, ...]:
    """Fresh leaves (y0, k, w, t0, t1, ts)."""

    def leaf(x):
        return torch.tensor(x, dtype=F64, requires_grad=True)

    return (
        leaf([[0.5, -0.3], [0.2, 0.8]]),
        leaf([0.7, 1.3]),
        leaf([[0.4, -0.9], [1.1, 0.3]]),
        leaf(T0),
        leaf(T1),
        leaf(list(TS)),
    )


def _field(w: torch.Tensor):
    """The vector field, closing over ``w``; ``k`` comes through ``args``."""

    def field(t, y, args):
        (k,) = args
        c = torch.cos(2 * t)
        c = c[:, None] if c.ndim else c  # per-sample stepping: one time per sample
        return -k[:, None] * y + torch.tanh(y @ w) * c

    return field


def _check_off_grid(dt0: float | None) -> None:
    """Every span a constant-step solve (forward, or backward between save times) covers is
    at least 4% of a step away from a multiple of dt0: see the module docstring."""
    if dt0 is None:
        return
    marks = [T0, *TS, T1]
    spans = [b - a for i, a in enumerate(marks) for b in marks[i + 1 :]]
    for span in spans:
        frac = span / dt0 - round(span / dt0)
        assert abs(frac) > 0.04, (span, dt0)


def _solve_fn(solver, make_adjoint, controller, dt0):
    """ys at (ts, t1) as a function of (y0, k, w, t0, t1, ts)."""
    _check_off_grid(dt0)

    def fn(y0, k, w, t0, t1, ts):
        sol = tn.solve(
            tn.ODETerm(_field(w)),
            solver,
            t0,
            t1,
            y0,
            (k,),
            dt0=dt0,
            controller=controller,
            saveat=tn.SaveAt(ts=ts, t1=True),
            adjoint=make_adjoint(),
        )
        return sol.ys

    return fn


def _gradcheck(fn, atol: float) -> None:
    torch.manual_seed(0)  # fast_mode's random projection
    with warnings.catch_warnings():
        # Every tensor is declared or discoverable: no "gets no gradient" warning.
        warnings.filterwarnings("error", message=".*no gradient")
        assert gradcheck(fn, _inputs(), atol=atol, **GC)


# --- 1. gradcheck: discrete-exact adjoints (Direct, Checkpoint, Reversible)


def _discrete_setup(solver_cls):
    """Cheap settings: these adjoints are exact for whatever the solver computed. Low-order
    error estimators (Heun, Fehlberg2, ReversibleHeun) get looser tolerances to keep the
    number of steps down (rtol 1e-3: 10 to 30 steps)."""
    solver = solver_cls()
    if not solver.is_adaptive:
        return solver, tn.ConstantStepSize(), 0.1  # 7 steps, the last 0.09 long
    rtol = 1e-3 if solver.order <= 2 else 1e-5
    return solver, tn.PIDController(rtol=rtol, atol=rtol * 1e-2), None


DISCRETE_ADJOINTS = {
    "Direct": lambda: tn.DirectAdjoint(),
    "Checkpoint(None)": lambda: tn.CheckpointAdjoint(),
    "Checkpoint(3)": lambda: tn.CheckpointAdjoint(checkpoints=3),
}


@pytest.mark.parametrize("adjoint", DISCRETE_ADJOINTS)
@pytest.mark.parametrize("solver_cls", SOLVERS, ids=_name)
def test_gradcheck_discrete_adjoints(solver_cls, adjoint):
    solver, controller, dt0 = _discrete_setup(solver_cls)
    _gradcheck(_solve_fn(solver, DISCRETE_ADJOINTS[adjoint], controller, dt0), atol=1e-6)


@pytest.mark.parametrize(
    "controller, dt0",
    [(tn.ConstantStepSize(), 0.05), (tn.PIDController(rtol=1e-3, atol=1e-5), None)],
    ids=["constant", "adaptive"],
)
def test_gradcheck_reversible_adjoint(controller, dt0):
    fn = _solve_fn(tn.ReversibleHeun(), lambda: tn.ReversibleAdjoint(), controller, dt0)
    _gradcheck(fn, atol=1e-6)


# --- 1. gradcheck: continuous adjoints (Backsolve, Interpolated)

# solver -> (controller, dt0, gradcheck atol). In the comments: the largest entry of
# |J_adjoint - J_direct| over the (12 x 14) Jacobian, measured for both adjoints (|J| <= 0.9).
CONTINUOUS = {
    tn.Euler: (tn.ConstantStepSize(), 0.0125, 3e-2),  # 1.0e-2 (order 1; 1e-5 needs 1e5 steps)
    tn.Midpoint: (tn.ConstantStepSize(), 0.00625, 6e-5),  # 1.7e-5
    tn.Ralston: (tn.ConstantStepSize(), 0.00625, 6e-5),  # 1.9e-5
    tn.Heun: (tn.PIDController(rtol=1e-4, atol=1e-6), None, 1e-4),  # 3.4e-5
    tn.Fehlberg2: (tn.PIDController(rtol=3e-7, atol=3e-9), None, 6e-5),  # 1.9e-5
    tn.ReversibleHeun: (tn.PIDController(rtol=1e-5, atol=1e-7), None, 1e-5),  # 3.3e-6
    tn.Bosh3: (tn.PIDController(rtol=1e-7, atol=1e-9), None, 1e-5),  # 1.1e-7
    tn.RK4: (tn.ConstantStepSize(), 0.02, 1e-5),  # 4.1e-7
    tn.RK38: (tn.ConstantStepSize(), 0.02, 1e-5),  # 4.2e-7
    tn.Dopri5: (tn.PIDController(rtol=1e-10, atol=1e-12), None, 1e-5),  # 1.7e-8
    tn.Tsit5: (tn.PIDController(rtol=1e-10, atol=1e-12), None, 1e-5),  # 2.0e-8
    tn.Dopri8: (tn.PIDController(rtol=1e-10, atol=1e-12), None, 1e-5),  # 8.8e-10
}


@pytest.mark.parametrize("adjoint_cls", CONTINUOUS_ADJOINTS, ids=_name)
@pytest.mark.parametrize("solver_cls", SOLVERS, ids=_name)
def test_gradcheck_continuous_adjoints(solver_cls, adjoint_cls):
    controller, dt0, atol = CONTINUOUS[solver_cls]
    _gradcheck(_solve_fn(solver_cls(), adjoint_cls, controller, dt0), atol=atol)


def _projected_grads(solver, make_adjoint, controller, dt0) -> list[torch.Tensor]:
    """The gradient of <u, ys> w.r.t. (y0, k, w, t0, t1, ts) for a fixed random u."""
    inputs = _inputs()
    ys = _solve_fn(solver, make_adjoint, controller, dt0)(*inputs)
    u = torch.rand(ys.shape, dtype=F64, generator=torch.Generator().manual_seed(0))
    return list(torch.autograd.grad((u * ys).sum(), inputs))


def _max_err(a, b) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


# (solver, the two settings: step sizes or tolerances, the least ratio of the mismatches)
CONVERGENCE = [
    # Fixed steps: the mismatch of the y0 / k / w gradients is O(dt0^p): halving dt0 divides
    # it by 2^p (measured: 2.0 for Euler, 4.0 for Midpoint/Ralston). The time gradients are
    # left out: their error is set by the length of the last (cut) step and the position of
    # ts in its step, which do not shrink with dt0 on this grid.
    (tn.Euler, (0.025, 0.0125), 1.7),
    (tn.Midpoint, (0.025, 0.0125), 3.3),
    (tn.Ralston, (0.025, 0.0125), 3.3),
    # Adaptive: about proportional to the tolerance (all gradients).
    (tn.Heun, (1e-3, 1e-4), 4.0),
    (tn.Fehlberg2, (1e-5, 1e-6), 4.0),
    (tn.ReversibleHeun, (1e-4, 1e-5), 4.0),
    (tn.Bosh3, (1e-5, 1e-6), 4.0),
]


@pytest.mark.parametrize("adjoint_cls", CONTINUOUS_ADJOINTS, ids=_name)
@pytest.mark.parametrize(
    "solver_cls, settings, ratio", CONVERGENCE, ids=[_name(c[0]) for c in CONVERGENCE]
)
def test_continuous_adjoint_mismatch_is_discretisation_error(
    solver_cls, settings, ratio, adjoint_cls
):
    """Where gradcheck needed an atol above 1e-5, the gap to the exact discrete gradient
    shrinks at the method's rate: it is discretisation error, not a wrong adjoint."""
    solver = solver_cls()
    errs = []
    for v in settings:
        if solver.is_adaptive:
            controller, dt0, n = tn.PIDController(rtol=v, atol=v * 1e-2), None, 6
        else:
            controller, dt0, n = tn.ConstantStepSize(), v, 3  # y0, k, w only (see above)
        direct = _projected_grads(solver, tn.DirectAdjoint, controller, dt0)
        cont = _projected_grads(solver, adjoint_cls, controller, dt0)
        errs.append(_max_err(cont[:n], direct[:n]))
    assert errs[0] > ratio * errs[1], errs


# --- 2. agreement matrix


def _tuple_field(w: torch.Tensor):
    def field(t, y, args):
        (k,) = args
        x, v = y  # x: (2,), v: (2, 1)
        return v[:, 0] * torch.cos(2 * t), (-k * x - torch.tanh(w @ x))[:, None]

    return field


def _layout_grads(layout: str, solver, make_adjoint, controller, dt0=None, t_span=2.0):
    """The gradient of a fixed projection of the saved states w.r.t. every input of one of
    three layouts: a plain (2, 2) state ("plain"), a tuple state ("tuple") and per-sample
    stepping ("per-sample", ``controller`` must step per sample), on [0.1, 0.1 + t_span]
    with two save times inside; the times are 0-d / 1-d tensors shared by the batch."""
    y0, k, w, t0, t1, ts = _inputs()
    t1 = torch.tensor(T0 + t_span, dtype=F64, requires_grad=True)
    ts = torch.tensor([T0 + 0.31 * t_span, T0 + 0.62 * t_span], dtype=F64, requires_grad=True)
    saveat = tn.SaveAt(ts=ts, t1=True)
    common = dict(dt0=dt0, controller=controller, saveat=saveat, adjoint=make_adjoint())
    if layout == "tuple":
        x0 = y0[0].detach().clone().requires_grad_(True)
        v0 = y0[1].detach().clone()[:, None].requires_grad_(True)
        sol = tn.solve(tn.ODETerm(_tuple_field(w)), solver, t0, t1, (x0, v0), (k,), **common)
        x, v = sol.ys
        loss = (x * torch.arange(1.0, 1 + x.numel(), dtype=F64).reshape(x.shape)).sum() + (
            v.square().sum()
        )
        wrt = [x0, v0, k, w, t0, t1, ts]
    else:
        sol = tn.solve(tn.ODETerm(_field(w)), solver, t0, t1, y0, (k,), **common)
        weights = torch.arange(1.0, 1 + sol.ys.numel(), dtype=F64).reshape(sol.ys.shape)
        loss = (weights * sol.ys).sum() / sol.ys.numel() + sol.ys.square().sum()
        wrt = [y0, k, w, t0, t1, ts]
    grads = torch.autograd.grad(loss, wrt)
    return grads, sol


def _parts(ys) -> list[torch.Tensor]:
    return list(ys) if isinstance(ys, tuple) else [ys]


def _controller(layout: str, rtol: float) -> tn.PIDController:
    return tn.PIDController(rtol=rtol, atol=rtol * 1e-2, per_sample=layout == "per-sample")


LAYOUTS = ["plain", "tuple", "per-sample"]


# Tolerances giving roughly 20-40 steps on [0.1, 2.1]: more than 2 * 3 checkpoints (so
# Checkpoint(3) thins its stored states) and more than 4 * LEAF (so Checkpoint(None)
# bisects recursively).
AGREEMENT_RTOL = {
    tn.Heun: 1e-2,
    tn.Fehlberg2: 1e-4,
    tn.ReversibleHeun: 1e-2,
    tn.Bosh3: 1e-4,
    tn.Dopri5: 1e-7,
    tn.Tsit5: 1e-7,
    tn.Dopri8: 1e-10,
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("solver_cls", ADAPTIVE, ids=_name)
def test_direct_equals_checkpoint(solver_cls, layout):
    controller = _controller(layout, AGREEMENT_RTOL[solver_cls])
    direct, sol = _layout_grads(layout, solver_cls(), tn.DirectAdjoint, controller)
    steps = sol.stats["num_steps"]
    assert int(steps.min() if isinstance(steps, torch.Tensor) else steps) >= 17, steps
    assert all(bool(torch.isfinite(g).all()) for g in direct), direct
    for checkpoints in (None, 3):
        grads, sol_c = _layout_grads(
            layout, solver_cls(), lambda c=checkpoints: tn.CheckpointAdjoint(c), controller
        )
        for a, b in zip(_parts(sol_c.ys), _parts(sol.ys)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        for g, gd in zip(grads, direct):
            torch.testing.assert_close(g, gd, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("adaptive", [False, True], ids=["constant", "adaptive"])
def test_reversible_equals_direct(adaptive, layout):
    if adaptive:
        controller, dt0 = _controller(layout, 1e-3), None
    else:
        controller, dt0 = tn.ConstantStepSize(per_sample=layout == "per-sample"), 0.07
    solver = tn.ReversibleHeun()
    direct, sol = _layout_grads(layout, solver, tn.DirectAdjoint, controller, dt0)
    grads, _ = _layout_grads(layout, solver, tn.ReversibleAdjoint, controller, dt0)
    for g, gd in zip(grads, direct):
        torch.testing.assert_close(g, gd, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("adjoint_cls", CONTINUOUS_ADJOINTS, ids=_name)
@pytest.mark.parametrize("solver_cls", [tn.Dopri5, tn.Tsit5, tn.Dopri8], ids=_name)
def test_continuous_adjoints_converge_to_direct(solver_cls, adjoint_cls, layout):
    def rel_err(rtol):
        controller = _controller(layout, rtol)
        direct, _ = _layout_grads(layout, solver_cls(), tn.DirectAdjoint, controller, t_span=1)
        grads, _ = _layout_grads(layout, solver_cls(), adjoint_cls, controller, t_span=1)
        assert all(bool(torch.isfinite(g).all()) for g in [*direct, *grads])
        scale = max(float(g.abs().max()) for g in direct)
        return _max_err(grads, direct) / scale

    coarse, fine = rel_err(1e-5), rel_err(1e-9)
    assert coarse > 10 * fine, (coarse, fine)  # measured: 100x to 8000x
    assert fine < 1e-6, fine


@pytest.mark.parametrize("per_sample", [False, True], ids=["joint", "per-sample"])
@pytest.mark.parametrize("solver_cls", ADAPTIVE, ids=_name)
def test_direct_gradients_stay_finite_when_an_error_estimate_is_zero(solver_cls, per_sample):
    """A component with dy/dt = 0 (joint stepping), or a sample that finishes before the
    others (per-sample stepping: its remaining steps have zero length), has an error estimate
    of exactly zero. DirectAdjoint differentiates through the step-size controller, which must
    not turn that into a NaN gradient. (Found through the agreement matrix above: Dopri8 in
    per-sample mode gave NaN gradients with every discrete adjoint.)"""
    solver = solver_cls()
    rtol = 1e-3 if solver_cls in (tn.Heun, tn.ReversibleHeun) else 1e-5  # Euler-like estimates
    if per_sample:
        k = torch.tensor([[0.3], [2.0]], dtype=F64)  # sample 1 takes many more steps
        y0 = torch.ones(2, 1, dtype=F64, requires_grad=True)
        field = lambda t, y, args: -args * y
        expected = torch.exp(-2.0 * k)
    else:
        k = torch.tensor(1.0, dtype=F64)
        y0 = torch.tensor([1.0, 0.5], dtype=F64, requires_grad=True)
        field = lambda t, y, args: torch.stack([-args * y[0], torch.zeros_like(y[1])])
        expected = torch.tensor([torch.exp(torch.tensor(-2.0)), 1.0], dtype=F64)
    sol = tn.solve(
        tn.ODETerm(field),
        solver,
        0.0,
        2.0,
        y0,
        k,
        controller=tn.PIDController(rtol=rtol, atol=rtol * 1e-2, per_sample=per_sample),
    )
    (grad,) = torch.autograd.grad(sol.ys.sum(), y0)
    assert bool(torch.isfinite(grad).all()), grad
    # Only a sanity check of the value (d y(2) / d y0 = exp(-2 k), and 1 for the constant
    # component): accuracy is tested elsewhere, Fehlberg2's error estimate is optimistic.
    torch.testing.assert_close(grad, expected.reshape(grad.shape), rtol=0, atol=1e-3)


# --- 3. a closure-captured tensor left out of an explicit `params=[]`


def _undeclared(make_adjoint, solver):
    """Solve with ``w`` captured by closure but not declared; the gradient of y0 and the
    warnings of the solve and of the backward pass, separately."""
    w = torch.tensor([[0.4, -0.9], [1.1, 0.3]], dtype=F64, requires_grad=True)
    y0 = torch.tensor([[0.5, -0.3], [0.2, 0.8]], dtype=F64, requires_grad=True)
    k = torch.tensor([0.7, 1.3], dtype=F64)
    with warnings.catch_warnings(record=True) as at_solve:
        warnings.simplefilter("always")
        sol = tn.solve(
            tn.ODETerm(_field(w)),
            solver,
            0.0,
            0.8,
            y0,
            (k,),
            dt0=0.05 if isinstance(solver, tn.ReversibleHeun) else None,
            controller=(
                tn.ConstantStepSize()
                if isinstance(solver, tn.ReversibleHeun)
                else tn.PIDController(rtol=1e-10, atol=1e-12)
            ),
            adjoint=make_adjoint(),
        )
    with warnings.catch_warnings(record=True) as at_backward:
        warnings.simplefilter("always")
        sol.ys.sum().backward()
    return w, y0, [str(x.message) for x in at_solve], [str(x.message) for x in at_backward]


def _messages(records, pattern) -> list[str]:
    return [m for m in records if re.search(pattern, m)]


@pytest.mark.parametrize("adjoint_cls", CONTINUOUS_ADJOINTS, ids=_name)
def test_undeclared_closure_tensor_warns_at_solve_time(adjoint_cls):
    """The continuous adjoints find ``w`` in the closure, see that it is not in
    ``params=[]`` and warn once, when solving; ``w`` gets no gradient, ``y0`` its usual one."""
    w, y0, at_solve, at_backward = _undeclared(lambda: adjoint_cls(params=[]), tn.Dopri5())
    _, y0_ref, _, _ = _undeclared(tn.DirectAdjoint, tn.Dopri5())
    assert _messages(at_solve, rf"{adjoint_cls.__name__}: .*captures 1 tensor"), at_solve
    assert _messages(at_solve, r"\(2, 2\).*get no gradient.*params="), at_solve
    assert not _messages(at_backward, "no gradient"), at_backward  # reported once
    assert w.grad is None
    torch.testing.assert_close(y0.grad, y0_ref.grad, rtol=1e-7, atol=1e-9)


UNDECLARED_REPLAY = {
    "Checkpoint(None)": (lambda: tn.CheckpointAdjoint(params=[]), tn.Dopri5),
    "Checkpoint(3)": (lambda: tn.CheckpointAdjoint(3, params=[]), tn.Dopri5),
    "Reversible": (lambda: tn.ReversibleAdjoint(params=[]), tn.ReversibleHeun),
}


@pytest.mark.parametrize("case", UNDECLARED_REPLAY)
def test_undeclared_closure_tensor_warns_at_backward(case):
    """CheckpointAdjoint (and ReversibleAdjoint, which shares its replay) notice the
    undeclared tensor in the graph of the recomputed steps: one warning, in the backward pass
    (none at solve time), naming the one tensor once."""
    make_adjoint, solver_cls = UNDECLARED_REPLAY[case]
    _, _, at_solve, at_backward = _undeclared(make_adjoint, solver_cls())
    assert not _messages(at_solve, "no gradient"), at_solve
    found = _messages(at_backward, "no gradient")
    assert len(found) == 1, at_backward
    assert re.search(rf"{type(make_adjoint()).__name__}: .*reads 1 tensor\(s\)", found[0]), found
    assert re.search(r"\(shapes \(2, 2\)\)", found[0]), found


@pytest.mark.parametrize("case", UNDECLARED_REPLAY)
def test_undeclared_closure_tensor_gets_no_gradient_at_backward(case):
    """Documented (CheckpointAdjoint, ``params``): "a tensor that is read but not found gets
    no gradient and a warning". The undeclared tensor must not get a partial, silently wrong
    gradient; ``y0`` still gets the exact one."""
    make_adjoint, solver_cls = UNDECLARED_REPLAY[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w, y0, _, _ = _undeclared(make_adjoint, solver_cls())
        _, y0_ref, _, _ = _undeclared(tn.DirectAdjoint, solver_cls())
    torch.testing.assert_close(y0.grad, y0_ref.grad, rtol=1e-10, atol=1e-12)
    assert w.grad is None, w.grad


# --- 4. odeint takes every adjoint


ODEINT_CASES = {
    "Direct": ("dopri5", lambda: tn.DirectAdjoint(), 0.0),
    "Checkpoint(None)": ("dopri5", lambda: tn.CheckpointAdjoint(), 1e-10),
    "Checkpoint(3)": ("dopri5", lambda: tn.CheckpointAdjoint(3), 1e-10),
    "Backsolve": ("dopri5", lambda: tn.BacksolveAdjoint(), 1e-7),
    "Interpolated": ("dopri5", lambda: tn.InterpolatedAdjoint(), 1e-7),
    "Reversible": ("reversible_heun", lambda: tn.ReversibleAdjoint(), 1e-10),
}


def _odeint_fn(method: str, rtol: float, adjoint):
    """odeint's states at t = (t0, *ts, t1) as a function of (y0, w, t); ``w`` is closed
    over by ``func``."""

    def fn(y0, w, t):
        return tn.odeint(
            lambda tt, y: -0.7 * y + torch.tanh(y @ w) * torch.cos(2 * tt),
            y0,
            t,
            method=method,
            rtol=rtol,
            atol=rtol * 1e-2,
            adjoint=adjoint,
        )

    return fn


def _odeint_inputs() -> tuple[torch.Tensor, ...]:
    y0, _, w, _, _, _ = _inputs()
    return y0, w, torch.tensor([T0, *TS, T1], dtype=F64, requires_grad=True)


@pytest.mark.parametrize("case", ODEINT_CASES)
def test_odeint_accepts_every_adjoint(case):
    """Gradients w.r.t. y0, a closure tensor and the output times ``t`` (t[0] is both t0 and
    a save time, t[-1] both t1 and a save time) equal DirectAdjoint's: to round-off for the
    discrete adjoints, to the solve's error (rtol 1e-10) for the continuous ones."""
    method, make_adjoint, tol = ODEINT_CASES[case]
    rtol = 1e-4 if method == "reversible_heun" else 1e-10

    def grads(adjoint):
        inputs = _odeint_inputs()
        ys = _odeint_fn(method, rtol, adjoint)(*inputs)
        assert ys.shape == (4, 2, 2)
        weights = torch.arange(1.0, 1 + ys.numel(), dtype=F64).reshape(ys.shape)
        return torch.autograd.grad((weights * ys).sum(), inputs)

    got, ref = grads(make_adjoint()), grads(None)
    for g, r, name in zip(got, ref, ["y0", "w", "t"]):
        torch.testing.assert_close(g, r, rtol=tol, atol=tol, msg=lambda m, n=name: f"{n}: {m}")


def test_odeint_reference_gradient_passes_gradcheck():
    """The reference above (DirectAdjoint, odeint's default) is right w.r.t. the output
    times too, where t[0] and t[-1] are also t0 and t1."""
    torch.manual_seed(0)
    fn = _odeint_fn("dopri5", 1e-8, None)
    assert gradcheck(fn, _odeint_inputs(), atol=1e-6, **GC)
