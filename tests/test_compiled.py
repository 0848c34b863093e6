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

    def lookup(key):
        entry = real(key)
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
    assert info["decision"] == "compiled"
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
