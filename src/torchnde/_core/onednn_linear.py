"""oneDNN's float32 matrix product for the large linear layers of a graph ``compile_step``
compiles without gradients, on the CPU.

Why (issue 20; the twelfth round's 2-core AMD EPYC, torch 2.13 with MKL 2024.2 and oneDNN
3.12, one thread): ATen's ``linear`` (MKL's ``sgemm``) runs at 94-106 GFLOP/s at the shapes of
the field's MLPs, ``mkldnn._linear_pointwise`` (oneDNN) at about twice that, after a fixed cost
of about 11 us a call. ``nn.Linear`` at (rows x in -> out):

| rows | 32 -> 128 | 128 -> 128 | 256 -> 256 |
|---|---|---|---|
| 128 | 12.0 / 15.0 us | 41.5 / 29.1 | 155.5 / 80.4 |
| 256 | 21.5 / 19.9 | 78.2 / 44.7 | 303.9 / 145.3 |
| 1024 | 80.7 / 45.0 | 307.9 / 145.8 | 1207.6 / 545.7 |

(MKL / oneDNN.) So a product of at least ``2^21`` multiply-adds (rows x in x out) is oneDNN's
here, smaller ones stay MKL's. Inductor lowers ``mkldnn._linear_pointwise`` only for the
constant weights of a frozen graph; this module makes it a plain call (inductor's fallback
kernel) while ``compile_step`` compiles, for the graph it compiles.

Only where nothing is differentiated: the operation has no autograd formula, so
:func:`rewrite` leaves a graph alone if gradients are enabled when it is compiled or if the
graph changes the grad mode inside. Float32 CPU tensors, a 2-d input and weight, a 1-d bias
or none. ``compiled.settings.onednn_linear = False`` keeps every product MKL's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["MIN_MACS", "available", "lowered_as_calls", "rewrite"]

# Multiply-adds (rows x in x out) from which a product is oneDNN's (the table above).
MIN_MACS = 2**21

_GRAD_MODE_SETTERS = (torch._C._set_grad_enabled, torch.set_grad_enabled, torch.enable_grad)


def available() -> bool:
    """Whether this torch has oneDNN's product (a CPU build with mkldnn)."""
    mkldnn = getattr(torch.ops, "mkldnn", None)
    return (
        torch.backends.mkldnn.is_available()
        and mkldnn is not None
        and hasattr(mkldnn, "_linear_pointwise")
    )


def _meta(node: Any) -> Any:
    return node.meta.get("example_value") if isinstance(node, torch.fx.Node) else node


def _qualifies(x: Any, w: Any, b: Any) -> bool:
    if not (isinstance(x, torch.Tensor) and isinstance(w, torch.Tensor)):
        return False
    if b is not None and not (isinstance(b, torch.Tensor) and b.dim() == 1):
        return False
    tensors = (x, w) if b is None else (x, w, b)
    if any(t.dtype != torch.float32 or t.device.type != "cpu" for t in tensors):
        return False
    if x.dim() != 2 or w.dim() != 2 or x.shape[1] != w.shape[1]:
        return False
    return int(x.shape[0]) * int(w.shape[0]) * int(w.shape[1]) >= MIN_MACS


def rewrite(gm: torch.fx.GraphModule) -> int:
    """Replaces the large float32 ``linear`` calls of dynamo's graph ``gm`` (``nn.Linear``,
    ``F.linear``) by oneDNN's product, where nothing is differentiated (module doc); returns
    how many (0: ``gm`` untouched)."""
    if torch.is_grad_enabled() or not available():
        return 0
    graph = gm.graph
    nodes = list(graph.nodes)
    if any(n.op == "call_function" and n.target in _GRAD_MODE_SETTERS for n in nodes):
        return 0
    op = torch.ops.mkldnn._linear_pointwise.default
    count = 0
    for n in nodes:
        if n.op != "call_function" or n.target is not torch._C._nn.linear:
            continue
        names = ("input", "weight", "bias")
        given = list(n.args) + [n.kwargs.get(k) for k in names[len(n.args) :]]
        x, w, b = (given + [None] * 3)[:3]
        if not _qualifies(_meta(x), _meta(w), _meta(b)):
            continue
        with graph.inserting_after(n):
            new = graph.call_function(op, (x, w, b, "none", [], ""))
        new.meta.update(n.meta)
        n.replace_all_uses_with(new)
        graph.erase_node(n)
        count += 1
    if count:
        gm.recompile()
    return count


@contextlib.contextmanager
def lowered_as_calls() -> Iterator[None]:
    """While compiling: inductor lowers oneDNN's product as a call of the operation (its
    fallback kernel) instead of its frozen-weight lowering; restored after."""
    from torch._inductor import lowering

    op = torch.ops.mkldnn._linear_pointwise.default
    old = lowering.lowerings.get(op)
    lowering.lowerings[op] = lowering.fallback_handler(op, add_to_fallback_set=False)
    try:
        yield
    finally:
        if old is None:
            lowering.lowerings.pop(op, None)
        else:
            lowering.lowerings[op] = old
