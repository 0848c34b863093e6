"""Exact discrete gradients with bounded memory: recompute the solve from checkpoints."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import torch
from torch.utils import _pytree as pytree

from .._core.loop import Host, Loop, LoopResult, run
from .._core.packing import PackedTerm, ReversedTerm
from .._core.problem import Problem
from .._core.terms import AbstractTerm, MultiTerm
from .base import AbstractAdjoint
from .params import captured_tensors, describe_tensors, flatten_args, undeclared_leaves

__all__ = ["CheckpointAdjoint"]

# Recursive bisection stops at segments this short, recomputed with their whole graph: a few
# steps of memory buy two fewer levels of recomputation.
_LEAF = 4


class CheckpointAdjoint(AbstractAdjoint):
    r"""The gradient of :class:`DirectAdjoint`, to round-off, with memory that does not grow
    with the number of steps.

    The solve runs once forwards without recording anything, which fixes every decision the
    loop makes (accepted and rejected steps, save points, events) and keeps a few loop states
    as checkpoints. The backward pass recomputes the steps between checkpoints with autograd,
    replaying those decisions without host synchronisation, and backpropagates through them.
    Every operation of the direct solve is recomputed, the step-size controller included, so
    the gradients equal :class:`DirectAdjoint`'s.

    Args:
        checkpoints: ``None`` bisects the steps recursively: $O(\log n)$ stored states and
            $O(n \log n)$ recomputed steps for $n$ steps, so memory stays flat as $n$ grows.
            An int ``k`` stores ``k`` evenly spaced states and recomputes each segment once
            with its whole graph: one extra forward pass, memory of ``n/k`` steps.
        params: the tensors the vector field closes over that need gradients; by default
            the parameters of an ``nn.Module`` vector field and the tensors requiring grad
            found in a function's closure (see :class:`BacksolveAdjoint`). Tensors passed
            through ``args`` are always included.

    Dense output (``SaveAt(dense=True)``) and ``SaveAt(steps=True)`` are returned without
    gradient; the states at ``ts`` and at the end (the event time for a terminal event) are
    differentiable with respect to ``y0``, ``args``, the parameters, ``t0``, ``t1`` and ``ts``.
    Double backward is :class:`DirectAdjoint`'s.
    """

    def __init__(self, checkpoints: int | None = None, *, params: Any = None) -> None:
        if checkpoints is not None and (
            isinstance(checkpoints, bool) or not isinstance(checkpoints, int) or checkpoints < 1
        ):
            raise ValueError(
                "CheckpointAdjoint: `checkpoints` must be None (recursive bisection) or a "
                f"positive int (number of stored states), got {checkpoints!r}."
            )
        self.checkpoints = checkpoints
        self.params = params

    def apply(self, problem: Problem) -> LoopResult:
        loop = problem.loop()
        with torch.no_grad():
            first, tape = run(loop, problem.y0)
        if not torch.is_grad_enabled():
            return first
        leaves = [problem.t1]
        if problem.ts is not None:
            leaves.append(problem.ts)
        leaves += _differentiable_leaves(problem, self.params)
        leaves = [x for x in _unique(leaves) if x.requires_grad]
        # The initial state (f(t0, y0), the first step size, ...) is recorded by autograd as
        # usual; the steps after it go through the checkpointed function.
        st, _, emit, _ = loop.init(problem.y0)
        out = loop.write(loop.new_output(problem.y0), emit.saves, inplace=False)
        runner = _Runner(loop, tape, st, self.checkpoints)
        flat = runner.flat(st)
        results = _CheckpointedSteps.apply(runner, *flat, *leaves)
        st = runner.state(list(results[: len(flat)]))
        for saves in runner.unpack_saves(results[len(flat) :]):
            out = loop.write(out, saves, inplace=False)
        first.t, first.y, first.ys_ts = st.t, st.y, out
        return first

    def __repr__(self) -> str:
        return f"CheckpointAdjoint(checkpoints={self.checkpoints!r})"


def _differentiable_leaves(problem: Problem, params: Any) -> list[torch.Tensor]:
    """The tensors the steps read that may need gradients: ``args`` tensors, and the declared
    or discovered parameters of the vector fields and event functions."""
    if params is not None:
        declared = list(params)
    else:
        term: AbstractTerm = problem.terms
        while isinstance(term, (ReversedTerm, PackedTerm)):
            term = term.term
        terms = term.terms if isinstance(term, MultiTerm) else (term,)
        fns: list[Any] = [getattr(t, "vector_field", t) for t in terms]
        if problem.event is not None:
            fns += list(problem.event.fns)
        declared = [x for fn in fns for x in captured_tensors(fn)]
    return declared + flatten_args(problem.args)[0]


def _unique(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    seen: set[int] = set()
    out = []
    for x in tensors:
        if id(x) not in seen:
            seen.add(id(x))
            out.append(x)
    return out


def _fields(st: Any) -> tuple:
    return tuple(getattr(st, f.name) for f in dataclasses.fields(st))


def _state_from(values: tuple) -> Any:
    from .._core.loop import _State

    return _State(*values)


class _Runner:
    """Replays iterations of a recorded solve and remembers the save-point layout."""

    def __init__(self, loop: Loop, tape: list[Host], st0: Any, k: int | None) -> None:
        self.loop, self.tape, self.k = loop, tape, k
        self.num = len(tape) - 1
        self.save_layout: list[list[tuple]] = []  # per iteration: the non-tensor save info
        # The state's structure, with its non-tensor leaves (None, ...) kept as constants.
        leaves, self.spec = pytree.tree_flatten(_fields(st0))
        self.template = leaves
        self.tensor_pos = [i for i, x in enumerate(leaves) if isinstance(x, torch.Tensor)]
        self.n_state = len(self.tensor_pos)

    def state(self, tensors: list) -> Any:
        leaves = list(self.template)
        for i, x in zip(self.tensor_pos, tensors):
            leaves[i] = x
        return _state_from(pytree.tree_unflatten(leaves, self.spec))

    def flat(self, st: Any) -> list:
        leaves, spec = pytree.tree_flatten(_fields(st))
        if spec != self.spec:
            raise RuntimeError(f"CheckpointAdjoint: the loop state changed structure: {spec}.")
        return [leaves[i] for i in self.tensor_pos]

    def steps(self, flat: list, a: int, b: int, record: bool = False) -> tuple[list, list]:
        """Iterations [a, b) from a flat state; returns the flat end state and the saved
        values made on the way (recording the layout of the saves when asked)."""
        st = self.state(flat)
        values: list[torch.Tensor] = []
        for i in range(a, b):
            st, _, emit, _ = self.loop.body(st, self.tape[i], replay=self.tape[i + 1])
            layout = []
            for item in emit.saves:
                *info, value = item
                values.append(value)
                layout.append(tuple(info))
            if record:
                self.save_layout.append(layout)
        return self.flat(st), values

    def unpack_saves(self, values: tuple) -> list[list]:
        """The saves of each iteration, as the loop's writer takes them."""
        out, it = [], iter(values)
        for layout in self.save_layout:
            out.append([(*info, next(it)) for info in layout])
        return out


class _CheckpointedSteps(torch.autograd.Function):
    """Maps the loop state after initialisation (and the leaves the steps read) to the final
    state and the saved values, storing only checkpoints."""

    @staticmethod
    def forward(ctx: Any, runner: _Runner, *inputs: torch.Tensor) -> tuple:  # type: ignore[override]
        n = runner.n_state
        flat = list(inputs[:n])
        num = runner.num
        # Checkpoint positions: recursive bisection stores states as the backward pass needs
        # them; k evenly spaced states otherwise.
        if runner.k is None:
            marks = [0]
        else:
            k = min(runner.k, max(num, 1))
            marks = sorted({round(i * num / k) for i in range(k)})
        stored = {}
        values: list[torch.Tensor] = []
        pos = 0
        for m in [*marks[1:], num]:
            if pos in marks:
                stored[pos] = flat
            flat, vals = runner.steps(flat, pos, m, record=True)
            values += vals
            pos = m
        ctx.runner = runner
        ctx.checked = False
        ctx.marks = sorted(stored)
        ctx.stored = stored
        ctx.n_values = [len(layout) for layout in runner.save_layout]
        ctx.leaves = inputs[n:]
        ctx.input_float = [torch.is_floating_point(x) for x in inputs[:n]]
        outs = tuple(flat) + tuple(values)
        ctx.mark_non_differentiable(*[x for x in flat if not torch.is_floating_point(x)])
        return outs

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, *grads: Any) -> tuple:  # type: ignore[override]
        runner: _Runner = ctx.runner
        n = runner.n_state
        leaves = list(ctx.leaves)
        leaf_grads: list[torch.Tensor | None] = [None] * len(leaves)
        g_state = list(grads[:n])
        g_values = list(grads[n:])
        # Index of the first saved value of each iteration.
        offsets = [0]
        for c in ctx.n_values:
            offsets.append(offsets[-1] + c)

        def leaf_step(flat_a: list, a: int, b: int, g_b: list) -> list:
            """Recompute [a, b) with autograd and pull the gradient back to state a."""
            with torch.enable_grad():
                inp = [
                    x.detach().requires_grad_(True) if f else x
                    for x, f in zip(flat_a, ctx.input_float)
                ]
                flat_b, vals = runner.steps(inp, a, b)
                outs, gouts = [], []
                for x, g in zip(flat_b, g_b):
                    if g is not None and x.requires_grad:
                        outs.append(x)
                        gouts.append(g)
                for x, g in zip(vals, g_values[offsets[a] : offsets[b]]):
                    if g is not None and x.requires_grad:
                        outs.append(x)
                        gouts.append(g)
                wrt = [x for x, f in zip(inp, ctx.input_float) if f] + leaves
                if not outs:
                    return [None] * len(flat_a)
                if not ctx.checked:
                    ctx.checked = True
                    missed = [x for o in outs for x in undeclared_leaves(o, wrt)]
                    if missed:
                        warnings.warn(
                            f"CheckpointAdjoint: the vector field reads {len(missed)} "
                            "tensor(s) requiring grad that are neither parameters it was "
                            f"given nor `args` (shapes {describe_tensors(missed)}); they get "
                            "no gradient. Pass them with CheckpointAdjoint(params=[...]) or "
                            "through `args`.",
                            stacklevel=2,
                        )
                got = torch.autograd.grad(outs, wrt, gouts, allow_unused=True)
            it = iter(got[: len(got) - len(leaves)])
            g_a = [next(it) if f else None for f in ctx.input_float]
            for j, g in enumerate(got[len(got) - len(leaves) :]):
                prev = leaf_grads[j]
                if g is not None:
                    leaf_grads[j] = g if prev is None else prev + g
            return g_a

        def back(flat_a: list, a: int, b: int, g_b: list) -> list:
            if runner.k is not None or b - a <= _LEAF:
                return leaf_step(flat_a, a, b, g_b)
            mid = (a + b) // 2
            with torch.no_grad():
                flat_mid, _ = runner.steps(flat_a, a, mid)
            g_mid = back(flat_mid, mid, b, g_b)
            return back(flat_a, a, mid, g_mid)

        marks = ctx.marks
        bounds = [*marks, runner.num]
        g = g_state
        for j in range(len(marks) - 1, -1, -1):
            a, b = bounds[j], bounds[j + 1]
            g = back(ctx.stored[a], a, b, g)
        return (None, *g, *leaf_grads)
