"""The built-in Butcher tableaux satisfy the order conditions they declare, and no more.

Order conditions are checked on every rooted tree: a Runge–Kutta method has order p when
its elementary weights match the exact solution, Σ_i b_i Φ_i(τ) = 1/γ(τ), for every rooted
tree τ with at most p nodes (Butcher; Hairer–Nørsett–Wanner, Sec. II.2). A dense output
b_i(θ) has order q when Σ_i b_i(θ) Φ_i(τ) = θ^|τ| / γ(τ) for every tree with |τ| ≤ q.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import catalogue
from torchnde._core.solvers.bosh3 import Bosh3
from torchnde._core.solvers.dopri5 import Dopri5
from torchnde._core.solvers.dopri8 import Dopri8
from torchnde._core.solvers.euler import Euler
from torchnde._core.solvers.fehlberg2 import Fehlberg2
from torchnde._core.solvers.heun import Heun
from torchnde._core.solvers.midpoint import Midpoint
from torchnde._core.solvers.ralston import Ralston
from torchnde._core.solvers.rk4 import RK4
from torchnde._core.solvers.rk38 import RK38
from torchnde._core.solvers.tsit5 import Tsit5
from torchnde._core.tableau import ButcherTableau

# Every catalogued explicit Runge-Kutta method (tests/catalogue.py).
SOLVERS = catalogue.classes(catalogue.Kind.EXPLICIT_RK)
ADAPTIVE = [s for s in SOLVERS if s.tableau.b_error is not None]
DENSE = [s for s in SOLVERS if s.tableau.b_dense is not None]


def _ids(solver: type) -> str:
    return solver.__name__


# What the literature says each method is: (order, embedded order, error_order, stages, fsal,
# dense_order). The embedded order of Dopri8 is 5 although its error exponent is 8.
EXPECTED = {
    Euler: (1, None, None, 1, False, None),
    Midpoint: (2, None, None, 2, False, None),
    Heun: (2, 1, 2, 2, False, None),
    Ralston: (2, None, None, 2, False, None),
    RK4: (4, None, None, 4, False, None),
    RK38: (4, None, None, 4, False, None),
    Bosh3: (3, 2, 3, 4, True, None),
    Fehlberg2: (2, 1, 2, 3, False, None),
    Dopri5: (5, 4, 5, 7, True, 4),
    Tsit5: (5, 4, 5, 7, True, 4),
    Dopri8: (8, 5, 8, 12, False, None),
}

# Residual tolerance of an order condition. The rational tableaux are exact to rounding;
# Tsit5 and Dopri8 are published as decimals, so theirs hold to roughly 1e-14.
_ATOL = 1e-11
# A condition counts as failed when its residual exceeds this (true failures are O(1e-3)
# or larger; see test_next_order_fails).
_FAIL = 1e-7


# --- rooted trees ------------------------------------------------------------------------
# A rooted tree is the sorted tuple of the subtrees hanging from its root; () is one node.
# Sorting makes the representation canonical, so equal trees compare equal.


def _grow(tree: tuple) -> set[tuple]:
    """Every tree obtained by attaching one new leaf to some node of ``tree``."""
    out = {tuple(sorted((*tree, ())))}
    for i, child in enumerate(tree):
        for grown in _grow(child):
            out.add(tuple(sorted((*tree[:i], grown, *tree[i + 1 :]))))
    return out


@functools.cache
def trees(order: int) -> tuple[tuple, ...]:
    """All rooted trees with exactly ``order`` nodes."""
    if order == 1:
        return ((),)
    out: set[tuple] = set()
    for tree in trees(order - 1):
        out |= _grow(tree)
    return tuple(sorted(out))


def num_nodes(tree: tuple) -> int:
    return 1 + sum(num_nodes(t) for t in tree)


def density(tree: tuple) -> int:
    """γ(τ) = |τ| Π γ(τ_j) over the subtrees τ_j of the root."""
    return num_nodes(tree) * int(np.prod([density(t) for t in tree]))


def stage_weights(tree: tuple, a: np.ndarray) -> np.ndarray:
    """Φ_i(τ) for each stage i: 1 for a leaf, else Π_j (A Φ(τ_j))_i."""
    out = np.ones(a.shape[0])
    for child in tree:
        out = out * (a @ stage_weights(child, a))
    return out


# --- tableau helpers ----------------------------------------------------------------------


def full_a(tab: ButcherTableau) -> np.ndarray:
    s = tab.num_stages
    a = np.zeros((s, s))
    for i, row in enumerate(tab.a):
        a[i + 1, : i + 1] = row
    return a


def residuals(tab: ButcherTableau, weights: np.ndarray, order: int) -> dict[tuple, float]:
    """Σ b_i Φ_i(τ) − 1/γ(τ) for every tree with exactly ``order`` nodes."""
    a = full_a(tab)
    return {t: float(weights @ stage_weights(t, a) - 1.0 / density(t)) for t in trees(order)}


def max_residual(tab: ButcherTableau, weights: np.ndarray, order: int) -> float:
    return max(abs(r) for r in residuals(tab, weights, order).values())


def dense_weights(tab: ButcherTableau, theta: float) -> np.ndarray:
    bd = np.asarray(tab.b_dense)
    return bd @ theta ** np.arange(1, bd.shape[1] + 1)


# --- the tree machinery itself --------------------------------------------------------------


def test_tree_counts_match_oeis_a000081():
    assert [len(trees(n)) for n in range(1, 10)] == [1, 1, 2, 4, 9, 20, 48, 115, 286]


def test_tree_densities_match_known_values():
    # Bushy tree [•^(n-1)] has γ = n; the tall chain has γ = n!.
    assert density(((),) * 4) == 5
    assert density(((((),),),)) == 24
    assert sorted(density(t) for t in trees(3)) == [3, 6]


# --- propagated solution ------------------------------------------------------------------


@pytest.mark.parametrize("solver", SOLVERS, ids=_ids)
def test_declared_coefficients_match_the_literature(solver):
    tab = solver.tableau
    order, _, error_order, stages, fsal, dense_order = EXPECTED[solver]
    assert tab.order == order
    assert tab.error_order == error_order
    assert tab.num_stages == stages
    assert tab.fsal is fsal
    assert tab.dense_order == dense_order


@pytest.mark.parametrize("solver", SOLVERS, ids=_ids)
def test_satisfies_order_conditions_up_to_declared_order(solver):
    tab = solver.tableau
    b = np.asarray(tab.b)
    for n in range(1, tab.order + 1):
        assert max_residual(tab, b, n) < _ATOL, f"order-{n} conditions fail"


@pytest.mark.parametrize("solver", SOLVERS, ids=_ids)
def test_next_order_fails(solver):
    tab = solver.tableau
    assert max_residual(tab, np.asarray(tab.b), tab.order + 1) > _FAIL


@pytest.mark.parametrize("solver", SOLVERS, ids=_ids)
def test_weights_sum_to_one_and_nodes_are_row_sums(solver):
    tab = solver.tableau
    assert sum(tab.b) == pytest.approx(1.0, abs=1e-14)
    np.testing.assert_allclose(full_a(tab).sum(axis=1), tab.c, rtol=0, atol=1e-14)
    assert tab.c[0] == 0.0


@pytest.mark.parametrize("solver", SOLVERS, ids=_ids)
def test_fsal_flag_matches_coefficients(solver):
    tab = solver.tableau
    last_row_is_b = (
        tab.num_stages > 1
        and np.allclose(tab.a[-1], tab.b[:-1], rtol=0, atol=1e-15)
        and tab.b[-1] == 0.0
        and tab.c[-1] == 1.0
    )
    assert tab.fsal is last_row_is_b


# --- embedded solution --------------------------------------------------------------------


@pytest.mark.parametrize("solver", ADAPTIVE, ids=_ids)
def test_embedded_weights_satisfy_their_order_conditions(solver):
    tab = solver.tableau
    embedded_order = EXPECTED[solver][1]
    # The error estimate is ~h^error_order, i.e. the embedded order + 1 for all but Dopri8,
    # whose fifth-order estimate is used with exponent 8 (documented on the class).
    if solver is not Dopri8:
        assert embedded_order == tab.error_order - 1
    b_hat = np.asarray(tab.b_error)
    for n in range(1, embedded_order + 1):
        assert max_residual(tab, b_hat, n) < _ATOL, f"order-{n} conditions fail"


@pytest.mark.parametrize("solver", ADAPTIVE, ids=_ids)
def test_embedded_order_is_exact(solver):
    # Otherwise b - b_error would vanish at the declared order and the estimate would be
    # of higher order than the controller assumes.
    tab = solver.tableau
    embedded_order = EXPECTED[solver][1]
    assert max_residual(tab, np.asarray(tab.b_error), embedded_order + 1) > _FAIL


@pytest.mark.parametrize("solver", ADAPTIVE, ids=_ids)
def test_error_weights_sum_to_zero(solver):
    tab = solver.tableau
    assert sum(b - be for b, be in zip(tab.b, tab.b_error, strict=True)) == pytest.approx(
        0.0, abs=1e-14
    )


# --- dense output -------------------------------------------------------------------------


@pytest.mark.parametrize("solver", DENSE, ids=_ids)
def test_dense_output_reproduces_the_step_at_theta_one(solver):
    tab = solver.tableau
    np.testing.assert_allclose(dense_weights(tab, 1.0), tab.b, rtol=0, atol=1e-14)
    np.testing.assert_allclose(dense_weights(tab, 0.0), 0.0, rtol=0, atol=0)


@pytest.mark.parametrize("solver", DENSE, ids=_ids)
@pytest.mark.parametrize("theta", [0.1, 0.25, 0.5, 0.7, 0.9])
def test_dense_output_satisfies_continuous_order_conditions(solver, theta):
    tab = solver.tableau
    a = full_a(tab)
    b_theta = dense_weights(tab, theta)
    for n in range(1, tab.dense_order + 1):
        for t in trees(n):
            exact = theta**n / density(t)
            assert b_theta @ stage_weights(t, a) == pytest.approx(exact, rel=0, abs=_ATOL)


@pytest.mark.parametrize("solver", DENSE, ids=_ids)
def test_dense_output_order_is_exact(solver):
    tab = solver.tableau
    a = full_a(tab)
    n = tab.dense_order + 1
    worst = max(
        abs(dense_weights(tab, theta) @ stage_weights(t, a) - theta**n / density(t))
        for theta in (0.25, 0.5, 0.75)
        for t in trees(n)
    )
    assert worst > _FAIL


# --- ButcherTableau validation ------------------------------------------------------------


def test_tableau_rejects_wrong_number_of_nodes():
    with pytest.raises(ValueError, match="`c` must have one node per stage"):
        ButcherTableau(a=[[1.0]], b=[0.5, 0.5], c=[0.0, 1.0, 1.0], order=2)


def test_tableau_rejects_a_with_wrong_row_lengths():
    with pytest.raises(ValueError, match="`a` must have 1 rows"):
        ButcherTableau(a=[[0.5, 0.5]], b=[0.5, 0.5], c=[0.0, 1.0], order=2)


def test_tableau_rejects_row_sum_violation():
    with pytest.raises(ValueError, match=r"row 1 of `a` sums to .* c_i = sum_j a_ij"):
        ButcherTableau(a=[[1.0]], b=[0.5, 0.5], c=[0.0, 0.5], order=2)


def test_tableau_rejects_nonzero_first_node():
    with pytest.raises(ValueError, match=r"needs `c\[0\] == 0`"):
        ButcherTableau(a=[[1.0]], b=[0.5, 0.5], c=[0.5, 1.0], order=2)


def test_tableau_rejects_fsal_when_last_row_differs_from_b():
    with pytest.raises(ValueError, match="`fsal=True` needs the last row of `a` to equal `b`"):
        ButcherTableau(a=[[1.0]], b=[0.5, 0.5], c=[0.0, 1.0], order=2, fsal=True)


def test_tableau_rejects_fsal_when_last_node_is_not_one():
    # The last row equals b and b[-1] == 0, but it does not sum to 1, so c[-1] != 1 is
    # consistent with the row sums and only the FSAL check can catch it.
    with pytest.raises(ValueError, match=r"`fsal=True` needs `c\[-1\] == 1`"):
        ButcherTableau(
            a=[[0.5], [0.25, 0.25]], b=[0.25, 0.25, 0.0], c=[0.0, 0.5, 0.5], order=1, fsal=True
        )


def test_tableau_requires_error_order_with_b_error():
    with pytest.raises(ValueError, match=r"`error_order`.*is required with `b_error`"):
        ButcherTableau(a=[[1.0]], b=[0.5, 0.5], c=[0.0, 1.0], order=2, b_error=[1.0, 0.0])


def test_tableau_rejects_b_error_of_wrong_length():
    with pytest.raises(ValueError, match="`b_error` must have 2 weights"):
        ButcherTableau(a=[[1.0]], b=[0.5, 0.5], c=[0.0, 1.0], order=2, b_error=[1.0])


def test_tableau_requires_dense_order_with_b_dense():
    with pytest.raises(ValueError, match="`dense_order` is required with `b_dense`"):
        ButcherTableau(
            a=[[1.0]], b=[0.5, 0.5], c=[0.0, 1.0], order=2, b_dense=[[1.0, -0.5], [0.0, 0.5]]
        )


def test_tableau_rejects_nonpositive_order():
    with pytest.raises(ValueError, match="`order` must be a positive int"):
        ButcherTableau(a=[[1.0]], b=[0.5, 0.5], c=[0.0, 1.0], order=0)


# --- Dopri5's two embedded solutions --------------------------------------------------------


def test_shampine_embedded_weights_have_order_four_exactly():
    # Shampine (1986)'s fourth-order solution on Dormand and Prince's stages (torchdiffeq's
    # and diffrax's `dopri5`): order 4, not 5, with the same propagated solution and nodes.
    tab = Dopri5(error_estimate="shampine")._tab()
    base = Dopri5.tableau
    assert (tab.a, tab.b, tab.c, tab.b_dense) == (base.a, base.b, base.c, base.b_dense)
    b_hat = np.asarray(tab.b_error)
    for n in range(1, 5):
        assert max_residual(tab, b_hat, n) < _ATOL, f"order-{n} conditions fail"
    assert max_residual(tab, b_hat, 5) > _FAIL


def test_shampine_error_estimate_is_two_thirds_of_dormand_prince():
    # e = b - b̂: Shampine's estimate is Dormand and Prince's scaled by 2/3, entry by entry
    # (so its steps are those of the other estimate at 1.5x the tolerances).
    e_dp = np.asarray(Dopri5.tableau.b) - np.asarray(Dopri5.tableau.b_error)
    shampine = Dopri5(error_estimate="shampine")._tab()
    e_s = np.asarray(shampine.b) - np.asarray(shampine.b_error)
    np.testing.assert_allclose(e_s, e_dp * 2 / 3, rtol=0, atol=1e-16)


@pytest.mark.parametrize("tol", [1e-4, 1e-7])
def test_shampine_steps_are_dormand_prince_steps_at_one_and_a_half_tolerances(tol):
    import torch

    import torchnde as tn

    y0 = torch.tensor([[2.0, 0.0], [0.5, 1.0]], dtype=torch.float64)
    term = tn.ODETerm(lambda t, y, args: torch.stack([y[:, 1], (1 - y[:, 0] ** 2) * y[:, 1]
                                                      - y[:, 0]], -1))  # fmt: skip
    runs = []
    for solver, scale in ((Dopri5(error_estimate="shampine"), 1.0), (Dopri5(), 1.5)):
        ctrl = tn.PIDController(rtol=scale * tol, atol=scale * tol)
        with torch.no_grad():
            # (A first step given: the automatic one depends on the tolerances on its own.)
            runs.append(tn.solve(term, solver, 0.0, 6.0, y0, dt0=0.01, controller=ctrl,
                                 saveat=tn.SaveAt(steps=True)))  # fmt: skip
    shampine, dormand_prince = runs
    assert shampine.stats == dormand_prince.stats
    # Equal but for rounding: the two estimates' coefficients (2/3 of the other, rounded) give
    # error estimates, a difference of stages of size ~tol, apart by ~eps / tol relatively,
    # and the step sizes by a fifth of that.
    close = 100 * torch.finfo(torch.float64).eps / tol
    torch.testing.assert_close(shampine.ts, dormand_prince.ts, rtol=close, atol=0.0)
    torch.testing.assert_close(shampine.ys, dormand_prince.ys, rtol=close, atol=close)
    # ... and about 8% fewer steps than Dormand and Prince's estimate at the same tolerances.
    with torch.no_grad():
        same = tn.solve(term, Dopri5(), 0.0, 6.0, y0, dt0=0.01,
                        controller=tn.PIDController(rtol=tol, atol=tol))  # fmt: skip
    assert shampine.stats["num_steps"] < same.stats["num_steps"]


def test_dopri5_rejects_an_unknown_error_estimate():
    with pytest.raises(ValueError, match=r"Dopri5: `error_estimate` must be one of .*'hairer'"):
        Dopri5(error_estimate="hairer")
