"""The fully implicit collocation methods (Gauss–Legendre, Radau IIA, implicit midpoint) and
the diagonally implicit SDIRK2 and TR-BDF2: order conditions of their tableaux, convergence
slopes against an analytic solution, their stability functions, gradients through the
coupled Newton solve, and agreement with torchdiffeq's own implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import catalogue
import torchnde as tn
from test_tableaux import density, stage_weights, trees
from torchnde._core.implicit import CollocationTableau, ESDIRKTableau

# From the central catalogue (tests/catalogue.py).
COLLOCATION = catalogue.classes(catalogue.Kind.IMPLICIT, "collocation")
DIAGONAL = catalogue.classes(catalogue.Kind.IMPLICIT, "diagonal")
SOLVERS = COLLOCATION + DIAGONAL
L_STABLE = [tn.RadauIIA3, tn.RadauIIA5, tn.SDIRK2, tn.TRBDF2]

# (order, stages) from the literature: Gauss 2s, Radau IIA 2s - 1.
EXPECTED_ORDER = {
    tn.ImplicitMidpoint: 2,
    tn.GaussLegendre4: 4,
    tn.GaussLegendre6: 6,
    tn.RadauIIA3: 3,
    tn.RadauIIA5: 5,
    tn.SDIRK2: 2,
    tn.TRBDF2: 2,
}


def _ids(s: type) -> str:
    return s.__name__


def _abc(solver: type) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tab = solver.tableau
    if isinstance(tab, CollocationTableau):
        return np.array(tab.a, float), np.array(tab.b, float), np.array(tab.c, float)
    assert isinstance(tab, ESDIRKTableau)
    a = np.array(tab.full_a(), float)
    return a, np.array(tab.b, float), np.array(tab.c, float)


def _max_residual(a: np.ndarray, b: np.ndarray, order: int) -> float:
    return max(abs(b @ stage_weights(t, a) - 1.0 / density(t)) for t in trees(order))


@pytest.mark.parametrize("solver", SOLVERS, ids=_ids)
def test_declared_order_is_the_literature_order(solver):
    assert solver.order == EXPECTED_ORDER[solver]


@pytest.mark.parametrize("solver", SOLVERS, ids=_ids)
def test_tableau_satisfies_order_conditions_up_to_its_order(solver):
    a, b, c = _abc(solver)
    np.testing.assert_allclose(a.sum(1), c, atol=1e-14)
    for p in range(1, solver.order + 1):
        assert _max_residual(a, b, p) < 1e-12, p
    # ... and not the next one.
    assert _max_residual(a, b, solver.order + 1) > 1e-4


@pytest.mark.parametrize("solver", DIAGONAL, ids=_ids)
def test_embedded_weights_have_their_order(solver):
    a, _, _ = _abc(solver)
    bh = np.array(solver.tableau.b_embedded, float)
    embedded = solver.tableau.error_order - 1 if solver is tn.SDIRK2 else 3
    for p in range(1, embedded + 1):
        assert _max_residual(a, bh, p) < 1e-12, p
    assert _max_residual(a, bh, embedded + 1) > 1e-4


def _stability(solver: type, z: complex) -> complex:
    # R(z) = 1 + z b^T (I - z A)^{-1} 1.
    a, b, _ = _abc(solver)
    s = len(b)
    return complex(1 + z * b @ np.linalg.solve(np.eye(s) - z * a, np.ones(s)))


@pytest.mark.parametrize("solver", SOLVERS, ids=_ids)
def test_a_stable_on_the_imaginary_axis_and_left_half_plane(solver):
    for y in np.linspace(-50, 50, 401):
        assert abs(_stability(solver, 1j * y)) <= 1 + 1e-12
    for z in (-1.0, -10.0, -1e3, complex(-3, 7), complex(-0.01, 40)):
        assert abs(_stability(solver, z)) <= 1 + 1e-12


@pytest.mark.parametrize("solver", L_STABLE, ids=_ids)
def test_l_stable_methods_damp_infinitely_stiff_modes(solver):
    assert abs(_stability(solver, -1e8)) < 1e-6


@pytest.mark.parametrize("solver", [tn.ImplicitMidpoint, tn.GaussLegendre4, tn.GaussLegendre6])
def test_gauss_methods_do_not_damp_stiff_modes(solver):
    # A-stable, not L-stable: |R(-inf)| = 1, so stiff components are kept (flipped or not).
    assert abs(abs(_stability(solver, -1e8)) - 1) < 1e-6


def _forced_oscillator(t, y, args):
    return torch.stack([y[1], -y[0] + torch.cos(t)])


def _exact(t: float) -> torch.Tensor:
    # y'' + y = cos t, y(0) = 1, y'(0) = 0: y = cos t + t sin t / 2.
    return torch.tensor(
        [math.cos(t) + t * math.sin(t) / 2, -math.sin(t) + (math.sin(t) + t * math.cos(t)) / 2],
        dtype=torch.float64,
    )


def _error(solver: type, n: int) -> float:
    y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    sol = tn.solve(
        tn.ODETerm(_forced_oscillator),
        solver(),
        0.0,
        2.0,
        y0,
        dt0=2.0 / n,
        controller=tn.ConstantStepSize(),
    )
    return float((sol.ys[-1] - _exact(2.0)).abs().max())


@pytest.mark.parametrize("solver", SOLVERS, ids=_ids)
def test_convergence_slope_matches_the_order(solver):
    # Non-autonomous, so the nodes c are exercised too.
    ns = (8, 16, 32) if solver.order < 6 else (4, 8, 16)
    errs = [_error(solver, n) for n in ns]
    slopes = [math.log2(errs[i] / errs[i + 1]) for i in range(len(errs) - 1)]
    assert all(abs(s - solver.order) < 0.25 for s in slopes), slopes


@pytest.mark.parametrize("solver", COLLOCATION, ids=_ids)
def test_dense_output_is_the_collocation_polynomial(solver):
    # The collocation polynomial reproduces polynomial solutions of degree <= s exactly:
    # y' = t^(s-1) s has y = t^s.
    s = solver.tableau.num_stages
    sol = tn.solve(
        tn.ODETerm(lambda t, y, a: s * t ** (s - 1) * torch.ones_like(y)),
        solver(),
        0.0,
        1.0,
        torch.zeros(1, dtype=torch.float64),
        dt0=0.5,
        controller=tn.ConstantStepSize(),
        saveat=tn.SaveAt(ts=torch.tensor([0.1, 0.3, 0.7, 0.95], dtype=torch.float64)),
    )
    exact = torch.tensor([0.1, 0.3, 0.7, 0.95], dtype=torch.float64) ** s
    torch.testing.assert_close(sol.ys[:, 0], exact, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("solver", [tn.RadauIIA5, tn.TRBDF2, tn.SDIRK2], ids=_ids)
def test_stiff_linear_problem_with_steps_far_beyond_explicit_stability(solver):
    # y' = -1000 (y - cos t): h = 0.1 is 50x the explicit stability limit; L-stability keeps
    # the solution on the slow manifold y ~ cos t + sin t / 1000.
    y0 = torch.tensor([1.0], dtype=torch.float64)
    sol = tn.solve(
        tn.ODETerm(lambda t, y, a: -1000.0 * (y - torch.cos(t))),
        solver(),
        0.0,
        2.0,
        y0,
        dt0=0.1,
        controller=tn.ConstantStepSize(),
    )
    slow = math.cos(2.0) + 1e-3 * math.sin(2.0)
    assert abs(float(sol.ys[-1, 0]) - slow) < 1e-4


@pytest.mark.parametrize("solver", COLLOCATION + DIAGONAL, ids=_ids)
def test_gradients_match_finite_differences(solver):
    w = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([1.0, 0.2], dtype=torch.float64, requires_grad=True)

    def f(t, y, args):
        return torch.stack([y[1], -(args**2) * torch.sin(y[0])])

    def run(y0, w):
        return tn.solve(
            tn.ODETerm(f), solver(), 0.0, 1.0, y0, w, dt0=0.25, controller=tn.ConstantStepSize()
        ).ys[-1]

    assert torch.autograd.gradcheck(run, (y0, w), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("solver", COLLOCATION, ids=_ids)
def test_per_sample_result_does_not_depend_on_batch_mates(solver):
    y0 = torch.tensor([[1.0, 0.0], [0.5, 0.3], [2.0, -1.0]], dtype=torch.float64)

    def f(t, y, args):
        return torch.stack([y[:, 1], -torch.sin(y[:, 0])], dim=1)

    def run(y):
        return tn.solve(
            tn.ODETerm(f), solver(), 0.0, 1.0, y, dt0=0.1, controller=tn.ConstantStepSize()
        ).ys[-1]

    batched = run(y0)
    for i in range(3):
        torch.testing.assert_close(batched[i], run(y0[i : i + 1])[0], rtol=1e-10, atol=1e-12)


def test_collocation_methods_have_no_error_estimate():
    with pytest.raises((ValueError, NotImplementedError), match="error estimate|adaptive"):
        tn.solve(
            tn.ODETerm(lambda t, y, a: -y),
            tn.GaussLegendre4(),
            0.0,
            1.0,
            torch.ones(1),
            controller=tn.PIDController(rtol=1e-6, atol=1e-8),
        )


def test_tableau_that_is_not_collocation_is_rejected():
    with pytest.raises(ValueError, match="collocation"):
        CollocationTableau(a=[[1.0, 0.0], [0.0, 1.0]], b=[0.5, 0.5], c=[1.0, 0.5], order=1)
    with pytest.raises(ValueError, match="distinct"):
        CollocationTableau(a=[[0.5, 0.0], [0.0, 0.5]], b=[0.5, 0.5], c=[0.5, 0.5], order=1)


_TORCHDIFFEQ_NAMES = {
    tn.ImplicitMidpoint: "implicit_midpoint",
    tn.GaussLegendre4: "gl4",
    tn.GaussLegendre6: "gl6",
    tn.RadauIIA3: "radauIIA3",
    tn.RadauIIA5: "radauIIA5",
    tn.SDIRK2: "sdirk2",
    tn.TRBDF2: "trbdf2",
}


@pytest.mark.parametrize("solver", SOLVERS, ids=_ids)
def test_compat_agrees_with_torchdiffeq_implementation(solver):
    # torchdiffeq >= its main branch of 2025 has these methods; the released 0.2.5 does not.
    torchdiffeq = pytest.importorskip("torchdiffeq")
    from torchdiffeq._impl.odeint import SOLVERS as TD_SOLVERS

    from torchnde.compat import torchdiffeq as compat

    name = _TORCHDIFFEQ_NAMES[solver]
    if name not in TD_SOLVERS:
        pytest.skip(f"the installed torchdiffeq has no {name!r}")
    A = torch.tensor([[-0.5, 2.0], [-2.0, -0.5]], dtype=torch.float64)

    def f(t, y):  # autonomous: torchdiffeq's gl4 has both nodes at 1/2 - sqrt(3)/6
        return y @ A.T - 0.1 * y**3

    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
    t = torch.linspace(0, 2, 11, dtype=torch.float64)
    theirs = torchdiffeq.odeint(f, y0, t, method=name)
    ours = compat.odeint(f, y0, t, method=name)
    # Both solve the same stage equations; they differ by the stopping tolerance of the
    # nonlinear solve (torchdiffeq's Broyden iteration stops at a residual of 1e-8).
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-7)
