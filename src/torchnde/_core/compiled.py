"""``compile_step=True``: the attempted step (the general and adaptive loops), or a block of
steps (the fixed-grid path, :class:`CompiledBlocks`), compiled once per problem signature and
kept only where it measures faster.

Why a module of its own (measured on the 2-core CPU machine of issue 20, torch 2.13):

- ``torch.compile(loop._attempt)`` on a fresh ``Loop`` did *not* recompile on a second solve
  (dynamo caches on the code object of ``Loop._attempt``, shared by every solve), but the first
  solve compiled twice: the first trace fills the tableau's ``(dtype, device)`` cache, and the
  guard on that dict's contents fails at the next step. Every signature also shared the one
  code object, whose cache dynamo caps at ``recompile_limit`` (8) entries before it silently
  runs eager, and whose guards it walks entry by entry on every call.
- At d=32, B=256 the compiled step is slower than the eager one because inductor's generated
  elementwise ``tanh`` costs about 5x ATen's per element on this CPU (66 vs 10 us on a
  256 x 128 tensor, one thread), and every compiled call pays about 18 us of guard and wrapper
  overhead; at d=2, B=1 the fused step wins. Which side wins is a property of the machine and
  the problem, so it is measured: on another 2-core machine (the eleventh round's) ATen's
  float32 ``tanh`` was the slower one (336 against inductor's 225 us on 1024 x 128), and the
  compiled fixed-step blocks won at d=32, B=1024. Float32 ``tanh`` on the CPU is now compiled
  by a formula of this library's (``_core/fast_tanh.py``, ``settings.fast_tanh``), 2-5x
  faster than either kernel on the twelfth round's machine.

What this module does:

- **A process-wide cache** (:data:`_CACHE`) of :class:`_Entry`, keyed by the problem
  signature (:func:`signature`: the types and scalar configuration of the solver, controller
  and terms, the vector field's identity, shapes, dtypes and device of the step's tensors, the
  batch mode, the grad mode). Each entry compiles its own copy of a module-level function
  (its own code object, so its own dynamo cache) that receives the loop as an argument: the
  tensors it reads (state, times, ``args``, tolerances, parameters) become graph inputs, not
  constants of a fresh object. The key decides only what is shared and measured; correctness
  rests on dynamo's guards, which recompile if anything the trace read differs.
- **An automatic choice**: the first attempts of a signature run eager and compiled
  alternately (after the untimed compiling call), timed with :data:`settings`' timer; then
  the faster one is kept for the rest of the solve and for later solves of that signature.
  A compiled call that raises while the eager one succeeds (no C++ compiler, an unsupported
  operation) makes the signature eager too. The probe is spread over solves when a solve
  has fewer attempts.
  The first call of every solve runs eager, untimed: it fills the caches of the solve's
  objects (tableau coefficients per dtype, the controller's tolerance tensors), which a
  trace guards on (it compiled twice when they appeared after it).
  With gradients recorded, a probe times the call's forward and a backward pass to its input
  state and the leaves its graph reaches, the field's parameters (on a replica: see
  :func:`_run`), so a training step's compiled backward counts.
- **Fixed-step blocks**: on a grid decided in advance (``_core/fixed.py``) the per-call
  overhead of one compiled attempt (guards, wrapper: ~18 us) is paid once per
  ``settings.block_steps`` steps, the vector field inlined; the step sizes are a tensor
  input of the graph (as Python numbers, the grid's host differences, which differ in their
  last bits, would each be a constant of a graph of its own), so one graph per signature,
  for every ``dt0``.

Limits: on an accelerator the timer synchronises the device around the probed calls only.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
import statistics
import time
import types
from collections.abc import Callable
from typing import Any

import torch

__all__ = [
    "CompiledAttempt",
    "CompiledBlocks",
    "cache_info",
    "clear_cache",
    "compile_settings",
    "settings",
    "signature",
]


@dataclasses.dataclass
class Settings:
    """What the automatic choice measures.

    Attributes:
        probes: timed attempts of each kind (eager, compiled) before choosing.
        ratio: the compiled step is kept when its median time is below ``ratio`` times the
            eager one's.
        timer: ``timer(device) -> seconds``, called before and after each probed attempt;
            ``None``: process CPU time on CPU, wall time with a device synchronisation
            elsewhere. Tests put a stub here; timings never decide a test.
        max_entries: signatures kept (least recently used dropped first).
        block_steps: steps of a compiled fixed-step block (the fixed-step path): more
            steps per graph cut the per-call overhead but lengthen the first compilation
            (d=2 MLP, RK4, 2-core CPU: about 2 s cold at 2 steps, 4-12 s at 4, 14 s at 10).
        fast_tanh: compile float32 ``tanh`` on the CPU (the vector field's too) by the
            formula of ``_core/fast_tanh.py`` (within 1.04 ulp, its gradient ``tanh``'s; 2-5x
            faster than inductor's own kernel and ATen's on the 2-core machine); ``False``:
            inductor's lowering. Read when a signature is first compiled.
        onednn_linear: in a graph compiled without gradients, on the CPU, float32 linear
            layers of at least ``onednn_linear.MIN_MACS`` multiply-adds by oneDNN's product
            (``_core/onednn_linear.py``: about twice MKL's throughput on the twelfth round's
            machine); ``False``: every product as inductor makes it (MKL's).
    """

    probes: int = 5
    ratio: float = 1.0
    timer: Callable[[torch.device], float] | None = None
    max_entries: int = 64
    block_steps: int = 4
    fast_tanh: bool = True
    onednn_linear: bool = True


settings = Settings()
compile_settings = settings  # the public name: ``torchnde.compile_settings``


def _default_timer(device: torch.device) -> float:
    if device.type == "cpu":
        return time.process_time()
    sync = getattr(getattr(torch, device.type, None), "synchronize", None)
    if sync is not None:
        sync()
    return time.perf_counter()


def _call_attempt(loop, t, tnext, y, fstate, cstate, running):
    # Compiled once per signature from a copy of this code object (see `_Entry.compiled`).
    return type(loop)._attempt(loop, t, tnext, y, fstate, cstate, running)


def _call_host_step(solver, terms, args, controller, norm, t, tnext, y, fstate):
    # One attempted step and its error ratio, for the host control (`_core/adaptive.py`).
    y1, y_error, dense_info, fnew = solver.step(terms, t, tnext, y, args, fstate)
    return y1, y_error, dense_info, fnew, controller.error_ratio(y, y1, y_error, norm)


def _call_block(solver, terms, args, times, hs, y, fstate, persists):
    # K fixed steps between `times` (K + 1 of them), of sizes `hs` (a (K,) tensor: a graph
    # input, so one graph serves every step size), as one graph; returns the K states, the
    # last solver state and the finiteness check (the last state's sum where a non-finite
    # state persists, else the sum of every state's sum).
    ys, sums = [], []
    for k in range(len(times) - 1):
        y, _, _, fstate = solver.fixed_step(terms, times[k], times[k + 1], hs[k], y, args, fstate)
        ys.append(y)
        if not persists:
            sums.append(y.sum())
    return tuple(ys), fstate, y.sum() if persists else torch.stack(sums).sum()


def _backend(gm: torch.fx.GraphModule, example_inputs: Any) -> Any:
    """``compile_step``'s ``torch.compile`` backend: inductor, with the float32 CPU ``tanh``
    of ``_core/fast_tanh.py`` (``settings.fast_tanh``) and oneDNN's product for the large
    linear layers of a graph without gradients (``settings.onednn_linear``)."""
    from . import fast_tanh, onednn_linear

    with contextlib.ExitStack() as stack:
        if settings.onednn_linear and onednn_linear.rewrite(gm):
            stack.enter_context(onednn_linear.lowered_as_calls())
        if settings.fast_tanh:
            return fast_tanh.backend(gm, example_inputs)
        from torch._inductor.compile_fx import compile_fx

        return compile_fx(gm, list(example_inputs))


@dataclasses.dataclass(eq=False)
class _Entry:
    """One signature: its compiled function, the probe timings and the choice."""

    key: Any
    number: int
    source: Callable = _call_attempt  # the function compiled (a copy of its code object)
    fn: Any = None  # the compiled callable, built on first use
    code: types.CodeType | None = None
    decision: str | None = None  # None while probing, then "compiled" or "eager"
    attempts: int = 0  # attempts made through this entry (all solves)
    eager_s: list[float] = dataclasses.field(default_factory=list)
    compiled_s: list[float] = dataclasses.field(default_factory=list)
    first_call_s: float | None = None  # wall time of the compiling call
    pattern: tuple | None = None  # the arguments' `_pattern` at the compiling call
    error: str | None = None  # why compiled calls were given up, if they raised

    def compiled(self) -> Any:
        if self.fn is None:
            # A fresh code object per signature: dynamo keeps its compiled graphs on the code
            # object, so signatures neither share one cache (capped at recompile_limit) nor
            # walk each other's guards.
            code = self.source.__code__
            self.code = code.replace(co_name=f"{code.co_name}_{self.number}")
            fn = types.FunctionType(self.code, self.source.__globals__, self.code.co_name)
            self.fn = torch.compile(fn, dynamic=False, backend=_backend)
        return self.fn

    @property
    def num_compilations(self) -> int:
        """Graphs dynamo compiled for this signature (0 before the first compiled call)."""
        if self.code is None:
            return 0
        try:
            from torch._C._dynamo.eval_frame import _debug_get_cache_entry_list

            return len(_debug_get_cache_entry_list(self.code))
        except (ImportError, AttributeError):  # private API; the entry exists at least
            return 1 if self.first_call_s is not None else 0


_CACHE: collections.OrderedDict[Any, _Entry] = collections.OrderedDict()
_COUNTER = [0]


def clear_cache() -> None:
    """Forget every signature (their compiled functions and choices)."""
    _CACHE.clear()


def cache_info() -> list[dict[str, Any]]:
    """One dict per cached signature: ``decision``, ``num_compilations``, ``attempts``,
    ``first_call_s``, the median probe times ``eager_s`` / ``compiled_s``, ``error``."""

    def med(v: list[float]) -> float | None:
        return statistics.median(v) if v else None

    return [
        {
            "key": e.key,
            "decision": e.decision,
            "num_compilations": e.num_compilations,
            "attempts": e.attempts,
            "first_call_s": e.first_call_s,
            "eager_s": med(e.eager_s),
            "compiled_s": med(e.compiled_s),
            "error": e.error,
        }
        for e in _CACHE.values()
    ]


# -- the signature ------------------------------------------------------------------------------


def _tensor_sig(x: torch.Tensor) -> tuple:
    return ("tensor", tuple(x.shape), x.dtype, x.device.type, x.device.index, x.requires_grad)


def _callable_sig(f: Any) -> tuple:
    """What dynamo's guards on a called function amount to: a plain function by its code and
    the objects its closure holds (a new ``lambda`` around the same network per solve is the
    same vector field); a bound method by its function and instance; anything else by id."""
    if isinstance(f, types.MethodType):
        return ("method", id(f.__func__), id(f.__self__))
    if isinstance(f, types.FunctionType):
        cells = tuple(_leaf_sig(c.cell_contents) for c in f.__closure__ or ())
        return ("function", id(f.__code__), cells, id(f.__globals__))
    return ("object", type(f), id(f))


def _leaf_sig(x: Any) -> Any:
    if x is None or isinstance(x, (bool, int, float, complex, str)):
        return x if not (isinstance(x, float) and math.isnan(x)) else "nan"
    if isinstance(x, torch.Tensor):
        return _tensor_sig(x)
    if isinstance(x, (torch.dtype, torch.device, type)):
        return x
    if isinstance(x, (tuple, list)) and len(x) <= 16:
        return (type(x), tuple(_leaf_sig(v) for v in x))
    if isinstance(x, dict) and len(x) <= 16:
        return (dict, tuple((k, _leaf_sig(v)) for k, v in x.items() if isinstance(k, str)))
    if callable(x) and not isinstance(x, torch.nn.Module):
        return _callable_sig(x)
    return ("object", type(x), id(x))


def _object_sig(obj: Any, depth: int = 2) -> Any:
    """An object's type and configuration: its attributes, scalars by value, tensors by
    metadata, functions by identity, nested objects (terms inside wrapper terms, the
    tableau) to ``depth`` levels, anything deeper or mutable-looking (dicts: caches) by id."""
    if depth <= 0 or isinstance(obj, torch.nn.Module) or not hasattr(obj, "__dict__"):
        return _leaf_sig(obj)
    if isinstance(obj, (types.FunctionType, types.MethodType)):
        return _callable_sig(obj)
    items = []
    for name, v in vars(obj).items():
        if isinstance(v, dict):
            items.append((name, ("dict", id(v))))
        elif hasattr(v, "__dict__") and not isinstance(v, (torch.Tensor, type)):
            items.append((name, _object_sig(v, depth - 1)))
        elif isinstance(v, (tuple, list)) and v and all(hasattr(u, "__dict__") for u in v):
            items.append((name, tuple(_object_sig(u, depth - 1) for u in v)))
        else:
            items.append((name, _leaf_sig(v)))
    return (type(obj), tuple(items))


def _tree_sig(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return _tensor_sig(x)
    if isinstance(x, (tuple, list)):
        return (type(x), tuple(_tree_sig(v) for v in x))
    if isinstance(x, dict):
        return (dict, tuple((k, _tree_sig(v)) for k, v in x.items()))
    return _leaf_sig(x)


def signature(loop: Any, arguments: tuple) -> Any:
    """The problem signature of one loop's attempts with these arguments ``(t, tnext, y,
    fstate, cstate, running)``: hashable, equal for two solves of the same problem (and the
    same ``settings.fast_tanh`` and ``settings.onednn_linear``, which decide what is
    compiled)."""
    return (
        _object_sig(loop.solver),
        _object_sig(loop.controller),
        _object_sig(loop.terms, depth=4),
        _leaf_sig(loop.norm),
        _tree_sig(loop.args),
        _tensor_sig(loop.t1),
        loop.per_sample,
        loop.adaptive,
        _tree_sig(arguments),
        torch.is_grad_enabled(),
        (settings.fast_tanh, settings.onednn_linear),
    )


def _lookup(key: Any, source: Callable = _call_attempt) -> _Entry:
    try:
        entry = _CACHE[key]
        _CACHE.move_to_end(key)
        return entry
    except KeyError:
        pass
    except TypeError:  # an unhashable piece: a signature of its own, not cached
        _COUNTER[0] += 1
        return _Entry(key=None, number=_COUNTER[0], source=source)
    _COUNTER[0] += 1
    entry = _CACHE[key] = _Entry(key=key, number=_COUNTER[0], source=source)
    while len(_CACHE) > max(1, settings.max_entries):
        _CACHE.popitem(last=False)
    return entry


# -- the attempt --------------------------------------------------------------------------------


def _pattern(arguments: tuple) -> tuple:
    """Which tensors of a call's arguments (one level of tuples deep) carry a gradient, and
    their shapes.

    Within one solve these change while the signature (taken at its first call) does not: a
    solve with gradients starts at ``t0``, a leaf without one, and its later attempts at
    times computed from the previous step sizes; a constant-step Runge-Kutta solve's first
    step receives the initial evaluation, the later ones an empty placeholder. A graph traced
    on one pattern fails dynamo's guards on the other and would be compiled again, so calls
    whose pattern differs from the compiled one run eager."""
    flags: list[tuple | None] = []
    for a in arguments:
        if isinstance(a, torch.Tensor):
            flags.append((a.requires_grad, a.shape))
        elif isinstance(a, tuple):
            flags.extend(
                (b.requires_grad, b.shape) if isinstance(b, torch.Tensor) else None for b in a
            )
        else:
            flags.append(None)
    return tuple(flags)


def _run(
    entry: _Entry,
    arguments: tuple,
    eager: Callable[[tuple], Any],
    compiled: Callable[[tuple], Any],
    first: bool,
    traceable: bool = True,
    state_of: Callable[[Any], torch.Tensor] | None = None,
) -> Any:
    """One call through ``entry``: ``eager(arguments)`` or ``compiled(arguments)`` (the same
    work, the same outputs) as decided, or, while probing, alternately and timed.
    ``first``: the first call of a solve, eager and untimed: it fills the caches a solve's
    objects keep (the tableau's per-dtype coefficients, the controller's tolerance tensors),
    which a trace would guard on and recompile for when they appear.
    ``traceable=False``: these arguments are not the ones the graph should be traced for (the
    compiling call waits). ``arguments[2]`` is the state; ``state_of(out)`` the new state.

    With gradients recorded (and a state that carries one), a probe times a replica of the
    call, its inputs with gradients made fresh leaves (:func:`_fresh_leaves`), followed by its
    backward pass to those and to every leaf its graph reaches (the field's parameters,
    :func:`_leaves`), as a training step's backward (a training step pays for the compiled
    backward too), then makes the call itself untimed; the compiling call runs the replica
    once too (which compiles the backward). Asked for the state's gradient only, an eager
    backward skipped the parameters' products and a compiled one did not, and the probe kept
    eager where the compiled training step was faster (RK4 d=32 B=1024: 0.79 of eager)."""
    entry.attempts += 1
    if first or entry.decision == "eager":
        return eager(arguments)
    if entry.pattern is not None and _pattern(arguments) != entry.pattern:
        return eager(arguments)  # another graph's worth: see `_pattern`
    if entry.decision == "compiled":
        return compiled(arguments)
    y = arguments[2]
    replica = None
    if state_of is not None and torch.is_grad_enabled() and y.requires_grad:
        # Every argument that carries a gradient replaced by a fresh leaf (the pattern the
        # graph was traced for is kept): the replica's backward stops at its own inputs and
        # never runs, or frees, the solve's graph behind them.
        replica = tuple(_fresh_leaves(a) for a in arguments)

    def replay(fn: Callable[[tuple], Any]) -> None:
        """``fn`` on the replica, and the backward pass to its state and the leaves."""
        new = state_of(fn(replica))  # type: ignore[misc, arg-type]
        state = replica[2]  # type: ignore[index]
        wrt = [state] + [v for v in _leaves(new) if v is not state]
        torch.autograd.grad(new.sum(), wrt, allow_unused=True)

    timer = settings.timer or _default_timer
    if entry.first_call_s is None:
        if not traceable:
            return eager(arguments)
        start = time.perf_counter()
        try:
            if replica is not None:  # compiles the backward too
                replay(compiled)
            out = compiled(arguments)
        except Exception as err:
            return _give_up(entry, eager, arguments, err)
        entry.first_call_s = time.perf_counter() - start
        entry.pattern = _pattern(arguments)
        return out
    compiled_turn = len(entry.compiled_s) < len(entry.eager_s)
    fn = compiled if compiled_turn else eager
    try:
        start = timer(y.device)
        if replica is None:
            out = fn(arguments)
            seconds = timer(y.device) - start
        else:
            replay(fn)
            seconds = timer(y.device) - start
            out = fn(arguments)
    except Exception as err:
        if not compiled_turn:
            raise
        return _give_up(entry, eager, arguments, err)
    (entry.compiled_s if compiled_turn else entry.eager_s).append(seconds)
    if compiled_turn and entry.num_compilations > 1:
        # A guard changed between two calls of one signature (e.g. a Python counter on the
        # vector field): every call would compile again.
        entry.decision = "eager"
        entry.error = (
            "recompiled between attempts (a guard on the vector field or its "
            "arguments changes at every call, e.g. a Python counter): kept eager"
        )
        return out
    n = max(1, settings.probes)
    if len(entry.compiled_s) >= n and len(entry.eager_s) >= n:
        faster = statistics.median(entry.compiled_s) < settings.ratio * statistics.median(
            entry.eager_s
        )
        entry.decision = "compiled" if faster else "eager"
    return out


def _fresh_leaves(a: Any) -> Any:
    """``a`` with each tensor that requires a gradient (one level of tuples deep, as
    :func:`_pattern` sees them) replaced by a detached copy that requires one."""
    if _needs_grad(a):
        return a.detach().requires_grad_()
    if isinstance(a, tuple):
        return tuple(b.detach().requires_grad_() if _needs_grad(b) else b for b in a)
    return a


def _needs_grad(b: Any) -> bool:
    return isinstance(b, torch.Tensor) and b.requires_grad


def _leaves(t: torch.Tensor) -> list[torch.Tensor]:
    """The leaf tensors with gradients that ``t``'s autograd graph reaches (the tensors a
    ``backward()`` from ``t`` would accumulate into)."""
    found: list[torch.Tensor] = []
    seen: set = set()
    stack = [t.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)  # AccumulateGrad
        if isinstance(variable, torch.Tensor):
            found.append(variable)
            continue
        stack.extend(nxt for nxt, _ in node.next_functions)
    return found


def _give_up(entry: _Entry, eager: Callable[[tuple], Any], arguments: tuple, err: Exception) -> Any:
    """A compiled call raised: if the eager one raises too, that error is the user's (the
    loop explains it); otherwise compilation is at fault and the signature goes eager."""
    out = eager(arguments)
    entry.decision = "eager"
    entry.error = f"{type(err).__name__}: {err}"[:500]
    return out


class CompiledAttempt:
    """``Loop.attempt`` for ``compile_step=True``: ``Loop._attempt``, compiled per signature
    and used where it measures faster (see the module docstring)."""

    def __init__(self, loop: Any) -> None:
        self.loop = loop
        self.entry: _Entry | None = None
        self.calls = 0

    def __call__(self, t, tnext, y, fstate, cstate, running):
        loop = self.loop
        arguments = (t, tnext, y, fstate, cstate, running)
        entry = self.entry
        if entry is None:
            entry = self.entry = _lookup(signature(loop, arguments))
        if entry.decision == "eager":
            entry.attempts += 1
            return loop._attempt(*arguments)
        # An attempt from ``t0`` (after a rejected first step) under grad: its pattern is not
        # the one of the solve's later attempts, which the graph should be traced for.
        traceable = not (torch.is_grad_enabled() and t.requires_grad is not tnext.requires_grad)
        self.calls += 1
        return _run(
            entry, arguments, lambda a: loop._attempt(*a),
            lambda a: entry.compiled()(loop, *a), self.calls == 1, traceable, lambda out: out[0],
        )  # fmt: skip


class CompiledBlocks:
    """The fixed-step path's blocks of :data:`settings` ``.block_steps`` steps for
    ``compile_step=True`` (``_core/fixed.py``): the steps of a block, the vector field
    inside, compiled as one graph per signature, and used where that measures faster than
    the eager steps. The step sizes are a tensor input of the graph (the host's step sizes
    of the grid, as the eager steps take them): one graph for every ``dt0``."""

    def __init__(self, loop: Any) -> None:
        self.loop = loop
        self.size = max(1, settings.block_steps)
        self.entry: _Entry | None = None
        self.calls = 0

    @property
    def eager(self) -> bool:
        """Whether this signature is known to run eager (then no blocks are formed)."""
        return self.entry is not None and self.entry.decision == "eager"

    def __call__(self, times: tuple, hs, y, fstate, eager: Callable[[Any, Any], Any]) -> Any:
        """The block's ``(states, last solver state, finiteness check)``; ``eager(y, fstate)``
        is the same from the eager steps."""
        loop = self.loop
        persists = loop.solver.nonfinite_persists
        arguments = (times, hs, y, fstate, persists)
        entry = self.entry
        if entry is None:
            entry = self.entry = _lookup(("block", signature(loop, arguments)), _call_block)

        def compiled(a: tuple) -> Any:
            return entry.compiled()(loop.solver, loop.terms, loop.args, *a)

        self.calls += 1
        return _run(
            entry, arguments, lambda a: eager(a[2], a[3]), compiled, self.calls == 1, True,
            lambda out: out[0][-1],
        )  # fmt: skip


class CompiledHostStep:
    """The host control's step (``_core/adaptive.py``) for ``compile_step=True``: the
    attempted step and its error ratio compiled as one graph per signature (the decision and
    the next step size stay host arithmetic), used where that measures faster."""

    def __init__(self, loop: Any) -> None:
        self.loop = loop
        self.entry: _Entry | None = None
        self.calls = 0

    def __call__(self, t, tnext, y, fstate, eager: Callable[[tuple], Any]) -> Any:
        """``(y1, y_error, dense_info, new solver state, error ratio)``; ``eager(arguments)``
        the same from the eager step."""
        loop = self.loop
        arguments = (t, tnext, y, fstate)
        entry = self.entry
        if entry is None:
            entry = self.entry = _lookup(("host", signature(loop, arguments)), _call_host_step)
        if entry.decision == "eager":
            entry.attempts += 1
            return eager(arguments)

        def compiled(a: tuple) -> Any:
            fn = entry.compiled()
            return fn(loop.solver, loop.terms, loop.args, loop.controller, loop.norm, *a)

        self.calls += 1
        return _run(entry, arguments, eager, compiled, self.calls == 1, True, lambda out: out[0])
