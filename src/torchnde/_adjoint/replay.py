"""Gradients by recomputing loop iterations: the machinery behind CheckpointAdjoint and
ReversibleAdjoint.

The loop's iteration (``Loop.body``) is replayable: given the host record of an iteration it
makes the same computation without synchronising. One autograd function,
:class:`_ReplayedSteps`, maps the loop state after initialisation to the final state and the
saved values, running the loop live in its forward pass under ``no_grad``. A *strategy*
decides what that pass keeps (checkpoints, or the small per-step quantities needed to run the
solver backwards) and how the backward pass gets each iteration's input state back; the
backward pass then recomputes each iteration with autograd and pulls the gradient through it.
Every operation of the direct solve is recomputed, so the gradients are DirectAdjoint's.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch.utils import _pytree as pytree

from .._core.loop import Host, Loop, LoopResult, _Emit, _State, tree_where
from .._core.problem import Problem
from .._core.solver import AbstractReversibleSolver
from .._core.terms import broadcast_time
from .params import (
    captured_tensors,
    differentiable_leaves,
    independent_tensors,
    term_tensors,
    undeclared_leaves,
    unique_tensors,
    warn_undeclared,
)

__all__ = ["Checkpoints", "Reversal", "replay_solve"]


def _leaves(problem: Problem, params: Any) -> tuple[list[torch.Tensor], bool]:
    """The tensors the iterations read that may need gradients, none computed from another
    (:func:`independent_tensors`): ``t0``, ``t1``, ``ts``, ``args`` tensors, the parameters
    of the vector fields (declared or discovered) and those of the event functions; and
    whether the backward pass runs through the history of a tensor computed from them."""
    found = [problem.t0, problem.t1] + ([] if problem.ts is None else [problem.ts])
    found += differentiable_leaves(problem, params)
    if params is None and problem.event is not None:
        fns = problem.event.fns + tuple(r for r in problem.event.resets if r is not None)
        found += [x for fn in fns for x in captured_tensors(fn)]
    found = [x for x in unique_tensors(found) if x.requires_grad]
    others = term_tensors(problem.terms) if params is not None else []
    return independent_tensors(found, others)


def replay_solve(problem: Problem, strategy: Any, name: str, params: Any) -> LoopResult:
    """Solve ``problem`` with gradients by replay under ``strategy``."""
    loop = problem.loop()
    if not torch.is_grad_enabled():
        from .._core.loop import run

        return run(loop, problem.y0)[0]
    leaves, through = _leaves(problem, params)
    runner = _Runner(loop, strategy, name)
    runner.retain_graph = through
    results = _ReplayedSteps.apply(runner, problem.y0, *leaves)
    n = runner.n_state
    st = runner.state(list(results[:n]))
    out = loop.new_output(problem.y0)
    for i, (saves, events) in enumerate(runner.unpack_saves(results[n:])):
        out = loop.write(out, saves, inplace=False)
        if i:
            runner.emits[i - 1].events = events  # the event times, with their gradient
    return loop.finish(st, runner.tape[-1], runner.num, runner.nfe, out, runner.emits)


def _fields(st: _State) -> tuple:
    return tuple(getattr(st, f.name) for f in dataclasses.fields(st))


class _Runner:
    """Runs and replays the iterations of one solve, on flat lists of the state's tensors."""

    def __init__(self, loop: Loop, strategy: Any, name: str) -> None:
        self.loop, self.strategy, self.name = loop, strategy, name
        self.tape: list[Host] = []
        self.emits: list[_Emit] = []
        self.num = 0
        self.nfe = 0
        # Whether the backward pass runs through the history of a tensor computed from the
        # leaves (see independent_tensors): then that history is traversed more than once.
        self.retain_graph = False
        # The non-tensor save info: of the initialisation, then of each iteration.
        self.save_layout: list[list[tuple]] = []

    def init(self, y0: torch.Tensor, record: bool = False) -> tuple[list, list]:
        """The loop's initialisation from ``y0``: the flat state and the saved values (times
        equal to t0). The first call also learns the state's structure."""
        st, host, emit, nfe = self.loop.init(y0)
        values: list[torch.Tensor] = []
        if record:
            self.tape = [host]
            self.nfe = nfe
            self._learn(st)
        self._saves(emit, values, record)
        return self.flat(st), values

    def _learn(self, st0: _State) -> None:
        # The state's structure; its non-tensor leaves (None, ...) are kept as constants.
        leaves, self.spec = pytree.tree_flatten(_fields(st0))
        self.template = leaves
        self.tensor_pos = [i for i, x in enumerate(leaves) if isinstance(x, torch.Tensor)]
        self.n_state = len(self.tensor_pos)
        # Where each field's tensors sit in the flat list (for strategies that rebuild some).
        self.field_pos: dict[str, list[int]] = {}
        k = 0
        for f, value in zip(dataclasses.fields(st0), _fields(st0)):
            n = sum(isinstance(x, torch.Tensor) for x in pytree.tree_leaves(value))
            self.field_pos[f.name] = list(range(k, k + n))
            k += n

    def state(self, tensors: list) -> _State:
        leaves = list(self.template)
        for i, x in zip(self.tensor_pos, tensors):
            leaves[i] = x
        return _State(*pytree.tree_unflatten(leaves, self.spec))

    def flat(self, st: _State) -> list:
        leaves, spec = pytree.tree_flatten(_fields(st))
        if spec != self.spec:
            raise RuntimeError(f"{self.name}: the loop state changed structure: {spec}.")
        return [leaves[i] for i in self.tensor_pos]

    def _saves(self, emit: _Emit, values: list, record: bool) -> None:
        """Collect an iteration's differentiable outputs: saved states and event times."""
        layout: list[tuple] = []
        for item in emit.saves:
            *info, value = item
            values.append(value)
            layout.append(("save", tuple(info)))
        for info, t_e in emit.events:
            values.append(t_e)
            layout.append(("event", info))
        if record:
            self.save_layout.append(layout)

    def live(self, flat: list) -> tuple[list, list]:
        """Run the loop to its end from a flat state, recording each iteration's host
        decisions and save layout; the strategy sees the state before each iteration."""
        loop = self.loop
        st = self.state(flat)
        values: list[torch.Tensor] = []
        host = self.tape[0]
        while host.keep_going and self.num < loop.max_steps:
            self.strategy.visit(self, self.num, st)
            st, host, emit, n = loop.body(st, host)
            self.nfe += n
            self.num += 1
            self.tape.append(host)
            self._saves(emit, values, record=True)
            emit.saves = []
            self.emits.append(emit)
            if loop.progress is not None:
                accepted = int(st.num_accepted.sum()) if loop.per_sample else host.num_accepted
                loop.progress.update(host.t_shown, self.num, self.num - accepted)
        return self.flat(st), values

    def steps(self, flat: list, a: int, b: int) -> tuple[list, list]:
        """Replay iterations [a, b) from a flat state: the flat end state and the saved
        values made on the way."""
        st = self.state(flat)
        values: list[torch.Tensor] = []
        for i in range(a, b):
            st, _, emit, _ = self.loop.body(st, self.tape[i], replay=self.tape[i + 1])
            self._saves(emit, values, record=False)
        return self.flat(st), values

    def unpack_saves(self, values: tuple) -> list[tuple[list, list]]:
        """Per iteration (the initialisation first): the saves, as the loop's writer takes
        them, and the events, as the loop's record takes them."""
        out, it = [], iter(values)
        for layout in self.save_layout:
            saves, events = [], []
            for kind, info in layout:
                value = next(it)
                if kind == "save":
                    saves.append((*info, value))
                else:
                    events.append((info, value))
            out.append((saves, events))
        return out


class Checkpoints:
    """Keep a few states; recompute the others from them in the backward pass.

    ``k=None``: keep the initial state and bisect recursively in the backward pass
    (O(log n) states, O(n log n) recomputed iterations). ``k``: keep at most ``2k`` evenly
    spaced states (the spacing doubles as the solve goes on, since n is not known in advance)
    and recompute each segment once with its whole graph.
    """

    LEAF = 4  # bisection stops at segments this short, recomputed with their graph

    def __init__(self, k: int | None) -> None:
        self.k = k
        self.final: list = []
        self.start()

    def start(self) -> None:
        self.stored: dict[int, list] = {}
        self.stride = 1

    def visit(self, runner: _Runner, i: int, st: _State) -> None:
        if i == 0:
            self.start()
            self.stored[0] = runner.flat(st)
            return
        if self.k is None or i % self.stride:
            return
        self.stored[i] = runner.flat(st)
        if len(self.stored) > 2 * self.k:
            self.stride *= 2
            self.stored = {j: v for j, v in self.stored.items() if j % self.stride == 0}

    def backward(self, runner: _Runner, pullback: Any, g: list) -> list:
        def back(flat_a: list, a: int, b: int, g_b: list) -> list:
            if self.k is not None or b - a <= self.LEAF:
                return pullback(flat_a, a, b, g_b)
            mid = (a + b) // 2
            with torch.no_grad():
                flat_mid, _ = runner.steps(flat_a, a, mid)
            g_mid = back(flat_mid, mid, b, g_b)
            return back(flat_a, a, mid, g_mid)

        if runner.num == 0:
            return g
        bounds = [*sorted(self.stored), runner.num]
        for j in range(len(bounds) - 2, -1, -1):
            a, b = bounds[j], bounds[j + 1]
            g = back(self.stored[a], a, b, g)
        return g


class Reversal:
    """Keep only the small per-iteration quantities (times, controller state, counters) and
    rebuild the state and the solver's carried state by running the solver backwards."""

    LARGE = ("y", "fstate", "y1")

    def __init__(self) -> None:
        self.small: list[list] = []
        self.final: list = []

    def visit(self, runner: _Runner, i: int, st: _State) -> None:
        if i == 0:
            self.small = []
        flat = runner.flat(st)
        large = {p for name in self.LARGE for p in runner.field_pos[name]}
        self.small.append([None if j in large else x for j, x in enumerate(flat)])

    def backward(self, runner: _Runner, pullback: Any, g: list) -> list:
        loop, pos = runner.loop, runner.field_pos
        solver, terms, args = loop.solver, loop.terms, loop.args
        if not isinstance(solver, AbstractReversibleSolver):
            raise TypeError(f"{runner.name}: {solver!r} cannot step backwards.")
        flat = self.final
        for i in range(runner.num - 1, -1, -1):
            small = self.small[i]
            st_next = runner.state(flat)
            t_i, tnext_i = small[pos["t"][0]], small[pos["tnext"][0]]
            with torch.no_grad():
                y0, state0 = solver.reverse(terms, t_i, tnext_i, st_next.y, args, st_next.fstate)
                moved = st_next.t != t_i  # the iteration's step was accepted
                y_i = torch.where(broadcast_time(moved, y0), y0, st_next.y)
                f_i = tree_where(moved, state0, st_next.fstate)
            rebuilt = runner.flat(dataclasses.replace(st_next, y=y_i, fstate=f_i, y1=y_i))
            flat_i = [rebuilt[j] if x is None else x for j, x in enumerate(small)]
            g = pullback(flat_i, i, i + 1, g)
            flat = flat_i
        return g


class _ReplayedSteps(torch.autograd.Function):
    """Maps the loop state after initialisation (and the leaves the iterations read) to the
    final state and the saved values; the runner's strategy decides what is stored."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, runner: _Runner, y0: torch.Tensor, *leaves: torch.Tensor
    ) -> tuple:
        flat0, values0 = runner.init(y0, record=True)
        flat, values = runner.live(flat0)
        runner.strategy.final = flat
        ctx.runner = runner
        ctx.checked = False
        ctx.n_values = [len(layout) for layout in runner.save_layout]
        ctx.leaves = leaves
        ctx.y0 = y0
        ctx.input_float = [torch.is_floating_point(x) for x in flat0]
        # Fresh tensors: an output that is a tensor from elsewhere (t0 carried in the state,
        # say) would have its grad_fn replaced by this function's, looping the backward pass.
        flat = [x.clone() for x in flat]
        values0 = [x.clone() for x in values0]
        ctx.mark_non_differentiable(*[x for x in flat if not torch.is_floating_point(x)])
        return tuple(flat) + tuple(values0) + tuple(values)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, *grads: Any) -> tuple:  # type: ignore[override]
        runner: _Runner = ctx.runner
        n = runner.n_state
        leaves = list(ctx.leaves)
        leaf_grads: list[torch.Tensor | None] = [None] * len(leaves)
        g_values = list(grads[n:])
        # Index of the first saved value of the initialisation (0) and of iteration i (i + 1).
        offsets = [0]
        for c in ctx.n_values:
            offsets.append(offsets[-1] + c)

        def pull(outs_all: list, g_all: list, wrt: list) -> tuple:
            outs, gouts = [], []
            for x, g in zip(outs_all, g_all):
                if g is not None and isinstance(x, torch.Tensor) and x.requires_grad:
                    outs.append(x)
                    gouts.append(g)
            if not outs:
                return (None,) * len(wrt)
            if not ctx.checked:
                ctx.checked = True
                missed = unique_tensors(x for o in outs for x in undeclared_leaves(o, wrt))
                if missed:
                    warn_undeclared(
                        runner.name,
                        missed,
                        reads="the vector field reads",
                        fix=f"Pass them with {runner.name}(params=[...]) or through `args`.",
                    )
            return torch.autograd.grad(
                outs, wrt, gouts, allow_unused=True, retain_graph=runner.retain_graph
            )

        def add_leaf_grads(got: tuple) -> None:
            for j, g in enumerate(got):
                prev = leaf_grads[j]
                if g is not None:
                    leaf_grads[j] = g if prev is None else prev + g

        def pullback(flat_a: list, a: int, b: int, g_b: list) -> list:
            """Recompute iterations [a, b) with autograd; pull the gradient back to state a."""
            with torch.enable_grad():
                inp = [
                    x.detach().requires_grad_(True) if f else x
                    for x, f in zip(flat_a, ctx.input_float)
                ]
                flat_b, vals = runner.steps(inp, a, b)
                wrt = [x for x, f in zip(inp, ctx.input_float) if f] + leaves
                got = pull(
                    [*flat_b, *vals], [*g_b, *g_values[offsets[a + 1] : offsets[b + 1]]], wrt
                )
            it = iter(got[: len(got) - len(leaves)])
            g_a = [next(it) if f else None for f in ctx.input_float]
            add_leaf_grads(got[len(got) - len(leaves) :])
            return g_a

        g = runner.strategy.backward(runner, pullback, list(grads[:n]))
        # Through the initialisation (f(t0, y0), the first step size, the saves at t0).
        with torch.enable_grad():
            y0 = ctx.y0.detach().requires_grad_(True)
            flat0, vals0 = runner.init(y0)
            got = pull([*flat0, *vals0], [*g, *g_values[: offsets[1]]], [y0, *leaves])
        add_leaf_grads(got[1:])
        return (None, got[0], *leaf_grads)
