"""Every adjoint differentiates the time and state of a terminal event."""

from __future__ import annotations

import math

import pytest
import torch

import torchnde as tn

F64 = torch.float64


def _falling(adjoint, drag=0.1):
    h = torch.tensor(5.0, dtype=F64, requires_grad=True)
    k = torch.tensor(drag, dtype=F64, requires_grad=True)
    y0 = torch.stack([h, torch.zeros((), dtype=F64)])
    term = tn.ODETerm(lambda t, y, args: torch.stack([y[1], -9.81 - k * y[1]]))
    sol = tn.solve(
        term, tn.Tsit5(), 0.0, 10.0, y0, saveat=tn.SaveAt(ts=[0.3, 0.6, 5.0], t1=True),
        event=tn.Event(lambda t, y, args: y[0], direction=-1), adjoint=adjoint,
        controller=tn.PIDController(rtol=1e-10, atol=1e-12),
    )  # fmt: skip
    loss = sol.ts[-1] + sol.ys[-1, 1] + sol.ys[1].sum()
    return torch.autograd.grad(loss, (h, k)), sol


@pytest.mark.parametrize(
    "adjoint",
    [tn.CheckpointAdjoint(), tn.BacksolveAdjoint(), tn.InterpolatedAdjoint()],
    ids=lambda a: type(a).__name__,
)
def test_event_gradients_agree_with_direct(adjoint):
    direct, _ = _falling(tn.DirectAdjoint())
    grads, sol = _falling(adjoint)
    assert int(sol.status) == int(tn.Status.EVENT_OCCURRED)
    assert torch.isnan(sol.ys[2]).all()  # 5.0 is after the ball lands
    for g, gd in zip(grads, direct):
        torch.testing.assert_close(g, gd, rtol=1e-7, atol=1e-9)


def test_event_time_gradient_matches_the_analytic_one_without_drag():
    # No drag: t_e = sqrt(2 h / g), so d t_e / d h = 1 / sqrt(2 g h).
    h = torch.tensor(5.0, dtype=F64, requires_grad=True)
    y0 = torch.stack([h, torch.zeros((), dtype=F64)])
    term = tn.ODETerm(lambda t, y, args: torch.stack([y[1], torch.full_like(y[1], -9.81)]))
    sol = tn.solve(
        term, tn.Dopri5(), 0.0, 10.0, y0, saveat=tn.SaveAt(t1=True),
        event=tn.Event(lambda t, y, args: y[0], direction=-1), adjoint=tn.BacksolveAdjoint(),
        controller=tn.PIDController(rtol=1e-10, atol=1e-12),
    )  # fmt: skip
    (g,) = torch.autograd.grad(sol.ts[-1], h)
    assert abs(float(g) - 1 / math.sqrt(2 * 9.81 * 5.0)) < 1e-8
