"""The fixed-step fast path (``_core/fixed.py``) takes the steps of the general loop: same
values (to rounding), same statuses, counts and gradients, including a blow-up found by the
blockwise finiteness check."""

from __future__ import annotations

import math

import pytest
import torch

import torchnde as tn
import torchnde._core.fixed as fixed
import torchnde._core.loop as loop_module


def _solve(general: bool, monkeypatch, *args, **kwargs):
    """A solve on the fixed-grid path, or (``general``) on the general loop; checks which."""
    taken = []
    with monkeypatch.context() as m:
        real = fixed.run_fixed
        m.setattr(loop_module, "run_fixed", lambda *a: taken.append(1) or real(*a))
        if general:
            m.setattr(loop_module, "fixed_grid", lambda loop: None)
        sol = tn.solve(*args, **kwargs)
    assert bool(taken) != general
    return sol


def _field(t, y, args):
    return torch.tanh(y @ args) + torch.sin(3 * t)


@pytest.mark.parametrize("solver", [tn.RK4(), tn.Euler(), tn.RK38(), tn.Midpoint()])
@pytest.mark.parametrize("reverse", [False, True])
def test_fixed_path_matches_general_loop(solver, reverse, monkeypatch):
    torch.manual_seed(0)
    w = torch.randn(3, 3, dtype=torch.float64)
    y0 = torch.randn(4, 3, dtype=torch.float64)
    t0, t1 = (1.0, 0.0) if reverse else (0.0, 1.0)
    # Save times on step ends, inside steps and at both ends; dt0 does not divide the span.
    ts = torch.tensor([0.0, 0.2, 0.33, 0.5, 0.71, 1.0], dtype=torch.float64)
    ts = ts.flip(0) if reverse else ts
    kw = dict(dt0=0.1 if not reverse else -0.1, saveat=tn.SaveAt(ts=ts), args=w)
    kw["controller"] = tn.ConstantStepSize()
    a = _solve(False, monkeypatch, tn.ODETerm(_field), solver, t0, t1, y0, **kw)
    b = _solve(True, monkeypatch, tn.ODETerm(_field), solver, t0, t1, y0, **kw)
    torch.testing.assert_close(a.ys, b.ys, rtol=1e-13, atol=1e-13)
    assert a.stats == b.stats
    assert int(a.status) == int(b.status) == 0


def test_blow_up_found_by_block_check_matches_general_loop(monkeypatch):
    # y' = y^2 from y0 = 1 blows up at t = 1; with dt0 = 0.01 the discrete state overflows
    # some steps after, inside a later block of CHECK_EVERY steps.
    y0 = torch.ones(2, dtype=torch.float64)
    kw = dict(dt0=0.01, controller=tn.ConstantStepSize(), throw=False)
    kw["saveat"] = tn.SaveAt(ts=torch.linspace(0, 2, 11, dtype=torch.float64))
    term = tn.ODETerm(lambda t, y, args: y * y)
    a = _solve(False, monkeypatch, term, tn.RK4(), 0.0, 2.0, y0, **kw)
    b = _solve(True, monkeypatch, term, tn.RK4(), 0.0, 2.0, y0, **kw)
    assert int(a.status) == int(b.status) == int(tn.Status.NONFINITE)
    assert a.stats == b.stats
    assert a.stats["num_steps"] > fixed.CHECK_EVERY
    assert a.stats["num_steps"] % fixed.CHECK_EVERY != 0
    torch.testing.assert_close(a.ys, b.ys, equal_nan=True)
    assert torch.isfinite(a.ys[0]).all() and torch.isnan(a.ys[-1]).all()
    with pytest.raises(tn.SolveError, match="NaN or inf"):
        tn.solve(term, tn.RK4(), 0.0, 2.0, y0, dt0=0.01, controller=tn.ConstantStepSize())


def test_gradients_through_times_match_general_loop(monkeypatch):
    # t0, t1 and dt0 carry gradients: the fast path keeps the step sizes as tensors.
    w = torch.randn(2, 2, dtype=torch.float64)
    y0 = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    grads = []
    for general in (False, True):
        t0 = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
        t1 = torch.tensor(0.9, dtype=torch.float64, requires_grad=True)
        dt0 = torch.tensor(0.07, dtype=torch.float64, requires_grad=True)
        ts = torch.tensor([0.1, 0.45, 0.9], dtype=torch.float64, requires_grad=True)
        sol = _solve(
            general, monkeypatch, tn.ODETerm(_field), tn.RK4(), t0, t1, y0, dt0=dt0, args=w,
            controller=tn.ConstantStepSize(), saveat=tn.SaveAt(ts=ts),
        )  # fmt: skip
        grads.append(torch.autograd.grad(sol.ys.sum(), (y0, t0, t1, dt0, ts)))
    for ga, gb in zip(*grads):
        torch.testing.assert_close(ga, gb, rtol=1e-12, atol=1e-12)


def test_fixed_path_gradcheck():
    w = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    y0 = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    ts = torch.tensor([0.0, 0.3, 0.6], dtype=torch.float64)

    def f(y0, w):
        return tn.solve(
            tn.ODETerm(_field), tn.RK4(), 0.0, 0.6, y0, dt0=0.25, args=w,
            controller=tn.ConstantStepSize(), saveat=tn.SaveAt(ts=ts),
        ).ys  # fmt: skip

    assert torch.autograd.gradcheck(f, (y0, w), fast_mode=True)


def test_more_steps_than_max_steps_reports_max_steps():
    sol = tn.solve(
        tn.ODETerm(_field), tn.Euler(), 0.0, 1.0, torch.zeros(2, 2), dt0=0.01, args=torch.eye(2),
        controller=tn.ConstantStepSize(), max_steps=10, throw=False,
    )  # fmt: skip
    assert int(sol.status) == int(tn.Status.MAX_STEPS_REACHED)
    assert sol.stats["num_steps"] == 10
    assert not math.isnan(float(sol.ys[-1].sum()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_step_ts_grid_matches_general_loop(dtype, monkeypatch):
    # Steps shortened to step_ts points restart their count there (0.25 is not on the
    # 0.1-grid, 0.5 is); the host replay of the grid must take the same steps.
    w = torch.randn(3, 3, dtype=dtype)
    y0 = torch.randn(4, 3, dtype=dtype)
    ts = torch.tensor([0.0, 0.3, 0.65, 1.0], dtype=dtype)
    kw = dict(dt0=0.1, saveat=tn.SaveAt(ts=ts), args=w)
    kw["controller"] = tn.ConstantStepSize(step_ts=[0.25, 0.5, 0.77])
    a = _solve(False, monkeypatch, tn.ODETerm(_field), tn.RK4(), 0.0, 1.0, y0, **kw)
    b = _solve(True, monkeypatch, tn.ODETerm(_field), tn.RK4(), 0.0, 1.0, y0, **kw)
    assert a.stats == b.stats
    tol = 1e-13 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(a.ys, b.ys, rtol=tol, atol=tol)


def test_nan_in_one_component_mid_block_found_by_last_state_check(monkeypatch):
    # RK4 declares `nonfinite_persists`: the fast path looks only at each block's last state.
    # A NaN entering one component inside a block stays in it, so the block is replayed and
    # the solve stops where the general loop stops.
    assert tn.RK4.nonfinite_persists

    def field(t, y, args):
        bad = torch.where(t > 0.405, torch.nan, 0.0)
        return -y + torch.stack([bad, torch.zeros_like(bad)]).to(y.dtype)

    y0 = torch.ones(2, dtype=torch.float64)
    kw = dict(dt0=0.01, controller=tn.ConstantStepSize(), throw=False)
    kw["saveat"] = tn.SaveAt(ts=torch.linspace(0, 1, 6, dtype=torch.float64))
    a = _solve(False, monkeypatch, tn.ODETerm(field), tn.RK4(), 0.0, 1.0, y0, **kw)
    b = _solve(True, monkeypatch, tn.ODETerm(field), tn.RK4(), 0.0, 1.0, y0, **kw)
    assert int(a.status) == int(b.status) == int(tn.Status.NONFINITE)
    assert a.stats == b.stats
    assert fixed.CHECK_EVERY < a.stats["num_steps"] < 2 * fixed.CHECK_EVERY
    torch.testing.assert_close(a.ys, b.ys, equal_nan=True)
    exact = torch.exp(-torch.linspace(0, 0.4, 3, dtype=torch.float64))[:, None].expand(3, 2)
    torch.testing.assert_close(a.ys[:3], exact, rtol=1e-8, atol=1e-8)


def _unprepared(monkeypatch):
    """Solves whose fixed-grid steps are :meth:`fixed_step` itself, not the prepared ones."""
    monkeypatch.setattr(tn.AbstractRungeKutta, "fixed_stepper", lambda self, *a: None)


def _prepared(monkeypatch) -> list:
    """Solves that record whether their fixed-grid steps were prepared (``fixed_stepper``)."""
    made: list = []
    real = tn.AbstractRungeKutta.fixed_stepper

    def spy(self, *a):
        stepper = real(self, *a)
        made.append(stepper is not None)
        return stepper

    monkeypatch.setattr(tn.AbstractRungeKutta, "fixed_stepper", spy)
    return made


@pytest.mark.parametrize("solver", [tn.RK4(), tn.Euler(), tn.Midpoint(), tn.RK38(), tn.Heun()])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(1, 3), (4, 3), (3,)])
@pytest.mark.parametrize("grad", [False, True])
def test_prepared_fixed_steps_are_fixed_step_bit_for_bit(solver, dtype, shape, grad, monkeypatch):
    # `fixed_stepper` resolves once what `fixed_step` works out at every step (the stage
    # times, the placeholder state, the weights); the same operations on the same values,
    # so the same states, saves (on step ends and inside steps), counts and gradients.
    torch.manual_seed(0)
    w = torch.randn(3, 3, dtype=dtype, requires_grad=grad)
    y0 = torch.randn(shape, dtype=dtype, requires_grad=grad)
    ts = torch.tensor([0.0, 0.2, 0.33, 0.5, 0.71, 1.3], dtype=dtype)
    kw = dict(dt0=0.03, saveat=tn.SaveAt(ts=ts), args=w, controller=tn.ConstantStepSize())
    results = []
    for prepared in (True, False):
        with monkeypatch.context() as m, torch.set_grad_enabled(grad):
            if prepared:
                made = _prepared(m)
            else:
                _unprepared(m)
            sol = tn.solve(tn.ODETerm(_field), solver, 0.0, 1.3, y0, **kw)
            out = [sol.ys.detach(), sol.stats]
            if grad:
                out += torch.autograd.grad(sol.ys.square().sum(), (y0, w))
        results.append(out)
    assert made == [True]
    for a, b in zip(*results):
        assert a == b if isinstance(a, dict) else torch.equal(a, b)


def test_prepared_fixed_steps_replay_a_blow_up_bit_for_bit(monkeypatch):
    # The exact replay of a block takes the prepared steps again from the block's start.
    y0 = torch.ones(2, dtype=torch.float64)
    kw = dict(dt0=0.01, controller=tn.ConstantStepSize(), throw=False)
    kw["saveat"] = tn.SaveAt(ts=torch.linspace(0, 2, 11, dtype=torch.float64))
    term = tn.ODETerm(lambda t, y, args: y * y)
    with monkeypatch.context() as m:
        made = _prepared(m)
        a = tn.solve(term, tn.RK4(), 0.0, 2.0, y0, **kw)
    assert made == [True]
    _unprepared(monkeypatch)
    b = tn.solve(term, tn.RK4(), 0.0, 2.0, y0, **kw)
    assert int(a.status) == int(b.status) == int(tn.Status.NONFINITE)
    assert a.stats == b.stats
    assert torch.equal(a.ys.nan_to_num(), b.ys.nan_to_num())
    assert torch.equal(a.ys.isnan(), b.ys.isnan())


@pytest.mark.parametrize(
    "solver, controller",
    [
        (tn.RK38(), None), (tn.RK4(), None), (tn.Heun(), None), (tn.Midpoint(), None),
        (tn.Ralston(), None), (tn.Dopri5(), None), (tn.Tsit5(), None),
        (tn.Dopri5(), "adaptive"), (tn.Tsit5(), "adaptive"), (tn.Bosh3(), "adaptive"),
    ],
    ids=lambda v: v if isinstance(v, str) else repr(v),
)  # fmt: skip
@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("shape", [(1,), (3, 2)])
def test_float32_round_off_is_one_rounding_a_step(solver, controller, grad, shape):
    # y' = a from y0 = 3.2 over 156 steps of 0.01 in float32: a step's increment (about 0.002,
    # exact to a few ulps of itself) is added to y once, so the round-off is at most half an
    # ulp of |y| a step. An `addmm(y, w, F)` combination rounds at |y|'s scale once per
    # stage: 5.2e-5 after these steps for RK38, against this bound of 1.9e-5 (torchdiffeq:
    # 1.4e-5).
    a = torch.tensor(0.2, requires_grad=grad)
    y0 = torch.full(shape, 3.2, requires_grad=grad)
    if controller is None:
        ctrl = tn.ConstantStepSize()
    else:
        ctrl = tn.PIDController(rtol=1e-3, atol=1e-3, dtmax=0.01, differentiate_steps=False)
    with torch.set_grad_enabled(grad):
        sol = tn.solve(tn.ODETerm(lambda t, y, args: args + 0 * y), solver, 1.0, 2.56, y0,
                       dt0=0.01, args=a, controller=ctrl)  # fmt: skip
    steps = int(sol.stats["num_accepted_steps"])
    assert steps == 156
    err = float((sol.ys[-1].detach().double() - (3.2 + 0.2 * 1.56)).abs().max())
    ulp = float(torch.finfo(torch.float32).eps) * 4  # an ulp of numbers in [2, 4)
    assert err <= steps * (ulp / 2 + 8 * float(torch.finfo(torch.float32).eps) * 0.002), err
