"""Hybrid systems on the public API: the closed-form bouncing ball and thermostat, the
bouncing ball solved with a non-terminal event against them (values and gradients), and the
neural hybrid automaton (switching times, gradients, errors, learning)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import torchnde as tn
from torchnde.data.hybrid import (
    bouncing_ball,
    bouncing_ball_impacts,
    thermostat,
    thermostat_switches,
)
from torchnde.experiments.bouncing_ball import BouncingBall
from torchnde.models import Autonomous, NeuralHybridAutomaton

F64 = torch.float64


# --------------------------------------------------------------------------- closed forms


def test_closed_form_ball_lands_at_its_impacts_and_bounces_with_restitution():
    g, e, h0 = 9.8, 0.8, 10.0
    impacts = bouncing_ball_impacts(g, e, h0, t1=9.0)
    assert len(impacts) == 5
    assert float(impacts[0]) == pytest.approx(math.sqrt(2 * h0 / g), rel=1e-14)
    eps = 1e-7
    before = impacts.to(F64) - eps
    after = impacts.to(F64) + eps
    h_b, v_b = bouncing_ball(before, g, e, h0)
    h_a, v_a = bouncing_ball(after, g, e, h0)
    assert h_b.abs().max() < 1e-5 and h_a.abs().max() < 1e-5
    torch.testing.assert_close(v_a, -e * v_b, rtol=1e-6, atol=1e-5)
    # Free fall in between: the second difference is -g dt^2.
    ts = torch.linspace(0.0, 9.0, 9001, dtype=F64)
    h, _ = bouncing_ball(ts, g, e, h0)
    d2 = (h[2:] - 2 * h[1:-1] + h[:-2]) / 1e-6
    near = (ts[1:-1, None] - impacts[None].to(F64)).abs().min(1).values < 2e-3
    torch.testing.assert_close(d2[~near], torch.full_like(d2[~near], -g), rtol=1e-5, atol=1e-5)
    assert h.min() > -1e-12


def test_closed_form_ball_refuses_a_window_past_the_zeno_time():
    # sqrt(2 h0 / g) (1 + e) / (1 - e) = (10 / 7) * 9 = 12.857...
    with pytest.raises(ValueError, match=r"`t1` = 13.0 is at or past the Zeno time 12.8571"):
        bouncing_ball_impacts(9.8, 0.8, 10.0, t1=13.0)
    assert len(bouncing_ball_impacts(9.8, 0.8, 10.0, t1=12.8)) > 20
    with pytest.raises(ValueError, match=r"`restitution` must be in \(0, 1\), got 1.5"):
        bouncing_ball(torch.linspace(0, 1, 3), 9.8, 1.5)


def test_closed_form_thermostat_switches_at_its_thresholds():
    switches = thermostat_switches(1.0, 1, t1=6.0)
    # Heating from 1 towards 3 reaches 2 after log(2); cooling from 2 towards -1 reaches 0
    # after log(3/1); heating from 0 reaches 2 after log(3).
    assert switches[0] == (pytest.approx(math.log(2.0), rel=1e-14), 0)
    assert switches[1] == (pytest.approx(math.log(2.0) + math.log(3.0), rel=1e-14), 1)
    assert switches[2] == (pytest.approx(math.log(2.0) + 2 * math.log(3.0), rel=1e-14), 0)
    ts = torch.tensor([s for s, _ in switches], dtype=F64)
    x, mode = thermostat(ts, 1.0, 1)
    expected = torch.tensor([2.0 if m == 0 else 0.0 for _, m in switches], dtype=F64)
    torch.testing.assert_close(x, expected, rtol=0, atol=1e-12)
    assert mode.tolist() == [m for _, m in switches]
    with pytest.raises(ValueError, match=r"x_off < x_low < x_high < x_on"):
        thermostat_switches(1.0, 1, t1=1.0, x_low=2.5)


# --------------------------------------------------------------------------- bouncing ball


def _ball(g=9.8, e=0.8, rtol=1e-10, atol=1e-12):
    controller = tn.PIDController(rtol=rtol, atol=atol)
    return BouncingBall(g, e, 10.0, solver=tn.Dopri5(), controller=controller, dt0=None).to(F64)


def test_one_solve_with_a_reset_matches_the_closed_form_ball():
    ts = torch.linspace(0.0, 9.0, 91, dtype=F64)
    sol = _ball()(ts)
    assert sol.status == tn.Status.SUCCESSFUL
    h, _ = bouncing_ball(ts, 9.8, 0.8, 10.0)
    torch.testing.assert_close(sol.ys[:, 0, 0], h, rtol=0, atol=1e-8)
    torch.testing.assert_close(
        sol.event_ts, bouncing_ball_impacts(9.8, 0.8, 10.0, t1=9.0).to(F64), rtol=0, atol=1e-9
    )


@pytest.mark.parametrize(
    "adjoint",
    [tn.DirectAdjoint(), tn.CheckpointAdjoint(), tn.BacksolveAdjoint(), tn.InterpolatedAdjoint()],
    ids=repr,
)
def test_gradients_through_impacts_and_resets_match_the_closed_form(adjoint):
    ts = torch.linspace(0.0, 9.0, 37, dtype=F64)
    weights = torch.linspace(1.0, 2.0, len(ts), dtype=F64)
    model = _ball()
    sol = tn.solve(
        tn.ODETerm(model.vector_field),
        model.solver,
        ts[0],
        ts[-1],
        torch.tensor([[10.0, 0.0]], dtype=F64),
        saveat=tn.SaveAt(ts=ts),
        controller=model.controller,
        adjoint=adjoint,
        event=tn.Event(model.ground, direction=-1, terminal=False, reset=model.bounce),
    )
    objective = (weights * sol.ys[:, 0, 0]).sum() + sol.event_ts.sum()
    grads = torch.autograd.grad(objective, [model.log_gravity, model.logit_restitution])
    lg = model.log_gravity.detach().clone().requires_grad_()
    le = model.logit_restitution.detach().clone().requires_grad_()
    h, _ = bouncing_ball(ts, lg.exp(), torch.sigmoid(le), 10.0)
    impacts = bouncing_ball_impacts(lg.exp(), torch.sigmoid(le), 10.0, t1=9.0)
    exact = torch.autograd.grad((weights * h).sum() + impacts.sum(), [lg, le])
    for got, want in zip(grads, exact):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_impact_time_gradients_match_central_differences():
    ts = torch.linspace(0.0, 6.0, 7, dtype=F64)
    model = _ball()
    last = model(ts).event_ts[-1]
    grads = torch.autograd.grad(last, [model.log_gravity, model.logit_restitution])
    eps = 1e-5
    for p, grad in zip([model.log_gravity, model.logit_restitution], grads):
        with torch.no_grad():
            p += eps
            up = model(ts).event_ts[-1]
            p -= 2 * eps
            down = model(ts).event_ts[-1]
            p += eps
        assert float(grad) == pytest.approx(float(up - down) / (2 * eps), rel=1e-6)


# --------------------------------------------------------------------------- hybrid automaton


def _linear(w: float, b: float) -> Autonomous:
    lin = nn.Linear(1, 1).to(F64)
    with torch.no_grad():
        lin.weight.fill_(w)
        lin.bias.fill_(b)
    return Autonomous(lin)


def _thermostat_nha(rate=1.0, x_on=3.0, x_off=-1.0, x_low=0.0, x_high=2.0, **kw):
    """The thermostat as an automaton: mode 0 cools towards x_off until x falls through
    x_low, mode 1 heats towards x_on until x rises through x_high."""
    kw.setdefault("rtol", 1e-9)
    kw.setdefault("atol", 1e-11)
    return NeuralHybridAutomaton(
        flows=[_linear(-rate, rate * x_off), _linear(-rate, rate * x_on)],
        guards=[_linear(1.0, -x_low), _linear(-1.0, x_high)],
        **kw,
    ).to(F64)


X0 = torch.tensor([[1.0], [0.5], [1.5]], dtype=F64)
MODE0 = torch.tensor([1, 0, 1])


def test_automaton_with_the_thermostat_s_parameters_switches_at_the_closed_form_times():
    ts = torch.linspace(0.0, 5.0, 11, dtype=F64)
    out = _thermostat_nha()(X0, ts, MODE0)
    assert out.xs.shape == (11, 3, 1) and out.modes.shape == (11, 3)
    assert out.switch_ts.shape[0] == 3 and out.switch_from.shape == out.switch_ts.shape
    for i in range(3):
        switches = thermostat_switches(float(X0[i]), int(MODE0[i]), t1=5.0)
        got = out.switch_ts[i][~out.switch_ts[i].isnan()]
        want = torch.tensor([s for s, _ in switches], dtype=F64)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-8)
        # The mode left at each switch is the one before the mode entered.
        left = [1 - m for _, m in switches]
        assert out.switch_from[i, : len(left)].tolist() == left
        x, mode = thermostat(ts, float(X0[i]), int(MODE0[i]))
        torch.testing.assert_close(out.xs[:, i, 0], x, rtol=0, atol=1e-7)
        assert out.modes[:, i].tolist() == mode.tolist()


def test_gradients_reach_flows_guards_resets_and_transitions():
    resets = [_linear(1.0, 0.0), _linear(1.0, 0.0)]
    nha = _thermostat_nha(resets=resets, rtol=1e-6, atol=1e-8)
    ts = torch.linspace(0.0, 3.0, 7, dtype=F64)
    out = nha(X0, ts, MODE0)
    (out.xs.sum() + out.switch_ts.nan_to_num().sum()).backward()
    names = {n for n, _ in nha.named_parameters()}
    assert {"transition_logits", "flows.0.net.weight", "guards.1.net.bias"} <= names
    assert any(n.startswith("resets.") for n in names)
    for name, p in nha.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        # The guard of mode 0 fires at x = x_low = 0, where its weight multiplies zero.
        if name != "guards.0.net.weight":
            assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("name", ["guards.1.net.bias", "guards.0.net.bias", "flows.1.net.bias"])
def test_switch_time_gradients_match_central_differences(name):
    nha = _thermostat_nha(resets=[_linear(0.9, 0.0), None])
    ts = torch.linspace(0.0, 3.0, 4, dtype=F64)
    x0, mode0 = X0[:1], MODE0[:1]
    p = dict(nha.named_parameters())[name]
    (grad,) = torch.autograd.grad(nha(x0, ts, mode0).switch_ts[0, :3].sum(), [p])
    eps = 1e-5
    with torch.no_grad():
        p += eps
        up = nha(x0, ts, mode0).switch_ts[0, :3].sum()
        p -= 2 * eps
        down = nha(x0, ts, mode0).switch_ts[0, :3].sum()
        p += eps
    assert float(grad) == pytest.approx(float(up - down) / (2 * eps), rel=1e-5)


def test_automaton_state_dict_round_trip():
    a, b = _thermostat_nha(), _thermostat_nha(x_high=1.5)
    b.load_state_dict(a.state_dict())
    ts = torch.linspace(0.0, 2.0, 3, dtype=F64)
    torch.testing.assert_close(a(X0, ts, MODE0).xs, b(X0, ts, MODE0).xs)


def test_automaton_errors_name_the_argument():
    f = [_linear(-1.0, 0.0), _linear(-1.0, 1.0)]
    with pytest.raises(
        ValueError, match=r"`guards` must have one guard per mode \(2 flows\), got 1"
    ):
        NeuralHybridAutomaton(f, [_linear(1.0, 0.0)])
    with pytest.raises(TypeError, match=r"`flows\[0\]` is an nn.Sequential"):
        NeuralHybridAutomaton([nn.Sequential(nn.Linear(1, 1))], [_linear(1.0, 0.0)])
    with pytest.raises(TypeError, match=r"`flows` must be a sequence with one module per mode"):
        NeuralHybridAutomaton(_linear(1.0, 0.0), [_linear(1.0, 0.0)])
    with pytest.raises(ValueError, match=r"`controller` must step per sample"):
        NeuralHybridAutomaton(f, f, controller=tn.PIDController(rtol=1e-3, atol=1e-6))
    with pytest.raises(ValueError, match=r"`resets` must have one entry per mode"):
        NeuralHybridAutomaton(f, f, resets=[None])
    nha = NeuralHybridAutomaton(f, f)
    ts = torch.linspace(0, 1, 3)
    with pytest.raises(ValueError, match=r"`mode0` must hold modes 0 .. 1, got values in \[0, 2\]"):
        nha(torch.zeros(2, 1), ts, torch.tensor([0, 2]))
    with pytest.raises(ValueError, match=r"`mode0` must be an int64 tensor of shape \(2,\)"):
        nha(torch.zeros(2, 1), ts, torch.zeros(2))
    with pytest.raises(ValueError, match=r"`x0` must be a floating-point tensor \(batch, dim\)"):
        nha(torch.zeros(2), ts, torch.zeros(2).long())


@pytest.mark.slow
def test_automaton_learns_the_thermostat_s_switching_times():
    # Flows and guards start off (rates 0.7 instead of 1, thresholds -0.4 and 1.5 instead of
    # 0 and 2); fitted to the closed-form trajectories, the switching times come close.
    torch.manual_seed(0)
    nha = NeuralHybridAutomaton(
        flows=[_linear(-0.7, -0.5), _linear(-0.7, 2.0)],
        guards=[_linear(1.0, -0.4), _linear(-1.0, 1.5)],
        rtol=1e-5,
        atol=1e-7,
    ).to(F64)
    x0, mode0 = X0[:2], MODE0[:2]
    ts = torch.linspace(0.0, 4.0, 21, dtype=F64)
    data = torch.stack([thermostat(ts, float(x0[i]), int(mode0[i]))[0] for i in range(2)], 1)
    true = [
        torch.tensor([s for s, _ in thermostat_switches(float(x0[i]), int(mode0[i]), t1=4.0)])
        for i in range(2)
    ]

    def switch_error(same_count: bool) -> float:
        """The largest error of the first switching times (all of them: ``same_count``)."""
        with torch.no_grad():
            out = nha(x0, ts, mode0)
        errs = []
        for i in range(2):
            got = out.switch_ts[i][~out.switch_ts[i].isnan()]
            if same_count:
                assert len(got) == len(true[i])
            n = min(len(got), len(true[i]))
            errs.append((got[:n] - true[i][:n].to(F64)).abs().max())
        return float(max(errs))

    before = switch_error(same_count=False)  # the initial guess switches once too often
    opt = torch.optim.Adam(nha.parameters(), lr=0.05)
    for _ in range(60):
        loss = ((nha(x0, ts, mode0).xs[..., 0] - data) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = switch_error(same_count=True)
    assert before > 0.15
    assert after < 0.1 and after < before / 3


@pytest.mark.parametrize("per_sample", [False, True])
def test_an_identically_zero_event_function_beside_the_one_that_fires_keeps_its_gradient(
    per_sample,
):
    # The second function fires at t = c; the first is zero all along (a guard masked off by
    # the mode, m_k g_k with m_k = 0). It was taken for the crossing one (zero at the end of
    # the bisection), whose zero slope left the event time without its gradient dt/dc = 1.
    c = torch.tensor(0.5, dtype=F64, requires_grad=True)
    event = tn.Event(
        [lambda t, y, args: y[:, 1] * (y[:, 0] + 0.3), lambda t, y, args: y[:, 2] * (c - y[:, 0])],
        direction=-1,
        terminal=False,
    )
    sol = tn.solve(
        tn.ODETerm(lambda t, y, args: torch.ones_like(y) * torch.tensor([1.0, 0.0, 0.0])),
        tn.Dopri5(),
        0.0,
        0.9,
        torch.tensor([[0.0, 0.0, 1.0]], dtype=F64),
        event=event,
        controller=tn.PIDController(rtol=1e-8, atol=1e-10, per_sample=per_sample),
    )
    assert sol.event_ids.reshape(-1).tolist() == [1]
    (grad,) = torch.autograd.grad(sol.event_ts.sum(), [c])
    assert float(grad) == pytest.approx(1.0, rel=1e-8)


def test_a_transition_module_chooses_the_next_mode_and_gets_gradients():
    class ToMode0(nn.Module):
        """Next-mode logits from the state and the one-hot mode: k -> k + 1 mod 3."""

        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.tensor(1.0, dtype=F64))

        def forward(self, t, x, m):
            base = torch.tensor([[0.0, 5.0, -5.0], [-5.0, 0.0, 5.0], [5.0, -5.0, 0.0]], dtype=F64)
            return self.scale * (m @ base) + 0 * x

    # Mode 0 decays towards 0 and leaves at 0.3, mode 1 rises towards 1 and leaves at 0.8,
    # mode 2 decays and leaves at 0.5; the logits make the cycle 0 -> 1 -> 2 -> 0.
    flows = [_linear(-1.0, 0.0), _linear(-1.0, 1.0), _linear(-1.0, 0.0)]
    guards = [_linear(1.0, -0.3), _linear(-1.0, 0.8), _linear(1.0, -0.5)]
    transitions = ToMode0()
    nha = NeuralHybridAutomaton(flows, guards, transitions=transitions, rtol=1e-8, atol=1e-10)
    nha = nha.to(F64)
    out = nha(torch.tensor([[1.0]], dtype=F64), torch.linspace(0, 4, 5, dtype=F64), MODE0[:1] * 0)
    assert out.switch_from[0, :4].tolist() == [0, 1, 2, 0]
    t1 = math.log(1 / 0.3)
    t2 = t1 + math.log(0.7 / 0.2)
    t3 = t2 + math.log(0.8 / 0.5)
    expected = torch.tensor([t1, t2, t3], dtype=F64)
    torch.testing.assert_close(out.switch_ts[0, :3], expected, rtol=0, atol=1e-7)
    assert "transition_logits" not in dict(nha.named_parameters())
    (out.xs.sum()).backward()
    assert transitions.scale.grad is not None and torch.isfinite(transitions.scale.grad)
