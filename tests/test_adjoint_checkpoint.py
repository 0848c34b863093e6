"""CheckpointAdjoint gives DirectAdjoint's gradients to round-off, with bounded memory."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd import gradcheck

import torchnde as tn

F64 = torch.float64


class Field(torch.nn.Module):
    def __init__(self, d: int = 3, width: int = 12) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(d, width), torch.nn.Tanh(), torch.nn.Linear(width, d)
        ).double()

    def forward(self, t, y, args):
        s = torch.sin(t)
        s = s[:, None] if s.ndim else s  # per-sample stepping: one time per sample
        scale = 3 * (1 + 0.1 * s) if args is None else args
        return scale * self.net(y)


SETUPS = {
    "dopri5": dict(solver=tn.Dopri5(), controller=tn.PIDController(rtol=1e-6, atol=1e-8)),
    "tsit5-pid": dict(
        solver=tn.Tsit5(), controller=tn.PIDController(rtol=1e-5, atol=1e-7, pcoeff=0.2)
    ),
    "rk4": dict(solver=tn.RK4(), dt0=0.05),
    "dopri5-per-sample": dict(
        solver=tn.Dopri5(), controller=tn.PIDController(rtol=1e-6, atol=1e-8, per_sample=True)
    ),
    "bosh3-step-ts": dict(
        solver=tn.Bosh3(), controller=tn.PIDController(rtol=1e-5, atol=1e-7, step_ts=[0.7])
    ),
}


def _grads(adjoint, setup, *, t1=2.0, args=None, saveat=None, y0=None, event=None):
    field = Field()
    y0 = (
        torch.randn(4, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
        if y0 is None
        else y0
    )
    y0 = y0.clone().requires_grad_(True)
    t1 = torch.tensor(t1, dtype=F64, requires_grad=True)
    ts = torch.linspace(0.0, float(t1.detach()), 6, dtype=F64)[1:-1].requires_grad_(True)
    saveat = tn.SaveAt(ts=ts, t1=True) if saveat is None else saveat
    sol = tn.solve(
        tn.ODETerm(field), t0=0.0, t1=t1, y0=y0, args=args, saveat=saveat,
        adjoint=adjoint, event=event, **setup,
    )  # fmt: skip
    loss = (sol.ys**2).sum() + sol.ts.sum() ** 2
    wrt = [y0, t1, ts, *field.parameters()] + ([args] if isinstance(args, torch.Tensor) else [])
    return torch.autograd.grad(loss, wrt, allow_unused=True), sol


@pytest.mark.parametrize("name", SETUPS)
@pytest.mark.parametrize("checkpoints", [None, 3])
def test_checkpoint_gradients_equal_direct_gradients(name, checkpoints):
    setup = SETUPS[name]
    direct, sol = _grads(tn.DirectAdjoint(), setup)
    ckpt, sol_c = _grads(tn.CheckpointAdjoint(checkpoints=checkpoints), setup)
    assert sol.stats["num_steps"] > 8
    torch.testing.assert_close(sol_c.ys, sol.ys, rtol=0, atol=0)
    for gd, gc in zip(direct, ckpt):
        assert gd is not None and gc is not None
        torch.testing.assert_close(gc, gd, rtol=1e-12, atol=1e-12)


def test_checkpoint_gradient_wrt_args_and_reverse_time():
    setup = SETUPS["dopri5"]
    args = torch.tensor(0.7, dtype=F64, requires_grad=True)
    direct, _ = _grads(tn.DirectAdjoint(), setup, t1=-1.5, args=args)
    args2 = torch.tensor(0.7, dtype=F64, requires_grad=True)
    ckpt, _ = _grads(tn.CheckpointAdjoint(), setup, t1=-1.5, args=args2)
    for gd, gc in zip(direct, ckpt):
        torch.testing.assert_close(gc, gd, rtol=1e-12, atol=1e-12)


def test_checkpoint_gradient_of_event_time_equals_direct():
    # A ball falling from a learnable height: the event time is sqrt(2 h / g).
    def run(adjoint):
        h = torch.tensor(5.0, dtype=F64, requires_grad=True)
        y0 = torch.stack([h, torch.zeros((), dtype=F64)])
        term = tn.ODETerm(lambda t, y, args: torch.stack([y[1], torch.full_like(y[0], -9.81)]))
        sol = tn.solve(
            term, tn.Tsit5(), 0.0, 10.0, y0, saveat=tn.SaveAt(t1=True),
            event=tn.Event(lambda t, y, args: y[0], direction=-1), adjoint=adjoint,
        )  # fmt: skip
        (g,) = torch.autograd.grad(sol.ts[-1], h)
        return sol.ts[-1], g

    t_d, g_d = run(tn.DirectAdjoint())
    t_c, g_c = run(tn.CheckpointAdjoint())
    assert abs(float(t_c.detach()) - math.sqrt(2 * 5.0 / 9.81)) < 1e-9
    torch.testing.assert_close(g_c, g_d, rtol=1e-10, atol=1e-12)
    assert abs(float(g_c) - 1 / math.sqrt(2 * 9.81 * 5.0)) < 1e-6


def test_checkpoint_gradcheck_wrt_y0_and_t1():
    def fn(y0, t1):
        sol = tn.solve(
            tn.ODETerm(lambda t, y, args: -y * y + torch.cos(t)), tn.Tsit5(), 0.0, t1, y0,
            controller=tn.PIDController(rtol=1e-9, atol=1e-11),
            saveat=tn.SaveAt(ts=torch.tensor([0.3, 0.8], dtype=F64), t1=True),
            adjoint=tn.CheckpointAdjoint(),
        )  # fmt: skip
        return sol.ys

    y0 = torch.tensor([0.5, -0.2], dtype=F64, requires_grad=True)
    t1 = torch.tensor(1.2, dtype=F64, requires_grad=True)
    assert gradcheck(fn, (y0, t1), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_checkpoint_tuple_state_equals_direct():
    def run(adjoint):
        w = torch.tensor(1.3, dtype=F64, requires_grad=True)
        q0 = torch.tensor([1.0, 0.2], dtype=F64, requires_grad=True)
        p0 = torch.tensor([0.0, 0.5], dtype=F64)
        term = tn.ODETerm(lambda t, y, args: (y[1], -w * w * torch.sin(y[0])))
        sol = tn.solve(
            term, tn.Dopri5(), 0.0, 3.0, (q0, p0), adjoint=adjoint,
            controller=tn.PIDController(rtol=1e-7, atol=1e-9),
            saveat=tn.SaveAt(ts=torch.linspace(0.5, 3.0, 4, dtype=F64)),
        )  # fmt: skip
        loss = sol.ys[0].sum() + (sol.ys[1] ** 2).sum()
        return torch.autograd.grad(loss, (w, q0))

    for gd, gc in zip(run(tn.DirectAdjoint()), run(tn.CheckpointAdjoint())):
        torch.testing.assert_close(gc, gd, rtol=1e-12, atol=1e-12)


def test_checkpoint_warns_about_tensors_it_cannot_see():
    hidden = {"k": torch.tensor(0.5, dtype=F64, requires_grad=True)}

    class Opaque:
        def __call__(self, t, y, args):
            return -hidden_lookup() * y

    def hidden_lookup():
        return hidden["k"]

    y0 = torch.ones(2, dtype=F64, requires_grad=True)
    sol = tn.solve(
        tn.ODETerm(Opaque()), tn.RK4(), 0.0, 1.0, y0, dt0=0.1,
        adjoint=tn.CheckpointAdjoint(params=[]),
    )  # fmt: skip
    with pytest.warns(UserWarning, match="get no gradient"):
        sol.ys.sum().backward()


def test_checkpoint_under_no_grad_is_a_plain_solve():
    setup = SETUPS["dopri5"]
    y0 = torch.ones(2, 3, dtype=F64)
    with torch.no_grad():
        a = tn.solve(tn.ODETerm(Field()), t0=0.0, t1=1.0, y0=y0, **setup).ys
        b = tn.solve(
            tn.ODETerm(Field()), t0=0.0, t1=1.0, y0=y0, adjoint=tn.CheckpointAdjoint(), **setup
        ).ys
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_checkpoint_rejects_bad_checkpoint_counts(bad):
    with pytest.raises(ValueError, match="checkpoints"):
        tn.CheckpointAdjoint(checkpoints=bad)
