"""The integration loop: what it does with steps, save times, statuses and stats.

Most tests drive the loop with stub solvers and controllers whose decisions are scripted, so a
failure points at the loop and not at a numerical method. The stub solver is Euler with a
linear dense output, which is exact for ``dy/dt = 1``, so every saved value is known exactly.
"""

from __future__ import annotations

import math

import pytest
import torch

import catalogue
import torchnde as tn
from torchnde._core.terms import broadcast_time

F64 = torch.float64


def f64(*times: float) -> torch.Tensor:
    """Times as a float64 tensor (Python lists are covered by their own test)."""
    return torch.tensor(times, dtype=F64)


# --------------------------------------------------------------------------- stubs


class RecordingEuler(tn.AbstractSolver):
    """Euler with a linear dense output; records every step and every dense query."""

    order = 1
    error_order = None
    dense_order = 1
    num_fevals_init = 1
    num_fevals_step = 1

    def __init__(self) -> None:
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.queries: list[torch.Tensor] = []

    def init(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)

    def step(self, terms, t0, t1, y0, args, state):
        self.calls.append((t0.detach().clone(), t1.detach().clone(), y0.detach().clone()))
        y1 = y0 + terms.prod(state, terms.contr(t0, t1))
        return y1, None, (t0, t1, y0, y1), terms.vf(t1, y1, args)

    def interpolate(self, dense_info, theta, per_sample):
        t0, t1, y0, y1 = dense_info
        self.queries.append((t0 + theta * (t1 - t0)).detach().clone())
        theta = theta.to(y0.dtype)
        if per_sample:
            return y0 + broadcast_time(theta, y0) * (y1 - y0)
        return y0 + theta.reshape((-1,) + (1,) * y0.ndim) * (y1 - y0)


class ScriptedController(tn.AbstractStepSizeController):
    """Steps of ``dt0``; accepts or rejects as scripted (then accepts), halving after a rejection.

    ``decisions[i]`` is a bool (joint) or a bool tensor of shape ``(batch,)`` (per sample).
    """

    def __init__(self, decisions=(), per_sample: bool = False) -> None:
        self.decisions = list(decisions)
        self.per_sample = per_sample

    def init(self, terms, t0, t1, y0, dt0, args, solver, vf0, norm):
        return t0 + dt0, (0, dt0), 0

    def adapt(self, t0, t1, y0, y1, y_error, error_order, state, norm):
        i, dt0 = state
        d = self.decisions[i] if i < len(self.decisions) else True
        accept = torch.as_tensor(d, device=t0.device).expand(t0.shape)
        next_t0 = torch.where(accept, t1, t0)
        h = torch.where(accept, dt0, (t1 - t0) / 2)
        return accept, next_t0, next_t0 + h, None, (i + 1, dt0)


def ones(t, y, args):
    return torch.ones_like(y)


ONES = tn.ODETerm(ones)


class CountingField:
    """``dy/dt = -y + sin(t)``, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, t, y, args):
        self.calls += 1
        return -y + torch.sin(per_sample_time(t, y))


def decay_exact(t: torch.Tensor, y0: torch.Tensor, t0: float = 0.0) -> torch.Tensor:
    """Exact solution of dy/dt = -2 t y."""
    return y0 * torch.exp(-(t**2 - t0**2)).reshape(t.shape + (1,) * y0.ndim)


def per_sample_time(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``t`` is 0-d (joint stepping) or ``(batch,)`` (per sample); shape it to multiply ``y``."""
    return t.reshape(t.shape + (1,) * (y.ndim - t.ndim)) if t.ndim else t


def decay(t, y, args):
    return -2 * per_sample_time(t, y) * y


# --------------------------------------------------------------------------- rejections


def test_rejected_step_does_not_advance_time_or_state():
    solver = RecordingEuler()
    script = [True, False, True, False, False, True]
    y0 = torch.tensor([1.0, -2.0], dtype=F64)
    sol = tn.solve(
        ONES,
        solver,
        0.0,
        1.0,
        y0,
        dt0=0.25,
        controller=ScriptedController(script),
        saveat=tn.SaveAt(steps=True, t1=True),
    )
    calls = solver.calls
    rejected = [k for k, d in enumerate(script) if not d]
    for k in rejected:
        t0_rej, _, y0_rej = calls[k]
        t0_next, _, y0_next = calls[k + 1]
        assert t0_next == t0_rej
        assert torch.equal(y0_next, y0_rej)
    # Only accepted steps are saved; the state is exact (dyadic step sizes).
    accepted_ends = [0.25, 0.375, 0.4375, 0.6875, 0.9375, 1.0]
    assert sol.ts.tolist() == accepted_ends + [1.0]
    torch.testing.assert_close(sol.ys, y0 + torch.tensor(accepted_ends + [1.0], dtype=F64)[:, None])
    assert sol.stats["num_steps"] == len(calls) == 9
    assert int(sol.stats["num_accepted_steps"]) == 6
    assert int(sol.stats["num_rejected_steps"]) == 3
    assert int(sol.status) == tn.Status.SUCCESSFUL


def test_rejected_step_of_one_sample_does_not_move_the_others_in_per_sample_mode():
    solver = RecordingEuler()
    script = [
        torch.tensor([True, True]),
        torch.tensor([False, True]),  # sample 0 rejects its second step
    ]
    y0 = torch.tensor([[0.0], [10.0]], dtype=F64)
    sol = tn.solve(
        ONES,
        solver,
        0.0,
        1.0,
        y0,
        dt0=0.25,
        controller=ScriptedController(script, per_sample=True),
    )
    (t_a, _, y_a), (t_b, _, y_b) = solver.calls[1], solver.calls[2]
    assert t_b[0] == t_a[0] and torch.equal(y_b[0], y_a[0])  # sample 0 stayed
    assert t_b[1] == t_a[1] + 0.25 and y_b[1, 0] == y_a[1, 0] + 0.25  # sample 1 moved on
    torch.testing.assert_close(sol.ys[-1], y0 + 1.0, rtol=0, atol=0)
    assert sol.stats["num_accepted_steps"].tolist() == [5, 4]
    assert sol.stats["num_rejected_steps"].tolist() == [1, 0]
    assert sol.status.tolist() == [tn.Status.SUCCESSFUL] * 2


def test_finished_sample_no_longer_changes_in_per_sample_mode():
    solver = RecordingEuler()
    y0 = torch.zeros(2, 1, dtype=F64)
    t1 = torch.tensor([0.5, 1.0], dtype=F64)
    sol = tn.solve(
        ONES,
        solver,
        0.0,
        t1,
        y0,
        dt0=0.125,
        controller=ScriptedController(per_sample=True),
        saveat=tn.SaveAt(steps=True, t1=True),
    )
    # Sample 0 finished after 4 steps; if the loop still carries it, it sits still at t1.
    for t0_k, t1_k, y0_k in solver.calls[4:]:
        if t0_k.shape == (2,):
            assert t0_k[0] == 0.5 and t1_k[0] == 0.5 and y0_k[0, 0] == 0.5
    assert sol.stats["num_accepted_steps"].tolist() == [4, 8]
    assert sol.stats["num_rejected_steps"].tolist() == [0, 0]
    assert sol.ts[:, -1].tolist() == [0.5, 1.0]
    assert sol.ys[-1, :, 0].tolist() == [0.5, 1.0]
    # Saved steps: sample 0 has 4, padded with NaN to sample 1's 8.
    steps_t0 = sol.ts[0, :-1]
    assert steps_t0[:4].tolist() == [0.125, 0.25, 0.375, 0.5]
    assert torch.isnan(steps_t0[4:]).all() and torch.isnan(sol.ys[4:-1, 0]).all()


def test_finished_sample_stops_counting_steps_with_an_adaptive_solver():
    y0 = torch.tensor([[1.0], [1.0]], dtype=F64)
    t1 = torch.tensor([0.5, 5.0], dtype=F64)
    ctrl = tn.PIDController(rtol=1e-8, atol=1e-8, per_sample=True)
    sol = tn.solve(tn.ODETerm(decay), tn.Tsit5(), 0.0, t1, y0, controller=ctrl)
    alone = tn.solve(tn.ODETerm(decay), tn.Tsit5(), 0.0, 0.5, y0[:1], controller=ctrl)
    acc = sol.stats["num_accepted_steps"]
    assert acc[0] == alone.stats["num_accepted_steps"][0]
    assert acc[0] < acc[1]
    assert torch.equal(sol.ys[:, :1], alone.ys)


# --------------------------------------------------------------------------- save times


def test_every_requested_time_is_saved_exactly_once():
    solver = RecordingEuler()
    y0 = torch.tensor([3.0], dtype=F64)
    # t0, a time inside a step, times exactly on step ends, two times in one step, t1.
    ts = torch.tensor([0.0, 0.1, 0.25, 0.3, 0.35, 0.5, 0.75, 1.0], dtype=F64)
    sol = tn.solve(
        ONES,
        solver,
        0.0,
        1.0,
        y0,
        dt0=0.25,
        controller=ScriptedController([True, False]),
        saveat=tn.SaveAt(ts=ts),
    )
    torch.testing.assert_close(sol.ts, ts, rtol=0, atol=0)
    torch.testing.assert_close(sol.ys, y0 + ts[:, None], rtol=0, atol=1e-15)
    queried = torch.cat([q.reshape(-1) for q in solver.queries]).tolist()
    assert len(queried) == len(set(queried)), f"a time was interpolated twice: {queried}"
    assert set(queried) <= set(ts.tolist())


@pytest.mark.parametrize("per_sample", [False, True])
def test_save_times_on_step_ends_equal_the_step_values(per_sample):
    # Dopri5 with constant steps of 0.25: saving at the step ends must give the step values.
    y0 = torch.tensor([[1.0, 0.5], [2.0, -1.0]], dtype=F64)
    ts = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=F64)
    term = tn.ODETerm(CountingField())
    kw = dict(dt0=0.25, controller=tn.ConstantStepSize(per_sample=per_sample))
    on_ts = tn.solve(term, tn.Dopri5(), 0.0, 1.0, y0, saveat=tn.SaveAt(ts=ts), **kw)
    steps = tn.solve(term, tn.Dopri5(), 0.0, 1.0, y0, saveat=tn.SaveAt(t0=True, steps=True), **kw)
    torch.testing.assert_close(on_ts.ys, steps.ys, rtol=1e-15, atol=1e-15)


def test_per_sample_save_times_land_in_the_right_sample():
    solver = RecordingEuler()
    y0 = torch.tensor([[0.0], [100.0]], dtype=F64)
    ts = torch.tensor([[0.0, 0.3, 1.0], [0.25, 0.5, 0.9]], dtype=F64)
    sol = tn.solve(
        ONES,
        solver,
        0.0,
        1.0,
        y0,
        dt0=0.25,
        controller=ScriptedController([torch.tensor([False, True])], per_sample=True),
        saveat=tn.SaveAt(ts=ts),
    )
    torch.testing.assert_close(sol.ts, ts, rtol=0, atol=0)
    expect = (y0[:, 0][:, None] + ts).T[..., None]  # (n, batch, 1)
    torch.testing.assert_close(sol.ys, expect, rtol=0, atol=1e-14)


# --------------------------------------------------------------------------- max_steps


def test_max_steps_raises_solve_error_naming_the_reason():
    with pytest.raises(tn.SolveError, match="MAX_STEPS_REACHED") as info:
        tn.solve(
            ONES,
            RecordingEuler(),
            0.0,
            1.0,
            torch.zeros(1, dtype=F64),
            dt0=0.125,
            controller=ScriptedController(),
            max_steps=3,
        )
    err = info.value
    assert err.status == tn.Status.MAX_STEPS_REACHED
    assert err.num_steps == 3
    assert err.t == pytest.approx(0.375)
    assert "t=0.375" in str(err) and "3 steps" in str(err) and "max_steps" in str(err)


def test_max_steps_with_throw_false_returns_the_partial_solution():
    y0 = torch.tensor([1.0], dtype=F64)
    ts = torch.tensor([0.125, 0.25, 0.5, 0.875], dtype=F64)
    sol = tn.solve(
        ONES,
        RecordingEuler(),
        0.0,
        1.0,
        y0,
        dt0=0.125,
        controller=ScriptedController(),
        saveat=tn.SaveAt(ts=ts, t1=True),
        max_steps=3,
        throw=False,
    )
    assert int(sol.status) == tn.Status.MAX_STEPS_REACHED
    assert not sol.success
    assert sol.stats["num_steps"] == 3
    assert sol.ys[:2, 0].tolist() == [1.125, 1.25]
    assert torch.isnan(sol.ys[2:4]).all()
    assert sol.ts[-1] == 0.375 and sol.ys[-1, 0] == 1.375  # the time reached


def test_max_steps_counts_rejected_steps():
    sol = tn.solve(
        ONES,
        RecordingEuler(),
        0.0,
        1.0,
        torch.zeros(1, dtype=F64),
        dt0=0.5,
        controller=ScriptedController([False] * 10),
        max_steps=4,
        throw=False,
    )
    assert int(sol.status) == tn.Status.MAX_STEPS_REACHED
    assert sol.stats["num_steps"] == 4
    assert int(sol.stats["num_rejected_steps"]) == 4
    assert sol.ts[-1] == 0.0 and sol.ys[-1, 0] == 0.0


def test_max_steps_stops_only_the_unfinished_samples_in_per_sample_mode():
    t1 = torch.tensor([0.25, 1.0], dtype=F64)
    sol = tn.solve(
        ONES,
        RecordingEuler(),
        0.0,
        t1,
        torch.zeros(2, 1, dtype=F64),
        dt0=0.125,
        controller=ScriptedController(per_sample=True),
        max_steps=4,
        throw=False,
    )
    assert sol.status.tolist() == [tn.Status.SUCCESSFUL, tn.Status.MAX_STEPS_REACHED]
    assert sol.ts[:, -1].tolist() == [0.25, 0.5]


class _ShrinksByLessThanTheFloor(tn.PIDController):
    """Accepts steps of at most 6e-5 only and shrinks a rejected step by 10%: by 1e-5, less
    than the floor of float32 times at 17 (16 ulps, 3.2e-5). Scripted for the general loop
    (``adapt``) and the host control (``host_adapt``) alike."""

    def adapt(self, t0, t1, y0, y1, y_error, error_order, state, norm):
        h = t1 - t0
        accept = h <= 6e-5
        next_t0 = torch.where(accept, t1, t0)
        return accept, next_t0, next_t0 + torch.where(accept, h, 0.9 * h), None, state

    def host_adapt(self, r, h, k, state):
        return h <= 6e-5, (h if h <= 6e-5 else 0.9 * h), state


@pytest.mark.parametrize("path", ["host", "general", "per-sample"])
def test_a_rejected_last_step_is_not_stretched_back_to_its_size(path):
    """The last step, stretched to end at t1 = 17 (float32), is rejected; its successor
    (9e-5 of the 1e-4 left) would end within the floor of t1 and be stretched back to the
    rejected step. It ends halfway instead, and the solve finishes (it retried the same step
    until ``max_steps`` before)."""
    t0, t1 = torch.tensor(17.0 - 1e-4), torch.tensor(17.0)
    y0 = torch.zeros(3 if path == "per-sample" else 1)
    if path == "per-sample":
        y0, t0, t1 = y0[:, None], t0.expand(3), t1.expand(3)
    ctrl = _ShrinksByLessThanTheFloor(rtol=1e-6, atol=1e-6, per_sample=path == "per-sample")
    with torch.set_grad_enabled(path != "host"):
        sol = tn.solve(ONES, tn.Dopri5(), t0, t1, y0, dt0=1e-4, controller=ctrl,
                       saveat=tn.SaveAt(steps=True), max_steps=50, throw=False)  # fmt: skip
    assert (torch.as_tensor(sol.status) == tn.Status.SUCCESSFUL).all()
    assert sol.stats["num_steps"] == 3
    assert (torch.as_tensor(sol.stats["num_rejected_steps"]) == 1).all()
    ts = sol.ts if path != "per-sample" else sol.ts[0]
    ts = ts[~ts.isnan()]
    assert ts.tolist() == [float(t0.flatten()[0] + 0.5 * (17.0 - t0.flatten()[0])), 17.0]
    ys = sol.ys.detach().reshape(-1, y0.numel())
    torch.testing.assert_close(ys[-1], y0.flatten() + 1e-4, rtol=0, atol=2e-6)


# --------------------------------------------------------------------------- stats


# Every catalogued explicit Runge-Kutta method (tests/catalogue.py).
SOLVERS = catalogue.classes(catalogue.Kind.EXPLICIT_RK)
NFE_CASES = [(cls, False) for cls in SOLVERS] + [
    (cls, True) for cls in SOLVERS if cls().is_adaptive
]


@pytest.mark.parametrize(
    "solver_cls, adaptive",
    NFE_CASES,
    ids=[f"{c.__name__}-{'pid' if a else 'constant'}" for c, a in NFE_CASES],
)
def test_num_fevals_equals_the_number_of_vector_field_calls(solver_cls, adaptive):
    # With PID and no dt0, the initial step selection costs one extra evaluation.
    f = CountingField()
    y0 = torch.tensor([1.0, 2.0], dtype=F64)
    if adaptive:
        kw = dict(controller=tn.PIDController(rtol=1e-6, atol=1e-6))
    else:
        kw = dict(dt0=0.1, controller=tn.ConstantStepSize())
    sol = tn.solve(
        tn.ODETerm(f), solver_cls(), 0.0, 2.0, y0, saveat=tn.SaveAt(ts=f64(0.5, 1.5)), **kw
    )
    assert sol.stats["num_fevals"] == f.calls
    if not adaptive:
        assert sol.stats["num_steps"] == 20


@pytest.mark.parametrize("solver_cls", [tn.RK4, tn.Dopri5], ids=lambda c: c.__name__)
def test_num_fevals_counts_the_restart_after_a_jump(solver_cls):
    f = CountingField()
    y0 = torch.tensor([[1.0], [2.0]], dtype=F64)
    ctrl = (
        tn.PIDController(jump_ts=[0.3, 0.7], per_sample=True)
        if solver_cls().is_adaptive
        else tn.ConstantStepSize(jump_ts=[0.3, 0.7])
    )
    dt0 = None if solver_cls().is_adaptive else 0.1
    sol = tn.solve(tn.ODETerm(f), solver_cls(), 0.0, 1.0, y0, dt0=dt0, controller=ctrl)
    assert sol.stats["num_fevals"] == f.calls


def test_num_steps_is_accepted_plus_rejected():
    # A stiff-ish start forces rejections.
    f = lambda t, y, args: -50 * (y - torch.cos(t))
    sol = tn.solve(
        tn.ODETerm(f),
        tn.Dopri5(),
        0.0,
        2.0,
        torch.tensor([5.0], dtype=F64),
        dt0=1.0,
        controller=tn.PIDController(rtol=1e-6, atol=1e-8),
    )
    acc = int(sol.stats["num_accepted_steps"])
    rej = int(sol.stats["num_rejected_steps"])
    assert rej > 0
    assert sol.stats["num_steps"] == acc + rej


# --------------------------------------------------------------------------- step_ts / jump_ts


@pytest.mark.parametrize(
    "controller",
    [
        tn.PIDController(rtol=1e-6, atol=1e-6, step_ts=f64(0.1234567, 0.5678901, 1.5)),
        tn.ConstantStepSize(step_ts=f64(0.1234567, 0.5678901, 1.5)),
    ],
    ids=["pid", "constant"],
)
def test_solver_steps_exactly_to_step_ts(controller):
    dt0 = None if isinstance(controller, tn.PIDController) else 0.1
    sol = tn.solve(
        tn.ODETerm(CountingField()),
        tn.Dopri5(),
        0.0,
        2.0,
        torch.ones(2, dtype=F64),
        dt0=dt0,
        controller=controller,
        saveat=tn.SaveAt(steps=True),
    )
    steps = sol.ts.tolist()
    for t in (0.1234567, 0.5678901, 1.5):
        assert t in steps, f"{t} not stepped to exactly: {steps}"


def test_solver_steps_exactly_to_step_ts_in_reverse_time():
    sol = tn.solve(
        tn.ODETerm(CountingField()),
        tn.Tsit5(),
        2.0,
        0.0,
        torch.ones(2, dtype=F64),
        controller=tn.PIDController(rtol=1e-6, atol=1e-6, step_ts=f64(0.3, 1.7)),
        saveat=tn.SaveAt(steps=True),
    )
    steps = sol.ts.tolist()
    assert 0.3 in steps and 1.7 in steps
    assert all(a > b for a, b in zip(steps, steps[1:]))


def test_python_float_times_are_not_rounded_to_float32():
    # Python floats are float64; a float64 solve must not see them through float32.
    t_save, t_step, t_jump = 0.1, 0.1234567, 0.7654321
    sol = tn.solve(
        tn.ODETerm(CountingField()),
        tn.Dopri5(),
        0.0,
        1.0,
        torch.ones(1, dtype=F64),
        controller=tn.PIDController(step_ts=[t_step], jump_ts=[t_jump]),
        saveat=tn.SaveAt(ts=[t_save], steps=True),
    )
    assert sol.ts[0].item() == t_save
    assert t_step in sol.ts.tolist()
    assert t_jump in sol.ts.tolist()


def test_python_float_save_time_equal_to_t1_is_within_the_interval():
    # 0.6 is not a float32 number: rounded to float32 it would lie beyond t1 = 0.6.
    sol = tn.solve(
        tn.ODETerm(CountingField()),
        tn.Tsit5(),
        0.0,
        0.6,
        torch.ones(1, dtype=F64),
        saveat=tn.SaveAt(ts=[0.3, 0.6], t1=True),
    )
    assert sol.ts.tolist() == [0.3, 0.6, 0.6]
    assert sol.ys[1, 0] == sol.ys[2, 0]


def test_odeint_python_float_times_keep_float64():
    expect = torch.exp(-torch.tensor([0.0, 0.1, 0.7], dtype=F64))[:, None]
    ys = tn.odeint(
        lambda t, y: -y,
        torch.ones(1, dtype=F64),
        [0.0, 0.1, 0.7],
        method="dopri5",
        rtol=1e-12,
        atol=1e-14,
    )
    torch.testing.assert_close(ys, expect, rtol=1e-11, atol=0)


def _kink(t, y, args):
    # dy/dt = y for t <= 1, -2y after: f(1) is the left value, so the state at t = 1 is
    # continuous but the vector field jumps there.
    return torch.where(t <= 1, y, -2 * y)


def _kink_exact(t: float) -> float:
    return math.exp(t) if t <= 1 else math.e * math.exp(-2 * (t - 1))


@pytest.mark.parametrize("solver_cls", [tn.RK4, tn.Midpoint], ids=lambda c: c.__name__)
def test_jump_ts_restore_the_order_of_a_fixed_step_solver(solver_cls):
    y0 = torch.ones(1, dtype=F64)

    def err(dt0, jump_ts):
        sol = tn.solve(
            tn.ODETerm(_kink),
            solver_cls(),
            0.0,
            2.0,
            y0,
            dt0=dt0,  # grids of 0.15 and 0.075 both miss t = 1
            controller=tn.ConstantStepSize(jump_ts=jump_ts),
        )
        return abs(sol.ys[-1, 0].item() - _kink_exact(2.0))

    def observed_order(jump_ts):
        return math.log2(err(0.15, jump_ts) / err(0.075, jump_ts))

    assert observed_order([1.0]) > solver_cls.order - 0.3
    assert observed_order(None) < 1.5  # stepping over the kink: first order at best
    assert err(0.15, [1.0]) < err(0.15, None)


def test_jump_ts_make_an_adaptive_solve_accurate_and_cheap():
    y0 = torch.ones(1, dtype=F64)

    def run(jump_ts):
        return tn.solve(
            tn.ODETerm(_kink),
            tn.Dopri5(),
            0.0,
            2.0,
            y0,
            controller=tn.PIDController(rtol=1e-9, atol=1e-12, jump_ts=jump_ts),
            saveat=tn.SaveAt(ts=[1.0, 2.0], steps=True),
        )

    with_jump, without = run([1.0]), run(None)
    assert 1.0 in with_jump.ts.tolist()
    exact = torch.tensor([_kink_exact(1.0), _kink_exact(2.0)], dtype=F64)
    torch.testing.assert_close(with_jump.ys[:2, 0], exact, rtol=1e-8, atol=0)
    assert int(with_jump.stats["num_rejected_steps"]) < int(without.stats["num_rejected_steps"])


def test_first_same_as_last_is_re_evaluated_on_the_right_of_a_jump():
    # dy/dt = 0 up to and at t = 1, then 1: y(2) = 1. The step from t = 1 must use the
    # right-hand value of f; Euler's step reuses the last evaluation (f(1) = 0, the left
    # value) unless it is redone after the jump.
    step = lambda t, y, args: torch.where(t <= 1, torch.zeros_like(y), torch.ones_like(y))
    y0 = torch.zeros(1, dtype=F64)

    def final(jump_ts):
        sol = tn.solve(
            tn.ODETerm(step),
            tn.Euler(),
            0.0,
            2.0,
            y0,
            dt0=0.25,
            controller=tn.ConstantStepSize(jump_ts=jump_ts),
        )
        return sol.ys[-1, 0].item()

    assert final([1.0]) == pytest.approx(1.0, abs=1e-12)
    assert final(None) == pytest.approx(0.75, abs=1e-12)


def test_first_same_as_last_is_re_evaluated_after_a_jump_in_reverse_time():
    # Backwards from t = 2: dy/dt = 0 down to and at t = 1, then 1 below it.
    step = lambda t, y, args: torch.where(t >= 1, torch.zeros_like(y), torch.ones_like(y))
    sol = tn.solve(
        tn.ODETerm(step),
        tn.Euler(),
        2.0,
        0.0,
        torch.zeros(1, dtype=F64),
        dt0=0.25,
        controller=tn.ConstantStepSize(jump_ts=[1.0]),
    )
    assert sol.ys[-1, 0].item() == pytest.approx(-1.0, abs=1e-12)


# --------------------------------------------------------------------------- t0 == t1, reverse


@pytest.mark.parametrize("per_sample", [False, True])
def test_t0_equal_t1_returns_y0_without_steps(per_sample):
    y0 = torch.tensor([[1.0, 2.0]], dtype=F64)
    sol = tn.solve(
        tn.ODETerm(decay),
        tn.Dopri5(),
        0.5,
        0.5,
        y0,
        controller=tn.PIDController(per_sample=per_sample),
        saveat=tn.SaveAt(t0=True, ts=[0.5], t1=True, dense=True),
    )
    assert sol.stats["num_steps"] == 0
    assert sol.status.eq(tn.Status.SUCCESSFUL).all()
    assert torch.equal(sol.ys, y0.expand(3, 1, 2))
    torch.testing.assert_close(sol.evaluate(0.5), y0, rtol=0, atol=0)


@pytest.mark.parametrize("solver_cls", [tn.Dopri5, tn.Tsit5, tn.Bosh3], ids=lambda c: c.__name__)
def test_reverse_time_matches_the_analytic_solution(solver_cls):
    y0 = torch.tensor([1.0, -0.5], dtype=F64)
    ts = torch.tensor([1.0, 0.5, 0.0, -0.7], dtype=F64)
    sol = tn.solve(
        tn.ODETerm(decay),
        solver_cls(),
        1.0,
        -0.7,
        y0,
        controller=tn.PIDController(rtol=1e-9, atol=1e-10),
        saveat=tn.SaveAt(ts=ts, t1=True),
    )
    assert sol.ts.tolist() == ts.tolist() + [-0.7]
    torch.testing.assert_close(sol.ys[:-1], decay_exact(ts, y0, 1.0), rtol=1e-7, atol=1e-9)


def test_reverse_time_matches_the_forward_solve_of_the_reversed_problem():
    f = lambda t, y, args: torch.stack([y[1], -torch.sin(y[0]) + 0.3 * torch.cos(t)])
    g = lambda s, z, args: -f(-s, z, args)  # z(s) = y(-s)
    y0 = torch.tensor([0.3, -1.0], dtype=F64)
    ts = torch.tensor([2.0, 1.0, -0.5], dtype=F64)
    ctrl = tn.PIDController(rtol=1e-7, atol=1e-9)
    back = tn.solve(
        tn.ODETerm(f), tn.Tsit5(), 2.0, -0.5, y0, controller=ctrl, saveat=tn.SaveAt(ts=ts)
    )
    fwd = tn.solve(
        tn.ODETerm(g), tn.Tsit5(), -2.0, 0.5, y0, controller=ctrl, saveat=tn.SaveAt(ts=-ts)
    )
    torch.testing.assert_close(back.ys, fwd.ys, rtol=0, atol=1e-13)
    assert back.stats["num_steps"] == fwd.stats["num_steps"]


# --------------------------------------------------------------------------- SaveAt


@pytest.mark.parametrize(
    "saveat, expect_ts",
    [
        (tn.SaveAt(t1=True), [1.0]),
        (tn.SaveAt(t0=True), [0.0]),
        (tn.SaveAt(t0=True, t1=True), [0.0, 1.0]),
        (tn.SaveAt(ts=f64(0.1, 0.6)), [0.1, 0.6]),
        (tn.SaveAt(steps=True), [0.25, 0.5, 0.75, 1.0]),
        (
            tn.SaveAt(t0=True, ts=f64(0.1, 0.6), steps=True, t1=True),
            [0.0, 0.1, 0.6, 0.25, 0.5, 0.75, 1.0, 1.0],
        ),
        (tn.SaveAt(ts=f64(0.1, 0.6), t1=True), [0.1, 0.6, 1.0]),
        (tn.SaveAt(t0=True, steps=True), [0.0, 0.25, 0.5, 0.75, 1.0]),
    ],
)
@pytest.mark.parametrize("per_sample", [False, True])
def test_saveat_saves_t0_ts_steps_t1_in_that_order(saveat, expect_ts, per_sample):
    y0 = torch.tensor([[1.0], [5.0]], dtype=F64)
    sol = tn.solve(
        ONES,
        RecordingEuler(),
        0.0,
        1.0,
        y0,
        dt0=0.25,
        controller=ScriptedController(per_sample=per_sample),
        saveat=saveat,
    )
    expect = torch.tensor(expect_ts, dtype=F64)
    ts = sol.ts if not per_sample else sol.ts[1]
    if per_sample:
        assert sol.ts.shape == (2, len(expect_ts))
    torch.testing.assert_close(ts, expect, rtol=0, atol=0)
    assert sol.ys.shape == (len(expect_ts), 2, 1)
    torch.testing.assert_close(sol.ys, y0 + expect[:, None, None], rtol=0, atol=1e-15)


def test_saveat_dense_only_gives_no_saved_values():
    sol = tn.solve(
        tn.ODETerm(decay),
        tn.Dopri5(),
        0.0,
        1.0,
        torch.ones(1, dtype=F64),
        saveat=tn.SaveAt(dense=True),
    )
    assert sol.ts is None and sol.ys is None
    assert sol.evaluate(0.5).shape == (1,)


def test_evaluate_without_dense_raises():
    sol = tn.solve(tn.ODETerm(decay), tn.Dopri5(), 0.0, 1.0, torch.ones(1, dtype=F64))
    with pytest.raises(ValueError, match="dense=True"):
        sol.evaluate(0.5)


# --------------------------------------------------------------------------- dense output


@pytest.mark.parametrize("solver_cls", [tn.Dopri5, tn.Tsit5, tn.RK4], ids=lambda c: c.__name__)
@pytest.mark.parametrize("t0, t1", [(0.0, 1.5), (1.5, -0.5)], ids=["forward", "reverse"])
def test_dense_output_matches_the_analytic_solution_joint(solver_cls, t0, t1):
    y0 = torch.tensor([[1.0, 2.0], [-1.0, 0.5]], dtype=F64)
    fixed = not solver_cls().is_adaptive
    sol = tn.solve(
        tn.ODETerm(decay),
        solver_cls(),
        t0,
        t1,
        y0,
        dt0=0.01 if fixed else None,
        controller=None if fixed else tn.PIDController(rtol=1e-9, atol=1e-10),
        saveat=tn.SaveAt(dense=True),
    )
    tq = torch.linspace(t0, t1, 37, dtype=F64)
    out = sol.evaluate(tq)
    assert out.shape == (37, 2, 2)
    torch.testing.assert_close(out, decay_exact(tq, y0, t0), rtol=1e-6, atol=1e-7)
    # Scalars give the state shape; the interval ends are exact.
    torch.testing.assert_close(sol.evaluate(t0), y0, rtol=0, atol=0)
    torch.testing.assert_close(
        sol.evaluate(torch.tensor(t1)),
        decay_exact(torch.tensor(t1, dtype=F64), y0, t0),
        rtol=1e-6,
        atol=1e-7,
    )
    with pytest.raises(ValueError, match="outside"):
        sol.evaluate(t1 + (1.0 if t1 > t0 else -1.0))


@pytest.mark.parametrize("t0, t1", [(0.0, 1.5), (1.5, -0.5)], ids=["forward", "reverse"])
def test_dense_output_matches_the_analytic_solution_per_sample(t0, t1):
    y0 = torch.tensor([[1.0, 2.0], [-1.0, 0.5], [3.0, 0.0]], dtype=F64)
    t1s = torch.tensor([t1, (t0 + t1) / 2, t1], dtype=F64)
    sol = tn.solve(
        tn.ODETerm(decay),
        tn.Dopri5(),
        t0,
        t1s,
        y0,
        controller=tn.PIDController(rtol=1e-9, atol=1e-10, per_sample=True),
        saveat=tn.SaveAt(dense=True),
    )
    for frac in (0.0, 0.13, 0.5, 0.77, 1.0):
        tq = t0 + frac * (t1s - t0)  # a different time per sample
        out = sol.evaluate(tq)
        assert out.shape == y0.shape
        expect = y0 * torch.exp(-(tq**2 - t0**2))[:, None]
        torch.testing.assert_close(out, expect, rtol=1e-7, atol=1e-8)
    # One time for every sample.
    mid = (t0 + 0.25 * (t1 - t0)) * torch.ones((), dtype=F64)
    expect = y0 * torch.exp(-(mid**2 - t0**2))
    torch.testing.assert_close(sol.evaluate(mid), expect, rtol=1e-7, atol=1e-8)


# --------------------------------------------------------------------------- tuple states


def _rotate(t, y, args):
    # A (2,) rotation and a (2, 2) decay: x' = (-x1, x0), m' = -m.
    x, m = y
    return torch.stack([-x[1], x[0]]), -m


@pytest.mark.parametrize("solver_cls", [tn.Tsit5, tn.RK4], ids=lambda c: c.__name__)
def test_tuple_state_is_saved_and_interpolated_as_a_tuple(solver_cls):
    x0 = torch.tensor([1.0, 0.0], dtype=F64)
    m0 = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=F64)
    ts = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    fixed = not solver_cls().is_adaptive
    sol = tn.solve(
        tn.ODETerm(_rotate),
        solver_cls(),
        0.0,
        1.0,
        (x0, m0),
        dt0=0.01 if fixed else None,
        controller=None if fixed else tn.PIDController(rtol=1e-9, atol=1e-10),
        saveat=tn.SaveAt(ts=ts, t1=True, dense=True),
    )
    xs, ms = sol.ys
    assert xs.shape == (4, 2) and ms.shape == (4, 2, 2)
    x_exact = torch.stack([torch.cos(ts), torch.sin(ts)], dim=-1)
    m_exact = m0 * torch.exp(-ts)[:, None, None]
    torch.testing.assert_close(xs[:3], x_exact, rtol=1e-7, atol=1e-8)
    torch.testing.assert_close(ms[:3], m_exact, rtol=1e-7, atol=1e-8)
    xq, mq = sol.evaluate(ts)
    torch.testing.assert_close(xq, x_exact, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(mq, m_exact, rtol=1e-6, atol=1e-7)
    x_half, m_half = sol.evaluate(0.5)
    assert x_half.shape == (2,) and m_half.shape == (2, 2)


def test_tuple_state_per_sample_keeps_the_batch_dimension():
    x0 = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=F64)  # (batch=2, 2)
    m0 = torch.ones(2, 3, dtype=F64)

    def f(t, y, args):
        x, m = y
        return torch.stack([-x[:, 1], x[:, 0]], dim=-1), -m

    ts = torch.tensor([0.3, 0.9], dtype=F64)
    sol = tn.solve(
        tn.ODETerm(f),
        tn.Dopri5(),
        0.0,
        1.0,
        (x0, m0),
        controller=tn.PIDController(rtol=1e-9, atol=1e-10, per_sample=True),
        saveat=tn.SaveAt(ts=ts, dense=True),
    )
    xs, ms = sol.ys
    assert xs.shape == (2, 2, 2) and ms.shape == (2, 2, 3)
    c, s = torch.cos(ts)[:, None], torch.sin(ts)[:, None]
    x_exact = torch.stack([x0[:, 0] * c - x0[:, 1] * s, x0[:, 0] * s + x0[:, 1] * c], dim=-1)
    torch.testing.assert_close(xs, x_exact, rtol=1e-7, atol=1e-8)
    torch.testing.assert_close(ms, m0 * torch.exp(-ts)[:, None, None], rtol=1e-7, atol=1e-8)
    xq, mq = sol.evaluate(torch.tensor([0.3, 0.9], dtype=F64))
    assert xq.shape == (2, 2) and mq.shape == (2, 3)
    torch.testing.assert_close(
        xq, torch.stack([x_exact[0, 0], x_exact[1, 1]]), rtol=1e-6, atol=1e-7
    )


# --------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-9)])
def test_state_dtype_is_kept_and_accuracy_fits_it(dtype, tol):
    y0 = torch.tensor([1.0, 2.0], dtype=dtype)
    ts = torch.tensor([0.5, 1.0], dtype=dtype)
    sol = tn.solve(
        tn.ODETerm(decay),
        tn.Dopri5(),
        0.0,
        1.0,
        y0,
        controller=tn.PIDController(rtol=tol, atol=tol),
        saveat=tn.SaveAt(ts=ts, dense=True),
    )
    assert sol.ys.dtype == dtype and sol.ts.dtype == dtype
    assert sol.evaluate(0.7).dtype == dtype
    torch.testing.assert_close(sol.ys, decay_exact(ts, y0), rtol=20 * tol, atol=20 * tol)


def test_float64_time_with_float32_state_keeps_each_dtype():
    seen = []

    def f(t, y, args):
        seen.append(t.dtype)
        return -y

    t1 = torch.tensor(1.0, dtype=F64)
    sol = tn.solve(
        tn.ODETerm(f),
        tn.Tsit5(),
        0.0,
        t1,
        torch.ones(3, dtype=torch.float32),
        saveat=tn.SaveAt(ts=torch.tensor([0.25, 1.0], dtype=F64), t1=True),
    )
    assert sol.ys.dtype == torch.float32
    assert sol.ts.dtype == F64
    assert set(seen) == {F64}
    torch.testing.assert_close(
        sol.ys[:, 0], torch.exp(-torch.tensor([0.25, 1.0, 1.0])), rtol=1e-4, atol=1e-5
    )


def test_float32_state_promotes_no_time_to_float32_when_times_are_python_floats():
    sol = tn.solve(
        tn.ODETerm(decay),
        tn.Tsit5(),
        0.0,
        1.0,
        torch.ones(2, dtype=torch.float32),
        saveat=tn.SaveAt(ts=[0.5], t1=True),
    )
    assert sol.ts.dtype == torch.float32 and sol.ys.dtype == torch.float32


# --------------------------------------------------------------------------- failures


def test_non_finite_vector_field_with_constant_steps_gives_status_nonfinite():
    f = lambda t, y, args: torch.where(t > 0.5, torch.full_like(y, math.nan), -y)
    kw = dict(
        dt0=0.125, controller=tn.ConstantStepSize(), saveat=tn.SaveAt(ts=[0.25, 0.9], t1=True)
    )
    y0 = torch.ones(2, dtype=F64)
    sol = tn.solve(tn.ODETerm(f), tn.RK4(), 0.0, 1.0, y0, throw=False, **kw)
    assert int(sol.status) == tn.Status.NONFINITE
    assert float(sol.ts[-1]) <= 0.5
    assert torch.isfinite(sol.ys[0]).all() and torch.isnan(sol.ys[1]).all()
    assert torch.isfinite(sol.ys[-1]).all()  # the last finite state
    with pytest.raises(tn.SolveError, match="NONFINITE") as info:
        tn.solve(tn.ODETerm(f), tn.RK4(), 0.0, 1.0, y0, **kw)
    assert info.value.status == tn.Status.NONFINITE
    assert info.value.t <= 0.5
    assert f"after {info.value.num_steps} steps" in str(info.value)


def test_adaptive_solve_that_blows_up_fails_with_a_named_reason():
    # y' = y², y(0) = 1 blows up at t = 1.
    f = lambda t, y, args: y * y
    y0 = torch.ones(1, dtype=F64)
    kw = dict(controller=tn.PIDController(rtol=1e-6, atol=1e-6), max_steps=100_000)
    sol = tn.solve(tn.ODETerm(f), tn.Dopri5(), 0.0, 2.0, y0, throw=False, **kw)
    status = tn.Status(int(sol.status))
    assert status in (tn.Status.DT_UNDERFLOW, tn.Status.NONFINITE)
    assert 0.99 < float(sol.ts[-1]) < 1.0 + 1e-5
    with pytest.raises(tn.SolveError) as info:
        tn.solve(tn.ODETerm(f), tn.Dopri5(), 0.0, 2.0, y0, **kw)
    err = info.value
    assert err.status == status
    assert err.t == pytest.approx(float(sol.ts[-1]))
    assert err.num_steps == sol.stats["num_steps"]
    msg = str(err)
    assert status.name in msg and f"t={err.t:.6g}" in msg and f"{err.num_steps} steps" in msg


# --------------------------------------------------------------------------- progress


@pytest.mark.parametrize("per_sample", [False, True])
def test_progress_bar_does_not_change_results(per_sample, capsys):
    y0 = torch.tensor([[1.0], [2.0]], dtype=F64)
    kw = dict(
        controller=tn.PIDController(rtol=1e-7, atol=1e-9, per_sample=per_sample),
        saveat=tn.SaveAt(ts=[0.5, 1.0], steps=True),
    )
    quiet = tn.solve(tn.ODETerm(decay), tn.Tsit5(), 0.0, 1.0, y0, **kw)
    shown = tn.solve(tn.ODETerm(decay), tn.Tsit5(), 0.0, 1.0, y0, progress=True, **kw)
    assert torch.equal(quiet.ys, shown.ys)
    assert quiet.stats["num_steps"] == shown.stats["num_steps"]
    err = capsys.readouterr().err
    assert "steps=" in err
