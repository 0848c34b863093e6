"""Non-terminal events: the state is reset at each crossing and the solve goes on.

The bouncing ball (height h, velocity v, gravity g, restitution e) is piecewise quadratic,
which every method of order >= 2 and its dense output reproduce to rounding, so its bounce
times and its height at any time have a closed form (:func:`exact`), written in torch so that
autograd gives the exact derivatives with respect to g, e, h0 and the floor. Gradients through
the solve are compared with that closed form and with float64 central differences of the
solve itself.
"""

from __future__ import annotations

import math

import pytest
import torch

import torchnde as tn

F64 = torch.float64


def ctrl(**kw) -> tn.PIDController:
    return tn.PIDController(rtol=1e-10, atol=1e-12, **kw)


def exact(g, e, h0, T, floor=0.0, v0=0.0):
    """Height at T and the bounce times before T of a ball dropped from h0 (torch scalars)."""
    drop = h0 - floor
    t = (v0 + torch.sqrt(v0 * v0 + 2 * g * drop)) / g
    if float(t.detach()) > T:
        return h0 + v0 * T - 0.5 * g * T * T, []
    times = [t]
    v = e * (g * t - v0)  # upward speed after the first bounce
    while float((t + 2 * v / g).detach()) <= T:
        t = t + 2 * v / g
        times.append(t)
        v = e * v
    s = T - t
    return floor + v * s - 0.5 * g * s * s, times


def bouncing(g, e, floor=0.0):
    """The ball's vector field and its bounce event (reset: v -> -e v)."""

    def f(t, y, args):
        return torch.stack([y[..., 1], -g * torch.ones_like(y[..., 1])], dim=-1)

    def reset(t, y, args):
        return torch.stack([y[..., 0], -e * y[..., 1]], dim=-1)

    event = tn.Event(
        lambda t, y, args: y[..., 0] - floor, direction=-1, terminal=False, reset=reset
    )
    return tn.ODETerm(f), event


def drop(g, e, h0, T, *, floor=0.0, adjoint=None, ts=None, per_sample=False, **kw):
    term, event = bouncing(g, e, floor)
    y0 = torch.stack([h0, torch.zeros_like(h0)], dim=-1)
    saveat = tn.SaveAt(t1=True) if ts is None else tn.SaveAt(ts=ts)
    return tn.solve(
        term,
        tn.Tsit5(),
        0.0,
        T,
        y0,
        saveat=saveat,
        controller=ctrl(per_sample=per_sample),
        event=event,
        adjoint=adjoint or tn.DirectAdjoint(),
        **kw,
    )


def scalars(*values):
    return [torch.tensor(v, dtype=F64, requires_grad=True) for v in values]


ADJOINTS = [tn.DirectAdjoint(), tn.CheckpointAdjoint(), tn.CheckpointAdjoint(2)]


# --------------------------------------------------------------------------- forward


def test_bouncing_ball_matches_closed_form_height_and_bounce_times():
    g, e, h0 = scalars(9.81, 0.8, 1.0)
    sol = drop(g, e, h0, 2.0)
    want, times = exact(g, e, h0, 2.0)
    assert int(sol.status) == tn.Status.SUCCESSFUL
    assert len(times) == 3
    torch.testing.assert_close(sol.ys[-1, 0], want, rtol=0, atol=1e-9)
    torch.testing.assert_close(sol.event_ts, torch.stack(times), rtol=0, atol=1e-9)
    assert sol.event_ids.tolist() == [0, 0, 0]
    assert sol.event_mask == (torch.tensor(False),)


def test_save_times_across_bounces_see_the_reset_state():
    g, e, h0 = scalars(9.81, 0.8, 1.0)
    ts = torch.tensor([0.3, 0.46, 0.5, 1.0, 1.18, 1.9, 2.0], dtype=F64)
    sol = drop(g, e, h0, 2.0, ts=ts)
    want = torch.stack([exact(g, e, h0, float(t))[0] for t in ts])
    torch.testing.assert_close(sol.ys[:, 0], want, rtol=0, atol=1e-9)
    # Just after a bounce the velocity is the reset one, upward.
    assert float(sol.ys[1, 1].detach()) > 0 and float(sol.ys[4, 1].detach()) > 0


def test_reverse_time_solve_records_user_times():
    # Time reversed (t from 0 down to -2) with the dynamics mirrored is the same ball.
    g, e = 9.81, 0.8

    def f(t, y, args):
        return torch.stack([-y[..., 1], g * torch.ones_like(y[..., 1])], dim=-1)

    event = tn.Event(
        lambda t, y, args: y[..., 0],
        direction=-1,
        terminal=False,
        reset=lambda t, y, args: torch.stack([y[..., 0], -e * y[..., 1]], -1),
    )
    sol = tn.solve(
        tn.ODETerm(f),
        tn.Tsit5(),
        0.0,
        -2.0,
        torch.tensor([1.0, 0.0], dtype=F64),
        controller=ctrl(),
        event=event,
    )
    want, times = exact(
        torch.tensor(g, dtype=F64), torch.tensor(e, dtype=F64), torch.tensor(1.0, dtype=F64), 2.0
    )
    torch.testing.assert_close(sol.event_ts, -torch.stack(times), rtol=0, atol=1e-9)
    torch.testing.assert_close(sol.ys[-1, 0], want, rtol=0, atol=1e-9)


def test_per_sample_each_sample_has_its_own_bounces_and_batch_does_not_matter():
    g, e = scalars(9.81, 0.8)
    h0 = torch.tensor([1.0, 0.5, 2.0], dtype=F64)
    sol = drop(g, e, h0, 2.0, per_sample=True)
    assert sol.status.tolist() == [0, 0, 0]
    for i, h in enumerate(h0):
        want, times = exact(g, e, h, 2.0)
        k = len(times)
        torch.testing.assert_close(sol.ys[-1, i, 0], want, rtol=0, atol=1e-9)
        torch.testing.assert_close(sol.event_ts[i, :k], torch.stack(times), rtol=0, atol=1e-9)
        assert torch.isnan(sol.event_ts[i, k:]).all()
        assert sol.event_ids[i, :k].tolist() == [0] * k and (sol.event_ids[i, k:] == -1).all()
        alone = drop(g, e, h.reshape(1), 2.0, per_sample=True)
        torch.testing.assert_close(alone.ys[-1, 0], sol.ys[-1, i], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(alone.event_ts[0], sol.event_ts[i, :k], rtol=1e-12, atol=1e-12)


def test_several_event_functions_each_with_its_reset_and_terminal_flag():
    # A ball between walls at x = 0 and x = 1 moving at speed 1.5, reflected at each wall
    # (functions 0 and 1), until a terminal "timer" at t = 2.2 (function 2).
    def f(t, y, args):
        return torch.stack([y[..., 1], torch.zeros_like(y[..., 1])], dim=-1)

    flip = lambda t, y, args: torch.stack([y[..., 0], -y[..., 1]], dim=-1)
    event = tn.Event(
        [lambda t, y, a: y[..., 0] - 1.0, lambda t, y, a: y[..., 0], lambda t, y, a: t - 2.2],
        direction=[1, -1, 1],
        terminal=[False, False, True],
        reset=[flip, flip, None],
    )
    y0 = torch.tensor([0.25, 1.5], dtype=F64)
    sol = tn.solve(tn.ODETerm(f), tn.Tsit5(), 0.0, 10.0, y0, controller=ctrl(), event=event)
    assert int(sol.status) == tn.Status.EVENT_OCCURRED
    torch.testing.assert_close(
        sol.event_ts, torch.tensor([0.5, 7 / 6, 11 / 6, 2.2], dtype=F64), rtol=0, atol=1e-9
    )
    assert sol.event_ids.tolist() == [0, 1, 0, 2]
    assert [bool(m) for m in sol.event_mask] == [False, False, True]
    # At t = 2.2 the ball is at 0.25 + 1.5 * 2.2 folded into [0, 1]: 0.45, moving down.
    torch.testing.assert_close(sol.ys[-1], torch.tensor([0.45, -1.5], dtype=F64), atol=1e-9, rtol=0)


def test_tuple_state_reset_receives_and_returns_a_tuple():
    g, e = 9.81, 0.8

    def f(t, y, args):
        h, v = y
        return v, -g * torch.ones_like(v)

    event = tn.Event(
        lambda t, y, a: y[0], direction=-1, terminal=False, reset=lambda t, y, a: (y[0], -e * y[1])
    )
    y0 = (torch.tensor(1.0, dtype=F64), torch.tensor(0.0, dtype=F64))
    sol = tn.solve(tn.ODETerm(f), tn.Tsit5(), 0.0, 2.0, y0, controller=ctrl(), event=event)
    want, _ = exact(*(torch.tensor(v, dtype=F64) for v in (g, e, 1.0)), 2.0)
    torch.testing.assert_close(sol.ys[0][-1], want, rtol=0, atol=1e-9)


# --------------------------------------------------------------------------- Zeno


def test_zeno_ball_stops_at_max_events_with_its_status():
    # Bounces at 0.45, 0.90, 1.13, ..., accumulating at 1.35: a bounded solve, never a hang.
    g, e, h0 = scalars(9.81, 0.5, 1.0)
    term, _ = bouncing(g, e)
    event = tn.Event(
        lambda t, y, a: y[..., 0],
        direction=-1,
        terminal=False,
        reset=lambda t, y, a: y * torch.tensor([1.0, -0.5], dtype=F64),
        max_events=7,
    )
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    sol = tn.solve(term, tn.Tsit5(), 0.0, 10.0, y0, controller=ctrl(), event=event, throw=False)
    assert int(sol.status) == tn.Status.MAX_EVENTS_REACHED
    assert sol.event_ts.shape == (7,)
    # Stopped at the 8th crossing, before its reset (the ball at the floor, moving down).
    _, times = exact(g.detach(), e.detach(), h0.detach(), 1.35)
    torch.testing.assert_close(sol.ts[-1], times[7], rtol=0, atol=1e-9)
    assert float(sol.ys[-1, 1].detach()) < 0
    with pytest.raises(tn.SolveError, match="MAX_EVENTS_REACHED.*max_events"):
        tn.solve(term, tn.Tsit5(), 0.0, 10.0, y0, controller=ctrl(), event=event)


def test_zeno_per_sample_stops_only_the_sample_over_the_limit():
    term, _ = bouncing(9.81, 0.5)
    event = tn.Event(
        lambda t, y, a: y[..., 0],
        direction=-1,
        terminal=False,
        reset=lambda t, y, a: y * torch.tensor([1.0, -0.5], dtype=F64),
        max_events=3,
    )
    # Dropped from 1 (bounces at 0.45, 0.90, 1.13, 1.24, ...) and from 20 (first at 2.02).
    y0 = torch.tensor([[1.0, 0.0], [20.0, 0.0]], dtype=F64)
    sol = tn.solve(
        term, tn.Tsit5(), 0.0, 2.1, y0, controller=ctrl(per_sample=True), event=event, throw=False
    )
    assert sol.status.tolist() == [int(tn.Status.MAX_EVENTS_REACHED), 0]
    assert int((~torch.isnan(sol.event_ts)).sum(1)[0]) == 3
    assert int((~torch.isnan(sol.event_ts)).sum(1)[1]) == 1
    assert float(sol.ts[1, -1]) == 2.1


# --------------------------------------------------------------------------- gradients


def central(fn, x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    with torch.no_grad():
        return (fn(x + eps) - fn(x - eps)) / (2 * eps)


@pytest.mark.parametrize("adjoint", ADJOINTS, ids=repr)
def test_gradient_of_height_wrt_gravity_restitution_and_y0(adjoint):
    g, e, h0 = scalars(9.81, 0.8, 1.0)
    T = 2.0
    sol = drop(g, e, h0, T, adjoint=adjoint)
    got = torch.autograd.grad(sol.ys[-1, 0], (g, e, h0))
    want = torch.autograd.grad(exact(g, e, h0, T)[0], (g, e, h0))
    fds = (
        central(lambda x: drop(x, e, h0, T).ys[-1, 0], g.detach()),
        central(lambda x: drop(g, x, h0, T).ys[-1, 0], e.detach()),
        central(lambda x: drop(g, e, x, T).ys[-1, 0], h0.detach()),
    )
    for a, b, c in zip(got, want, fds):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("adjoint", ADJOINTS, ids=repr)
def test_gradient_of_event_times_and_saves_across_events(adjoint):
    g, e, h0 = scalars(9.81, 0.8, 1.0)
    ts = torch.tensor([0.3, 1.0, 1.9], dtype=F64)
    sol = drop(g, e, h0, 2.0, adjoint=adjoint, ts=ts)
    want_t = torch.stack(exact(g, e, h0, 2.0)[1])
    want_y = torch.stack([exact(g, e, h0, float(t))[0] for t in ts])
    w = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    for got, want in ((sol.event_ts, want_t), (sol.ys[:, 0], want_y)):
        gg = torch.autograd.grad((w * got).sum(), (g, e, h0), retain_graph=True)
        gw = torch.autograd.grad((w * want).sum(), (g, e, h0), retain_graph=True)
        for a, b in zip(gg, gw):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("adjoint", ADJOINTS[:2], ids=repr)
def test_gradient_wrt_event_function_parameter_and_args(adjoint):
    # The floor is a parameter of the event function; gravity arrives through args.
    floor, e, h0, g = scalars(0.2, 0.8, 1.0, 9.81)

    def f(t, y, args):
        return torch.stack([y[..., 1], -args * torch.ones_like(y[..., 1])], dim=-1)

    event = tn.Event(
        lambda t, y, a: y[..., 0] - floor,
        direction=-1,
        terminal=False,
        reset=lambda t, y, a: torch.stack([y[..., 0], -e * y[..., 1]], -1),
    )
    y0 = torch.stack([h0, torch.zeros_like(h0)])
    sol = tn.solve(
        tn.ODETerm(f),
        tn.Tsit5(),
        0.0,
        2.0,
        y0,
        args=g,
        controller=ctrl(),
        event=event,
        adjoint=adjoint,
    )
    got = torch.autograd.grad(sol.ys[-1, 0], (floor, g))
    want = torch.autograd.grad(exact(g, e, h0, 2.0, floor=floor)[0], (floor, g))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("adjoint", ADJOINTS[:2], ids=repr)
def test_gradient_per_sample_wrt_y0_matches_finite_differences(adjoint):
    term, event = bouncing(9.81, 0.8)
    y0 = torch.tensor([[1.0, 0.0], [0.5, 0.3], [2.0, -1.0]], dtype=F64, requires_grad=True)

    def height(y):
        return tn.solve(
            term,
            tn.Tsit5(),
            0.0,
            2.0,
            y,
            controller=ctrl(per_sample=True),
            event=event,
            adjoint=adjoint,
        ).ys[-1, :, 0]

    got = torch.autograd.grad(height(y0).sum(), y0)[0]
    for j in range(2):
        d = torch.zeros_like(y0)
        d[:, j] = 1e-6
        fd = central(
            lambda s, d=d: height(y0.detach() + s * d / 1e-6), torch.tensor(0.0, dtype=F64)
        )
        torch.testing.assert_close(got[:, j], fd, rtol=1e-5, atol=1e-6)


def test_gradient_wrt_vector_field_parameters_of_a_module():
    # A damped bouncing ball whose damping is an nn.Parameter: against central differences.
    lin = torch.nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        lin.weight.fill_(-0.3)

    def f(t, y, args):
        return torch.stack([y[..., 1], -9.81 + lin(y[..., 1:])[..., 0]], dim=-1)

    event = tn.Event(
        lambda t, y, a: y[..., 0],
        direction=-1,
        terminal=False,
        reset=lambda t, y, a: torch.stack([y[..., 0], -0.8 * y[..., 1]], -1),
    )
    y0 = torch.tensor([1.0, 0.0], dtype=F64)

    def height():
        return tn.solve(
            tn.ODETerm(f),
            tn.Tsit5(),
            0.0,
            2.0,
            y0,
            controller=ctrl(),
            event=event,
            adjoint=tn.CheckpointAdjoint(),
        ).ys[-1, 0]

    got = torch.autograd.grad(height(), lin.weight)[0]
    with torch.no_grad():
        lin.weight += 1e-6
        up = height()
        lin.weight -= 2e-6
        down = height()
        lin.weight += 1e-6
    torch.testing.assert_close(got[0, 0], (up - down) / 2e-6, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- errors


def test_reset_returning_a_wrong_shape_is_refused():
    term, _ = bouncing(9.81, 0.8)
    event = tn.Event(
        lambda t, y, a: y[..., 0], direction=-1, terminal=False, reset=lambda t, y, a: y[..., :1]
    )
    with pytest.raises(ValueError, match=r"`reset` must return the new state.*\(2,\)"):
        tn.solve(term, tn.Tsit5(), 0.0, 2.0, torch.tensor([1.0, 0.0], dtype=F64), event=event)


def test_event_arguments_are_validated():
    fn = lambda t, y, a: y[..., 0]
    with pytest.raises(ValueError, match="`reset` is given for a terminal event"):
        tn.Event(fn, reset=lambda t, y, a: y)
    with pytest.raises(TypeError, match="`terminal` must be a bool"):
        tn.Event(fn, terminal="no")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`reset` must be None or a callable"):
        tn.Event(fn, terminal=False, reset=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`max_events` must be an int >= 0, got -1"):
        tn.Event(fn, terminal=False, max_events=-1)


CONTINUOUS = [tn.BacksolveAdjoint(), tn.InterpolatedAdjoint()]


@pytest.mark.parametrize("adjoint", CONTINUOUS, ids=repr)
def test_continuous_adjoints_through_bounces_match_closed_form_and_differences(adjoint):
    # Segments between events solved by the continuous adjoint, joined through the event time
    # and the reset: the adjoint's jump conditions, checked on height, saves and event times.
    g, e, h0 = scalars(9.81, 0.8, 1.0)
    ts = torch.tensor([0.3, 1.0, 1.9], dtype=F64)
    sol = drop(g, e, h0, 2.0, adjoint=adjoint, ts=ts)
    want_y = torch.stack([exact(g, e, h0, float(t))[0] for t in ts])
    want_t = torch.stack(exact(g, e, h0, 2.0)[1])
    torch.testing.assert_close(sol.ys[:, 0], want_y, rtol=0, atol=1e-9)
    torch.testing.assert_close(sol.event_ts, want_t, rtol=0, atol=1e-9)
    w = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    for got, want in ((sol.ys[:, 0], want_y), (sol.event_ts, want_t)):
        gg = torch.autograd.grad((w * got).sum(), (g, e, h0), retain_graph=True)
        gw = torch.autograd.grad((w * want).sum(), (g, e, h0), retain_graph=True)
        for a, b in zip(gg, gw):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    fd = central(lambda x: (w * drop(x, e, h0, 2.0, ts=ts).ys[:, 0]).sum(), g.detach())
    gg = torch.autograd.grad((w * drop(g, e, h0, 2.0, adjoint=adjoint, ts=ts).ys[:, 0]).sum(), g)
    torch.testing.assert_close(gg[0], fd, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("adjoint", CONTINUOUS, ids=repr)
def test_continuous_adjoint_wrt_module_parameters_and_a_terminal_end(adjoint):
    # A damped ball (damping an nn.Parameter), bouncing until a terminal timer at t = 1.6.
    lin = torch.nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        lin.weight.fill_(-0.3)

    def f(t, y, args):
        return torch.stack([y[..., 1], -9.81 + lin(y[..., 1:])[..., 0]], dim=-1)

    event = tn.Event(
        [lambda t, y, a: y[..., 0], lambda t, y, a: t - 1.6], direction=[-1, 1],
        terminal=[False, True],
        reset=[lambda t, y, a: torch.stack([y[..., 0], -0.8 * y[..., 1]], -1), None],
    )  # fmt: skip
    y0 = torch.tensor([1.0, 0.0], dtype=F64)

    def height(adj):
        sol = tn.solve(tn.ODETerm(f), tn.Tsit5(), 0.0, 2.0, y0, controller=ctrl(), event=event,
                       adjoint=adj)  # fmt: skip
        assert int(sol.status) == tn.Status.EVENT_OCCURRED
        return sol.ys[-1, 0]

    got = torch.autograd.grad(height(adjoint), lin.weight)[0]
    with torch.no_grad():
        lin.weight += 1e-6
        up = height(tn.DirectAdjoint())
        lin.weight -= 2e-6
        down = height(tn.DirectAdjoint())
        lin.weight += 1e-6
    torch.testing.assert_close(got[0, 0], (up - down) / 2e-6, rtol=1e-5, atol=1e-6)


def test_continuous_adjoint_with_non_terminal_events_per_sample_is_refused():
    g, e = scalars(9.81, 0.8)
    h0 = torch.tensor([1.0, 0.5], dtype=F64)
    with pytest.raises(NotImplementedError, match="non-terminal events needs joint stepping"):
        drop(g, e, h0, 2.0, adjoint=tn.BacksolveAdjoint(), per_sample=True)


def test_plain_terminal_event_has_a_record_too():
    g, e, h0 = scalars(9.81, 0.8, 1.0)
    term, _ = bouncing(g, e)
    event = tn.Event(lambda t, y, a: y[..., 0], direction=-1)
    sol = tn.solve(
        term, tn.Tsit5(), 0.0, 2.0, torch.stack([h0, 0 * h0]), controller=ctrl(), event=event
    )
    torch.testing.assert_close(sol.event_ts, torch.tensor([math.sqrt(2 / 9.81)], dtype=F64))
    assert sol.event_ids.tolist() == [0]


def test_any_direction_bounce_does_not_fire_again_at_the_reset_point():
    # With direction=0 the up-going ball just after a bounce starts at height ~0 (within
    # round-off, possibly a hair below): the crossing just handled must not fire again.
    g, e, h0 = scalars(9.81, 0.8, 1.0)
    term, _ = bouncing(g, e)
    event = tn.Event(
        lambda t, y, a: y[..., 0], direction=0, terminal=False,
        reset=lambda t, y, a: torch.stack([y[..., 0], -e * y[..., 1]], -1),
    )  # fmt: skip
    y0 = torch.stack([h0, torch.zeros_like(h0)])
    sol = tn.solve(term, tn.Tsit5(), 0.0, 2.0, y0, controller=ctrl(), event=event)
    want, times = exact(g, e, h0, 2.0)
    torch.testing.assert_close(sol.event_ts, torch.stack(times), rtol=0, atol=1e-9)
    torch.testing.assert_close(sol.ys[-1, 0], want, rtol=0, atol=1e-9)


def test_non_terminal_event_without_reset_is_only_recorded():
    # Zero crossings of sin(y), y = 0.5 + t, on [0, 10]; the state is untouched. (y' = 1 has
    # no local error, so steps grow tenfold each time: dtmax keeps two crossings out of one
    # step, which sign-based detection cannot see.)
    def f(t, y, args):
        return torch.ones_like(y)

    event = tn.Event(lambda t, y, a: torch.sin(y[..., 0]), terminal=False)
    y0 = torch.tensor([0.5], dtype=F64)
    sol = tn.solve(tn.ODETerm(f), tn.Tsit5(), 0.0, 10.0, y0, controller=ctrl(dtmax=0.5),
                   event=event)  # fmt: skip
    want = torch.tensor([math.pi, 2 * math.pi, 3 * math.pi], dtype=F64) - 0.5
    torch.testing.assert_close(sol.event_ts, want, rtol=0, atol=1e-9)
    torch.testing.assert_close(sol.ys[-1], torch.tensor([10.5], dtype=F64), rtol=0, atol=1e-9)
