"""A float32 ``tanh`` for the graphs ``compile_step=True`` compiles on the CPU.

Why (issue 20; measured on the 2-core CPU machine, torch 2.13, one thread, a 1024 x 128
float32 tensor): ATen's ``tanh`` costs 254 us, the kernel inductor generates for it 131 us,
an ``exp``-based formula inductor compiles 30-56 us. In the tanh MLPs of the field the two
activations are a third of the field's cost (d=32 -> 128 -> 128 -> 32 at B=1024: 746 us
compiled, 503 us with the activations removed), so the compiled step, whose field inductor
compiles too, spent that time on ``tanh``; XLA (diffrax's) evaluates a formula of its own.

The formula, for ``a = |x|`` and the sign put back with ``copysign`` (an odd function,
``tanh(-0.0) = -0.0``):

- ``a < 0.75``: ``a + a s R(s)``, ``s = a^2``, ``R`` the degree-5 polynomial closest in the
  relative error of ``tanh`` to ``(tanh(a) - a) / a^3`` on ``[0, 0.75]`` (a minimax fit by
  Lawson's iteratively reweighted least squares in float64: 1.7e-9 relative, 0.03 ulp); the
  correction is at most a fifth of the result, so its rounding counts a fifth;
- ``a >= 0.75``: ``1 - 2 / (exp(2a) + 1)``, no cancellation there (the subtracted term is
  below 0.37): ``exp``'s rounding, the division's and the subtraction's. ``exp`` overflows to
  ``inf`` beyond a = 44 and the value is exactly 1, as ``tanh`` rounds to 1 beyond 9.01.

Within 1.04 ulp of float64 ``tanh`` rounded to float32 on 5.2 million float32 inputs over the
whole range (ATen's: 0.51, inductor's own: 1.00; mean 0.13 ulp against their 0.17 and 0.18),
|tanh| <= 1, NaN for NaN (``exp`` propagates it), +-1 for +-inf; tested in
``tests/test_fast_tanh.py``, eager and compiled. Its gradient is ``tanh``'s: the formula
replaces the forward operation after autograd's derivative rule is applied, whose backward
is ``grad (1 - tanh^2)`` of the value computed.

How: :func:`backend` is inductor with one more decomposition, ``aten.tanh`` of a float32
CPU tensor to :func:`tanh_float32` (other dtypes and devices keep inductor's lowering: on CUDA
inductor calls libdevice's ``tanh``), so it applies to whatever the compiled graph holds
(``nn.Tanh``, ``torch.tanh``, ``Tensor.tanh``). AOTAutograd's cache is keyed on the graph
before decompositions (not on the table), so it is off for these compilations: a graph that
inductor compiled with its own ``tanh`` (the user's ``torch.compile``) is not served for
ours, nor ours for theirs. Inductor's FX graph cache, keyed on the decomposed graph, stays:
the table pickles as a call that rebuilds it (:class:`_Table`; inductor's own table holds
functions that do not pickle, which made the cache bypass these compilations).
``compiled.settings.fast_tanh = False`` compiles with inductor's own lowering.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["backend", "tanh_float32"]

# Below this |x| the odd polynomial, above it the exponential form.
_SPLIT = 0.75
# R(s) ~ (tanh(a) - a) / a^3, s = a^2, a in [0, 0.75]: minimax in tanh's relative error.
_R = (
    -0.33333315799996827,
    0.13332709560821313,
    -0.0538939186927811,
    0.021456132491023537,
    -0.007663708379169365,
    0.0017407420550842971,
)


def tanh_float32(x: torch.Tensor) -> torch.Tensor:
    """``tanh`` by the formula of the module doc (any floating dtype; its accuracy is that of
    float32: the polynomial is fitted to 1.7e-9)."""
    a = x.abs()
    s = a * a
    r = s * _R[5] + _R[4]
    for c in _R[3::-1]:
        r = r * s + c
    near = a + a * s * r
    far = 1.0 - 2.0 / (torch.exp(2.0 * a) + 1.0)
    return torch.copysign(torch.where(a < _SPLIT, near, far), x)


def _tanh_decomposition(x: torch.Tensor) -> Any:
    if x.dtype != torch.float32 or x.device.type != "cpu":
        return NotImplemented  # inductor's own lowering
    return tanh_float32(x)


# What the compiled graphs depend on besides the graph itself: a change of the formula or of
# its coefficients is a new key of the compile caches (:class:`_Table`).
_KEY = (_SPLIT, _R, "a + a s R(s) | 1 - 2 / (exp(2a) + 1)")


class _Table(dict):
    """The decomposition table: inductor's with ``aten.tanh`` by :func:`tanh_float32`.

    Inductor's FX graph cache pickles the table into its key, and inductor's own table holds
    functions that do not pickle (the cache would be bypassed: every process would compile
    these graphs in full, ~3 s more for RK4 blocks at d=32); this one pickles as a call that
    rebuilds it, with :data:`_KEY`, which changes with the formula."""

    def __reduce__(self) -> Any:
        return (_decomposition_table, (_KEY,))


def _decomposition_table(key: Any = _KEY) -> _Table:
    from torch._inductor.decomposition import select_decomp_table

    table = _Table(select_decomp_table())
    table[torch.ops.aten.tanh.default] = _tanh_decomposition
    return table


def backend(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> Any:
    """``torch.compile`` backend: inductor, float32 CPU ``tanh`` by :func:`tanh_float32`."""
    from torch._functorch import config as functorch_config
    from torch._inductor.compile_fx import compile_fx

    # AOTAutograd's cache keys the graph before decompositions and not by the table: off
    # (its lookup and its save are both decided here, none later when a training graph's
    # backward is compiled on first use). Inductor's, on the decomposed graph, stays.
    with functorch_config.patch(enable_autograd_cache=False):
        return compile_fx(gm, list(example_inputs), decompositions=_decomposition_table())
