"""compile_step=True: one compilation per problem signature, cached across solves, and the
automatic fallback to eager (forced with a stub timer: timings never decide a test)."""

from __future__ import annotations

import math

import pytest
import torch

import torchnde as tn
from torchnde._core import compiled as C


class _StubTimer:
    """Each probed eager attempt 'takes' 1 s, each compiled one ``compiled_s``."""

    def __init__(self, compiled_s: float) -> None:
        self.compiled_s = compiled_s
        self.now = 0.0
        self.started = False

    def __call__(self, device: torch.device) -> float:
        return self.now


@pytest.fixture
def fresh(monkeypatch):
    C.clear_cache()
    yield
    C.clear_cache()


def _linear_solve(compile_step: bool, y0: torch.Tensor, a: torch.Tensor):
    term = tn.ODETerm(lambda t, y, args: args * y)
    return tn.solve(
        term, tn.Tsit5(), 0.0, 1.0, y0, a, saveat=tn.SaveAt(ts=torch.linspace(0, 1, 5)),
        controller=tn.PIDController(rtol=1e-8, atol=1e-8), compile_step=compile_step,
    )  # fmt: skip


def _eager_everywhere(monkeypatch):
    """Make every signature choose eager without compiling: the decision is preset."""
    real = C._lookup

    def lookup(key, *rest):
        entry = real(key, *rest)
        if entry.decision is None:
            entry.decision = "eager"
        return entry

    monkeypatch.setattr(C, "_lookup", lookup)


def test_signature_is_equal_for_two_solves_of_the_same_problem(fresh, monkeypatch):
    _eager_everywhere(monkeypatch)
    y0, a = torch.ones(2, 3, dtype=torch.float64), torch.tensor(-0.5, dtype=torch.float64)
    _linear_solve(True, y0, a)
    _linear_solve(True, y0 + 1, a * 2)  # new values, new lambda, same signature
    info = C.cache_info()
    assert len(info) == 1
    _linear_solve(True, torch.ones(4, 3, dtype=torch.float64), a)  # another shape
    assert len(C.cache_info()) == 2


def test_eager_decision_gives_the_eager_solution_exactly(fresh, monkeypatch):
    _eager_everywhere(monkeypatch)
    y0, a = torch.randn(2, 3, dtype=torch.float64), torch.tensor(-0.5, dtype=torch.float64)
    s1, s0 = _linear_solve(True, y0, a), _linear_solve(False, y0, a)
    torch.testing.assert_close(s1.ys, s0.ys, rtol=0, atol=0)
    # ... and the analytic solution y0 exp(a t)
    exact = y0 * torch.exp(a * torch.linspace(0, 1, 5, dtype=torch.float64))[:, None, None]
    torch.testing.assert_close(s1.ys, exact, rtol=1e-6, atol=1e-7)


def test_compile_failure_falls_back_to_eager(fresh, monkeypatch):
    def broken(fn, **kw):
        def call(*a, **k):
            raise RuntimeError("no compiler here")

        return call

    monkeypatch.setattr(torch, "compile", broken)
    y0, a = torch.randn(2, 3, dtype=torch.float64), torch.tensor(-0.5, dtype=torch.float64)
    sol = _linear_solve(True, y0, a)
    torch.testing.assert_close(sol.ys, _linear_solve(False, y0, a).ys, rtol=0, atol=0)
    (info,) = C.cache_info()
    assert info["decision"] == "eager" and "no compiler here" in info["error"]


def test_user_error_inside_a_step_is_not_swallowed(fresh, monkeypatch):
    _eager_everywhere(monkeypatch)

    def bad(t, y, args):
        if float(t) > 0.5:
            raise ZeroDivisionError("vector field failed")
        return -y

    with pytest.raises(ZeroDivisionError, match="vector field failed"):
        tn.solve(tn.ODETerm(bad), tn.Tsit5(), 0.0, 1.0, torch.ones(3), compile_step=True)


def _probe_with(monkeypatch, compiled_cost: float):
    """Run the probe with torch.compile replaced by the eager function and a stub clock that
    charges 1 s per eager attempt and ``compiled_cost`` per compiled one."""
    clock = {"now": 0.0}
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: _charging(fn, clock, compiled_cost))
    real_attempt = tn._core.loop.Loop._attempt

    def eager_attempt(self, *a):
        clock["now"] += 1.0
        return real_attempt(self, *a)

    monkeypatch.setattr(tn._core.loop.Loop, "_attempt", eager_attempt)
    monkeypatch.setattr(C.settings, "timer", lambda device: clock["now"])
    monkeypatch.setattr(C.settings, "probes", 3)


def _charging(fn, clock, cost):
    def call(loop, *a):
        out = fn(loop, *a)
        clock["now"] += cost - 1.0  # fn ran the (charging) eager attempt: replace its 1 s
        return out

    return call


@pytest.mark.parametrize("cost, decision", [(2.0, "eager"), (0.5, "compiled")])
def test_the_slower_path_is_dropped(fresh, monkeypatch, cost, decision):
    _probe_with(monkeypatch, cost)
    y0, a = torch.randn(2, 3, dtype=torch.float64), torch.tensor(-3.0, dtype=torch.float64)
    sol = _linear_solve(True, y0, a)
    (info,) = C.cache_info()
    assert info["decision"] == decision
    assert math.isclose(info["eager_s"], 1.0) and math.isclose(info["compiled_s"], cost)
    # The choice holds for the next solve of the signature (no new probe).
    before = info["attempts"]
    sol2 = _linear_solve(True, y0, a)
    (info,) = C.cache_info()
    assert info["attempts"] == before + int(sol2.stats["num_steps"])
    exact = y0 * math.exp(-3.0)
    torch.testing.assert_close(sol.ys[-1], exact, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_compiled_matches_eager_and_compiles_once(fresh, monkeypatch):
    """Really compiled (decision forced to compiled after the probe): the same solution to
    rounding, the same gradients, and one compilation for two solves with gradients (each
    solve's first attempt, from a ``t0`` without a gradient, runs eager)."""
    monkeypatch.setattr(C.settings, "ratio", math.inf)  # keep the compiled step
    monkeypatch.setattr(C.settings, "probes", 1)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    net = net.double()
    y0 = torch.randn(4, 3, dtype=torch.float64)

    def run(compile_step):
        term = tn.ODETerm(lambda t, y, args: net(y))
        sol = tn.solve(
            term, tn.Dopri5(), 0.0, 1.0, y0, controller=tn.PIDController(rtol=1e-7, atol=1e-7),
            saveat=tn.SaveAt(ts=torch.linspace(0, 1, 4)), compile_step=compile_step,
        )  # fmt: skip
        loss = sol.ys.pow(2).sum()
        grads = torch.autograd.grad(loss, list(net.parameters()))
        return sol.ys.detach(), grads

    ys0, g0 = run(False)
    ys1, g1 = run(True)
    ys2, g2 = run(True)
    (info,) = C.cache_info()
    assert info["decision"] == "compiled", info["error"]
    assert info["num_compilations"] == 1
    for ys, g in ((ys1, g1), (ys2, g2)):
        torch.testing.assert_close(ys, ys0, rtol=1e-10, atol=1e-12)
        for a, b in zip(g, g0):
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


@pytest.mark.slow
def test_a_field_that_recompiles_at_every_attempt_goes_eager_at_once(fresh):
    """A Python counter on the vector field changes a dynamo guard at every call: the probe
    sees a second compilation and keeps eager, instead of compiling at every attempt."""

    class Counting(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def forward(self, y):
            self.calls += 1
            return -y

    field = Counting()
    y0 = torch.ones(3, dtype=torch.float64)
    sol = tn.solve(
        tn.ODETerm(lambda t, y, args: field(y)), tn.Tsit5(), 0.0, 1.0, y0,
        controller=tn.PIDController(rtol=1e-8, atol=1e-8), compile_step=True,
    )  # fmt: skip
    (info,) = C.cache_info()
    assert info["decision"] == "eager"
    assert info["num_compilations"] <= 2
    assert "recompiled" in info["error"]
    torch.testing.assert_close(sol.ys[-1], y0 * math.exp(-1.0), rtol=1e-7, atol=1e-8)


# -- compiled fixed-step blocks (the fixed-grid path) ---------------------------------------


def _force(monkeypatch, decision: str, compile_stub: bool = True) -> list:
    """Probe once per side with a clock that charges 1 per call, keeping the compiled side
    (``ratio`` inf) or the eager one (``ratio`` 0); with ``compile_stub`` torch.compile is
    replaced by the plain function (the block's code runs uncompiled). Returns a list that
    gets one entry per compiled-side block call."""
    clock = {"now": 0.0}

    def tick(device):
        clock["now"] += 1.0
        return clock["now"]

    monkeypatch.setattr(C.settings, "timer", tick)
    monkeypatch.setattr(C.settings, "probes", 1)
    monkeypatch.setattr(C.settings, "ratio", math.inf if decision == "compiled" else 0.0)
    calls: list = []
    if compile_stub:

        def stub(fn, **kw):
            return lambda *a: calls.append(1) or fn(*a)

        monkeypatch.setattr(torch, "compile", stub)
    return calls


def _field(t, y, args):
    return torch.tanh(y @ args) + torch.sin(3 * t)


def _fixed_solve(compile_step: bool, solver, y0, w, ts, **kw):
    kw.setdefault("dt0", 0.02)
    return tn.solve(
        tn.ODETerm(_field), solver, 0.0, 1.0, y0, w, saveat=tn.SaveAt(ts=ts),
        controller=tn.ConstantStepSize(), compile_step=compile_step, **kw,
    )  # fmt: skip


@pytest.mark.parametrize("solver", [tn.RK4(), tn.Midpoint()])
def test_fixed_step_blocks_take_the_eager_steps(fresh, monkeypatch, solver):
    """Blocks of ``block_steps`` steps on the fixed grid: the same steps, statuses, counts and
    values as the eager solve (to rounding), saves on step ends taken from the block, the
    steps around saves inside steps (0.33, 0.71) taken eagerly, the last, shortened step
    (dt0 = 0.03 does not divide 1) in a block like any other. RK4 declares
    ``nonfinite_persists`` (finiteness read on a block's last state), Midpoint does not
    (every state summed)."""
    calls = _force(monkeypatch, "compiled")
    torch.manual_seed(0)
    w = torch.randn(3, 3, dtype=torch.float64)
    y0 = torch.randn(4, 3, dtype=torch.float64)
    ts = torch.tensor([0.0, 0.3, 0.33, 0.6, 0.71, 1.0], dtype=torch.float64)
    a = _fixed_solve(True, solver, y0, w, ts, dt0=0.03)
    b = _fixed_solve(False, solver, y0, w, ts, dt0=0.03)
    torch.testing.assert_close(a.ys, b.ys, rtol=1e-12, atol=1e-12)
    assert a.stats == b.stats and int(a.status) == int(b.status) == 0
    (info,) = C.cache_info()
    assert info["key"][0] == "block" and info["decision"] == "compiled"
    size = C.settings.block_steps
    # All but the first block, the probe's eager one and the steps that cannot be blocked
    # (around the two interior saves) went through the compiled function.
    assert len(calls) >= (a.stats["num_steps"] - 5 * size) // size
    # A second solve of the signature: no new probe (its first block, whose solver state
    # is the initial evaluation, not a placeholder, runs eager).
    first = len(calls)
    c = _fixed_solve(True, solver, y0 + 0.5, w, ts, dt0=0.03)
    torch.testing.assert_close(c.ys, _fixed_solve(False, solver, y0 + 0.5, w, ts, dt0=0.03).ys)
    assert len(calls) - first >= first


def test_fixed_step_blocks_eager_decision_is_the_eager_solve_exactly(fresh, monkeypatch):
    calls = _force(monkeypatch, "eager")
    w = torch.randn(3, 3, dtype=torch.float64)
    y0 = torch.randn(4, 3, dtype=torch.float64)
    ts = torch.linspace(0, 1, 6, dtype=torch.float64)
    a = _fixed_solve(True, tn.RK4(), y0, w, ts)
    b = _fixed_solve(False, tn.RK4(), y0, w, ts)
    # The probe's compiled blocks (the compiling call and one timed) combine the stages with
    # the step size multiplied in, not as `alpha`; the later ones are the eager steps.
    torch.testing.assert_close(a.ys, b.ys, rtol=1e-14, atol=1e-15)
    assert C.cache_info()[0]["decision"] == "eager" and len(calls) == 2
    a = _fixed_solve(True, tn.RK4(), y0, w, ts)
    torch.testing.assert_close(a.ys, b.ys, rtol=0, atol=0)
    assert len(calls) == 2


def test_blow_up_inside_compiled_blocks_matches_the_eager_solve(fresh, monkeypatch):
    """y' = y^2 from 1 blows up at t = 1: the block whose check is non-finite is replayed
    step by step, so status, counts and the saves are those of the eager solve."""
    _force(monkeypatch, "compiled")
    y0 = torch.ones(2, dtype=torch.float64)
    ts = torch.linspace(0, 2, 11, dtype=torch.float64)
    term = tn.ODETerm(lambda t, y, args: y * y)
    sols = [
        tn.solve(
            term,
            tn.RK4(),
            0.0,
            2.0,
            y0,
            dt0=0.01,
            controller=tn.ConstantStepSize(),
            saveat=tn.SaveAt(ts=ts),
            throw=False,
            compile_step=c,
        )  # fmt: skip
        for c in (True, False)
    ]
    a, b = sols
    assert int(a.status) == int(b.status) == int(tn.Status.NONFINITE)
    assert a.stats == b.stats
    torch.testing.assert_close(a.ys, b.ys, rtol=1e-12, atol=0, equal_nan=True)
    assert C.cache_info()[0]["decision"] == "compiled"


def test_user_error_inside_a_block_is_not_swallowed(fresh, monkeypatch):
    _force(monkeypatch, "compiled")

    def bad(t, y, args):
        if float(t) > 0.5:
            raise ZeroDivisionError("vector field failed")
        return -y

    with pytest.raises(ZeroDivisionError, match="vector field failed"):
        tn.solve(
            tn.ODETerm(bad), tn.RK4(), 0.0, 1.0, torch.ones(3), dt0=0.01,
            controller=tn.ConstantStepSize(), compile_step=True,
        )  # fmt: skip


def _mlp_problem():
    """A float64 tanh MLP field (3 -> 16 -> 3), its parameters and a batch of 4 states."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    net = net.double()
    return net, list(net.parameters()), torch.randn(4, 3, dtype=torch.float64)


def _check_along_random_direction(params, grads, loss, eps=1e-6):
    """``grads . v`` against the float64 central difference of ``loss()`` along a random
    direction ``v`` of ``params`` (perturbed in place and restored)."""
    direction = [torch.randn_like(p) for p in params]
    values = []
    with torch.no_grad():
        for sign in (1.0, -1.0):
            for p, v in zip(params, direction):
                p.add_(v, alpha=sign * eps)
            values.append(loss())
            for p, v in zip(params, direction):
                p.add_(v, alpha=-sign * eps)
    fd = (values[0] - values[1]) / (2 * eps)
    ad = sum((g * v).sum() for g, v in zip(grads, direction))
    torch.testing.assert_close(ad, fd, rtol=1e-7, atol=1e-9)


@pytest.mark.slow
def test_compiled_blocks_match_eager_and_finite_differences(fresh, monkeypatch):
    """Really compiled: one compilation for two solves with gradients, the eager solution
    to rounding, and gradients equal to the eager ones and to float64 central finite
    differences along a random direction of the weights."""
    _force(monkeypatch, "compiled", compile_stub=False)
    net, params, y0 = _mlp_problem()
    ts = torch.linspace(0, 1, 5, dtype=torch.float64)

    def loss(compile_step, dt0=0.025):
        term = tn.ODETerm(lambda t, y, args: net(y))
        sol = tn.solve(
            term, tn.RK4(), 0.0, 1.0, y0, dt0=dt0, controller=tn.ConstantStepSize(),
            saveat=tn.SaveAt(ts=ts), compile_step=compile_step,
        )  # fmt: skip
        return sol.ys.pow(2).sum()

    l0 = loss(False)
    g0 = torch.autograd.grad(l0, params)
    for _ in range(2):
        l1 = loss(True)
        g1 = torch.autograd.grad(l1, params)
        torch.testing.assert_close(l1, l0, rtol=1e-12, atol=0)
        for a, b in zip(g1, g0):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    (info,) = C.cache_info()
    assert info["decision"] == "compiled" and info["num_compilations"] == 1
    # Another step size: the same graph (the step sizes are a tensor input).
    torch.testing.assert_close(loss(True, 0.02), loss(False, 0.02), rtol=1e-12, atol=0)
    (info,) = C.cache_info()
    assert info["num_compilations"] == 1
    _check_along_random_direction(params, g1, lambda: loss(True))


# -- the host control's compiled step (adaptive joint solves without gradients) ------------


def _adaptive_solve(compile_step: bool, y0, w, solver=None):
    return tn.solve(
        tn.ODETerm(_field), solver or tn.Dopri5(), 0.0, 2.0, y0, w,
        saveat=tn.SaveAt(ts=torch.linspace(0, 2, 7, dtype=y0.dtype)),
        controller=tn.PIDController(rtol=1e-9, atol=1e-9), compile_step=compile_step,
    )  # fmt: skip


@pytest.mark.parametrize("solver", [tn.Dopri5(), tn.Tsit5()])
def test_host_control_compiled_step_takes_the_eager_steps(fresh, monkeypatch, solver):
    calls = _force(monkeypatch, "compiled")
    torch.manual_seed(1)
    w = 3 * torch.randn(3, 3, dtype=torch.float64)
    y0 = torch.randn(4, 3, dtype=torch.float64)
    with torch.no_grad():
        a = _adaptive_solve(True, y0, w, solver)
        b = _adaptive_solve(False, y0, w, solver)
    assert a.stats == b.stats and a.stats["num_rejected_steps"] > 0
    torch.testing.assert_close(a.ys, b.ys, rtol=1e-12, atol=1e-12)
    (info,) = C.cache_info()
    assert info["key"][0] == "host" and info["decision"] == "compiled"
    # all attempts but the first and the probe's timed eager one
    assert len(calls) == a.stats["num_steps"] - 2


@pytest.mark.slow
def test_host_control_compiled_step_compiles_once(fresh, monkeypatch):
    """Really compiled, two solves without gradients: one compilation (the second solve's
    first, eager attempt fills the controller's tolerance tensors before any compiled call),
    and the steps and values of the eager solve to rounding."""
    _force(monkeypatch, "compiled", compile_stub=False)
    torch.manual_seed(1)
    w = 3 * torch.randn(3, 3, dtype=torch.float64)
    y0 = torch.randn(4, 3, dtype=torch.float64)
    with torch.no_grad():
        b = _adaptive_solve(False, y0, w)
        for _ in range(2):
            a = _adaptive_solve(True, y0, w)
            assert a.stats == b.stats
            torch.testing.assert_close(a.ys, b.ys, rtol=1e-10, atol=1e-12)
    (info,) = C.cache_info()
    assert info["decision"] == "compiled" and info["num_compilations"] == 1


@pytest.mark.slow
def test_host_control_compiled_step_under_autograd(fresh, monkeypatch):
    """Steps chosen as constants under autograd take the host path, compiled: the eager
    solve's steps and gradients (to rounding), one compilation for two solves, and the
    directional derivative of the solve on the fixed mesh (float64 central differences)."""
    _force(monkeypatch, "compiled", compile_stub=False)
    net, params, y0 = _mlp_problem()
    ts = torch.linspace(0, 1, 4, dtype=torch.float64)
    ctrl = tn.PIDController(rtol=1e-7, atol=1e-7, differentiate_steps=False)

    def run(compile_step):
        term = tn.ODETerm(lambda t, y, args: net(y))
        sol = tn.solve(term, tn.Dopri5(), 0.0, 1.0, y0, controller=ctrl,
                       saveat=tn.SaveAt(ts=ts), compile_step=compile_step)  # fmt: skip
        return sol, torch.autograd.grad(sol.ys.pow(2).sum(), params)

    a, ga = run(False)
    for _ in range(2):
        b, gb = run(True)
        assert b.stats == a.stats
        for x, y in zip(gb, ga):
            torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)
    (info,) = C.cache_info()
    assert info["key"][0] == "host" and info["decision"] == "compiled"
    assert info["num_compilations"] == 1
    # The fixed mesh's derivative: the mesh from a no-grad solve with per-step output.
    with torch.no_grad():
        mesh = tn.solve(tn.ODETerm(lambda t, y, args: net(y)), tn.Dopri5(), 0.0, 1.0, y0,
                        controller=ctrl, saveat=tn.SaveAt(steps=True)).ts[:-1].clone()  # fmt: skip

    def mesh_loss():
        sol = tn.solve(tn.ODETerm(lambda t, y, args: net(y)), tn.Dopri5(), 0.0, 1.0, y0,
                       dt0=10.0, controller=tn.ConstantStepSize(step_ts=mesh),
                       saveat=tn.SaveAt(ts=ts))  # fmt: skip
        return sol.ys.pow(2).sum()

    _check_along_random_direction(params, gb, mesh_loss)


@pytest.mark.slow
@pytest.mark.parametrize(
    "solver, controller",
    [(tn.RK4(), tn.ConstantStepSize()), (tn.RK38(), tn.ConstantStepSize()),
     (tn.Dopri5(), tn.PIDController(rtol=1e-3, atol=1e-3, dtmax=0.01))],
    ids=["rk4-blocks", "rk38-blocks", "dopri5-host"],
)  # fmt: skip
def test_compiled_float32_round_off_is_one_rounding_a_step(fresh, monkeypatch, solver, controller):
    """Really compiled, float32, y' = a from 3.2 over 156 steps of 0.01 (as
    ``tests/test_fixed_grid.py``): a step's increment is added to y once, at most half an ulp
    of |y| a step. Inductor rewrites ``add(y, mm(w, F))`` into an ``addmm`` accumulating
    into ``y``, once per stage: 1.7e-5 after 100 RK4 steps of a d=32 MLP against the eager
    2.6e-6 before ``_plus`` kept the increment whole under compilation."""
    _force(monkeypatch, "compiled", compile_stub=False)
    a = torch.tensor(0.2)
    y0 = torch.full((64, 64), 3.2)  # large enough for inductor to keep the product a GEMM
    with torch.no_grad():
        sol = tn.solve(tn.ODETerm(lambda t, y, args: args + 0 * y), solver, 1.0, 2.56, y0,
                       dt0=0.01, args=a, controller=controller, compile_step=True)  # fmt: skip
    (info,) = C.cache_info()
    assert info["decision"] == "compiled", info["error"]
    steps = int(sol.stats["num_accepted_steps"])
    assert steps == 156
    err = float((sol.ys[-1].double() - (3.2 + 0.2 * 1.56)).abs().max())
    eps = float(torch.finfo(torch.float32).eps)
    assert err <= steps * (4 * eps / 2 + 8 * eps * 0.002), err


def test_compile_settings_are_public_and_on_by_default():
    assert tn.compile_settings is C.settings
    assert C.Settings().fast_tanh and C.Settings().onednn_linear


def test_the_probe_differentiates_the_leaves_a_step_reaches():
    """A probe under autograd times the backward pass a training step makes: to the state
    and to the leaves its graph reaches (the field's parameters), not to the state alone
    (an eager backward then skipped the parameters' products and the probe leaned to eager)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
    unused = torch.nn.Parameter(torch.ones(2))
    y = torch.randn(5, 3, requires_grad=True)
    out = net(y).sum() + net(y.detach()).mean()
    found = C._leaves(out)
    ids = {id(v) for v in found}
    assert ids == {id(p) for p in net.parameters()} | {id(y)}
    assert id(unused) not in ids
    assert len(found) == len(ids)  # each leaf once
    assert C._leaves(torch.ones(2) * 2) == []
