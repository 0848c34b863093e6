"""``compile_step``'s float32 ``tanh`` (``_core/fast_tanh.py``): its accuracy against float64
``tanh`` in ulps of float32, its special values, and that the compile backend applies it
where it should (float32 on the CPU) and nowhere else, whatever inductor's caches hold."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import torchnde as tn
from torchnde._core import compiled as C
from torchnde._core.fast_tanh import backend, tanh_float32


def _inputs() -> torch.Tensor:
    """1.2 million float32 inputs: uniform over [-12, 12] (both branches and the flat tails),
    log-spaced magnitudes from 1e-38 to 20 of both signs (tiny values, where tanh(x) = x, and
    the split at 0.75), and the floats on either side of the split."""
    g = torch.Generator().manual_seed(0)
    split = torch.tensor(0.75)
    near = torch.stack([torch.nextafter(split, torch.tensor(0.0)), split,
                        torch.nextafter(split, torch.tensor(1.0))])  # fmt: skip
    mags = torch.logspace(-38, math.log10(20.0), 200_000)
    return torch.cat([torch.rand(800_000, generator=g) * 24 - 12, mags, -mags, near, -near])


def _ulps(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """|y - tanh(x)| in units of the float32 spacing at tanh(x) (tanh in float64)."""
    exact = torch.tanh(x.double())
    spacing = np.spacing(np.abs(exact.float().numpy()))
    return (y.double() - exact).abs() / torch.from_numpy(spacing).double()


def _check_accuracy(y: torch.Tensor, x: torch.Tensor) -> None:
    u = _ulps(y, x)
    # ATen's own tanh is within 0.51 ulp here and inductor's kernel within 1.00.
    assert float(u.max()) <= 1.05, float(x[u.argmax()])
    assert float(u.mean()) <= 0.15
    assert float(y.abs().max()) <= 1.0
    assert torch.equal(y[: x.numel() // 2].sign(), x[: x.numel() // 2].sign())


def test_formula_is_within_an_ulp_of_tanh():
    x = _inputs()
    y = tanh_float32(x)
    assert y.dtype == torch.float32
    _check_accuracy(y, x)
    torch.testing.assert_close(tanh_float32(-x), -y, rtol=0, atol=0)  # odd, exactly


def test_formula_special_values():
    inf, nan = math.inf, math.nan
    x = torch.tensor([0.0, -0.0, inf, -inf, nan, 9.5, -20.0, 1e-30, -3e-39])
    y = tanh_float32(x)
    assert y[0].item() == 0.0 and math.copysign(1.0, y[0].item()) == 1.0
    assert y[1].item() == 0.0 and math.copysign(1.0, y[1].item()) == -1.0  # tanh(-0) = -0
    assert y[2:4].tolist() == [1.0, -1.0]
    assert math.isnan(y[4].item())
    assert y[5:7].tolist() == [1.0, -1.0]  # tanh rounds to 1 beyond 9.01
    assert y[7:].tolist() == x[7:].tolist()  # tanh(x) = x below the first correction's ulp


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _tanh_graph(v: torch.Tensor) -> torch.Tensor:
    return torch.tanh(v) * 1.0


@pytest.mark.slow
def test_backend_applies_the_formula_to_float32_cpu_tanh_only(fresh_dynamo):
    """Compiled float32: the formula's accuracy and its values (to the contraction of a
    multiply-add: a few thousandths of the points differ by an ulp), not inductor's own tanh
    (which differs from the formula at several per cent of them). Float64 keeps inductor's
    lowering (the formula's polynomial is accurate to 1.7e-9 only)."""
    x = _inputs()
    y = torch.compile(_tanh_graph, backend=backend)(x)
    _check_accuracy(y, x)
    formula = tanh_float32(x)
    assert (y != formula).float().mean() < 0.01
    own = torch.compile(_tanh_graph)(x)
    assert (own != formula).float().mean() > 0.02  # the test tells the two apart
    x64 = torch.linspace(-12, 12, 100_001, dtype=torch.float64)
    y64 = torch.compile(_tanh_graph, backend=backend)(x64)
    torch.testing.assert_close(y64, torch.tanh(x64), rtol=4e-16, atol=1e-300)


@pytest.mark.slow
def test_backend_is_not_confused_by_the_autograd_cache(fresh_dynamo):
    """AOTAutograd's cache keys a graph before its decompositions: with it on, a graph that
    inductor compiled with its own tanh must not be served to the backend, nor the
    backend's graph to a plain ``torch.compile``."""
    from torch._functorch import config as functorch_config

    x = _inputs()[:400_000]
    formula = tanh_float32(x)

    def graph(v):  # a function of this test's own: no earlier compilation's cache entries
        return torch.tanh(v) * 2.0

    with functorch_config.patch(enable_autograd_cache=True):
        own1 = torch.compile(graph)(x)
        torch._dynamo.reset()
        fast = torch.compile(graph, backend=backend)(x)
        torch._dynamo.reset()
        own2 = torch.compile(graph)(x)
    assert ((fast / 2) != formula).float().mean() < 0.01
    assert torch.equal(own1, own2)
    assert ((own2 / 2) != formula).float().mean() > 0.02


@pytest.mark.slow
def test_compiled_gradient_is_tanhs(fresh_dynamo):
    """The backward pass of a compiled float32 tanh is ``grad (1 - y^2)`` of the value
    computed: against float64 ``1 - tanh^2`` within the float32 rounding of y."""
    x = _inputs()[:400_000].clone().requires_grad_()
    y = torch.compile(_tanh_graph, backend=backend)(x)
    (g,) = torch.autograd.grad(y.sum(), x)
    exact = 1 - torch.tanh(x.detach().double()) ** 2
    # |d(1 - y^2)| <= 2 |y| |dy| with |dy| <= 1.05 ulp(y) <= 6.3e-8, plus two roundings.
    torch.testing.assert_close(g.double(), exact, rtol=0, atol=2 * 6.3e-8 + 1.2e-7)


@pytest.mark.slow
def test_compile_step_solve_and_gradient_with_the_formula(monkeypatch):
    """A float32 RK4 solve of a tanh MLP with compile_step (blocks forced compiled): its
    solution within float32 rounding of the eager one, its gradient against float64 central
    finite differences of the float64 eager solve along a random direction of the weights,
    and ``settings.fast_tanh = False`` a signature of its own."""
    C.clear_cache()
    monkeypatch.setattr(C.settings, "ratio", math.inf)  # keep the compiled blocks
    monkeypatch.setattr(C.settings, "probes", 1)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4))
    y0 = torch.randn(64, 4)
    ts = torch.linspace(0, 1, 5)

    def solve(model, y, compile_step):
        term = tn.ODETerm(lambda t, z, args: model(z))
        return tn.solve(term, tn.RK4(), 0.0, 1.0, y, dt0=0.05, saveat=tn.SaveAt(ts=ts),
                        controller=tn.ConstantStepSize(), compile_step=compile_step).ys  # fmt: skip

    params = list(net.parameters())
    loss = solve(net, y0, True).pow(2).mean()
    grads = torch.autograd.grad(loss, params)
    (info,) = [e for e in C.cache_info() if e["key"][0] == "block"]
    assert info["decision"] == "compiled", info["error"]
    with torch.no_grad():
        ys_eager = solve(net, y0, False)
        ys_fast = solve(net, y0, True)
    torch.testing.assert_close(ys_fast, ys_eager, rtol=2e-6, atol=2e-6)

    net64 = [p.detach().double() for p in params]
    model64 = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4))
    model64 = model64.double()
    direction = [torch.randn_like(p) for p in net64]
    eps = 1e-6
    values = []
    for sign in (1, -1):
        with torch.no_grad():
            for p, v, d in zip(model64.parameters(), net64, direction):
                p.copy_(v + sign * eps * d)
            values.append(float(solve(model64, y0.double(), False).pow(2).mean()))
    fd = (values[0] - values[1]) / (2 * eps)
    ad = float(sum((g.double() * d).sum() for g, d in zip(grads, direction)))
    # float32 against float64: 1.8e-7 here, about 1.5 eps of float32.
    assert abs(ad - fd) <= 2e-6 * abs(fd), (ad, fd)

    monkeypatch.setattr(C.settings, "fast_tanh", False)
    with torch.no_grad():
        ys_own = solve(net, y0, True)
    torch.testing.assert_close(ys_own, ys_eager, rtol=2e-6, atol=2e-6)
    # (Signatures with and without gradients: two with the formula, one without it.)
    flags = sorted(e["key"][1][-1][0] for e in C.cache_info() if e["key"][0] == "block")
    assert flags == [False, True, True]
    C.clear_cache()
