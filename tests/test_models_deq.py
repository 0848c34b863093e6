"""models.DEQ: Anderson / Broyden fixed points and implicit gradients."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

import torchnde as tn
from torchnde import models as M

F64 = torch.float64


class Cell(nn.Module):
    """f(z, x) = tanh(W z + U x + b), contractive for ||W|| < 1."""

    def __init__(self, d=4, scale=0.6, dtype=F64, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(d, d, generator=g, dtype=dtype)
        self.w = nn.Parameter(scale * w / torch.linalg.matrix_norm(w, 2))
        self.u = nn.Parameter(torch.randn(d, d, generator=g, dtype=dtype))
        self.b = nn.Parameter(0.1 * torch.randn(d, generator=g, dtype=dtype))

    def forward(self, z, x):
        return torch.tanh(z @ self.w.T + x @ self.u.T + self.b)


@pytest.mark.parametrize("method", ["anderson", "broyden"])
def test_fixed_point_is_reached(method):
    cell = Cell(scale=0.9)
    deq = M.DEQ(cell, method, tol=1e-12, max_iters=100)
    x = torch.randn(5, 4, dtype=F64)
    with torch.no_grad():
        z = deq(x)
    torch.testing.assert_close(cell(z, x), z, rtol=1e-10, atol=1e-11)
    # both accelerate plain iteration z <- f(z, x), which contracts by at most 0.9 per step
    assert deq.last_stats["iterations"] < 60


@pytest.mark.parametrize("method", ["anderson", "broyden"])
def test_implicit_gradient_passes_gradcheck(method):
    cell = Cell()
    deq = M.DEQ(cell, method, tol=1e-13, max_iters=200)
    x = torch.randn(3, 4, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: deq(x), (x, cell.w))
    deq(x).sum().backward()
    assert deq.last_stats["backward_iterations"] >= 1


def test_gradient_equals_an_infinitely_deep_weight_tied_network():
    cell = Cell(scale=0.5)
    x = torch.randn(3, 4, dtype=F64)
    deq = M.DEQ(cell, tol=1e-13, max_iters=100)
    got = torch.autograd.grad(deq(x).pow(2).sum(), list(cell.parameters()))
    z = torch.zeros_like(x)
    for _ in range(80):  # 0.5^80: converged to machine precision
        z = cell(z, x)
    expect = torch.autograd.grad(z.pow(2).sum(), list(cell.parameters()))
    for g, e in zip(got, expect):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-12)


def test_gradient_agrees_with_implicit_adjoint_on_the_equivalent_ode():
    # z* = f(z*, x) is the equilibrium of dz/dt = f(z, x) - z.
    cell = Cell()
    x = torch.randn(2, 4, dtype=F64)
    deq = M.DEQ(cell, "broyden", tol=1e-13, max_iters=100)
    got = torch.autograd.grad(deq(x).sum(), list(cell.parameters()))
    sol = tn.solve(
        tn.ODETerm(lambda t, z, args: cell(z, x) - z), tn.Tsit5(), 0.0, 60.0,
        torch.zeros_like(x), controller=tn.PIDController(rtol=1e-11, atol=1e-12),
        adjoint=tn.ImplicitAdjoint(rtol=1e-12),
    )  # fmt: skip
    expect = torch.autograd.grad(sol.ys[-1].sum(), list(cell.parameters()))
    for g, e in zip(got, expect):
        torch.testing.assert_close(g, e, rtol=1e-7, atol=1e-9)


def test_float32_tiny_overfit_and_state_dict_round_trip():
    torch.manual_seed(0)
    cell = Cell(d=8, dtype=torch.float32)
    readout = nn.Linear(8, 1)
    deq = M.DEQ(cell, tol=1e-5, backward_tol=1e-4)
    x = torch.randn(16, 8)
    y = torch.sin(x.sum(1, keepdim=True))
    opt = torch.optim.Adam([*cell.parameters(), *readout.parameters()], lr=3e-2)
    first = None
    for _ in range(60):
        loss = (readout(deq(x)) - y).pow(2).mean()
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first
    assert deq(x).dtype == torch.float32
    buf = io.BytesIO()
    torch.save(deq.state_dict(), buf)
    buf.seek(0)
    clone = M.DEQ(Cell(d=8, dtype=torch.float32, seed=5), tol=1e-5, backward_tol=1e-4)
    clone.load_state_dict(torch.load(buf))
    torch.testing.assert_close(clone(x), deq(x))


def test_non_convergence_raises():
    cell = Cell(scale=0.99)
    with pytest.raises(RuntimeError, match="did not converge"):
        M.DEQ(cell, max_iters=2, tol=1e-12)(torch.randn(2, 4, dtype=F64))
    with pytest.raises(ValueError, match="`method`"):
        M.DEQ(cell, "newton")
