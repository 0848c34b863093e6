"""Batching: joint stepping (one step size for the batch) and per-sample stepping (each sample
its own clock, step size, acceptance and status).

Per-sample mode promises that batch composition never changes a sample's result; joint mode
promises to be exactly the solve of the stacked system.
"""

from __future__ import annotations

import pytest
import torch

import torchnde as tn

F64 = torch.float64


def col(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``t`` is 0-d (joint) or ``(batch,)`` (per sample); shape it to multiply ``y``."""
    return t.reshape(t.shape + (1,) * (y.ndim - t.ndim)) if t.ndim else t


def forced_decay(t, y, args):
    """dy/dt = -k y + sin(t), with a rate ``k`` of shape (batch, 1) in ``args``."""
    return -args * y + torch.sin(col(t, y))


def y_squared(t, y, args):
    return y * y


Y0 = torch.tensor([[1.0, -0.5], [2.0, 0.3], [0.1, 4.0], [-3.0, 1.0]], dtype=F64)
RATES = torch.tensor([[0.5], [3.0], [20.0], [1.0]], dtype=F64)


def per_sample(**kw) -> tn.PIDController:
    return tn.PIDController(rtol=1e-7, atol=1e-9, per_sample=True, **kw)


# --------------------------------------------------------------------------- independence


@pytest.mark.parametrize("solver_cls", [tn.Dopri5, tn.Tsit5, tn.Bosh3], ids=lambda c: c.__name__)
def test_per_sample_result_does_not_depend_on_the_rest_of_the_batch(solver_cls):
    ts = torch.tensor([0.3, 1.0, 2.5], dtype=F64)
    kw = dict(controller=per_sample(), saveat=tn.SaveAt(ts=ts, steps=True, t1=True))
    term = tn.ODETerm(forced_decay)
    batch = tn.solve(term, solver_cls(), 0.0, 2.5, Y0, RATES, **kw)
    n_ts = len(ts)
    for i in range(len(Y0)):
        alone = tn.solve(term, solver_cls(), 0.0, 2.5, Y0[i : i + 1], RATES[i : i + 1], **kw)
        n_steps = int(alone.stats["num_accepted_steps"][0])
        assert int(batch.stats["num_accepted_steps"][i]) == n_steps
        assert int(batch.stats["num_rejected_steps"][i]) == int(
            alone.stats["num_rejected_steps"][0]
        )
        # Save times, this sample's accepted steps, and t1.
        torch.testing.assert_close(batch.ys[:n_ts, i], alone.ys[:n_ts, 0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(
            batch.ts[i, n_ts : n_ts + n_steps],
            alone.ts[0, n_ts : n_ts + n_steps],
            rtol=1e-12,
            atol=0,
        )
        torch.testing.assert_close(
            batch.ys[n_ts : n_ts + n_steps, i],
            alone.ys[n_ts : n_ts + n_steps, 0],
            rtol=1e-12,
            atol=1e-12,
        )
        torch.testing.assert_close(batch.ys[-1, i], alone.ys[-1, 0], rtol=1e-12, atol=1e-12)
    # The easy and the hard samples really stepped differently.
    acc = batch.stats["num_accepted_steps"]
    assert acc[2] > 2 * acc[0]


def test_per_sample_result_does_not_depend_on_batch_order():
    perm = torch.tensor([2, 0, 3, 1])
    term = tn.ODETerm(forced_decay)
    kw = dict(controller=per_sample(), saveat=tn.SaveAt(ts=[0.5, 2.0]))
    a = tn.solve(term, tn.Tsit5(), 0.0, 2.0, Y0, RATES, **kw)
    b = tn.solve(term, tn.Tsit5(), 0.0, 2.0, Y0[perm], RATES[perm], **kw)
    torch.testing.assert_close(a.ys[:, perm], b.ys, rtol=1e-12, atol=1e-12)


def test_a_sample_that_blows_up_fails_alone_and_the_others_succeed():
    # y' = y² blows up at t = 1 / y0: the sample with y0 = 2 fails at t = 0.5, before t1 = 1.
    y0 = torch.tensor([[0.5], [2.0], [-1.0], [0.25]], dtype=F64)
    ts = torch.tensor([0.25, 0.75, 1.0], dtype=F64)
    kw = dict(controller=per_sample(), saveat=tn.SaveAt(ts=ts, t1=True), max_steps=20_000)
    term = tn.ODETerm(y_squared)
    sol = tn.solve(term, tn.Dopri5(), 0.0, 1.0, y0, throw=False, **kw)
    status = sol.status.tolist()
    assert status[1] in (tn.Status.DT_UNDERFLOW, tn.Status.NONFINITE, tn.Status.MAX_STEPS_REACHED)
    assert [status[i] for i in (0, 2, 3)] == [tn.Status.SUCCESSFUL] * 3
    assert not sol.success
    # The failed sample: saved before it failed, NaN after, t1 is where it stopped.
    assert torch.isfinite(sol.ys[0, 1]).all() and torch.isnan(sol.ys[1:3, 1]).all()
    assert 0.49 < float(sol.ts[1, -1]) < 0.5 + 1e-5
    # The others are exactly what they are alone, and right.
    exact = y0[None] / (1 - y0[None] * ts[:, None, None])  # (n, batch, 1)
    for i in (0, 2, 3):
        alone = tn.solve(term, tn.Dopri5(), 0.0, 1.0, y0[i : i + 1], **kw)
        torch.testing.assert_close(sol.ys[:, i], alone.ys[:, 0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(sol.ys[:3, i], exact[:, i], rtol=1e-6, atol=1e-8)
    with pytest.raises(tn.SolveError, match=tn.Status(status[1]).name):
        tn.solve(term, tn.Dopri5(), 0.0, 1.0, y0, **kw)


# --------------------------------------------------------------------------- per-sample times


def test_per_sample_save_times_of_shape_batch_by_n():
    ts = torch.tensor(
        [[0.1, 0.2, 0.3], [0.5, 1.0, 1.5], [0.0, 1.9, 2.0], [0.7, 0.8, 0.9]], dtype=F64
    )
    term = tn.ODETerm(forced_decay)
    sol = tn.solve(
        term, tn.Dopri5(), 0.0, 2.0, Y0, RATES, controller=per_sample(), saveat=tn.SaveAt(ts=ts)
    )
    assert sol.ts.shape == (4, 3) and sol.ys.shape == (3, 4, 2)
    torch.testing.assert_close(sol.ts, ts, rtol=0, atol=0)
    for i in range(4):
        alone = tn.solve(
            term,
            tn.Dopri5(),
            0.0,
            2.0,
            Y0[i : i + 1],
            RATES[i : i + 1],
            controller=per_sample(),
            saveat=tn.SaveAt(ts=ts[i]),
        )
        torch.testing.assert_close(sol.ys[:, i], alone.ys[:, 0], rtol=1e-12, atol=1e-12)


def test_per_sample_t0_and_t1():
    # dy/dt = -2 t y: y(t) = y0 exp(-(t² - t0²)).
    decay = lambda t, y, args: -2 * col(t, y) * y
    t0 = torch.tensor([0.0, 0.5, -1.0, 1.0], dtype=F64)
    t1 = torch.tensor([1.0, 2.0, 0.0, 1.25], dtype=F64)
    sol = tn.solve(
        tn.ODETerm(decay),
        tn.Tsit5(),
        t0,
        t1,
        Y0,
        controller=per_sample(),
        saveat=tn.SaveAt(t0=True, t1=True),
    )
    torch.testing.assert_close(sol.ts, torch.stack([t0, t1], dim=1), rtol=0, atol=0)
    torch.testing.assert_close(sol.ys[0], Y0, rtol=0, atol=0)
    exact = Y0 * torch.exp(-(t1**2 - t0**2))[:, None]
    torch.testing.assert_close(sol.ys[1], exact, rtol=1e-6, atol=1e-8)
    for i in range(4):
        alone = tn.solve(
            tn.ODETerm(decay),
            tn.Tsit5(),
            t0[i : i + 1],
            t1[i : i + 1],
            Y0[i : i + 1],
            controller=per_sample(),
        )
        torch.testing.assert_close(sol.ys[1, i], alone.ys[0, 0], rtol=1e-12, atol=1e-12)


def test_per_sample_t1_in_reverse_time():
    decay = lambda t, y, args: -2 * col(t, y) * y
    t1 = torch.tensor([0.0, -0.5, 0.25, -1.0], dtype=F64)
    sol = tn.solve(tn.ODETerm(decay), tn.Dopri5(), 1.0, t1, Y0, controller=per_sample())
    exact = Y0 * torch.exp(-(t1**2 - 1.0))[:, None]
    torch.testing.assert_close(sol.ts[:, 0], t1, rtol=0, atol=0)
    torch.testing.assert_close(sol.ys[0], exact, rtol=1e-6, atol=1e-8)


def test_per_sample_constant_steps_with_per_sample_t1():
    sol = tn.solve(
        tn.ODETerm(forced_decay),
        tn.RK4(),
        0.0,
        torch.tensor([0.5, 1.0, 1.5, 2.0], dtype=F64),
        Y0,
        RATES,
        dt0=0.125,
        controller=tn.ConstantStepSize(per_sample=True),
    )
    assert sol.stats["num_accepted_steps"].tolist() == [4, 8, 12, 16]


# --------------------------------------------------------------------------- joint mode


@pytest.mark.parametrize("solver_cls", [tn.Dopri5, tn.RK4], ids=lambda c: c.__name__)
def test_joint_mode_equals_the_solve_of_the_stacked_system(solver_cls):
    rates = RATES.expand_as(Y0)
    stacked = lambda t, y, args: forced_decay(t, y.reshape(Y0.shape), rates).reshape(-1)
    fixed = not solver_cls().is_adaptive
    kw = dict(
        dt0=0.05 if fixed else None,
        controller=tn.ConstantStepSize() if fixed else tn.PIDController(rtol=1e-7, atol=1e-9),
        saveat=tn.SaveAt(ts=[0.4, 1.3, 2.0], steps=True, dense=True),
    )
    batch = tn.solve(tn.ODETerm(forced_decay), solver_cls(), 0.0, 2.0, Y0, rates, **kw)
    flat = tn.solve(tn.ODETerm(stacked), solver_cls(), 0.0, 2.0, Y0.reshape(-1), **kw)
    assert batch.stats["num_steps"] == flat.stats["num_steps"]
    assert batch.stats["num_fevals"] == flat.stats["num_fevals"]
    assert torch.equal(batch.ts, flat.ts)
    assert torch.equal(batch.ys, flat.ys.reshape((-1,) + Y0.shape))
    tq = torch.linspace(0.0, 2.0, 11, dtype=F64)
    assert torch.equal(batch.evaluate(tq), flat.evaluate(tq).reshape((-1,) + Y0.shape))


def test_joint_mode_step_count_is_driven_by_the_hardest_sample():
    # Decay rates 1 (easy) and 200 (hard, with a fast transient from an off-manifold start).
    f = lambda t, y, args: -args * (y - torch.cos(col(t, y)))
    y0 = torch.tensor([[0.0], [5.0]], dtype=F64)
    rates = torch.tensor([[1.0], [200.0]], dtype=F64)
    ctrl = dict(rtol=1e-6, atol=1e-8)

    def steps(y, k, **kw):
        sol = tn.solve(
            tn.ODETerm(f), tn.Dopri5(), 0.0, 1.0, y, k, controller=tn.PIDController(**ctrl, **kw)
        )
        return sol.stats["num_accepted_steps"]

    joint = int(steps(y0, rates))
    easy, hard = (int(steps(y0[i : i + 1], rates[i : i + 1])) for i in range(2))
    assert hard > 5 * easy
    assert joint > 5 * easy
    assert joint >= 0.8 * hard
    per = steps(y0, rates, per_sample=True).tolist()
    assert per == [easy, hard]


def test_joint_mode_has_one_status_and_one_step_count():
    sol = tn.solve(tn.ODETerm(forced_decay), tn.Tsit5(), 0.0, 1.0, Y0, RATES)
    assert sol.status.shape == ()
    assert isinstance(sol.stats["num_accepted_steps"], int)
    assert sol.ts.shape == (1,) and sol.ys.shape == (1,) + Y0.shape


def test_joint_mode_fails_the_whole_batch_when_one_sample_blows_up():
    y0 = torch.tensor([[0.5], [2.0]], dtype=F64)
    sol = tn.solve(
        tn.ODETerm(y_squared),
        tn.Dopri5(),
        0.0,
        1.0,
        y0,
        saveat=tn.SaveAt(ts=[0.25, 0.75]),
        max_steps=20_000,
        throw=False,
    )
    assert int(sol.status) in (tn.Status.DT_UNDERFLOW, tn.Status.NONFINITE)
    assert torch.isfinite(sol.ys[0]).all() and torch.isnan(sol.ys[1]).all()
