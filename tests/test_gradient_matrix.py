"""The gradient matrix: every catalogued solver (``tests/catalogue.py``) against every adjoint,
over every differentiable input, against float64 finite differences.

Each check compares a directional derivative ``grad(L) . v`` (``L`` a fixed random
projection of the saved states, ``v`` a random direction over all the inputs at once: ``y0``,
``args``, closure and ``nn.Module`` parameters, ``t0``, ``t1``, ``ts``, CDE data) with a
finite difference of ``L(x + s v)``, like ``gradcheck(fast_mode=True)``: any wrong entry of
the Jacobian shows up.

The seams:

- save times *between* steps: the computed solution is smooth in every input there; central
  differences (eps 1e-6). Fixed step sizes keep every time 4% of a step away from the grid
  (see ``tests/test_adjoint_matrix.py`` for why an exact multiple is not smooth);
- save times *on step ends* (the fixed-step grid, ``step_ts``, ``jump_ts``) and ``t1`` on the
  grid: there the interpolants of two steps meet, and where they meet with different slopes
  the computed solution has a kink. The gradient is its left derivative (that of the step
  ending there, see docs/devdocs/adjoints.md), so the reference is a second-order backward
  difference along a direction that moves ``ts`` and ``t1`` left and ``t0`` right;
- tensors computed from a parameter outside the solve (``q = 2 * p``), CDE data through
  every interpolation (the spline's coefficients are computed from the data).

Exact adjoints (Direct, Checkpoint, Reversible on reversible solvers) must match to 1e-6
relative. The approximate ones (Backsolve, Interpolated) give the gradient of the exact
solution up to the accuracy of the forward and backward solves; their error must shrink as
the tolerance tightens (``test_approximate_adjoints_converge``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest
import torch

import torchnde as tn
from catalogue import (
    ADJOINTS,
    BASES,
    SOLVERS,
    Kind,
    Solver,
    approximate_adjoints,
    exact_adjoints,
)

F64 = torch.float64
RTOL = 1e-6


# -- the catalogue is complete ------------------------------------------------------------
def _exported(base: type) -> set[type]:
    return {
        obj
        for name in dir(tn)
        if not name.startswith("_")
        and inspect.isclass(obj := getattr(tn, name))
        and issubclass(obj, base)
    }


def test_every_exported_solver_is_in_the_catalogue():
    known = {s.cls for s in SOLVERS} | set(BASES)
    missing = sorted(c.__name__ for c in _exported(tn.AbstractSolver) - known)
    assert not missing, f"register these solvers in tests/catalogue.py: {missing}"
    assert len({s.cls for s in SOLVERS}) == len(SOLVERS)


def test_every_exported_adjoint_is_in_the_catalogue():
    known = {a.cls for a in ADJOINTS} | {tn.AbstractAdjoint}
    missing = sorted(c.__name__ for c in _exported(tn.AbstractAdjoint) - known)
    assert not missing, f"register these adjoints in tests/catalogue.py: {missing}"


def test_catalogue_declarations_match_the_solvers():
    for s in SOLVERS:
        solver = s.make()
        assert solver.is_adaptive == s.adaptive, s.name
        assert isinstance(solver, tn.AbstractReversibleSolver) == s.reversible, s.name
        assert isinstance(solver, tn.AbstractSDESolver) == (s.kind is Kind.SDE), s.name
        assert (s.family is not None) == (s.kind is Kind.IMPLICIT), s.name  # engine named


# -- the check ----------------------------------------------------------------------------
def _directional_check(
    loss: Callable[[], torch.Tensor],
    inputs: dict[str, torch.Tensor],
    *,
    adjoint_loss: Callable[[], torch.Tensor],
    left: bool,
    rtol: float = RTOL,
    seed: int = 0,
    step: float | None = None,
) -> tuple[float, float]:
    """``grad(adjoint_loss) . v`` against a finite difference of ``loss`` along ``v``.

    The inputs are leaf tensors that ``loss`` reads; they are perturbed in place. With
    ``left``, ``v`` moves the names ``ts``/``t1`` left and ``t0`` right for ``s < 0`` and a
    second-order backward difference is taken; otherwise central differences, of ``step``
    (default 1e-6)."""
    gen = torch.Generator().manual_seed(seed)
    v = {k: torch.randn(x.shape, generator=gen, dtype=x.dtype) for k, x in inputs.items()}
    if left:
        for k in v:
            if k in ("ts", "t1"):
                v[k] = v[k].abs() + 0.1
            elif k == "t0":
                v[k] = -(v[k].abs() + 0.1)
        if "ts" in v and "t1" in v:  # a last save time on t1 moves with it
            v["t1"] = v["ts"][-1].clone()
    grads = torch.autograd.grad(adjoint_loss(), list(inputs.values()), allow_unused=True)
    analytic = sum(float((g * v[k]).sum()) for k, g in zip(inputs, grads) if g is not None)

    def at(s: float) -> float:
        with torch.no_grad():
            for k, x in inputs.items():
                x.add_(s * v[k])
            try:
                return float(loss())
            finally:
                for k, x in inputs.items():
                    x.sub_(s * v[k])

    if left:
        h = 1e-5
        fd = (3 * at(0.0) - 4 * at(-h) + at(-2 * h)) / (2 * h)
    else:
        h = 1e-6 if step is None else step
        fd = (at(h) - at(-h)) / (2 * h)
    assert analytic == pytest.approx(fd, rel=rtol, abs=1e-10), (analytic, fd)
    return analytic, fd


def _projection(shape: tuple, seed: int = 1) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


# -- the problems -------------------------------------------------------------------------
class _Field(torch.nn.Module):
    """dy/dt = -k y + tanh(y @ w) cos(2t): ``w`` a module parameter, ``k`` through args."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([[0.4, -0.3], [0.2, 0.5]], dtype=F64))

    def forward(self, t, y, k):
        return -k[:, None] * y + torch.tanh(y @ self.w) * torch.cos(2 * t)


def _settings(entry: Solver, where: str) -> dict:
    solver = entry.make()
    if not entry.adaptive:
        return dict(dt0=0.125 if where == "ends" else 0.05)
    knots = dict(step_ts=torch.tensor([0.25, 0.5]), jump_ts=torch.tensor([0.25, 0.5]))
    ctrl: dict = dict(rtol=1e-4, atol=1e-6)  # exactness does not depend on the tolerance
    if where in knots:
        ctrl[where] = knots[where].to(F64)
    return dict(controller=tn.PIDController(**ctrl), dt0=None if solver.is_adaptive else 0.05)


SCENARIOS = {
    # name: (t0, t1, ts, left differences)
    "between": (0.1, 0.79, (0.347, 0.561), False),
    "ends": (0.0, 1.0, (0.25, 0.5, 1.0), True),  # fixed steps of 0.125
    "step_ts": (0.0, 1.0, (0.25, 0.5, 1.0), True),
    "jump_ts": (0.0, 1.0, (0.25, 0.5, 1.0), True),
}


def _array_case(entry: Solver, adjoint_cls: type, scenario: str, module: bool) -> None:
    t0v, t1v, tsv, left = SCENARIOS[scenario]
    settings = _settings(entry, scenario)
    inputs = dict(
        y0=torch.tensor([[1.0, -0.5], [0.3, 0.8]], dtype=F64),
        k=torch.tensor([0.7, 1.3], dtype=F64),
        t0=torch.tensor(t0v, dtype=F64),
        t1=torch.tensor(t1v, dtype=F64),
        ts=torch.tensor(tsv, dtype=F64),
    )
    if scenario == "ends":  # t0 moves the grid; one-sided in t0 is covered by t1 and ts
        del inputs["t0"]
    field = _Field()
    if module:
        inputs["w"] = field.w
        vf: Callable = field
    else:
        w = torch.tensor([[0.4, -0.3], [0.2, 0.5]], dtype=F64)
        inputs["w"] = w
        vf = lambda t, y, k: -k[:, None] * y + torch.tanh(y @ w) * torch.cos(2 * t)
    for x in inputs.values():
        x.requires_grad_(True)
    u = _projection((len(tsv), 2, 2))

    def make_loss(adjoint):
        def loss():
            t0 = inputs.get("t0", torch.tensor(t0v, dtype=F64))
            sol = tn.solve(
                tn.ODETerm(vf), entry.make(exact_gradient=True), t0, inputs["t1"],
                inputs["y0"], inputs["k"],
                saveat=tn.SaveAt(ts=inputs["ts"]), adjoint=adjoint, **settings,
            )  # fmt: skip
            return (sol.ys * u).sum()

        return loss

    _directional_check(
        make_loss(tn.DirectAdjoint()),
        inputs,
        adjoint_loss=make_loss(adjoint_cls()),
        left=left,
    )


def _partitioned_case(entry: Solver, adjoint_cls: type) -> None:
    inputs = dict(
        q0=torch.tensor([0.5, -0.2], dtype=F64),
        p0=torch.tensor([0.1, 0.4], dtype=F64),
        w=torch.tensor([1.0, 2.0], dtype=F64),
        t1=torch.tensor(0.79, dtype=F64),
        ts=torch.tensor([0.347, 0.561], dtype=F64),
    )
    for x in inputs.values():
        x.requires_grad_(True)
    w = inputs["w"]
    term = tn.ODETerm(lambda t, y, a: (y[1], -w * torch.sin(y[0])))
    u = _projection((2, 2, 2))

    def make_loss(adjoint):
        def loss():
            sol = tn.solve(
                term, entry.make(), 0.1, inputs["t1"], (inputs["q0"], inputs["p0"]),
                dt0=0.05, saveat=tn.SaveAt(ts=inputs["ts"]), adjoint=adjoint,
            )  # fmt: skip
            return (sol.ys[0] * u[0]).sum() + (sol.ys[1] * u[1]).sum()

        return loss

    _directional_check(
        make_loss(tn.DirectAdjoint()), inputs, adjoint_loss=make_loss(adjoint_cls()), left=False
    )


def _sde_case(entry: Solver, adjoint_cls: type) -> None:
    inputs = dict(
        y0=torch.tensor([[1.0, 0.5], [0.2, -0.3]], dtype=F64),
        k=torch.tensor(0.8, dtype=F64),
        sigma=torch.tensor([0.3, 0.5], dtype=F64),
    )
    for x in inputs.values():
        x.requires_grad_(True)
    sigma = inputs["sigma"]
    bm = tn.BrownianInterval(0.0, 1.0, (2, 2), dtype=F64, seed=3, levy_area=entry.levy_area)
    drift = tn.ODETerm(lambda t, y, k: -k * y)
    if entry.noise == "additive":
        g: Callable = lambda t, y, k: sigma.expand(y.shape)
    else:
        g = lambda t, y, k: sigma * torch.sin(y)
    diffusion = tn.ControlTerm(g, bm, noise=entry.noise, calculus=entry.calculus)
    terms = tn.MultiTerm(drift, diffusion)
    u = _projection((2, 2, 2))
    ts = torch.tensor([0.53, 1.0], dtype=F64)

    def make_loss(adjoint):
        def loss():
            sol = tn.solve(
                terms, entry.make(), 0.0, 1.0, inputs["y0"], inputs["k"], dt0=0.125,
                saveat=tn.SaveAt(ts=ts), adjoint=adjoint,
            )  # fmt: skip
            return (sol.ys * u).sum()

        return loss

    _directional_check(
        make_loss(tn.DirectAdjoint()), inputs, adjoint_loss=make_loss(adjoint_cls()), left=False
    )


def _scenarios(entry: Solver) -> list[str]:
    if entry.state != "array":
        return ["between"]
    return ["between", "ends"] if not entry.adaptive else ["between", "step_ts", "jump_ts"]


def _cases(slow: bool) -> list:
    out = []
    for entry in SOLVERS:
        if entry.representative == slow:
            continue
        for adjoint in exact_adjoints(entry):
            for scenario in _scenarios(entry):
                if adjoint.needs_reversible and scenario == "jump_ts":
                    continue  # a restart cannot be undone: NotImplementedError, tested there
                out.append(pytest.param(entry, adjoint.cls, scenario, id=f"{entry.name}-"
                                        f"{adjoint.name}-{scenario}"))  # fmt: skip
    return out


def _run(entry: Solver, adjoint_cls: type, scenario: str) -> None:
    if entry.state == "partitioned":
        _partitioned_case(entry, adjoint_cls)
    elif entry.state == "sde":
        _sde_case(entry, adjoint_cls)
    else:
        _array_case(entry, adjoint_cls, scenario, module=scenario == "between")


@pytest.mark.parametrize("entry, adjoint_cls, scenario", _cases(slow=False))
def test_exact_adjoints_match_finite_differences(entry, adjoint_cls, scenario):
    _run(entry, adjoint_cls, scenario)


@pytest.mark.slow
@pytest.mark.parametrize("entry, adjoint_cls, scenario", _cases(slow=True))
def test_exact_adjoints_match_finite_differences_every_solver(entry, adjoint_cls, scenario):
    _run(entry, adjoint_cls, scenario)


# -- tensors derived from parameters outside the solve ------------------------------------
@pytest.mark.parametrize("adjoint_cls", [a.cls for a in exact_adjoints(SOLVERS[4])])
def test_tensor_derived_outside_the_solve(adjoint_cls):
    p = torch.tensor([0.6, 0.9], dtype=F64, requires_grad=True)
    y0 = torch.tensor([1.0, -0.4], dtype=F64, requires_grad=True)

    def make_loss(adjoint):
        def loss():
            q = 2 * p  # computed from the parameter before the solve, closed over
            term = tn.ODETerm(lambda t, y, a: -q * y + p * torch.sin(t))
            return tn.solve(term, tn.RK4(), 0.0, 0.83, y0, dt0=0.05, adjoint=adjoint).ys.sum()

        return loss

    _directional_check(
        make_loss(tn.DirectAdjoint()),
        dict(p=p, y0=y0),
        adjoint_loss=make_loss(adjoint_cls()),
        left=False,
    )


# -- CDE data through every interpolation -------------------------------------------------
def _path(kind: str, x: torch.Tensor, t: torch.Tensor):
    if kind == "linear":
        return tn.LinearInterpolation(tn.linear_interpolation_coeffs(x, t), t)
    if kind == "natural_cubic":
        return tn.CubicSpline(tn.natural_cubic_coeffs(x, t), t)
    if kind == "hermite":
        return tn.CubicSpline(tn.hermite_cubic_coeffs(x, t), t)
    # rectilinear: knot 2i is observation i (time prepended as a channel)
    return tn.LinearInterpolation(tn.rectilinear_interpolation_coeffs(x, t))


INTERPOLATIONS = ["linear", "natural_cubic", "hermite", "rectilinear"]
CDE_ADJOINTS = [tn.DirectAdjoint, tn.CheckpointAdjoint, tn.ReversibleAdjoint]


@pytest.mark.parametrize("adjoint_cls", CDE_ADJOINTS)
@pytest.mark.parametrize("kind", INTERPOLATIONS)
def test_cde_data_through_every_interpolation(kind, adjoint_cls):
    t = torch.linspace(0, 1, 5, dtype=F64)
    x = torch.randn(2, 5, 2, generator=torch.Generator().manual_seed(4), dtype=F64)
    x.requires_grad_(True)
    channels = 3 if kind == "rectilinear" else 2
    w = torch.randn(4, 3 * channels, generator=torch.Generator().manual_seed(5), dtype=F64)
    w = (0.3 * w).requires_grad_(True)
    z0 = torch.full((2, 3), 0.1, dtype=F64, requires_grad=True)
    t1 = 8.0 if kind == "rectilinear" else 1.0
    solver = tn.ReversibleHeun() if adjoint_cls is tn.ReversibleAdjoint else tn.RK4()

    def make_loss(adjoint):
        def loss():
            path = _path(kind, x, t)
            term = tn.CDETerm(
                lambda s, z, a: torch.tanh(torch.cat([z, z[:, :1]], 1) @ w).reshape(2, 3, channels),
                path,
            )
            # Steps of 1/8 of a knot interval: every knot is a step end.
            dt0 = t1 / (8 * (path.knots.numel() - 1))
            ctrl = tn.ConstantStepSize()
            sol = tn.solve(term, solver, 0.0, t1, z0, dt0=dt0, controller=ctrl, adjoint=adjoint)
            return sol.ys.sum()

        return loss

    _directional_check(
        make_loss(tn.DirectAdjoint()),
        dict(x=x, w=w, z0=z0),
        adjoint_loss=make_loss(adjoint_cls()),
        left=False,
    )


# -- approximate adjoints converge --------------------------------------------------------
def _approximate_error(adjoint_cls: type, tol: float) -> float:
    """Relative error of ``adjoint_cls`` against finite differences of the computed solution,
    forward and backward solves at tolerance ``tol`` (between steps, every input)."""
    inputs = dict(
        y0=torch.tensor([[1.0, -0.5], [0.3, 0.8]], dtype=F64),
        k=torch.tensor([0.7, 1.3], dtype=F64),
        t0=torch.tensor(0.1, dtype=F64),
        t1=torch.tensor(0.79, dtype=F64),
        ts=torch.tensor([0.347, 0.561], dtype=F64),
    )
    for x in inputs.values():
        x.requires_grad_(True)
    field = _Field()
    inputs["w"] = field.w
    u = _projection((2, 2, 2))
    ctrl = tn.PIDController(rtol=tol, atol=tol * 1e-2)

    def make_loss(adjoint):
        def loss():
            sol = tn.solve(
                tn.ODETerm(field), tn.Tsit5(), inputs["t0"], inputs["t1"], inputs["y0"],
                inputs["k"], saveat=tn.SaveAt(ts=inputs["ts"]), adjoint=adjoint,
                controller=ctrl,
            )  # fmt: skip
            return (sol.ys * u).sum()

        return loss

    analytic, fd = _directional_check(
        make_loss(tn.DirectAdjoint()),
        inputs,
        adjoint_loss=make_loss(adjoint_cls(controller=ctrl)),
        left=False,
        rtol=1.0,  # the measured error is asserted by the caller
    )
    return abs(analytic - fd) / abs(fd)


@pytest.mark.parametrize("adjoint_cls", [a.cls for a in approximate_adjoints()])
def test_approximate_adjoints_converge(adjoint_cls):
    """The error against finite differences of the computed solution shrinks as the forward
    and backward tolerances tighten together."""
    errors = [_approximate_error(adjoint_cls, tol) for tol in (1e-4, 1e-7, 1e-10)]
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 1e-6, errors


# -- event times --------------------------------------------------------------------------
#: Found by this matrix, not fixed yet (strict: a fix makes them fail until removed here).
KNOWN_EVENT_BUGS: dict = {}  # solver class -> pytest mark, for a known defect


def _event_cases(slow: bool) -> list:
    """Fast run: the representative explicit Runge-Kutta methods; slow: every other solver
    with an array state."""
    return [
        pytest.param(
            entry,
            adjoint.cls,
            id=f"{entry.name}-{adjoint.name}",
            marks=KNOWN_EVENT_BUGS.get(entry.cls, ()),
        )
        for entry in SOLVERS
        if entry.state == "array"
        and (entry.representative and entry.kind is Kind.EXPLICIT_RK) != slow
        for adjoint in exact_adjoints(entry)
        if not adjoint.needs_reversible  # ReversibleAdjoint: NotImplementedError for events
    ]


@pytest.mark.parametrize("entry, adjoint_cls", _event_cases(slow=False))
def test_terminal_event_time_and_state(entry, adjoint_cls):
    _event_case(entry, adjoint_cls)


@pytest.mark.slow
@pytest.mark.parametrize("entry, adjoint_cls", _event_cases(slow=True))
def test_terminal_event_time_and_state_every_solver(entry, adjoint_cls):
    _event_case(entry, adjoint_cls)


def _event_case(entry: Solver, adjoint_cls: type) -> None:
    """A falling body with quadratic drag stopped at height ``c``: the event time, the state
    there and a save time before it, with respect to the initial height, the drag (closure)
    and the event's threshold (a tensor the event function closes over)."""
    inputs = dict(
        h=torch.tensor(2.0, dtype=F64),
        k=torch.tensor(0.3, dtype=F64),
        c=torch.tensor(0.4, dtype=F64),
    )
    for x in inputs.values():
        x.requires_grad_(True)
    k, c = inputs["k"], inputs["c"]
    # Quadratic drag (the body falls, so the drag k v^2 points up): a nonlinear field. With
    # linear drag, the Rosenbrock methods with an exact Jacobian integrate the (affine,
    # constant-coefficient) system almost exactly, their error estimates sit at rounding
    # level and the step sizes they choose, hence the event, move by noise of 1e-10 with
    # the parameters: no finite difference can check that.
    term = tn.ODETerm(lambda t, y, a: torch.stack([y[1], -9.81 + k * y[1] * y[1]]))
    event = tn.Event(lambda t, y, a: y[0] - c, direction=-1)
    settings = (
        dict(controller=tn.PIDController(rtol=1e-4, atol=1e-6))
        if entry.adaptive
        else dict(dt0=0.0137)
    )

    def make_loss(adjoint):
        def loss():
            y0 = torch.stack([inputs["h"], torch.zeros((), dtype=F64)])
            sol = tn.solve(
                term, entry.make(exact_gradient=True), 0.0, 3.0, y0, event=event,
                saveat=tn.SaveAt(ts=[0.21], t1=True), adjoint=adjoint, **settings,
            )  # fmt: skip
            assert int(sol.status) == int(tn.Status.EVENT_OCCURRED)
            return sol.ts[-1] + 0.7 * sol.ys[-1, 1] + 0.3 * sol.ys[0].sum()

        return loss

    # Central differences of 1e-5: the loss moves with the step sizes the controller picks
    # and the event located in them, whose rounding (~1e-12) a difference of 1e-6 divides
    # into ~1e-6 of noise (Dopri8: the difference quotient is 4.6e-6, 1.0e-6, 8.2e-8, 7.2e-8,
    # 2.5e-6 off the gradient at 1e-7, 1e-6, 1e-5, 1e-4, 1e-3: noise, a plateau, truncation).
    _directional_check(
        make_loss(tn.DirectAdjoint()),
        inputs,
        adjoint_loss=make_loss(adjoint_cls()),
        left=False,
        step=1e-5,
    )
