"""``compile_step``'s oneDNN products (``_core/onednn_linear.py``): which linear layers of a
dynamo graph are rewritten (large float32 CPU ones, only without gradients), the values of the
rewritten graph, and a compiled solve through them."""

from __future__ import annotations

import math

import pytest
import torch

import torchnde as tn
from torchnde._core import compiled as C
from torchnde._core import onednn_linear

pytestmark = pytest.mark.skipif(not onednn_linear.available(), reason="no oneDNN in this torch")


def _mlp(d=32, hidden=128, dtype=torch.float32):
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(d, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, hidden),
        torch.nn.Tanh(), torch.nn.Linear(hidden, d),
    )  # fmt: skip
    return net.to(dtype)


def _rewritten(fn, *inputs):
    """dynamo's graph of ``fn`` after :func:`rewrite` (called in the current grad mode), how
    many layers it rewrote, and the graph's outputs on ``inputs``."""
    seen = {}

    def capture(gm, example_inputs):
        seen["count"] = onednn_linear.rewrite(gm)
        seen["gm"] = gm
        return gm.forward

    torch._dynamo.reset()
    out = torch.compile(fn, backend=capture)(*inputs)
    torch._dynamo.reset()
    return seen["gm"], seen["count"], out


def test_only_the_large_float32_layers_without_gradients_are_rewritten():
    net = _mlp()
    x = torch.randn(256, 32)
    with torch.no_grad():
        gm, count, out = _rewritten(net, x)
        exact = net(x)
    # 256 x 128 x 128 multiply-adds qualify; 256 x 32 x 128 and 256 x 128 x 32 (2^20) do not.
    assert count == 1
    targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert targets.count(torch.ops.mkldnn._linear_pointwise.default) == 1
    assert targets.count(torch._C._nn.linear) == 2
    torch.testing.assert_close(out, exact, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        assert _rewritten(net, torch.randn(16, 32))[1] == 0  # too few rows
        assert _rewritten(_mlp(dtype=torch.float64), x.double())[1] == 0
    assert _rewritten(net, x)[1] == 0  # gradients enabled


def test_a_graph_that_enables_gradients_inside_is_left_alone():
    net = _mlp()

    def field(y):
        with torch.enable_grad():
            return net(y)

    with torch.no_grad():
        assert _rewritten(field, torch.randn(256, 32))[1] == 0


def test_lowering_is_restored():
    from torch._inductor import lowering

    op = torch.ops.mkldnn._linear_pointwise.default
    before = lowering.lowerings.get(op)
    with onednn_linear.lowered_as_calls():
        assert lowering.lowerings.get(op) is not before
    assert lowering.lowerings.get(op) is before


@pytest.mark.slow
def test_compiled_solve_through_onednn_matches_eager(monkeypatch):
    """A float32 RK4 solve without gradients, its fixed-step blocks forced compiled: the
    compiled graph's large layer is oneDNN's, the solution that of the eager solve to float32
    rounding, also after the weights change in place; with ``settings.onednn_linear = False``
    nothing is rewritten."""
    C.clear_cache()
    monkeypatch.setattr(C.settings, "ratio", math.inf)
    monkeypatch.setattr(C.settings, "probes", 1)
    counts = []
    real = onednn_linear.rewrite

    def counting(gm):
        counts.append(real(gm))
        return counts[-1]

    monkeypatch.setattr(onednn_linear, "rewrite", counting)
    net = _mlp()
    y0 = torch.randn(256, 32)

    def solve(compile_step):
        term, ctrl = tn.ODETerm(lambda t, y, args: net(y)), tn.ConstantStepSize()
        with torch.no_grad():
            return tn.solve(term, tn.RK4(), 0.0, 1.0, y0, dt0=0.05, controller=ctrl,
                            compile_step=compile_step).ys  # fmt: skip

    eager = solve(False)
    for _ in range(3):
        torch.testing.assert_close(solve(True), eager, rtol=1e-5, atol=1e-5)
    (info,) = [e for e in C.cache_info() if e["key"][0] == "block"]
    assert info["decision"] == "compiled", info["error"]
    assert info["num_compilations"] == 1
    # A block of 4 RK4 steps holds 16 evaluations of the field: its 16 large products.
    assert counts == [16]
    with torch.no_grad():  # weights changed in place (a training step between two solves)
        for p in net.parameters():
            p.mul_(0.9)
    torch.testing.assert_close(solve(True), solve(False), rtol=1e-5, atol=1e-5)
    assert counts == [16]  # the same graph, reading the new weights
    monkeypatch.setattr(C.settings, "onednn_linear", False)
    counts.clear()
    torch.testing.assert_close(solve(True), solve(False), rtol=1e-5, atol=1e-5)
    assert counts == []
    C.clear_cache()


def test_functional_calls_without_bias_and_with_keywords_are_rewritten():
    torch.manual_seed(1)
    w1, w2, b2 = torch.randn(128, 128), torch.randn(128, 128), torch.randn(128)
    x = torch.randn(256, 128)

    def field(y):
        h = torch.nn.functional.linear(y, w1)  # no bias
        h = torch.nn.functional.linear(input=h.tanh(), weight=w2, bias=b2)
        return torch.nn.functional.linear(h.reshape(2, 128, 128), w2)  # 3-d input: left alone

    with torch.no_grad():
        gm, count, out = _rewritten(field, x)
        exact = field(x)
    assert count == 2
    torch.testing.assert_close(out, exact, rtol=1e-5, atol=1e-4)
