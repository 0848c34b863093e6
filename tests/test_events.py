"""Terminal events: located to the resolution of time, in the right direction, per sample.

The falling ball (height h, velocity v, gravity g) has a quadratic solution, which every
method of order >= 2 and its dense output reproduce to rounding, so the hit time
sqrt(2 h0 / g) is known to ~1e-15 and the event location is tested on its own.
"""

from __future__ import annotations

import math

import pytest
import torch

import torchnde as tn

F64 = torch.float64
G = 9.81


def ball(t, y, args):
    """State (..., 2) = (height, velocity)."""
    return torch.stack([y[..., 1], torch.full_like(y[..., 0], -G)], dim=-1)


def height(t, y, args):
    return y[..., 0]


def hit_time(h0: float, v0: float = 0.0) -> float:
    return (v0 + math.sqrt(v0 * v0 + 2 * G * h0)) / G


def ctrl(**kw) -> tn.PIDController:
    return tn.PIDController(rtol=1e-10, atol=1e-12, **kw)


# --------------------------------------------------------------------------- location


@pytest.mark.parametrize("solver_cls", [tn.Dopri5, tn.Tsit5, tn.Bosh3], ids=lambda c: c.__name__)
def test_falling_ball_hits_the_ground_at_the_analytic_time(solver_cls):
    y0 = torch.tensor([10.0, 0.0], dtype=F64)
    sol = tn.solve(
        tn.ODETerm(ball),
        solver_cls(),
        0.0,
        5.0,
        y0,
        controller=ctrl(),
        event=tn.Event(height, direction=-1),
    )
    t_hit = hit_time(10.0)
    assert int(sol.status) == tn.Status.EVENT_OCCURRED
    assert sol.success
    assert sol.ts.shape == (1,)
    assert abs(sol.ts[0].item() - t_hit) < 1e-10
    assert abs(sol.ys[0, 0].item()) < 1e-9
    assert sol.ys[0, 1].item() == pytest.approx(-G * t_hit, abs=1e-9)
    assert sol.event_mask is not None and bool(sol.event_mask[0])


def test_bouncing_ball_restarted_at_each_event_bounces_at_the_analytic_times():
    restitution, h0 = 0.8, 2.0
    y = torch.tensor([h0, 0.0], dtype=F64)
    t = 0.0
    hits = []
    for _ in range(4):
        sol = tn.solve(
            tn.ODETerm(ball),
            tn.Tsit5(),
            t,
            t + 10.0,
            y,
            controller=ctrl(),
            event=tn.Event(height, direction=-1),
        )
        assert int(sol.status) == tn.Status.EVENT_OCCURRED
        t = sol.ts[-1].item()
        hits.append(t)
        y = torch.stack([torch.zeros((), dtype=F64), -restitution * sol.ys[-1, 1]])
    # First fall sqrt(2 h0 / g), then flights of 2 v_k / g with v_k = e^k v_1.
    v1 = math.sqrt(2 * G * h0)
    expect, tk = [], v1 / G
    for k in range(4):
        expect.append(tk)
        tk += 2 * restitution ** (k + 1) * v1 / G
    assert hits == pytest.approx(expect, abs=1e-10)


def test_event_with_an_adaptive_step_over_the_crossing_is_still_located():
    # One huge first step crosses the ground; bisection on the dense output finds it.
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    sol = tn.solve(
        tn.ODETerm(ball),
        tn.Dopri5(),
        0.0,
        100.0,
        y0,
        dt0=50.0,
        controller=ctrl(),
        event=tn.Event(height, direction=-1),
    )
    assert abs(sol.ts[0].item() - hit_time(1.0)) < 1e-10


# --------------------------------------------------------------------------- direction


def clock(t, y, args):
    """y' = 1 from y(0) = 0: y is the time, so event functions of y have known roots."""
    return torch.ones_like(y)


def cos_pi(t, y, args):
    # Starts at +1; crosses downwards at 0.5, upwards at 1.5, downwards at 2.5.
    return torch.cos(math.pi * y[0])


@pytest.mark.parametrize("direction, t_expect", [(-1, 0.5), (1, 1.5), (0, 0.5)])
def test_event_direction_selects_which_crossings_fire(direction, t_expect):
    sol = tn.solve(
        tn.ODETerm(clock),
        tn.RK4(),
        0.0,
        3.0,
        torch.zeros(1, dtype=F64),
        dt0=0.1,
        event=tn.Event(cos_pi, direction=direction),
    )
    assert int(sol.status) == tn.Status.EVENT_OCCURRED
    assert sol.ts[-1].item() == pytest.approx(t_expect, abs=1e-7)


def test_event_starting_upward_fires_only_on_the_way_down_with_direction_minus_one():
    # Thrown upwards from the ground: height starts at 0, rises, then comes back down.
    y0 = torch.tensor([0.0, 5.0], dtype=F64)
    down = tn.solve(
        tn.ODETerm(ball), tn.Tsit5(), 0.0, 5.0, y0, controller=ctrl(), event=tn.Event(height, -1)
    )
    assert down.ts[-1].item() == pytest.approx(2 * 5.0 / G, abs=1e-10)
    up = tn.solve(
        tn.ODETerm(ball), tn.Tsit5(), 0.0, 5.0, y0, controller=ctrl(), event=tn.Event(height, 1)
    )
    assert int(up.status) == tn.Status.SUCCESSFUL  # it never crosses upwards
    assert up.ts[-1].item() == 5.0


def test_several_event_functions_stop_at_the_first_and_event_mask_says_which():
    late = lambda t, y, args: y[0] - 0.7
    early = lambda t, y, args: y[0] - 0.3
    never = lambda t, y, args: y[0] + 1.0
    sol = tn.solve(
        tn.ODETerm(clock),
        tn.Tsit5(),
        0.0,
        1.0,
        torch.zeros(1, dtype=F64),
        event=tn.Event([late, early, never]),
    )
    assert int(sol.status) == tn.Status.EVENT_OCCURRED
    assert sol.ts[-1].item() == pytest.approx(0.3, abs=1e-12)
    assert [bool(m) for m in sol.event_mask] == [False, True, False]


def test_per_function_directions():
    # cos(pi y) crosses down at 0.5; sin(pi y) crosses down at 1.0 and up at 2.0.
    sin_pi = lambda t, y, args: torch.sin(math.pi * y[0])
    sol = tn.solve(
        tn.ODETerm(clock),
        tn.RK4(),
        0.0,
        3.0,
        torch.full((1,), 0.25, dtype=F64),
        dt0=0.05,
        event=tn.Event([cos_pi, sin_pi], direction=[1, 1]),
    )
    # From y = 0.25: cos rises through 0 at y = 1.5 (t = 1.25), sin at y = 2 (t = 1.75).
    assert sol.ts[-1].item() == pytest.approx(1.25, abs=1e-7)
    assert [bool(m) for m in sol.event_mask] == [True, False]


# --------------------------------------------------------------------------- per sample


def test_per_sample_events_stop_each_sample_at_its_own_time():
    heights = [1.0, 5.0, 20.0]
    y0 = torch.tensor([[h, 0.0] for h in heights], dtype=F64)
    ts = torch.tensor([0.3, 0.9, 1.5], dtype=F64)
    sol = tn.solve(
        tn.ODETerm(ball),
        tn.Dopri5(),
        0.0,
        10.0,
        y0,
        controller=ctrl(per_sample=True),
        event=tn.Event(height, direction=-1),
        saveat=tn.SaveAt(ts=ts, t1=True),
    )
    assert sol.status.tolist() == [tn.Status.EVENT_OCCURRED] * 3
    t_hits = [hit_time(h) for h in heights]  # 0.45, 1.01, 2.02
    assert sol.ts[:, -1].tolist() == pytest.approx(t_hits, abs=1e-10)
    assert sol.ys[-1, :, 0].abs().max().item() < 1e-9
    assert sol.event_mask[0].tolist() == [True, True, True]
    # Save times after a sample's own event are NaN; before it they are exact.
    for i, t_hit in enumerate(t_hits):
        for j, t in enumerate(ts.tolist()):
            if t > t_hit:
                assert torch.isnan(sol.ys[j, i]).all()
            else:
                assert sol.ys[j, i, 0].item() == pytest.approx(heights[i] - G * t * t / 2, abs=1e-9)


def test_per_sample_event_in_one_sample_does_not_stop_the_others():
    y0 = torch.tensor([[1.0, 0.0], [1e6, 0.0]], dtype=F64)  # the second never lands by t1
    sol = tn.solve(
        tn.ODETerm(ball),
        tn.Tsit5(),
        0.0,
        2.0,
        y0,
        controller=ctrl(per_sample=True),
        event=tn.Event(height, direction=-1),
    )
    assert sol.status.tolist() == [tn.Status.EVENT_OCCURRED, tn.Status.SUCCESSFUL]
    assert sol.ts[:, -1].tolist() == pytest.approx([hit_time(1.0), 2.0], abs=1e-10)
    assert sol.event_mask[0].tolist() == [True, False]


def test_joint_event_stops_the_whole_batch_at_the_first_crossing():
    y0 = torch.tensor([[5.0, 0.0], [1.0, 0.0]], dtype=F64)
    sol = tn.solve(
        tn.ODETerm(ball),
        tn.Tsit5(),
        0.0,
        10.0,
        y0,
        controller=ctrl(),
        event=tn.Event(height, direction=-1),
    )
    assert int(sol.status) == tn.Status.EVENT_OCCURRED
    assert sol.ts[-1].item() == pytest.approx(hit_time(1.0), abs=1e-10)
    assert sol.ys[-1, 0, 0].item() == pytest.approx(5.0 - G * hit_time(1.0) ** 2 / 2, abs=1e-9)


# --------------------------------------------------------------------------- reverse time


@pytest.mark.parametrize("direction, fires", [(1, True), (-1, False), (0, True)])
def test_event_in_reverse_time(direction, fires):
    # y' = -y, y(0) = 1: backwards y = e^{-t} grows through 2 at t = -ln 2. "Upwards" is
    # along the solve, i.e. as t decreases.
    sol = tn.solve(
        tn.ODETerm(lambda t, y, args: -y),
        tn.Dopri5(),
        0.0,
        -2.0,
        torch.ones(1, dtype=F64),
        controller=ctrl(),
        event=tn.Event(lambda t, y, args: y[0] - 2.0, direction=direction),
        saveat=tn.SaveAt(ts=[-0.5, -1.0], t1=True),
    )
    if fires:
        assert int(sol.status) == tn.Status.EVENT_OCCURRED
        assert sol.ts[-1].item() == pytest.approx(-math.log(2.0), abs=1e-9)
        assert sol.ys[-1, 0].item() == pytest.approx(2.0, abs=1e-9)
        assert sol.ys[0, 0].item() == pytest.approx(math.exp(0.5), abs=1e-8)
        assert torch.isnan(sol.ys[1]).all()
    else:
        assert int(sol.status) == tn.Status.SUCCESSFUL
        assert sol.ts[-1].item() == -2.0


def test_event_function_sees_user_time_in_reverse_time():
    # Stop when t crosses -0.75 going backwards.
    sol = tn.solve(
        tn.ODETerm(lambda t, y, args: -y),
        tn.Tsit5(),
        0.0,
        -2.0,
        torch.ones(1, dtype=F64),
        event=tn.Event(lambda t, y, args: t + 0.75, direction=-1),
    )
    assert sol.ts[-1].item() == pytest.approx(-0.75, abs=1e-12)


# --------------------------------------------------------------------------- saving


def test_save_times_after_the_event_are_nan_and_t1_saves_the_event():
    y0 = torch.tensor([10.0, 0.0], dtype=F64)
    t_hit = hit_time(10.0)
    ts = torch.tensor([0.0, 0.5, 1.0, 1.4, 1.5, 3.0], dtype=F64)
    sol = tn.solve(
        tn.ODETerm(ball),
        tn.Dopri5(),
        0.0,
        5.0,
        y0,
        controller=ctrl(),
        event=tn.Event(height, direction=-1),
        saveat=tn.SaveAt(ts=ts, t1=True),
    )
    before = ts < t_hit
    assert torch.isnan(sol.ys[:-1][~before]).all()
    exact = 10.0 - G * ts[before] ** 2 / 2
    torch.testing.assert_close(sol.ys[:-1][before, 0], exact, rtol=0, atol=1e-9)
    assert sol.ts[-1].item() == pytest.approx(t_hit, abs=1e-10)


@pytest.mark.parametrize("per_sample", [False, True])
def test_save_times_in_the_step_that_contains_the_event_are_accurate(per_sample):
    # The ball needs only a few (exact) steps, so the step that ends at the event is long and
    # holds several save times.
    y0 = torch.tensor([[10.0, 0.0]], dtype=F64)
    t_hit = hit_time(10.0)
    ts = torch.linspace(0.0, 1.4, 15, dtype=F64)  # all before t_hit = 1.428
    sol = tn.solve(
        tn.ODETerm(ball),
        tn.Dopri5(),
        0.0,
        5.0,
        y0,
        controller=ctrl(per_sample=per_sample),
        event=tn.Event(height, direction=-1),
        saveat=tn.SaveAt(ts=ts, t1=True),
    )
    exact = 10.0 - G * ts**2 / 2
    torch.testing.assert_close(sol.ys[:-1, 0, 0], exact, rtol=0, atol=1e-9)
    assert sol.ts.reshape(-1)[-1].item() == pytest.approx(t_hit, abs=1e-10)


@pytest.mark.parametrize("per_sample", [False, True])
def test_dense_output_is_accurate_up_to_the_event(per_sample):
    y0 = torch.tensor([[10.0, 0.0]], dtype=F64)
    t_hit = hit_time(10.0)
    sol = tn.solve(
        tn.ODETerm(ball),
        tn.Dopri5(),
        0.0,
        5.0,
        y0,
        controller=ctrl(per_sample=per_sample),
        event=tn.Event(height, direction=-1),
        saveat=tn.SaveAt(dense=True),
    )
    for t in (0.3, 0.9, 1.2, 1.4, t_hit):
        yq = sol.evaluate(torch.tensor([t] if per_sample else t, dtype=F64))
        assert yq.reshape(-1)[0].item() == pytest.approx(10.0 - G * t * t / 2, abs=1e-9)
    with pytest.raises(ValueError, match="outside"):
        sol.evaluate(torch.tensor([2.0] if per_sample else 2.0, dtype=F64))


def test_event_with_constant_steps_and_hermite_dense_output():
    # RK4's dense output is cubic Hermite: exact for the quadratic fall.
    y0 = torch.tensor([10.0, 0.0], dtype=F64)
    sol = tn.solve(
        tn.ODETerm(ball),
        tn.RK4(),
        0.0,
        5.0,
        y0,
        dt0=0.3,
        event=tn.Event(height, direction=-1),
        saveat=tn.SaveAt(ts=torch.tensor([1.3, 1.42], dtype=F64), t1=True),
    )
    assert sol.ts[-1].item() == pytest.approx(hit_time(10.0), abs=1e-10)
    assert sol.ys[:2, 0].tolist() == pytest.approx(
        [10 - G * 1.3**2 / 2, 10 - G * 1.42**2 / 2], abs=1e-9
    )


# --------------------------------------------------------------------------- tuple states


@pytest.mark.parametrize("per_sample", [False, True])
def test_event_function_receives_a_tuple_state_as_a_tuple(per_sample):
    # State (height, velocity) as two tensors of shape (batch,).
    heights = torch.tensor([10.0, 2.0], dtype=F64)
    y0 = (heights, torch.zeros(2, dtype=F64))
    field = lambda t, y, args: (y[1], torch.full_like(y[0], -G))
    seen = []

    def ground(t, y, args):
        seen.append(type(y))
        h, _ = y
        return h if per_sample else h.min()

    sol = tn.solve(
        tn.ODETerm(field),
        tn.Tsit5(),
        0.0,
        5.0,
        y0,
        controller=ctrl(per_sample=per_sample),
        event=tn.Event(ground, direction=-1),
    )
    assert set(seen) == {tuple}
    hs, vs = sol.ys
    if per_sample:
        expect = [hit_time(10.0), hit_time(2.0)]
        assert sol.ts[:, -1].tolist() == pytest.approx(expect, abs=1e-10)
        assert hs[-1].abs().max().item() < 1e-9
    else:
        assert sol.ts[-1].item() == pytest.approx(hit_time(2.0), abs=1e-10)
        assert hs[-1, 1].item() == pytest.approx(0.0, abs=1e-9)
