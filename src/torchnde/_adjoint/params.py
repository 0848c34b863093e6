"""Which tensors a vector field differentiates with respect to.

The continuous adjoints integrate one gradient component per parameter, so they need the
parameters up front; autograd cannot tell them which tensors ``f`` reads. They are found here
statically (``nn.Module`` parameters, closure cells, directly referenced globals, default
arguments, ``functools.partial``), and, as a safety net, in the graph of one evaluation of
``f`` during the backward pass (:func:`undeclared_leaves`).
"""

from __future__ import annotations

import functools
import inspect
import types
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

__all__ = [
    "captured_tensors",
    "derived_from",
    "describe_tensors",
    "differentiable_leaves",
    "flatten_args",
    "independent_tensors",
    "term_tensors",
    "undeclared_leaves",
    "warn_undeclared",
    "unique_tensors",
]

# How deep to follow containers and plain objects; vector fields rarely nest deeper and the
# limit keeps a pathological global (a huge object graph) from being walked.
_MAX_DEPTH = 8


def unique_tensors(tensors: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """The tensors in order, each once (by identity)."""
    seen: set[int] = set()
    out = []
    for t in tensors:
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out


def captured_tensors(fn: Any) -> list[torch.Tensor]:
    """Tensors requiring grad that the callable ``fn`` can reach, each once.

    Looks at: the parameters of ``fn`` when it is an ``nn.Module`` or a bound method of one;
    for a Python function, the values in its closure cells, the module globals its code (and
    the code of functions defined inside it) names directly, and its default arguments;
    ``functools.partial`` objects (function, positional and keyword arguments); the attributes
    of callable objects; recursively through tuples, lists, dicts, sets and nested modules.
    """
    found: list[torch.Tensor] = []
    _visit(fn, found, set(), 0)
    return unique_tensors(found)


def term_tensors(terms: Any) -> list[torch.Tensor]:
    """Tensors requiring grad reachable from a (possibly wrapped) term: its vector fields (as
    :func:`captured_tensors`) and, for controlled terms, its control path."""
    return captured_tensors(terms.base_term())


def differentiable_leaves(problem: Any, params: Iterable[torch.Tensor] | None = None) -> list:
    """What a solve is differentiated against besides ``y0`` and the times: the tensors
    requiring grad in ``problem.args`` (through tuples, lists, dicts) and the parameters:
    ``params`` when given (those requiring grad), else :func:`term_tensors` of the terms and
    :func:`captured_tensors` of ``args`` (modules or objects passed there)."""
    arg_leaves, _ = flatten_args(problem.args)
    if params is None:
        found = term_tensors(problem.terms) + captured_tensors(problem.args)
    else:
        found = [x for x in params if isinstance(x, torch.Tensor) and x.requires_grad]
    return unique_tensors([*arg_leaves, *found])


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _visit(obj: Any, found: list[torch.Tensor], seen: set[int], depth: int) -> None:
    if depth > _MAX_DEPTH or obj is None or isinstance(obj, (str, bytes, int, float, bool)):
        return
    if isinstance(obj, torch.Tensor):
        if obj.requires_grad:
            found.append(obj)
        return
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, (types.ModuleType, type)):
        return
    if isinstance(obj, torch.nn.Module):
        found.extend(p for p in obj.parameters() if p.requires_grad)
        # Buffers computed from tensors requiring grad (torchcde's paths keep their
        # coefficients as buffers).
        found.extend(b for b in obj.buffers() if b.requires_grad)
        # Plain tensor attributes (not registered as parameters) still carry gradients.
        for value in vars(obj).values():
            if isinstance(value, torch.Tensor) and value.requires_grad:
                found.append(value)
        return
    if isinstance(obj, functools.partial):
        _visit(obj.func, found, seen, depth + 1)
        for a in obj.args:
            _visit(a, found, seen, depth + 1)
        for a in obj.keywords.values():
            _visit(a, found, seen, depth + 1)
        return
    if inspect.ismethod(obj):
        _visit(obj.__self__, found, seen, depth + 1)
        _visit(obj.__func__, found, seen, depth + 1)
        return
    if isinstance(obj, types.FunctionType):
        for cell in obj.__closure__ or ():
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell (a name assigned after the function)
                continue
            _visit(value, found, seen, depth + 1)
        g = obj.__globals__
        for name in _code_names(obj.__code__):
            if name in g:
                _visit(g[name], found, seen, depth + 1)
        for value in obj.__defaults__ or ():
            _visit(value, found, seen, depth + 1)
        for value in (obj.__kwdefaults__ or {}).values():
            _visit(value, found, seen, depth + 1)
        return
    if isinstance(obj, (tuple, list, set, frozenset)):
        for value in obj:
            _visit(value, found, seen, depth + 1)
        return
    if isinstance(obj, dict):
        for value in obj.values():
            _visit(value, found, seen, depth + 1)
        return
    if isinstance(obj, (types.BuiltinFunctionType, types.BuiltinMethodType)):
        return
    # A user object (e.g. a callable class holding its weights): its attributes, and the
    # function behind its __call__.
    attrs = getattr(obj, "__dict__", None)
    if isinstance(attrs, dict):
        for value in attrs.values():
            _visit(value, found, seen, depth + 1)
    call = inspect.getattr_static(type(obj), "__call__", None)
    if isinstance(call, types.FunctionType):
        _visit(call, found, seen, depth + 1)


def flatten_args(args: Any) -> tuple[list[torch.Tensor], Callable[[Sequence[torch.Tensor]], Any]]:
    """The tensors requiring grad in ``args`` (through tuples, named tuples, lists and dicts)
    and a function that rebuilds ``args`` with replacements for them, in the same order."""
    leaves: list[torch.Tensor] = []

    def walk(x: Any) -> Callable[[Sequence[torch.Tensor]], Any]:
        if isinstance(x, torch.Tensor) and x.requires_grad:
            i = len(leaves)
            leaves.append(x)
            return lambda new: new[i]
        if isinstance(x, (tuple, list)):
            parts = [walk(v) for v in x]
            if isinstance(x, tuple) and hasattr(x, "_fields"):  # named tuple
                return lambda new: type(x)(*(p(new) for p in parts))
            kind = tuple if isinstance(x, tuple) else list
            return lambda new: kind(p(new) for p in parts)
        if isinstance(x, dict):
            items = [(k, walk(v)) for k, v in x.items()]
            return lambda new: {k: p(new) for k, p in items}
        return lambda new: x

    rebuild = walk(args)
    return leaves, rebuild


def _walk_history(x: torch.Tensor, stop: Sequence[torch.Tensor]):
    """Walks ``x``'s autograd history (``x`` itself excluded) without passing through a
    tensor of ``stop``; yields ``("leaf", tensor)`` for each leaf reached and
    ``("stop", i)`` for each ``stop[i]`` reached (a non-leaf tensor is one output,
    ``output_nr``, of its node; an edge names the same)."""
    if x.grad_fn is None:
        return
    leaf_pos = {id(t): i for i, t in enumerate(stop) if t.grad_fn is None}
    edge_pos = {
        (id(t.grad_fn), t.output_nr): i for i, t in enumerate(stop) if t.grad_fn is not None
    }
    # Holding the visited nodes keeps their ids unique during the walk.
    keep: list[Any] = [t.grad_fn for t in stop if t.grad_fn is not None]
    stack: list[Any] = [x.grad_fn]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        keep.append(node)
        var = getattr(node, "variable", None)  # AccumulateGrad: the leaf itself
        if isinstance(var, torch.Tensor):
            hit = leaf_pos.get(id(var))
            yield ("leaf", var) if hit is None else ("stop", hit)
            continue
        for nxt, nr in node.next_functions:
            if nxt is None:
                continue
            hit = edge_pos.get((id(nxt), nr))
            if hit is not None:
                yield ("stop", hit)  # what lies beyond is reached through that tensor
                continue
            stack.append(nxt)


def _history_hits(x: torch.Tensor, targets: Sequence[torch.Tensor]) -> set[int]:
    """The positions in ``targets`` of the tensors that ``x`` was computed from (its autograd
    history, ``x`` itself excluded)."""
    return {v for kind, v in _walk_history(x, targets) if kind == "stop"}


def _history_leaves(x: torch.Tensor, stop: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The leaf tensors requiring grad that ``x`` was computed from, without passing through
    a tensor of ``stop`` (nor counting those)."""
    return unique_tensors([v for kind, v in _walk_history(x, stop) if kind == "leaf"])


def independent_tensors(
    tensors: Sequence[torch.Tensor], others: Sequence[torch.Tensor] = ()
) -> tuple[list[torch.Tensor], bool]:
    """The tensors a gradient computation may take as its inputs, none computed from another,
    and whether the vector-Jacobian products run through the history of a tensor computed
    from them (of ``tensors`` or of ``others``, tensors the vector field reads but the solve
    does not differentiate against), which must then be kept (``retain_graph=True``).

    The adjoints pull gradients back to their inputs with ``torch.autograd.grad`` and hand
    them to autograd, which carries them on through each input's own history. If an input
    ``a`` were computed from another input ``b`` (the coefficients of a spline and the slices
    of them it keeps; ``q = 2 * p`` next to ``p``), the gradient through ``a`` would reach
    ``b`` twice: inside the adjoint, whose ``autograd.grad`` with respect to ``b`` runs
    through ``a``'s history, and again outside it from ``a``. So ``a`` is replaced by what it
    was computed from: the inputs in its history, reached through it, and the other leaves
    of its history (the data of a spline whose knot times are also an input), which then
    become inputs themselves; until no input is computed from another."""
    current = unique_tensors(tensors)
    through = False
    while True:
        dropped = [bool(_history_hits(x, current) - {i}) for i, x in enumerate(current)]
        if not any(dropped):
            break
        through = True
        kept = [x for x, d in zip(current, dropped) if not d]
        extra = [
            leaf
            for x, d in zip(current, dropped)
            if d
            for leaf in _history_leaves(x, kept)
            if leaf.requires_grad
        ]
        current = unique_tensors([*kept, *extra])
    ids = {id(x) for x in current}
    through = through or any(_history_hits(x, current) for x in others if id(x) not in ids)
    return current, through


def derived_from(x: torch.Tensor, targets: Sequence[torch.Tensor]) -> bool:
    """Whether ``x`` was computed from one of ``targets`` (so a gradient with respect to the
    targets runs through it)."""
    return bool(_history_hits(x, targets))


def describe_tensors(tensors: Sequence[torch.Tensor], limit: int = 5) -> str:
    shapes = [tuple(t.shape) for t in tensors[:limit]]
    more = f" and {len(tensors) - limit} more" if len(tensors) > limit else ""
    return ", ".join(str(s) for s in shapes) + more


def warn_undeclared(
    who: str,
    missed: Sequence[torch.Tensor],
    *,
    reads: str = "the vector field captures",
    fix: str = "Pass them in params= or through args.",
    stacklevel: int = 2,
) -> None:
    """The one warning for tensors requiring grad that an adjoint found the user's functions
    reading but was not given (``params=``/``args``): they get no gradient. ``reads`` says
    who read them how ("the vector field captures", "... reads"); ``stacklevel`` counts from
    the caller."""
    warnings.warn(
        f"{who}: {reads} {len(missed)} tensor(s) requiring grad that are not in `params` nor "
        f"in `args` (shapes {describe_tensors(missed)}); they get no gradient. {fix}",
        UserWarning,
        stacklevel=stacklevel + 1,
    )


def undeclared_leaves(output: torch.Tensor, declared: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Leaf tensors requiring grad that ``output`` was computed from without passing through a
    ``declared`` tensor: tensors the adjoint would give no gradient to."""
    fn = output.grad_fn
    if fn is None:
        return []
    declared_ids = {id(t) for t in declared}
    # A declared tensor that is not a leaf is reached through its grad_fn: stop there.
    # Nodes are kept alive in `keep` so that their ids stay unique during the walk.
    keep: list[Any] = [t.grad_fn for t in declared if t.grad_fn is not None]
    stop = {id(n) for n in keep}
    out: list[torch.Tensor] = []
    stack: list[Any] = [fn]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen or id(node) in stop:
            continue
        seen.add(id(node))
        keep.append(node)
        var = getattr(node, "variable", None)  # AccumulateGrad: the leaf itself
        if isinstance(var, torch.Tensor):
            if id(var) not in declared_ids:
                out.append(var)
            continue
        stack.extend(nxt for nxt, _ in node.next_functions)
    return unique_tensors(out)
