"""The adaptive fast path (``_core/adaptive.py``: joint steps, the step-size control on the
host) takes the steps of the general loop: the same accepted and rejected steps, NFE and
saves (to rounding), the same statuses, causes and partial results when a solve fails, and
its host controller is the tensor controller's arithmetic."""

from __future__ import annotations

import math

import pytest
import torch

import torchnde as tn
import torchnde._core.adaptive as adaptive
import torchnde._core.loop as loop_module

F64 = torch.float64


def _solve(general: bool, monkeypatch, *args, **kwargs):
    """A no-grad solve on the host-control path, or (``general``) on the general loop; checks
    which one ran."""
    taken = []
    with monkeypatch.context() as m:
        real = adaptive.run_adaptive
        m.setattr(loop_module, "run_adaptive", lambda *a: taken.append(1) or real(*a))
        if general:
            m.setattr(loop_module, "host_control", lambda loop: False)
        with torch.no_grad():
            sol = tn.solve(*args, **kwargs)
    assert bool(taken) != general
    return sol


def _field(t, y, args):
    return torch.tanh(y @ args) * 3 + torch.sin(5 * t)


def _problem(dtype=F64):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 3, generator=g, dtype=dtype)
    y0 = torch.randn(4, 3, generator=g, dtype=dtype)
    return tn.ODETerm(_field), y0, w


@pytest.mark.parametrize(
    "solver",
    [
        tn.Dopri5(), tn.Dopri5(error_estimate="shampine"), tn.Tsit5(), tn.Bosh3(), tn.Dopri8(),
        tn.Kvaerno3(), tn.Rodas5(),
    ],
    ids=repr,
)  # fmt: skip
@pytest.mark.parametrize("reverse", [False, True])
def test_host_path_matches_general_loop(solver, reverse, monkeypatch):
    term, y0, w = _problem()
    t0, t1 = (2.0, 0.0) if reverse else (0.0, 2.0)
    ts = torch.linspace(t0, t1, 7, dtype=F64)
    kw = dict(args=w, saveat=tn.SaveAt(ts=ts), controller=tn.PIDController(rtol=1e-6, atol=1e-8))
    a = _solve(False, monkeypatch, term, solver, t0, t1, y0, **kw)
    b = _solve(True, monkeypatch, term, solver, t0, t1, y0, **kw)
    assert a.stats == b.stats
    assert a.stats["num_rejected_steps"] > 0 or isinstance(solver, tn.Dopri8)
    # Equal to the rounding of the control arithmetic (see the dense-output test below).
    torch.testing.assert_close(a.ys, b.ys, rtol=1e-10, atol=1e-10)
    assert int(a.status) == int(b.status) == 0


@pytest.mark.parametrize(
    "controller",
    [
        tn.PIDController(rtol=1e-5, atol=1e-7, pcoeff=0.4, icoeff=0.3),
        tn.PIDController(rtol=1e-5, atol=1e-7, pcoeff=0.2, icoeff=0.4, dcoeff=0.1),
        tn.PIDController(rtol=1e-5, atol=1e-7, dtmax=0.05),
        tn.PIDController(rtol=1e-5, atol=1e-7, norm=lambda x: x.abs().max()),
    ],
    ids=["PI", "PID", "dtmax", "norm"],
)
def test_host_controller_variants_match_general_loop(controller, monkeypatch):
    term, y0, w = _problem()
    kw = dict(args=w, controller=controller, saveat=tn.SaveAt(ts=torch.linspace(0, 1, 5)))
    a = _solve(False, monkeypatch, term, tn.Tsit5(), 0.0, 1.0, y0, **kw)
    b = _solve(True, monkeypatch, term, tn.Tsit5(), 0.0, 1.0, y0, **kw)
    assert a.stats == b.stats
    torch.testing.assert_close(a.ys, b.ys, rtol=1e-10, atol=1e-10)


def test_dense_and_step_outputs_match_general_loop(monkeypatch):
    term, y0, w = _problem()
    kw = dict(args=w, saveat=tn.SaveAt(t1=True, steps=True, dense=True))
    kw["controller"] = tn.PIDController(rtol=1e-6, atol=1e-8)
    a = _solve(False, monkeypatch, term, tn.Dopri5(), 0.0, 1.0, y0, **kw)
    b = _solve(True, monkeypatch, term, tn.Dopri5(), 0.0, 1.0, y0, **kw)
    # The step ends differ by the rounding of the control arithmetic (an ulp of a step end
    # changes the rounding of the next error estimate, a small difference of stages, by
    # ~eps / its size, so the next step size by ~1e-12), not by more.
    torch.testing.assert_close(a.ts, b.ts, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(a.ys, b.ys, rtol=1e-10, atol=1e-10)
    q = torch.tensor([0.123, 0.5, 0.987], dtype=F64)
    torch.testing.assert_close(a.evaluate(q), b.evaluate(q), rtol=1e-10, atol=1e-10)


def test_float32_solve_takes_the_same_steps(monkeypatch):
    # In float32 the host arithmetic (float64) and the tensor arithmetic (float32) round the
    # step sizes differently; the decisions agree and the solutions to float32 accuracy.
    term, y0, w = _problem(torch.float32)
    kw = dict(args=w, saveat=tn.SaveAt(ts=torch.linspace(0, 2, 9)))
    kw["controller"] = tn.PIDController(rtol=1e-4, atol=1e-6)
    a = _solve(False, monkeypatch, term, tn.Dopri5(), 0.0, 2.0, y0, **kw)
    b = _solve(True, monkeypatch, term, tn.Dopri5(), 0.0, 2.0, y0, **kw)
    assert a.stats == b.stats
    torch.testing.assert_close(a.ys, b.ys, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["max_steps", "blow_up", "dtmin"])
def test_failures_are_those_of_the_general_loop(case, monkeypatch):
    y0 = torch.ones(2, dtype=F64)
    term = tn.ODETerm(lambda t, y, args: y * y)  # blows up at t = 1
    kw: dict = dict(throw=False, saveat=tn.SaveAt(ts=torch.linspace(0, 2, 5, dtype=F64)))
    kw["controller"] = tn.PIDController(rtol=1e-6, atol=1e-8)
    if case == "max_steps":
        kw["max_steps"] = 7
    elif case == "dtmin":
        kw["controller"] = tn.PIDController(rtol=1e-6, atol=1e-8, dtmin=1e-3)
    # The host path runs first and hands the solve to the general loop when it fails to
    # make progress (the diagnosis of an underflow is the general loop's); `max_steps` it
    # reports itself, on its own steps (the same steps as the general loop's to ~1e-12).
    taken = []
    with monkeypatch.context() as m:
        real = loop_module.run_general
        m.setattr(loop_module, "run_general", lambda *a: taken.append(1) or real(*a))
        with torch.no_grad():
            a = tn.solve(term, tn.Dopri5(), 0.0, 2.0, y0, **kw)
    assert bool(taken) == (case != "max_steps")
    with monkeypatch.context() as m:
        m.setattr(loop_module, "host_control", lambda loop: False)
        with torch.no_grad():
            b = tn.solve(term, tn.Dopri5(), 0.0, 2.0, y0, **kw)
    expected = {
        "max_steps": tn.Status.MAX_STEPS_REACHED,
        "blow_up": tn.Status.DT_UNDERFLOW,
        "dtmin": tn.Status.DT_UNDERFLOW,
    }[case]
    assert int(a.status) == int(b.status) == int(expected)
    assert a.stats == b.stats
    exact = 0.0 if taken else 1e-12
    torch.testing.assert_close(a.ys, b.ys, equal_nan=True, rtol=exact, atol=exact)
    assert float(a.ts[-1]) == float(b.ts[-1])


def test_solves_with_differentiated_steps_or_times_take_the_general_loop(monkeypatch):
    # Step sizes that carry gradients (the default), or times that do, are tensors of the
    # general loop.
    term, y0, w = _problem()
    w.requires_grad_(True)
    taken = []
    real = adaptive.run_adaptive
    monkeypatch.setattr(loop_module, "run_adaptive", lambda *a: taken.append(1) or real(*a))
    t1 = torch.tensor(1.0, dtype=F64, requires_grad=True)
    for ctrl, end in ((tn.PIDController(), 1.0), (tn.PIDController(differentiate_steps=False), t1)):
        sol = tn.solve(term, tn.Dopri5(), 0.0, end, y0, args=w, controller=ctrl)
        sol.ys.sum().backward()
    assert not taken


def _mesh_loss(term, y0, w, mesh, ts):
    """The loss of a Dopri5 solve on the given step ends (no adaptivity: one step between
    two consecutive points), the function whose derivative a solve with steps chosen as
    constants gives."""
    sol = tn.solve(
        term, tn.Dopri5(), 0.0, 2.0, y0, args=w, dt0=10.0, saveat=tn.SaveAt(ts=ts),
        controller=tn.ConstantStepSize(step_ts=mesh),
    )  # fmt: skip
    return sol.ys.pow(2).sum(), sol


def test_steps_chosen_as_constants_are_differentiated_on_the_host_path(monkeypatch):
    """``differentiate_steps=False`` under autograd takes the host path (rejected attempts out
    of the graph): the steps of the general loop, its gradients to rounding, and the
    derivative of the solve on that fixed mesh (float64 central differences)."""
    term, y0, w = _problem()
    ts = torch.linspace(0, 2, 5, dtype=F64)
    ctrl = tn.PIDController(rtol=1e-6, atol=1e-6, differentiate_steps=False)
    results = []
    for general in (False, True):
        taken = []
        with monkeypatch.context() as m:
            real = adaptive.run_adaptive
            spy = lambda *a, taken=taken, real=real: taken.append(1) or real(*a)
            m.setattr(loop_module, "run_adaptive", spy)
            if general:
                m.setattr(loop_module, "host_control", lambda loop: False)
            wg, yg = w.clone().requires_grad_(True), y0.clone().requires_grad_(True)
            sol = tn.solve(term, tn.Dopri5(), 0.0, 2.0, yg, args=wg, controller=ctrl,
                           saveat=tn.SaveAt(ts=ts))  # fmt: skip
            grads = torch.autograd.grad(sol.ys.pow(2).sum(), (yg, wg))
        assert bool(taken) != general
        results.append((sol, grads))
    (a, ga), (b, gb) = results
    assert a.stats == b.stats and a.stats["num_rejected_steps"] > 0
    torch.testing.assert_close(a.ys, b.ys, rtol=1e-11, atol=1e-12)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-11)
    # The mesh the solve took (the same steps with per-step output, under no_grad).
    with torch.no_grad():
        steps = tn.solve(term, tn.Dopri5(), 0.0, 2.0, y0, args=w, controller=ctrl,
                         saveat=tn.SaveAt(steps=True))  # fmt: skip
    mesh = steps.ts[:-1].clone()
    loss0, fixed = _mesh_loss(term, y0, w, mesh, ts)
    assert fixed.stats["num_steps"] == a.stats["num_accepted_steps"]
    torch.testing.assert_close(fixed.ys, a.ys, rtol=1e-10, atol=1e-11)
    g = torch.Generator().manual_seed(5)
    dw, dy = (
        torch.randn(w.shape, generator=g, dtype=F64),
        torch.randn(y0.shape, generator=g, dtype=F64),
    )
    eps = 1e-6
    with torch.no_grad():
        up = _mesh_loss(term, y0 + eps * dy, w + eps * dw, mesh, ts)[0]
        down = _mesh_loss(term, y0 - eps * dy, w - eps * dw, mesh, ts)[0]
    fd = (up - down) / (2 * eps)
    directional = (ga[0] * dy).sum() + (ga[1] * dw).sum()
    torch.testing.assert_close(directional, fd, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("solver", [tn.Dopri5(), tn.Tsit5()], ids=lambda s: type(s).__name__)
def test_graph_stepper_is_the_general_step_under_autograd(solver, monkeypatch):
    # Under autograd with the steps as constants, the host path's stepper combines the stages
    # as y0 + h a_i F (`_graph_stepper`); the general `step` as y0 + a_i (h F): the same
    # solution and gradients up to rounding, with the same steps, rejected ones included.
    term, y0, w = _problem()
    ts = torch.linspace(0, 2, 7, dtype=F64)
    ctrl = tn.PIDController(rtol=1e-6, atol=1e-8, differentiate_steps=False)
    used = []
    real = type(solver)._graph_stepper
    results = []
    for graph in (True, False):
        with monkeypatch.context() as m:
            if graph:
                m.setattr(type(solver), "_graph_stepper", lambda *a: used.append(1) or real(*a))
            else:
                m.setattr(type(solver), "host_stepper", lambda *a: None)
            wg, yg = w.clone().requires_grad_(True), y0.clone().requires_grad_(True)
            sol = tn.solve(term, solver, 0.0, 2.0, yg, args=wg, controller=ctrl,
                           saveat=tn.SaveAt(ts=ts))  # fmt: skip
            results.append((sol, torch.autograd.grad(sol.ys.pow(2).sum(), (yg, wg))))
    assert used
    (a, ga), (b, gb) = results
    assert a.stats == b.stats and a.stats["num_rejected_steps"] > 0
    torch.testing.assert_close(a.ys, b.ys, rtol=1e-12, atol=1e-13)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, rtol=1e-11, atol=1e-12)


def test_backsolve_gradient_through_the_host_path_matches_finite_differences(monkeypatch):
    # BacksolveAdjoint solves forward under no_grad (the host path) and backwards again; its
    # gradient must still be the solution's, checked against central differences.
    g = torch.Generator().manual_seed(3)
    w = torch.randn(2, 2, generator=g, dtype=F64)
    y0 = torch.randn(3, 2, generator=g, dtype=F64)

    def field(t, y, args):
        return torch.tanh(y @ args) + 0.5 * y

    term = tn.ODETerm(field)
    ctrl = tn.PIDController(rtol=1e-10, atol=1e-12)
    taken = []
    real = adaptive.run_adaptive
    monkeypatch.setattr(loop_module, "run_adaptive", lambda *a: taken.append(1) or real(*a))

    def loss(v):
        sol = tn.solve(
            term, tn.Dopri5(), 0.0, 1.0, y0, args=v, controller=ctrl,
            adjoint=tn.BacksolveAdjoint(),
        )  # fmt: skip
        return sol.ys[-1].pow(2).sum()

    wg = w.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(wg), wg)
    assert taken
    eps = 1e-5
    fd = torch.zeros_like(w)
    with torch.no_grad():
        for i in range(2):
            for j in range(2):
                e = torch.zeros_like(w)
                e[i, j] = eps
                fd[i, j] = (loss(w + e) - loss(w - e)) / (2 * eps)
    torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(
    "pcoeff,icoeff,dcoeff", [(0.0, 1.0, 0.0), (0.4, 0.3, 0.0), (0.2, 0.4, 0.1)]
)
@pytest.mark.parametrize("dtmax", [None, 0.03])
def test_host_adapt_is_the_tensor_controllers_arithmetic(pcoeff, icoeff, dcoeff, dtmax):
    ctrl = tn.PIDController(pcoeff=pcoeff, icoeff=icoeff, dcoeff=dcoeff, dtmax=dtmax)
    g = torch.Generator().manual_seed(1)
    y0 = torch.zeros(3, dtype=F64)
    state_t = (torch.tensor(1.0, dtype=F64),) * 2 + (None,)
    state_h = ctrl.host_state()
    t0 = torch.tensor(0.3, dtype=F64)
    for _ in range(40):
        ratio = float(10 ** (4 * torch.rand((), generator=g, dtype=F64) - 2))
        h = float(0.1 * torch.rand((), generator=g, dtype=F64)) + 1e-3
        # An error estimate whose RMS ratio (rtol * |y| = 0) is `ratio`.
        e = torch.full((3,), ratio * ctrl.atol, dtype=F64)
        t1 = t0 + h
        acc_t, nt0, nt1, _, state_t = ctrl.adapt(t0, t1, y0, y0, e, 5, state_t, None)
        acc_h, h_next, state_h = ctrl.host_adapt(ratio, float(t1 - t0), 5.0, state_h)
        assert bool(acc_t) == acc_h
        assert math.isclose(float(nt1 - nt0), h_next, rel_tol=1e-12)
        if bool(acc_t):
            t0 = t1


class _LowOrderDopri5(tn.Dopri5):
    """Dopri5 whose step control reads an error order of 2 from ``error_order_of`` (a stand-in
    for a variable-order method), declared with ``constant_error_order = False``."""

    constant_error_order = False

    def error_order_of(self, state):
        return 2


def test_declared_varying_error_order_is_read_every_step(monkeypatch):
    term, y0, w = _problem()
    kw = dict(args=w, controller=tn.PIDController(rtol=1e-6, atol=1e-8))
    kw["saveat"] = tn.SaveAt(ts=torch.linspace(0, 2, 5, dtype=F64))
    # No host control for a solver that declares its order varies: the general loop runs...
    low = _solve(True, monkeypatch, term, _LowOrderDopri5(), 0.0, 2.0, y0, **kw)
    taken = []
    with monkeypatch.context() as m:
        real = adaptive.run_adaptive
        m.setattr(loop_module, "run_adaptive", lambda *a: taken.append(1) or real(*a))
        with torch.no_grad():
            again = tn.solve(term, _LowOrderDopri5(), 0.0, 2.0, y0, **kw)
    assert not taken
    assert again.stats == low.stats
    # ...and steps by the order of each step (2), not the declared `error_order` (5): the
    # step-size factor error^(-1/2) takes other steps than error^(-1/5).
    five = _solve(False, monkeypatch, term, tn.Dopri5(), 0.0, 2.0, y0, **kw)
    assert low.stats["num_steps"] != five.stats["num_steps"]
    torch.testing.assert_close(low.ys, five.ys, rtol=1e-5, atol=1e-6)


def test_adams_takes_the_general_loop_without_grad(monkeypatch):
    term, y0, w = _problem()
    kw = dict(args=w, controller=tn.PIDController(rtol=1e-6, atol=1e-8))
    taken = []
    with monkeypatch.context() as m:
        real = adaptive.run_adaptive
        m.setattr(loop_module, "run_adaptive", lambda *a: taken.append(1) or real(*a))
        with torch.no_grad():
            tn.solve(term, tn.Adams(), 0.0, 1.0, y0, **kw)
    assert not taken


@pytest.mark.parametrize("solver", [tn.Dopri5(), tn.Tsit5()], ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("field", ["mlp", "identity", "constant"])
def test_reused_stage_buffers_give_the_steps_of_fresh_ones(solver, dtype, field, monkeypatch):
    # The host path's stepper reuses its stage increments across steps (`host_stepper`); a
    # solve with it is bit for bit one that allocates every step (`step`), rejected steps,
    # saves and all, also for a field that returns its input or always the same tensor.
    # (The saves through the tensor path here, `_HOST_SAVES = 0`; the host's weights are
    # tested below.)
    term, y0, w = _problem(dtype)
    if field == "identity":
        term = tn.ODETerm(lambda t, y, args: y)
    elif field == "constant":
        c = torch.randn(y0.shape, generator=torch.Generator().manual_seed(5), dtype=dtype)
        term = tn.ODETerm(lambda t, y, args: c)
    kw = dict(args=w, controller=tn.PIDController(rtol=1e-6, atol=1e-8))
    kw["saveat"] = tn.SaveAt(ts=torch.linspace(0, 2, 9, dtype=dtype))
    used = []
    real = type(solver).host_stepper
    with monkeypatch.context() as m:
        m.setattr(type(solver), "host_stepper", lambda *a: used.append(1) or real(*a))
        m.setattr(adaptive, "_HOST_SAVES", 0)
        a = _solve(False, monkeypatch, term, solver, 0.0, 2.0, y0, **kw)
    assert used
    with monkeypatch.context() as m:
        m.setattr(type(solver), "host_stepper", lambda *a: None)
        b = _solve(False, monkeypatch, term, solver, 0.0, 2.0, y0, **kw)
    assert a.stats == b.stats
    if field == "mlp":
        assert a.stats["num_rejected_steps"] > 0
    assert torch.equal(a.ys, b.ys)


@pytest.mark.parametrize("solver", [tn.Dopri5(), tn.Tsit5()], ids=lambda s: type(s).__name__)
def test_host_saves_are_the_interpolant_rounded_once(solver):
    # `save_into` weighs a step's stages with the interpolant's weights computed on the host in
    # float64: its float32 values are the float64 interpolant of the same stages (the tensor
    # path's `interpolate` in float64) to within the rounding of one product with those
    # stages, |y0| + sum_i |b_i(θ)| |K_i| times a few eps; the tensor path in float32 rounds
    # the fractions, powers and weights in float32 too, which for Tsit5's large coefficients
    # is tens of eps.
    term, y0, w = _problem(torch.float32)
    with torch.no_grad():
        stepper = solver.host_stepper(term, y0, w)
        t0, t1 = torch.tensor(0.0), torch.tensor(0.3)
        f0 = term.vf(t0, y0, w)
        _, _, dense, _ = stepper.step(t0, t1, 0.3, y0, f0)
        thetas = [0.1, 1 / 3, 0.5, 0.9999]
        out = torch.empty(len(thetas), y0.numel())
        stepper.save_into(thetas, dense, out)
        y0_64, K64 = dense.y0.double(), dense.K.double()
        th64 = torch.tensor(thetas, dtype=F64)
        ref = solver.interpolate(type(dense)(y0_64, K64), th64, False).reshape(len(thetas), -1)
        tensor32 = solver.interpolate(dense, torch.tensor(thetas), False).reshape(len(thetas), -1)
        P = solver._tab().cast(F64, y0.device)["dense"]
        W = (th64[:, None] ** torch.arange(1, P.shape[1] + 1, dtype=F64)) @ P.T
        size = y0_64.reshape(1, -1).abs() + W.abs() @ K64.reshape(K64.shape[0], -1).abs()
    eps = torch.finfo(torch.float32).eps
    host_err = ((out.double() - ref).abs() / size).max()
    assert host_err <= 4 * eps
    assert host_err <= ((tensor32.double() - ref).abs() / size).max()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, F64])
def test_host_rounding_of_step_ends_is_the_tensor_rounding(dtype):
    # The host path makes each step end on the host, rounded as the 0-d tensor it then
    # builds rounds it (no transfer back from the device to learn the rounded value).
    g = torch.Generator().manual_seed(0)
    mags = torch.rand(2000, generator=g, dtype=F64) * 10 ** torch.randint(
        -8, 9, (2000,), generator=g
    )
    values = mags.tolist() + [0.1, 1 / 3, 2.0**-24 + 1.0, 1.0 + 2.0**-11, 65504.0, 1e-30]
    for x in values:
        assert adaptive.host_round(x, dtype) == float(torch.scalar_tensor(x, dtype=dtype)), x
