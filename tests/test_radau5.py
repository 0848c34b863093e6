"""Radau5, the adaptive Radau IIA order 5 method (Hairer's RADAU5, SciPy's Radau).

* Robertson and Van der Pol (mu = 1000) match SciPy's Radau at rtol = 1e-10 at the save
  times (dense output), within a bound set by the solve's own tolerance.
* A linear stiff system matches its matrix exponential.
* With constant steps the global error falls at order 5; adaptive errors shrink in
  proportion to the tolerance.
* Gradients (DirectAdjoint) match float64 central differences.
* Per sample, each sample's steps match solving it alone.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import torchnde as tn
from problems.stiff import CONV_T as T
from problems.stiff import STIFF, conv_exact, conv_vf
from torchnde._core.solvers import radau5


def _scipy(name: str, ts: np.ndarray) -> np.ndarray:
    p = STIFF[name]
    sol = solve_ivp(
        lambda t, y: p.f(t, y), (0.0, p.t1), np.array(p.y0, dtype=float), method="Radau",
        rtol=1e-10, atol=p.atol, jac=p.jac, t_eval=ts,
    )  # fmt: skip
    assert sol.success
    return sol.y.T


def _solve(name, solver, ts, rtol, atol):
    p = STIFF[name]
    return tn.solve(
        tn.ODETerm(lambda t, y, a: p.f(t, y)), solver, 0.0, p.t1,
        torch.tensor(p.y0, dtype=torch.float64), saveat=tn.SaveAt(ts=torch.tensor(ts)),
        controller=tn.PIDController(rtol=rtol, atol=atol), max_steps=20000,
    )  # fmt: skip


# (problem, save times, rtol, atol, relative bound, absolute floor)
# The bound is 100 rtol: a tolerance-proportional global error that grows over the few
# hundred to thousand steps of each solve; the reference at rtol = 1e-10 is 100x tighter.
CASES = [
    ("robertson", np.array([1e-3, 0.4, 40.0, 4e3, 4e4, 1e5]), 1e-8, 1e-14, 1e-6, 1e-12),
    # Van der Pol between its fast transitions (the solution's slope there is ~1e3, so a
    # relative error in time shows as O(1) in y): t on the slow branches.
    ("vdp1000", np.array([1.0, 100.0, 500.0, 1000.0]), 1e-8, 1e-8, 1e-6, 1e-6),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0])
def test_stiff_references_match_scipy_radau(case) -> None:
    name, ts, rtol, atol, bound, floor = case
    sol = _solve(name, tn.Radau5(jacobian="finite_difference"), ts, rtol, atol)
    ref = _scipy(name, ts)
    ys = sol.ys.numpy()
    assert np.allclose(ys, ref, rtol=bound, atol=floor), np.abs(ys - ref).max(0)


def test_both_linear_algebra_paths_give_the_same_solve(monkeypatch) -> None:
    ts = np.array([1.0, 100.0, 1e5])
    a = _solve("robertson", tn.Radau5(), ts, 1e-6, 1e-10)
    monkeypatch.setattr(radau5, "COMBINED_MAX_N", 0)
    b = _solve("robertson", tn.Radau5(), ts, 1e-6, 1e-10)
    assert a.stats["num_steps"] == b.stats["num_steps"]
    # The complex path counts its two factorisations separately.
    assert b.stats["num_lu_factorisations"] == 2 * a.stats["num_lu_factorisations"]
    torch.testing.assert_close(a.ys, b.ys, rtol=1e-9, atol=1e-15)


def test_robertson_moderate_tolerance_matches_scipy_within_tolerance_budget() -> None:
    # A quicker version of the above, in the default run: rtol 1e-6, bound 100 rtol.
    ts = np.array([1.0, 100.0, 1e5])
    sol = _solve("robertson", tn.Radau5(), ts, 1e-6, 1e-10)
    ref = _scipy("robertson", ts)
    assert np.allclose(sol.ys.numpy(), ref, rtol=1e-4, atol=1e-9)
    # A stiff solve: a few hundred steps, not the tens of thousands of an explicit method.
    assert sol.stats["num_steps"] < 400, sol.stats
    assert 0 < sol.stats["num_jacobians"] <= sol.stats["num_steps"]


# Small states solve the real and complex systems as one real block-diagonal system of size
# 3n; larger ones factorise a real and a complex matrix. Both paths, on the same problems.
@pytest.fixture(params=["combined", "real+complex"])
def linear_algebra(request, monkeypatch):
    if request.param == "real+complex":
        monkeypatch.setattr(radau5, "COMBINED_MAX_N", 0)
    return request.param


@pytest.mark.usefixtures("linear_algebra")
def test_linear_stiff_system_matches_matrix_exponential() -> None:
    # y' = M y with eigenvalues -1, -1e3, -1e5 (non-normal: M = V D V^{-1}).
    V = torch.tensor([[1.0, 0.5, 0.1], [0.0, 1.0, 0.3], [0.2, 0.0, 1.0]], dtype=torch.float64)
    D = torch.diag(torch.tensor([-1.0, -1e3, -1e5], dtype=torch.float64))
    M = V @ D @ torch.linalg.inv(V)
    y0 = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    ts = torch.tensor([1e-4, 1e-2, 0.5, 2.0], dtype=torch.float64)
    sol = tn.solve(
        tn.ODETerm(lambda t, y, a: y @ M.T), tn.Radau5(), 0.0, 2.0, y0,
        saveat=tn.SaveAt(ts=ts), controller=tn.PIDController(rtol=1e-8, atol=1e-10),
    )  # fmt: skip
    exact = torch.stack([torch.linalg.matrix_exp(M * t) @ y0 for t in ts])
    # 100 rtol relative, with the atol-sized floor for the decayed components.
    torch.testing.assert_close(sol.ys, exact, rtol=1e-6, atol=1e-8)
    # Stiff: an explicit method would need ~1e5 steps (stability at lambda = -1e5).
    assert sol.stats["num_steps"] < 1000, sol.stats


def _tight() -> tn.Radau5:
    # Newton converged to rounding (more iterations than the 7 that suffice at the
    # controller's tolerances).
    return tn.Radau5(newton_rtol=1e-14, newton_atol=1e-14, max_newton_iters=30)


def test_global_error_is_fifth_order_with_constant_steps() -> None:
    errs, hs = [], []
    for n in (8, 16, 32):
        sol = tn.solve(
            tn.ODETerm(conv_vf), _tight(), 0.0, T,
            torch.tensor([1.0, 1.0], dtype=torch.float64), dt0=T / n,
            controller=tn.ConstantStepSize(),
        )  # fmt: skip
        errs.append(float(np.abs(sol.ys[-1].numpy() - conv_exact(T)).max()))
        hs.append(T / n)
    e = np.array(errs)
    assert e.min() > 1e-13 and e.max() < 1e-2, e
    slope = float(np.polyfit(np.log(hs), np.log(e), 1)[0])
    assert abs(slope - 5) <= 0.3, (slope, e)


def test_adaptive_error_is_proportional_to_tolerance() -> None:
    errs = []
    tols = [1e-5, 1e-7, 1e-9]
    for tol in tols:
        sol = tn.solve(
            tn.ODETerm(conv_vf), tn.Radau5(), 0.0, T,
            torch.tensor([1.0, 1.0], dtype=torch.float64),
            controller=tn.PIDController(rtol=tol, atol=tol),
        )  # fmt: skip
        errs.append(float(np.abs(sol.ys[-1].numpy() - conv_exact(T)).max()))
    slope = float(np.polyfit(np.log(tols), np.log(errs), 1)[0])
    # Tolerance proportionality: the controller holds the local error estimate, O(h^4), at
    # the tolerance, so h ~ tol^(1/4) and the order-5 global error ~ tol^(5/4) (Hairer's
    # RADAU5 rescales rtol to rtol^(2/3) for this reason; SciPy does not). Slope 5/4 +- 0.3,
    # and every global error within ten times the (local) tolerance.
    assert abs(slope - 1.25) <= 0.3, (slope, errs)
    assert all(err < 10 * tol for err, tol in zip(errs, tols)), errs


def test_dense_output_matches_exact_solution_between_steps() -> None:
    sol = tn.solve(
        tn.ODETerm(conv_vf), tn.Radau5(), 0.0, T,
        torch.tensor([1.0, 1.0], dtype=torch.float64),
        controller=tn.PIDController(rtol=1e-9, atol=1e-9), saveat=tn.SaveAt(dense=True),
    )  # fmt: skip
    tq = np.linspace(0.013, T - 0.01, 37)
    ys = sol.evaluate(torch.tensor(tq)).numpy()
    exact = np.stack([conv_exact(t) for t in tq])
    assert np.abs(ys - exact).max() < 1e-6


def _grad_problem(
    k: torch.Tensor, y0: torch.Tensor, adaptive: bool, adjoint: object = None
) -> torch.Tensor:
    def vf(t, y, args):
        a, b = args[0], args[1]
        return torch.stack([-a * y[0] + b * y[1] * y[1], a * y[0] - 30.0 * y[1] - b * y[1] ** 2])

    kw = (
        dict(controller=tn.PIDController(rtol=1e-10, atol=1e-10))
        if adaptive
        else dict(dt0=0.05, controller=tn.ConstantStepSize())
    )
    sol = tn.solve(
        tn.ODETerm(vf), _tight(), 0.0, 1.0, y0, k,
        saveat=tn.SaveAt(ts=[0.3, 1.0]), adjoint=adjoint or tn.DirectAdjoint(), **kw,
    )  # fmt: skip
    return (sol.ys * torch.tensor([[1.0, 2.0], [-0.5, 1.5]], dtype=torch.float64)).sum()


@pytest.mark.parametrize("adaptive", [False, True], ids=["constant", "adaptive"])
@pytest.mark.usefixtures("linear_algebra")
def test_direct_gradient_matches_central_differences(adaptive: bool) -> None:
    k = torch.tensor([2.0, 5.0], dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([1.0, 0.2], dtype=torch.float64, requires_grad=True)
    gk, gy = torch.autograd.grad(_grad_problem(k, y0, adaptive), (k, y0))
    eps = 1e-6
    for x, g in ((k, gk), (y0, gy)):
        fd = torch.zeros_like(g)
        for i in range(x.numel()):
            e = torch.zeros_like(x)
            e[i] = eps
            with torch.no_grad():
                kp, km = (k + e, k - e) if x is k else (k, k)
                yp, ym = (y0 + e, y0 - e) if x is y0 else (y0, y0)
                fd[i] = (_grad_problem(kp, yp, adaptive) - _grad_problem(km, ym, adaptive)) / (
                    2 * eps
                )
        # Central differences at eps = 1e-6 in float64: truncation ~1e-12, rounding ~1e-10
        # (the solve is accurate to its 1e-10 tolerance, smooth in the inputs).
        torch.testing.assert_close(g, fd, rtol=1e-5, atol=1e-7)


def test_continuous_adjoints_match_central_differences() -> None:
    # The backward solves (also Radau5) at the forward's tolerance: the gradient of the
    # exact solution, which the forward's central differences give to ~1e-8.
    k = torch.tensor([2.0, 5.0], dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([1.0, 0.2], dtype=torch.float64)
    eps = 1e-6
    fd = torch.zeros(2, dtype=torch.float64)
    for i in range(2):
        e = torch.zeros(2, dtype=torch.float64)
        e[i] = eps
        with torch.no_grad():
            fd[i] = (_grad_problem(k + e, y0, True) - _grad_problem(k - e, y0, True)) / (2 * eps)
    for adjoint in (tn.BacksolveAdjoint(), tn.InterpolatedAdjoint()):
        (g,) = torch.autograd.grad(_grad_problem(k, y0, True, adjoint), (k,))
        torch.testing.assert_close(g, fd, rtol=1e-6, atol=1e-7)


def _robertson_k(t, y, k3):
    y1, y2, y3 = y[..., 0], y[..., 1], y[..., 2]
    r = k3 * y2 * y2
    return torch.stack([-0.04 * y1 + 1e4 * y2 * y3, 0.04 * y1 - 1e4 * y2 * y3 - r, r], -1)


@pytest.mark.usefixtures("linear_algebra")
def test_per_sample_steps_match_solving_each_sample_alone() -> None:
    k3 = torch.tensor([1e5, 3e7, 1e6], dtype=torch.float64)
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64).expand(3, 3).contiguous()
    ts = torch.tensor([1.0, 10.0, 100.0], dtype=torch.float64)

    def run(k, y):
        return tn.solve(
            tn.ODETerm(_robertson_k), tn.Radau5(), 0.0, 100.0, y, k,
            saveat=tn.SaveAt(ts=ts), controller=tn.PIDController(rtol=1e-6, atol=1e-10,
                                                                  per_sample=True),
        )  # fmt: skip

    joint = run(k3, y0)
    steps = []
    for i in range(3):
        alone = run(k3[i : i + 1], y0[i : i + 1])
        torch.testing.assert_close(joint.ys[:, i], alone.ys[:, 0], rtol=1e-12, atol=1e-15)
        steps.append(int(alone.stats["num_steps"]))
    # The samples really take different steps (so the check above is not vacuous).
    assert len(set(steps)) > 1, steps


def test_radau5_by_name_and_bad_arguments() -> None:
    from torchnde._convenience import solver_from_name

    assert isinstance(solver_from_name("radau5"), tn.Radau5)
    with pytest.raises(ValueError, match="jacobian"):
        tn.Radau5(jacobian="numerical")
    with pytest.raises(ValueError, match="kappa"):
        tn.Radau5(kappa=2.0)
