"""Dopri8's dense output: Hairer's seventh-order continuous extension of DOP853.

The interpolant (``contd8`` in ``dop853.f``; Hairer, Nørsett, Wanner, *Solving ODEs I*,
Sec. II.6 and II.10) needs three extra stages, which Dopri8 evaluates lazily, on the first
interpolation of a step, and caches with the step. Checked here: the coefficients against
SciPy's transcription of DOP853, the end points and end slopes of the polynomial, its order
off the step grid, its accuracy at save times in adaptive solves (joint and per sample,
float64 and float32), the laziness and the evaluation count, and gradients through it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import torchnde as tn
from torchnde._core.solvers import dopri8 as d8

F64 = torch.float64


class CountingField:
    """A nonlinear, time-dependent ``f(t, y) = -y^3 / 4 + sin(t) y``, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, t, y, args):
        self.calls += 1
        t = t.reshape(t.shape + (1,) * (y.ndim - t.ndim)) if t.ndim else t
        return -0.25 * y**3 + torch.sin(t) * y


# --------------------------------------------------------------------------- coefficients


def test_coefficients_match_scipy_dop853() -> None:
    dc = pytest.importorskip("scipy.integrate._ivp.dop853_coefficients")
    tol = dict(rtol=1e-15, atol=1e-15)
    # The extra stages 14-16: nodes and rows of `a` (entries beyond a row are zero).
    np.testing.assert_allclose(np.array(d8._C_EXTRA), dc.C[13:16], **tol)
    for i, row in enumerate(d8._A_EXTRA):
        assert len(row) == 13 + i
        np.testing.assert_allclose(np.array(row), dc.A[13 + i, : 13 + i], **tol)
        assert not np.any(dc.A[13 + i, 13 + i :])
    # The interpolant's d-coefficients, over all 16 stages.
    np.testing.assert_allclose(np.array(d8._D), dc.D, **tol)
    # And the 12-stage method they extend.
    tab = tn.Dopri8.tableau
    np.testing.assert_allclose(np.array(tab.c), dc.C[:12], **tol)
    np.testing.assert_allclose(np.array(tab.b), dc.B, **tol)
    for i, row in enumerate(tab.a, start=1):
        np.testing.assert_allclose(np.array(row), dc.A[i, :i], **tol)


def test_stage_rows_are_consistent() -> None:
    # c_i = sum_j a_ij, as for every stage of an explicit Runge–Kutta method.
    for c, row in zip(d8._C_EXTRA, d8._A_EXTRA):
        assert abs(sum(row) - c) < 1e-14


def test_declared_dense_order() -> None:
    assert tn.Dopri8.dense_order == 7
    assert tn.Dopri8().dense_order == 7
    # The tableau itself still has no dense polynomial: the extension lives in the solver.
    assert tn.Dopri8.tableau.dense_order is None


# --------------------------------------------------------------------------- one step


def _one_step(per_sample: bool, dtype: torch.dtype = F64):
    f = CountingField()
    term = tn.ODETerm(f)
    solver = tn.Dopri8()
    y0 = torch.tensor([[0.7, -1.2, 0.3], [1.5, 0.2, -0.8]], dtype=dtype)
    if per_sample:
        t0 = torch.tensor([0.1, 0.4], dtype=dtype)
        t1 = torch.tensor([0.6, 1.1], dtype=dtype)
    else:
        t0 = torch.tensor(0.1, dtype=dtype)
        t1 = torch.tensor(0.8, dtype=dtype)
    state = solver.init(term, t0, y0, None)
    y1, _, info, _ = solver.step(term, t0, t1, y0, None, state)
    return f, term, solver, t0, t1, y0, y1, info


@pytest.mark.parametrize("per_sample", [False, True], ids=["joint", "per_sample"])
def test_end_points_reproduce_y0_and_y1(per_sample: bool) -> None:
    _, _, solver, t0, t1, y0, y1, info = _one_step(per_sample)
    eps = 4 * torch.finfo(F64).eps
    if per_sample:
        for theta, y in ((0.0, y0), (1.0, y1)):
            out = solver.interpolate(info, torch.full_like(t0, theta), True)
            torch.testing.assert_close(out, y, rtol=eps, atol=eps)
    else:
        out = solver.interpolate(info, torch.tensor([0.0, 1.0], dtype=F64), False)
        assert out.shape == (2, *y0.shape)
        torch.testing.assert_close(out[0], y0, rtol=eps, atol=eps)
        torch.testing.assert_close(out[1], y1, rtol=eps, atol=eps)


def test_end_slopes_are_the_vector_field() -> None:
    # Hairer's interpolant is C^1 across steps: dy/dθ = h f at both ends of the step.
    f, _, solver, t0, t1, y0, y1, info = _one_step(False)
    h = t1 - t0
    theta = torch.tensor([0.0, 1.0], dtype=F64)
    jac = torch.autograd.functional.jacobian(lambda th: solver.interpolate(info, th, False), theta)
    slopes = torch.stack([jac[0, ..., 0], jac[1, ..., 1]])
    expect = torch.stack([h * f(t0, y0, None), h * f(t1, y1, None)])
    torch.testing.assert_close(slopes, expect, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("per_sample", [False, True], ids=["joint", "per_sample"])
def test_extra_stages_are_lazy_cached_and_counted(per_sample: bool) -> None:
    f, _, solver, t0, _, _, _, info = _one_step(per_sample)
    assert f.calls == 1 + 12  # init, then 11 stages and f(t1, y1)
    assert solver.take_dense_fevals(info) == 0
    theta = torch.full_like(t0, 0.3) if per_sample else torch.tensor([0.3, 0.6], dtype=F64)
    first = solver.interpolate(info, theta, per_sample)
    assert f.calls == 13 + 3
    again = solver.interpolate(info, theta, per_sample)
    assert f.calls == 13 + 3
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert solver.take_dense_fevals(info) == 3
    assert solver.take_dense_fevals(info) == 0


def test_per_sample_matches_joint_for_equal_steps() -> None:
    # Each sample its own θ; equal times for all samples reduce to the joint interpolant.
    _, term, solver, _, _, y0, _, _ = _one_step(False)
    t0, t1 = torch.tensor(0.1, dtype=F64), torch.tensor(0.8, dtype=F64)
    state = solver.init(term, t0, y0, None)
    _, _, joint, _ = solver.step(term, t0, t1, y0, None, state)
    ts0, ts1 = t0.expand(2).clone(), t1.expand(2).clone()
    _, _, ps, _ = solver.step(term, ts0, ts1, y0, None, solver.init(term, ts0, y0, None))
    thetas = torch.tensor([0.25, 0.7], dtype=F64)
    out_joint = solver.interpolate(joint, thetas, False)
    out_ps = solver.interpolate(ps, thetas, True)
    torch.testing.assert_close(out_ps[0], out_joint[0, 0], rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(out_ps[1], out_joint[1, 1], rtol=1e-14, atol=1e-14)


# --------------------------------------------------------------------------- convergence

# Kepler's two-body problem (DETEST D2, eccentricity 0.3) over one period: nonlinear,
# coupled, with a closed form through Kepler's equation.
_ECC = 0.3
_T = 2 * math.pi


def _kepler(t, y, args):
    x1, x2, v1, v2 = y.unbind(-1)
    r3 = (x1 * x1 + x2 * x2) ** 1.5
    return torch.stack([v1, v2, -x1 / r3, -x2 / r3], -1)


def _kepler_exact(t: np.ndarray) -> np.ndarray:
    m = np.mod(t, 2 * np.pi)
    ecc = np.full_like(m, np.pi)  # Newton from E = pi converges for every e < 1
    for _ in range(60):
        ecc = ecc - (ecc - _ECC * np.sin(ecc) - m) / (1.0 - _ECC * np.cos(ecc))
    s, c = np.sin(ecc), np.cos(ecc)
    q = math.sqrt(1.0 - _ECC**2)
    d = 1.0 - _ECC * c
    return np.stack([c - _ECC, q * s, -s / d, q * c / d], -1)


def _kepler_y0() -> torch.Tensor:
    return torch.tensor([1.0 - _ECC, 0.0, 0.0, math.sqrt((1 + _ECC) / (1 - _ECC))], dtype=F64)


def test_dense_output_converges_at_order_eight() -> None:
    # Off-grid error O(h^min(order, dense_order + 1)) = O(h^8). Step counts in the asymptotic
    # range: errors from about 3e-7 down to 1e-11, well above round-off.
    thetas = np.array([0.17, 0.5, 0.83])
    hs, errs, grid_errs = [], [], []
    for n in (24, 48, 96):
        h = _T / n
        sol = tn.solve(
            tn.ODETerm(_kepler),
            tn.Dopri8(),
            0.0,
            _T,
            _kepler_y0(),
            dt0=h,
            controller=tn.ConstantStepSize(),
            saveat=tn.SaveAt(steps=True, dense=True),
        )
        assert sol.ts is not None and sol.ys is not None
        k = np.arange(n)
        tq = (k + thetas[k % 3]) * h
        dense = sol.evaluate(torch.tensor(tq, dtype=F64)).numpy()
        hs.append(h)
        errs.append(np.abs(dense - _kepler_exact(tq)).max())
        grid_errs.append(np.abs(sol.ys.numpy() - _kepler_exact(sol.ts.numpy())).max())
    errs_a = np.array(errs)
    assert errs_a.min() > 1e-12 and errs_a.max() < 1e-5, errs_a
    slope = float(np.polyfit(np.log(hs), np.log(errs_a), 1)[0])
    assert slope >= 6.7, f"dense output converges at {slope:.2f}; errors {errs_a}"
    # Off the grid about as accurate as on it (a cubic Hermite interpolant is 1e3-1e5x worse).
    assert np.all(errs_a < 5 * np.array(grid_errs)), (errs_a, grid_errs)


# --------------------------------------------------------------------------- adaptive solves


def _decay_solve(per_sample: bool, dtype: torch.dtype, rtol: float, atol: float):
    # y' = -rate y, one rate per sample so that per-sample step sizes differ.
    rate = torch.tensor([[0.5], [1.0], [2.0]], dtype=dtype)
    y0 = torch.tensor([[1.0, -2.0], [0.5, 3.0], [2.0, 1.0]], dtype=dtype)
    ts = torch.linspace(0, 5, 50, dtype=dtype)
    sol = tn.solve(
        tn.ODETerm(lambda t, y, r: -r * y),
        tn.Dopri8(),
        0.0,
        5.0,
        y0,
        rate,
        saveat=tn.SaveAt(ts=ts),
        controller=tn.PIDController(rtol=rtol, atol=atol, per_sample=per_sample),
    )
    exact = y0 * torch.exp(-rate * ts[:, None, None])
    assert sol.ys is not None and sol.ys.shape == exact.shape and sol.ys.dtype == dtype
    return sol, float((sol.ys - exact).abs().max())


def test_exponential_decay_at_save_times_joint() -> None:
    sol = tn.solve(
        tn.ODETerm(lambda t, y, args: -y),
        tn.Dopri8(),
        0.0,
        5.0,
        torch.ones(2, dtype=F64),
        saveat=tn.SaveAt(ts=torch.linspace(0, 5, 50, dtype=F64)),
        controller=tn.PIDController(rtol=1e-10, atol=1e-12),
    )
    ts = torch.linspace(0, 5, 50, dtype=F64)
    assert sol.ys is not None
    err = float((sol.ys - torch.exp(-ts)[:, None]).abs().max())
    # Far fewer steps than save times: nearly every value comes from the interpolant.
    assert int(sol.stats["num_steps"]) < 25
    assert err < 1e-8, err


@pytest.mark.parametrize("per_sample", [False, True], ids=["joint", "per_sample"])
def test_batched_decay_at_save_times(per_sample: bool) -> None:
    sol, err = _decay_solve(per_sample, F64, 1e-10, 1e-12)
    assert err < 1e-8, err
    if per_sample:
        steps = sol.stats["num_accepted_steps"]
        assert steps.shape == (3,) and len(set(steps.tolist())) > 1  # own step sizes


@pytest.mark.parametrize("per_sample", [False, True], ids=["joint", "per_sample"])
def test_float32(per_sample: bool) -> None:
    _, err = _decay_solve(per_sample, torch.float32, 1e-6, 1e-7)
    assert err < 2e-5, err


def test_event_located_on_the_interpolant() -> None:
    # y' = -y from 1 crosses 1/2 at log 2; bisection runs on the dense output of the step.
    sol = tn.solve(
        tn.ODETerm(lambda t, y, args: -y),
        tn.Dopri8(),
        0.0,
        5.0,
        torch.ones(1, dtype=F64),
        saveat=tn.SaveAt(t1=True),
        controller=tn.PIDController(rtol=1e-10, atol=1e-12),
        event=tn.Event(lambda t, y, args: y[..., 0] - 0.5),
    )
    assert sol.ts is not None
    assert abs(float(sol.ts[-1]) - math.log(2)) < 1e-9


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("per_sample", [False, True], ids=["joint", "per_sample"])
def test_gradcheck_through_interpolated_values(per_sample: bool) -> None:
    # Save times and evaluate() points off the step grid: every output is interpolated, and
    # depends on y0 and on the parameter a also through the three lazily evaluated stages.
    ts = torch.tensor([0.1, 0.45, 0.8], dtype=F64)

    def f(t, y, a):
        tt = t[:, None] if t.ndim else t
        return -a * y * y + torch.cos(tt) * y

    def run(y0: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sol = tn.solve(
            tn.ODETerm(f),
            tn.Dopri8(),
            0.0,
            1.0,
            y0,
            a,
            dt0=0.3,
            controller=tn.ConstantStepSize(per_sample=per_sample),
            saveat=tn.SaveAt(ts=ts, dense=True),
        )
        assert sol.ys is not None
        return sol.ys, sol.evaluate(torch.tensor(0.7, dtype=F64))

    y0 = torch.tensor([[0.8, -0.4], [0.3, 1.1]], dtype=F64, requires_grad=True)
    a = torch.tensor([0.7, 1.3], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(run, (y0, a))
