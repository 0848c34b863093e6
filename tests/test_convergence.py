"""Every solver converges at the order it declares.

Global error against a closed-form solution is measured for a sequence of constant step
sizes h, 2h, 4h (ConstantStepSize, float64) and the least-squares slope of log(error)
against log(h) must lie within ``SLOPE_TOL`` of the declared order (Hairer, Nørsett,
Wanner, *Solving ODEs I*, Sec. II.3: the global error of an order-p method is O(h^p)).
Dense output, the embedded error estimate and the adaptive controller are checked the same
way: each against the power law the theory predicts.

The test problem is Euler's equations of a free rigid body (DETEST B5),
``y1' = y2 y3, y2' = -y1 y3, y3' = -0.51 y1 y2``, ``y(0) = (0, 1, 1)``, whose solution is the
triple of Jacobi elliptic functions ``(sn, cn, dn)(t | m = 0.51)``: nonlinear, coupled and
smooth, with no special structure that would make some elementary differentials vanish.
For each solver the step counts are chosen inside the asymptotic range, with errors between
about 1e-12 and 0.1 (well above float64 round-off, about 1e-14 here, and small enough that
higher-order terms do not bend the slope). Fifth-order methods whose leading error
coefficients are minimised (Tsit5 above all) reach the asymptotic range only at small h, so
their sequences start later.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

import catalogue
import torchnde as tn
from problems.reference import get

SLOPE_TOL = 0.3

# Every catalogued explicit Runge-Kutta method (tests/catalogue.py); STEPS must cover each.
SOLVERS = catalogue.classes(catalogue.Kind.EXPLICIT_RK)
ADAPTIVE = [s for s in SOLVERS if s.error_order is not None]

# Smallest number of steps of each sequence (then 2x and 4x) over [0, T].
STEPS = {
    tn.Euler: 256,
    tn.Midpoint: 64,
    tn.Heun: 64,
    tn.Ralston: 64,
    tn.Fehlberg2: 64,
    tn.RK4: 32,
    tn.RK38: 32,
    tn.Bosh3: 32,
    tn.Dopri5: 32,
    tn.Tsit5: 128,
    tn.Dopri8: 16,
}


T = 10.0
_B5 = get("B5")
# Off-grid fractions of a step at which the dense output is evaluated (cycled over steps).
_THETAS = np.array([0.17, 0.5, 0.83])


def _ids(solver: type) -> str:
    return solver.__name__


def _vf(t: torch.Tensor, y: torch.Tensor, args: object) -> torch.Tensor:
    return _B5.f(t, y)


def _exact(t: np.ndarray) -> np.ndarray:
    assert _B5.exact is not None
    return _B5.exact(t)


def _y0() -> torch.Tensor:
    return _B5.y0_tensor()


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of log(y) against log(x)."""
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def _constant_step_errors(solver: tn.AbstractSolver, n: int) -> tuple[float, float]:
    """Max global error over the step ends, and max dense-output error off the grid."""
    h = T / n
    sol = tn.solve(
        tn.ODETerm(_vf),
        solver,
        0.0,
        T,
        _y0(),
        dt0=h,
        controller=tn.ConstantStepSize(),
        saveat=tn.SaveAt(steps=True, dense=True),
    )
    assert int(sol.stats["num_steps"]) == n
    assert int(sol.stats["num_rejected_steps"]) == 0
    assert sol.ts is not None and sol.ys is not None
    err = float(np.abs(sol.ys.numpy() - _exact(sol.ts.numpy())).max())
    k = np.arange(n)
    tq = (k + _THETAS[k % len(_THETAS)]) * h
    dense = sol.evaluate(torch.tensor(tq, dtype=torch.float64)).numpy()
    dense_err = float(np.abs(dense - _exact(tq)).max())
    return err, dense_err


@functools.cache
def _sweep(solver_cls: type, n0: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ns = [n0, 2 * n0, 4 * n0]
    res = [_constant_step_errors(solver_cls(), n) for n in ns]
    hs = np.array([T / n for n in ns])
    return hs, np.array([r[0] for r in res]), np.array([r[1] for r in res])


def test_every_solver_has_a_step_sequence() -> None:
    assert set(STEPS) == set(SOLVERS)


@pytest.mark.parametrize("solver_cls", SOLVERS, ids=_ids)
def test_global_error_order(solver_cls: type) -> None:
    hs, errs, _ = _sweep(solver_cls, STEPS[solver_cls])
    # Well above round-off and below O(1): the asymptotic range.
    assert errs.min() > 1e-12 and errs.max() < 0.5, errs
    assert np.all(np.diff(errs) < 0), errs
    slope = _slope(hs, errs)
    assert abs(slope - solver_cls.order) <= SLOPE_TOL, (
        f"{solver_cls.__name__}: measured order {slope:.2f}, declared {solver_cls.order}; "
        f"errors {errs}"
    )


@pytest.mark.parametrize("solver_cls", SOLVERS, ids=_ids)
def test_dense_output_order(solver_cls: type) -> None:
    # The interpolant adds a local error O(h^(dense_order + 1)) to values that are already
    # O(h^order) globally, so the error off the grid is O(h^min(order, dense_order + 1)).
    hs, _, dense_errs = _sweep(solver_cls, STEPS[solver_cls])
    expected = min(solver_cls.order, solver_cls.dense_order + 1)
    assert dense_errs.min() > 1e-12, dense_errs
    slope = _slope(hs, dense_errs)
    assert abs(slope - expected) <= SLOPE_TOL, (
        f"{solver_cls.__name__}: dense output converges at {slope:.2f}, expected {expected} "
        f"(order {solver_cls.order}, dense_order {solver_cls.dense_order}); errors {dense_errs}"
    )


# --------------------------------------------------------------------------- time dependence


def _time_warp(t: torch.Tensor) -> torch.Tensor:
    return 1.0 + 0.5 * torch.cos(t)


@pytest.mark.parametrize("solver_cls", SOLVERS, ids=_ids)
def test_non_autonomous_matches_autonomised_system(solver_cls: type) -> None:
    # A Runge–Kutta method with c_i = sum_j a_ij gives the same numbers for y' = f(t, y) as
    # for the autonomous system (y, s)' = (f(s, y), 1) with s(0) = 0 (Hairer, Nørsett,
    # Wanner, Sec. II.1): so the stage times t0 + c_i h must be used exactly as intended.
    # z(t) = y(t + 0.5 sin t) solves z' = (1 + 0.5 cos t) f(z), a genuinely time-dependent
    # vector field.
    def warped(t: torch.Tensor, z: torch.Tensor, args: object) -> torch.Tensor:
        return _time_warp(t) * _B5.f(t, z)

    def autonomised(t: torch.Tensor, zs: torch.Tensor, args: object) -> torch.Tensor:
        z, s = zs[..., :3], zs[..., 3:]
        return torch.cat([_time_warp(s) * _B5.f(s, z), torch.ones_like(s)], -1)

    n = 40
    kw = dict(dt0=T / n, controller=tn.ConstantStepSize(), saveat=tn.SaveAt(steps=True))
    sol = tn.solve(tn.ODETerm(warped), solver_cls(), 0.0, T, _y0(), **kw)
    y0_aug = torch.cat([_y0(), torch.zeros(1, dtype=torch.float64)])
    aug = tn.solve(tn.ODETerm(autonomised), solver_cls(), 0.0, T, y0_aug, **kw)
    assert sol.ts is not None and sol.ys is not None and aug.ys is not None
    torch.testing.assert_close(aug.ys[:, 3], sol.ts, rtol=0, atol=1e-12)
    torch.testing.assert_close(sol.ys, aug.ys[:, :3], rtol=0, atol=1e-11)


# --------------------------------------------------------------------------- error estimate


@pytest.mark.parametrize("solver_cls", ADAPTIVE, ids=_ids)
def test_error_estimate_order(solver_cls: type) -> None:
    # The embedded estimate of a single step from the exact solution scales as
    # h^error_order: that is the exponent step-size controllers are given. The RMS of the
    # estimate is averaged over a dozen starting points, so that a component of the local
    # error passing through zero somewhere does not bend the slope.
    solver = solver_cls()
    term = tn.ODETerm(_vf)
    starts = np.linspace(0.25, 3.0, 12)
    exact = _exact(starts)
    # Eighth order needs longer steps for its estimate to stay above round-off.
    h0 = 0.8 if solver_cls.error_order >= 8 else 0.4
    hs = h0 * 2.0 ** -np.arange(4)
    estimates = []
    for h in hs:
        total = 0.0
        for t0, y_start in zip(starts, exact):
            y0 = torch.tensor(y_start)
            ta = torch.tensor(t0, dtype=torch.float64)
            tb = torch.tensor(t0 + h, dtype=torch.float64)
            state = solver.init(term, ta, y0, None)
            _, y_error, _, _ = solver.step(term, ta, tb, y0, None, state)
            assert y_error is not None and y_error.shape == y0.shape
            total += float(y_error.pow(2).mean().sqrt())
        estimates.append(total / len(starts))
    est = np.array(estimates)
    assert est.min() > 1e-14, est
    slope = _slope(hs, est)
    assert abs(slope - solver_cls.error_order) <= SLOPE_TOL, (
        f"{solver_cls.__name__}: the error estimate scales as h^{slope:.2f}, but "
        f"error_order = {solver_cls.error_order}; estimates {est}"
    )


# Tolerances of the adaptive sweep: as far down as the method reaches in a few thousand steps.
_TOLS = {
    tn.Heun: (1e-3, 1e-4, 1e-5),
    tn.Fehlberg2: (1e-3, 1e-4, 1e-5),
    tn.Bosh3: (1e-3, 1e-4, 1e-5, 1e-6, 1e-7),
    tn.Dopri5: (1e-3, 1e-5, 1e-7, 1e-9),
    tn.Tsit5: (1e-3, 1e-5, 1e-7, 1e-9),
    tn.Dopri8: (1e-3, 1e-5, 1e-7, 1e-9),
}
_T_ADAPTIVE = 5.0


@functools.cache
def _tol_sweep(solver_cls: type) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tols = np.array(_TOLS[solver_cls])
    errs, nfes = [], []
    for tol in tols:
        sol = tn.solve(
            tn.ODETerm(_vf),
            solver_cls(),
            0.0,
            _T_ADAPTIVE,
            _y0(),
            saveat=tn.SaveAt(steps=True),
            controller=tn.PIDController(rtol=float(tol), atol=float(tol)),
        )
        assert sol.ts is not None and sol.ys is not None
        errs.append(float(np.abs(sol.ys.numpy() - _exact(sol.ts.numpy())).max()))
        nfes.append(int(sol.stats["num_fevals"]))
    return tols, np.array(errs), np.array(nfes)


def test_every_adaptive_solver_has_tolerances() -> None:
    assert set(_TOLS) == set(ADAPTIVE)


@pytest.mark.parametrize("solver_cls", ADAPTIVE, ids=_ids)
def test_error_proportional_to_tolerance(solver_cls: type) -> None:
    # With local error per step controlled to ~tol by an estimate of order h^k (k =
    # error_order = order for every built-in pair), steps scale as tol^(1/k) and the global
    # error of the order-p solution as h^p = tol^(p/k) = tol: "tolerance proportionality".
    tols, errs, _ = _tol_sweep(solver_cls)
    assert np.all(np.diff(errs) < 0), f"error does not fall as tol tightens: {errs}"
    slope = _slope(tols, errs)
    assert 0.6 <= slope <= 1.3, (
        f"{solver_cls.__name__}: error ~ tol^{slope:.2f}, expected about tol^1; "
        f"tols {tols}, errors {errs}"
    )


@pytest.mark.parametrize("solver_cls", ADAPTIVE, ids=_ids)
def test_work_grows_as_tolerance_tightens(solver_cls: type) -> None:
    tols, _, nfes = _tol_sweep(solver_cls)
    assert np.all(np.diff(nfes) > 0), f"{solver_cls.__name__}: fevals {nfes} for tols {tols}"


# --------------------------------------------------------------------------- user tableaux

# Kutta's third-order method (1901) and the strong-stability-preserving SSPRK3 of Shu and
# Osher (1988): both order 3, neither built in.
_KUTTA3 = tn.ButcherTableau(
    a=[[1 / 2], [-1.0, 2.0]],
    b=[1 / 6, 2 / 3, 1 / 6],
    c=[0.0, 1 / 2, 1.0],
    order=3,
)
_SSPRK3 = tn.ButcherTableau(
    a=[[1.0], [1 / 4, 1 / 4]],
    b=[1 / 6, 1 / 6, 2 / 3],
    c=[0.0, 1.0, 1 / 2],
    order=3,
)
# A hand-entered adaptive pair: Heun's method with the Euler error estimate, 2(1).
_HEUN_EULER = tn.ButcherTableau(
    a=[[1.0]],
    b=[1 / 2, 1 / 2],
    c=[0.0, 1.0],
    order=2,
    b_error=[1.0, 0.0],
    error_order=2,
)


@pytest.mark.parametrize(
    "tableau", [_KUTTA3, _SSPRK3, _HEUN_EULER], ids=["kutta3", "ssprk3", "heun_euler"]
)
def test_user_tableau_reaches_its_order(tableau: tn.ButcherTableau) -> None:
    solver = tn.ExplicitRungeKutta(tableau)
    assert solver.order == tableau.order
    ns = [32, 64, 128] if tableau.order >= 3 else [64, 128, 256]
    errs = np.array([_constant_step_errors(solver, n)[0] for n in ns])
    hs = np.array([T / n for n in ns])
    slope = _slope(hs, errs)
    assert abs(slope - tableau.order) <= SLOPE_TOL, (slope, errs)


def test_user_adaptive_tableau_meets_tolerance() -> None:
    solver = tn.ExplicitRungeKutta(_HEUN_EULER)
    assert solver.is_adaptive and solver.error_order == 2
    errs = []
    for tol in (1e-3, 1e-4, 1e-5):
        sol = tn.solve(
            tn.ODETerm(_vf),
            solver,
            0.0,
            _T_ADAPTIVE,
            _y0(),
            saveat=tn.SaveAt(steps=True),
            controller=tn.PIDController(rtol=tol, atol=tol),
        )
        assert sol.ts is not None and sol.ys is not None
        errs.append(float(np.abs(sol.ys.numpy() - _exact(sol.ts.numpy())).max()))
    slope = _slope(np.array([1e-3, 1e-4, 1e-5]), np.array(errs))
    assert 0.6 <= slope <= 1.3, (slope, errs)
    assert max(e / t for e, t in zip(errs, (1e-3, 1e-4, 1e-5))) < 100, errs
