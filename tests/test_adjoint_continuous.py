"""The continuous adjoints: BacksolveAdjoint and InterpolatedAdjoint (float64).

They differentiate the exact solution (optimise-then-discretise), so against finite
differences of the computed solution (``gradcheck``) and against ``DirectAdjoint`` they agree
only up to the discretisation error of the forward and backward solves. The solves here run at
rtol 1e-10..1e-12, where that error is below 1e-7, and ``gradcheck`` gets ``atol=1e-5``: far
above that error and the finite-difference error (eps=1e-6), far below any real mistake in a
gradient (which would be O(1)).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.autograd import gradcheck
from torch.func import functional_call, jacrev

import torchnde as tn
from torchnde._adjoint.backsolve import BacksolveAdjoint, InterpolatedAdjoint

F64 = torch.float64
ADJOINTS = [BacksolveAdjoint, InterpolatedAdjoint]
# fast_mode checks a random projection u^T J v of the Jacobian (any wrong entry shows), at a
# fraction of the cost of the element-by-element check.
GC = dict(eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


def _tight(solver_cls):
    """Solver, controller and dt0 with a discretisation error far below gradcheck's atol."""
    if solver_cls().is_adaptive:
        return solver_cls(), tn.PIDController(rtol=1e-10, atol=1e-12), None
    return solver_cls(), tn.ConstantStepSize(), 0.02


def _mlp(width: int = 4) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(2, width), torch.nn.Tanh(), torch.nn.Linear(width, 2)
    ).to(F64)


def _ts(*times: float) -> torch.Tensor:
    return torch.tensor(times, dtype=F64)


def _y0() -> torch.Tensor:
    return torch.tensor([0.4, -0.3], dtype=F64, requires_grad=True)


def _field(t, y, args):
    k, w = args
    return -k * y + torch.sin(w * t) * y.flip(-1)


def _max_err(a, b) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


# --- finite differences


@pytest.mark.parametrize("adjoint_cls", ADJOINTS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("solver_cls", [tn.Dopri5, tn.Tsit5, tn.RK4], ids=lambda c: c.__name__)
def test_gradcheck_wrt_y0_and_module_parameters(adjoint_cls, solver_cls):
    module = _mlp().requires_grad_(False)  # only its functional copies are differentiated
    names = [n for n, _ in module.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in module.parameters()]
    solver, controller, dt0 = _tight(solver_cls)

    def fn(y0, *ps):
        field = lambda t, y, args: functional_call(module, dict(zip(names, ps)), (y,))
        sol = tn.solve(
            tn.ODETerm(field),
            solver,
            0.0,
            0.6,
            y0,
            dt0=dt0,
            controller=controller,
            saveat=tn.SaveAt(ts=_ts(0.25, 0.6)),
            adjoint=adjoint_cls(params=ps),
        )
        return sol.ys

    assert gradcheck(fn, (_y0(), *params), **GC)


@pytest.mark.parametrize("adjoint_cls", ADJOINTS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("solver_cls", [tn.Dopri5, tn.RK4], ids=lambda c: c.__name__)
def test_gradcheck_wrt_args_tensors_and_times(adjoint_cls, solver_cls):
    solver, controller, dt0 = _tight(solver_cls)

    def fn(y0, k, w, t0, t1, ts):
        sol = tn.solve(
            tn.ODETerm(_field),
            solver,
            t0,
            t1,
            y0,
            (k, w),
            dt0=dt0,
            controller=controller,
            saveat=tn.SaveAt(ts=ts, t1=True),
            adjoint=adjoint_cls(),
        )
        return sol.ys

    inputs = (
        _y0(),
        torch.tensor([0.7, 1.3], dtype=F64, requires_grad=True),
        torch.tensor(2.0, dtype=F64, requires_grad=True),
        torch.tensor(0.1, dtype=F64, requires_grad=True),
        torch.tensor(0.8, dtype=F64, requires_grad=True),
        _ts(0.3, 0.55).requires_grad_(True),
    )
    # Full (element by element) for Dopri5, the fast random projection otherwise.
    assert gradcheck(fn, inputs, **{**GC, "fast_mode": solver_cls is not tn.Dopri5})


@pytest.mark.parametrize("adjoint_cls", ADJOINTS, ids=lambda c: c.__name__)
def test_gradcheck_in_reverse_time(adjoint_cls):
    def fn(y0, k, t0, t1, ts):
        sol = tn.solve(
            tn.ODETerm(_field),
            tn.Dopri5(),
            t0,
            t1,
            y0,
            (k, torch.tensor(1.5, dtype=F64)),
            controller=tn.PIDController(rtol=1e-10, atol=1e-12),
            saveat=tn.SaveAt(ts=ts, t1=True),
            adjoint=adjoint_cls(),
        )
        return sol.ys

    inputs = (
        _y0(),
        torch.tensor([0.7, 1.3], dtype=F64, requires_grad=True),
        torch.tensor(0.9, dtype=F64, requires_grad=True),
        torch.tensor(0.1, dtype=F64, requires_grad=True),
        _ts(0.6, 0.35).requires_grad_(True),
    )
    assert gradcheck(fn, inputs, **GC)


# --- against DirectAdjoint and closed forms


def _grads_vs_direct(adjoint, rtol: float):
    module = _mlp(8)
    y0 = _y0()

    def grads(adj):
        sol = tn.solve(
            tn.ODETerm(lambda t, y, args: module(y) * torch.cos(t)),
            tn.Dopri5(),
            0.0,
            2.0,
            y0,
            saveat=tn.SaveAt(ts=_ts(0.5, 1.2, 2.0)),
            controller=tn.PIDController(rtol=rtol, atol=rtol * 1e-2),
            adjoint=adj,
        )
        return torch.autograd.grad(sol.ys.square().sum(), [y0, *module.parameters()])

    return _max_err(grads(adjoint), grads(tn.DirectAdjoint()))


@pytest.mark.parametrize("adjoint_cls", ADJOINTS, ids=lambda c: c.__name__)
def test_agrees_with_direct_adjoint_as_tolerances_tighten(adjoint_cls):
    errs = [_grads_vs_direct(adjoint_cls(), rtol) for rtol in (1e-5, 1e-8, 1e-11)]
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 1e-8


@pytest.mark.parametrize("adjoint_cls", ADJOINTS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("through", ["args", "closure"])
def test_linear_ode_matrix_gradient_matches_matrix_exponential(adjoint_cls, through):
    torch.manual_seed(1)
    A = (0.5 * torch.randn(3, 3, dtype=F64)).requires_grad_(True)
    y0 = torch.randn(3, dtype=F64)
    w = torch.randn(3, dtype=F64)
    T = 1.5

    if through == "args":
        term, args = tn.ODETerm(lambda t, y, a: a @ y), A
    else:
        term, args = tn.ODETerm(lambda t, y, a: A @ y), None
    sol = tn.solve(
        term,
        tn.Tsit5(),
        0.0,
        T,
        y0,
        args,
        controller=tn.PIDController(rtol=1e-12, atol=1e-14),
        adjoint=adjoint_cls(),
    )
    (grad,) = torch.autograd.grad((w * sol.ys[-1]).sum(), [A])
    exact = jacrev(lambda M: w @ torch.linalg.matrix_exp(M * T) @ y0)(A.detach())
    torch.testing.assert_close(grad, exact, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("adjoint_cls", ADJOINTS, ids=lambda c: c.__name__)
def test_tuple_state_matches_direct_adjoint(adjoint_cls):
    k = torch.tensor(1.7, dtype=F64, requires_grad=True)
    c = torch.tensor(0.3, dtype=F64, requires_grad=True)
    x0 = torch.tensor([1.0, 0.5], dtype=F64, requires_grad=True)
    v0 = torch.tensor([[0.0], [-0.2]], dtype=F64, requires_grad=True)

    def field(t, y, args):
        x, v = y
        return v.reshape(2), (-k * x - c * v.reshape(2)).reshape(2, 1)

    def grads(adj):
        sol = tn.solve(
            tn.ODETerm(field),
            tn.Dopri5(),
            0.0,
            2.0,
            (x0, v0),
            saveat=tn.SaveAt(ts=_ts(1.0, 2.0)),
            controller=tn.PIDController(rtol=1e-11, atol=1e-13),
            adjoint=adj,
        )
        x, v = sol.ys
        assert x.shape == (2, 2) and v.shape == (2, 2, 1)
        return torch.autograd.grad(x.square().sum() + v.sum(), [x0, v0, k, c])

    assert _max_err(grads(adjoint_cls()), grads(tn.DirectAdjoint())) < 1e-8


@pytest.mark.parametrize("adjoint_cls", ADJOINTS, ids=lambda c: c.__name__)
def test_per_sample_stepping_with_shared_times_matches_direct(adjoint_cls):
    module = _mlp(6)
    y0 = torch.tensor([[0.4, -0.3], [1.0, 0.2], [-0.5, 0.8]], dtype=F64, requires_grad=True)
    t1 = torch.tensor(1.0, dtype=F64, requires_grad=True)

    def grads(adj):
        sol = tn.solve(
            tn.ODETerm(lambda t, y, args: module(y) * (1 + t[:, None])),  # t: (batch,)
            tn.Dopri5(),
            0.0,
            t1,
            y0,
            saveat=tn.SaveAt(ts=_ts(0.3, 0.7), t1=True),
            controller=tn.PIDController(rtol=1e-11, atol=1e-13, per_sample=True),
            adjoint=adj,
        )
        return torch.autograd.grad(sol.ys.square().sum(), [y0, t1, *module.parameters()])

    assert _max_err(grads(adjoint_cls()), grads(tn.DirectAdjoint())) < 1e-8


def test_backward_solver_and_controller_can_differ_from_the_forward_ones():
    module = _mlp()
    y0 = _y0()

    def grads(adj, solver, controller, dt0):
        sol = tn.solve(
            tn.ODETerm(lambda t, y, args: module(y)),
            solver,
            0.0,
            1.0,
            y0,
            dt0=dt0,
            controller=controller,
            adjoint=adj,
        )
        return torch.autograd.grad(sol.ys.sum(), [y0, *module.parameters()]), sol.stats

    adj = BacksolveAdjoint(tn.Tsit5(), tn.PIDController(rtol=1e-11, atol=1e-13))
    g, stats = grads(adj, tn.RK4(), tn.ConstantStepSize(), 0.01)
    ref, _ = grads(tn.DirectAdjoint(), tn.Dopri5(), tn.PIDController(rtol=1e-11, atol=1e-13), None)
    assert _max_err(g, ref) < 1e-7
    assert stats["backward"]["num_steps"] > 0
    assert not hasattr(adj, "last_backward_stats")  # per solve, not on the shared adjoint


# --- seminorm, parameter discovery and warnings


@pytest.mark.parametrize("adjoint_cls", ADJOINTS, ids=lambda c: c.__name__)
def test_seminorm_takes_fewer_backward_steps_with_many_parameters(adjoint_cls):
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Linear(2, 64),
        torch.nn.Tanh(),
        torch.nn.Linear(64, 64),
        torch.nn.Tanh(),
        torch.nn.Linear(64, 2),
    ).to(F64)
    y0 = torch.tensor([[0.4, -0.3], [0.1, 0.9]], dtype=F64, requires_grad=True)

    def backward_stats(seminorm):
        adj = adjoint_cls(seminorm=seminorm)
        sol = tn.solve(
            tn.ODETerm(lambda t, y, args: module(y)),
            tn.Dopri5(),
            0.0,
            3.0,
            y0,
            controller=tn.PIDController(rtol=1e-6, atol=1e-9),
            adjoint=adj,
        )
        assert sol.stats["backward"] == {}  # filled by the backward pass
        sol.ys.square().sum().backward()
        return sol.stats["backward"]

    semi, full = backward_stats(True), backward_stats(False)
    assert semi is not None and full is not None
    assert semi["num_fevals"] <= full["num_fevals"]
    assert semi["num_fevals"] < full["num_fevals"]  # here 26 against 44


@pytest.mark.parametrize("adjoint_cls", ADJOINTS, ids=lambda c: c.__name__)
def test_closure_captured_tensor_not_in_params_warns(adjoint_cls):
    w = torch.tensor([0.5, -1.0], dtype=F64, requires_grad=True)
    with pytest.warns(UserWarning, match=r"captures 1 tensor.*\(2,\).*params= or through args"):
        tn.solve(
            tn.ODETerm(lambda t, y, args: -w * y),
            tn.Dopri5(),
            0.0,
            1.0,
            _y0(),
            adjoint=adjoint_cls(params=[]),
        )


def test_tensor_hidden_from_discovery_warns_in_backward():
    class Holder:  # a class attribute: not reachable by static discovery
        w = torch.tensor([0.5, -1.0], dtype=F64, requires_grad=True)

    sol = tn.solve(
        tn.ODETerm(lambda t, y, args: -Holder.w * y),
        tn.Dopri5(),
        0.0,
        1.0,
        _y0(),
        adjoint=BacksolveAdjoint(),
    )
    with pytest.warns(UserWarning, match=r"uses 1 tensor.*no gradient"):
        sol.ys.sum().backward()


@pytest.mark.parametrize("adjoint_cls", ADJOINTS, ids=lambda c: c.__name__)
def test_parameters_are_discovered_from_closures_modules_and_bound_methods(adjoint_cls):
    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2).to(F64)

        def vf(self, t, y, args):
            return torch.tanh(self.lin(y)) * scale

    torch.manual_seed(0)
    scale = torch.tensor(0.8, dtype=F64, requires_grad=True)
    field = Field()
    y0 = _y0()
    wanted = [y0, scale, *field.parameters()]

    def grads(adj):
        sol = tn.solve(
            tn.ODETerm(field.vf),
            tn.Dopri5(),
            0.0,
            1.0,
            y0,
            controller=tn.PIDController(rtol=1e-11, atol=1e-13),
            adjoint=adj,
        )
        return torch.autograd.grad(sol.ys.sum(), wanted)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = grads(adjoint_cls())
    assert _max_err(g, grads(tn.DirectAdjoint())) < 1e-8


@pytest.mark.parametrize("adjoint_cls", ADJOINTS, ids=lambda c: c.__name__)
def test_module_passed_in_args_is_differentiated(adjoint_cls):
    module = _mlp()
    y0 = _y0()

    def grads(adj):
        sol = tn.solve(
            tn.ODETerm(lambda t, y, net: net(y)),
            tn.Tsit5(),
            0.0,
            1.0,
            y0,
            module,
            controller=tn.PIDController(rtol=1e-11, atol=1e-13),
            adjoint=adj,
        )
        return torch.autograd.grad(sol.ys.sum(), [y0, *module.parameters()])

    assert _max_err(grads(adjoint_cls()), grads(tn.DirectAdjoint())) < 1e-8


# --- memory: no graph through the steps


def _graph_nodes(t: torch.Tensor) -> list:
    nodes, stack, seen = [], [t.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        nodes.append(node)
        stack.extend(n for n, _ in node.next_functions)
    return nodes


def test_backsolve_forward_records_no_graph_through_the_steps():
    module = _mlp()
    y0 = _y0()
    ts = torch.linspace(0.1, 4.0, 5, dtype=F64)

    def solve_with(adjoint, rtol):
        return tn.solve(
            tn.ODETerm(lambda t, y, args: module(y) + torch.sin(6 * t)),
            tn.Dopri5(),
            0.0,
            4.0,
            y0,
            saveat=tn.SaveAt(ts=ts),
            controller=tn.PIDController(rtol=rtol, atol=rtol),
            adjoint=adjoint,
        )

    coarse, fine = solve_with(BacksolveAdjoint(), 1e-4), solve_with(BacksolveAdjoint(), 1e-9)
    assert fine.stats["num_steps"] > 5 * coarse.stats["num_steps"]
    n_coarse, n_fine = len(_graph_nodes(coarse.ys)), len(_graph_nodes(fine.ys))
    assert n_coarse == n_fine < 20
    (fn_node,) = [n for n in _graph_nodes(fine.ys) if "ContinuousAdjoint" in type(n).__name__]
    saved = sum(x.numel() for x in fn_node.saved_tensors)
    assert saved <= (len(ts) + 3) * y0.numel() + len(ts) + 2  # states at save points + times
    # DirectAdjoint's graph grows with the number of steps.
    assert len(_graph_nodes(solve_with(tn.DirectAdjoint(), 1e-9).ys)) > 10 * n_fine
    fine.ys.sum().backward()
    assert y0.grad is not None and all(p.grad is not None for p in module.parameters())


# --- scope and errors


def test_per_sample_events_at_different_times_are_not_supported():
    event = tn.Event(lambda t, y, args: y[:, 0] - 0.5)
    y0 = torch.tensor([[1.0], [2.0]], dtype=torch.float64, requires_grad=True)
    with pytest.raises(NotImplementedError, match="one event time"):
        tn.solve(
            tn.ODETerm(lambda t, y, args: -y),
            tn.Dopri5(),
            0.0,
            3.0,
            y0,
            event=event,
            controller=tn.PIDController(per_sample=True),
            adjoint=BacksolveAdjoint(),
        )


def test_non_ode_terms_are_not_supported():
    term = tn.ControlTerm(lambda t, y, args: y[..., None], lambda t0, t1: (t1 - t0)[None])
    with pytest.raises(NotImplementedError, match="ODE terms.*ControlTerm"):
        tn.solve(term, tn.Euler(), 0.0, 1.0, _y0(), dt0=0.1, adjoint=InterpolatedAdjoint())


def test_per_sample_times_that_differ_are_not_supported_yet():
    with pytest.raises(NotImplementedError, match="shared by the batch"):
        tn.solve(
            tn.ODETerm(lambda t, y, args: -y),
            tn.Dopri5(),
            0.0,
            torch.tensor([1.0, 2.0], dtype=F64),
            torch.ones(2, 2, dtype=F64, requires_grad=True),
            controller=tn.PIDController(per_sample=True),
            adjoint=BacksolveAdjoint(),
        )


def test_constructor_validates_its_arguments():
    with pytest.raises(TypeError, match=r"params=\[tensor\]"):
        BacksolveAdjoint(params=torch.zeros(2))
    with pytest.raises(TypeError, match="solver instance.*Dopri5"):
        BacksolveAdjoint(tn.Dopri5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dt0"):
        InterpolatedAdjoint(dt0=-0.1)
    with pytest.raises(ValueError, match="per_sample=False"):
        BacksolveAdjoint(controller=tn.PIDController(per_sample=True))


@pytest.mark.parametrize("adjoint_cls", ADJOINTS, ids=lambda c: c.__name__)
def test_without_grad_the_solve_is_plain(adjoint_cls):
    y0 = _y0()
    with torch.no_grad():
        sol = tn.solve(
            tn.ODETerm(lambda t, y, args: -y), tn.Dopri5(), 0.0, 1.0, y0, adjoint=adjoint_cls()
        )
    assert sol.ys.grad_fn is None
    expected = y0.detach() * torch.exp(torch.tensor(-1.0, dtype=F64))
    torch.testing.assert_close(sol.ys[-1], expected, rtol=1e-5, atol=1e-6)
