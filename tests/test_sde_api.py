"""SDE solves beyond convergence orders: weak order, adaptive steps, and the errors for
unsupported noise types and calculi."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import torchnde as tn


def _bm(shape, seed, levy_area="space-time"):
    return tn.BrownianInterval(0.0, 1.0, shape, dtype=torch.float64, seed=seed, levy_area=levy_area)


def _gbm(bm, noise="diagonal", calculus="ito", mu=0.5, sigma=0.8):
    return tn.MultiTerm(
        tn.ODETerm(lambda t, y, args: mu * y),
        tn.ControlTerm(lambda t, y, args: sigma * y, bm, noise=noise, calculus=calculus),
    )


def test_euler_maruyama_weak_order_one():
    # E[y_T] = e^{μT}, E[y_T²] = e^{(2μ + σ²)T} for geometric Brownian motion; the weak error
    # of Euler–Maruyama in both moments is O(h). 2^16 paths, shared across step sizes.
    n, mu, sigma = 2**16, 1.0, 0.5
    dts = [2.0**-k for k in range(2, 6)]
    bm = _bm((n, 1), 7)
    y0 = torch.ones(n, 1, dtype=torch.float64)
    errs1, errs2 = [], []
    for dt in dts:
        y = tn.solve(_gbm(bm, mu=mu, sigma=sigma), tn.EulerMaruyama(), 0.0, 1.0, y0, dt0=dt).ys[-1]
        errs1.append(abs(float(y.mean()) - math.exp(mu)))
        errs2.append(abs(float((y * y).mean()) - math.exp(2 * mu + sigma**2)))
    for errs in (errs1, errs2):
        slope = np.polyfit(np.log(dts), np.log(errs), 1)[0]
        assert abs(slope - 1.0) < 0.25, (slope, errs)


@pytest.mark.parametrize("solver", [tn.ItoMilstein(adaptive=True), tn.Heun()])
def test_adaptive_steps_converge_on_one_brownian_path(solver):
    # Rejected steps re-query the Brownian motion over shorter intervals; the answers must be
    # consistent with the path (bridge), so the error against the exact solution on that
    # path shrinks with the tolerance.
    bm = _bm((16, 2), 3, levy_area=None)
    calculus = "ito" if isinstance(solver, tn.ItoMilstein) else "stratonovich"
    terms = _gbm(bm, calculus=calculus)
    y0 = torch.ones(16, 2, dtype=torch.float64)
    shift = -0.5 * 0.8**2 if calculus == "ito" else 0.0
    errors, rejected = [], 0
    for tol in (1e-2, 1e-3, 1e-4) if calculus == "ito" else (3e-2, 3e-3, 3e-4):
        sol = tn.solve(
            terms, solver, 0.0, 1.0, y0, dt0=0.1, controller=tn.PIDController(rtol=tol, atol=tol)
        )
        exact = y0 * torch.exp((0.5 + shift) + 0.8 * bm(0.0, 1.0))
        errors.append(float((sol.ys[-1] - exact).abs().mean()))
        rejected += sol.stats["num_rejected_steps"]
    assert rejected > 0
    assert errors[2] < errors[1] < errors[0]
    # Strong error ~ tol^½ or better (≥ 10× over two decades); a path that re-drew the
    # increments of rejected steps would not converge at all.
    assert errors[2] < 0.1 * errors[0], errors


def test_arbitrary_state_shape_scalar_and_general_noise():
    bm_s = _bm((4, 1), 1)
    y0 = torch.ones(4, 2, 3, dtype=torch.float64)
    sol = tn.solve(_gbm(bm_s, noise="scalar"), tn.SRI2(), 0.0, 1.0, y0, dt0=0.25)
    exact = torch.exp((0.5 - 0.32) + 0.8 * bm_s(0.0, 1.0)).reshape(4, 1, 1) * y0
    assert sol.ys.shape == (1, 4, 2, 3)
    assert float((sol.ys[-1] - exact).abs().max()) < 0.05
    # general noise on a 3-D state: g of shape (4, 2, 3, m), increments of shape (4, m)
    bm_g = _bm((4, 2), 2)
    b = torch.tensor([0.3, -0.2], dtype=torch.float64)
    terms = tn.MultiTerm(
        tn.ODETerm(lambda t, y, args: 0.1 * y),
        tn.ControlTerm(lambda t, y, args: y[..., None] * b, bm_g, noise="general"),
    )
    sol = tn.solve(terms, tn.EulerMaruyama(), 0.0, 1.0, y0, dt0=1 / 16)
    w = (bm_g(0.0, 1.0) @ b).reshape(4, 1, 1)
    exact = y0 * torch.exp((0.1 - 0.5 * float((b**2).sum())) + w)
    assert float((sol.ys[-1] - exact).abs().max()) < 0.1


def _terms(noise="diagonal", calculus=None, bm=None):
    bm = bm if bm is not None else _bm((2, 2), 0)
    g = (lambda t, y, args: y[..., None].expand(2, 2, 2)) if noise == "general" else None
    g = g or (lambda t, y, args: y)
    return tn.MultiTerm(
        tn.ODETerm(lambda t, y, args: -y), tn.ControlTerm(g, bm, noise=noise, calculus=calculus)
    )


Y0 = torch.ones(2, 2, dtype=torch.float64)


@pytest.mark.parametrize(
    "solver, noise", [(tn.SRI2(), "general"), (tn.SRI2(), "additive"), (tn.SRA1(), "diagonal")]
)
def test_unsupported_noise_type_raises(solver, noise):
    with pytest.raises(NotImplementedError, match="supports noise types"):
        tn.solve(_terms(noise), solver, 0.0, 1.0, Y0, dt0=0.125)


@pytest.mark.parametrize(
    "solver, calculus, match",
    [
        (tn.Heun(), "ito", "converges to the Stratonovich solution"),
        (tn.ReversibleHeun(), "ito", "converges to the Stratonovich solution"),
        (tn.EulerMaruyama(), "stratonovich", "converges to the Ito solution"),
        (tn.Euler(), "stratonovich", "converges to the Ito solution"),
        (tn.SRI2(), "stratonovich", "converges to the Ito solution"),
        (tn.ItoMilstein(), "stratonovich", "converges to the Ito solution"),
        (tn.StratonovichMilstein(), "ito", "converges to the Stratonovich solution"),
    ],
)
def test_declared_calculus_mismatch_raises(solver, calculus, match):
    with pytest.raises(ValueError, match=match):
        tn.solve(_terms(calculus=calculus), solver, 0.0, 1.0, Y0, dt0=0.125)


def test_additive_noise_accepts_either_calculus():
    bm = _bm((2, 2), 0)
    for solver in (tn.Heun(), tn.EulerMaruyama(), tn.SRA1()):
        terms = tn.MultiTerm(
            tn.ODETerm(lambda t, y, args: -y),
            tn.ControlTerm(lambda t, y, args: torch.ones_like(y), bm, "additive", "ito"),
        )
        tn.solve(terms, solver, 0.0, 1.0, Y0, dt0=0.125, controller=tn.ConstantStepSize())


def test_non_sde_solver_with_declared_calculus_raises():
    with pytest.raises(NotImplementedError, match="does not solve SDEs"):
        tn.solve(_terms(calculus="stratonovich"), tn.Leapfrog(), 0.0, 1.0, Y0, dt0=0.125)


def test_control_term_argument_errors():
    with pytest.raises(ValueError, match="`noise` must be one of"):
        tn.ControlTerm(lambda t, y, a: y, _bm((2,), 0), noise="diag")
    with pytest.raises(ValueError, match="`calculus` must be 'ito', 'stratonovich' or None"):
        tn.ControlTerm(lambda t, y, a: y, _bm((2,), 0), calculus="Ito")
    with pytest.raises(TypeError, match="`control` must be a path"):
        tn.ControlTerm(lambda t, y, a: y, 3.0)


def test_sde_solver_needs_drift_and_diffusion_terms():
    with pytest.raises(TypeError, match=r"MultiTerm\(ODETerm\(drift\), ControlTerm"):
        tn.solve(tn.ODETerm(lambda t, y, a: -y), tn.EulerMaruyama(), 0.0, 1.0, Y0, dt0=0.1)


def test_sde_solver_reverse_time_raises():
    with pytest.raises(NotImplementedError, match="forward in time only"):
        tn.solve(_terms(), tn.EulerMaruyama(), 1.0, 0.0, Y0, dt0=0.125)


def test_levy_area_needed_raises():
    bm = _bm((2, 2), 0, levy_area=None)
    with pytest.raises(ValueError, match="levy_area=.space-time."):
        tn.solve(_terms(bm=bm), tn.SRI2(), 0.0, 1.0, Y0, dt0=0.125)


def test_adjoint_limits_raise():
    y0 = Y0.clone().requires_grad_(True)
    with pytest.raises(NotImplementedError, match="InterpolatedAdjoint does not support SDEs"):
        tn.solve(_terms(), tn.Midpoint(), 0.0, 1.0, y0, dt0=0.125,
                 controller=tn.ConstantStepSize(), adjoint=tn.InterpolatedAdjoint())  # fmt: skip
    with pytest.raises(NotImplementedError, match="Itô stochastic adjoint"):
        tn.solve(_terms("general", calculus="ito"), tn.EulerMaruyama(), 0.0, 1.0, y0,
                 dt0=0.125, adjoint=tn.BacksolveAdjoint())  # fmt: skip


@pytest.mark.parametrize("solver", [tn.EulerMaruyama(), tn.ItoMilstein(), tn.SRI2()])
def test_per_sample_end_times_match_joint_solves(solver):
    # Each sample steps on its own clock and reads its own row of the one Brownian motion, so
    # its result equals a joint solve to its own end time.
    bm = _bm((4, 2), 0)
    terms = tn.MultiTerm(
        tn.ODETerm(lambda t, y, args: -y),
        tn.ControlTerm(lambda t, y, args: torch.sin(y), bm, noise="diagonal", calculus="ito"),
    )
    y0 = torch.ones(4, 2, dtype=torch.float64)
    t1 = torch.tensor([1.0, 0.5, 0.75, 1.0], dtype=torch.float64)
    per_sample = tn.solve(
        terms, solver, 0.0, t1, y0, dt0=0.125, controller=tn.ConstantStepSize(per_sample=True)
    ).ys[-1]
    for i, end in enumerate(t1.tolist()):
        joint = tn.solve(terms, solver, 0.0, end, y0, dt0=0.125).ys[-1]
        torch.testing.assert_close(per_sample[i], joint[i], rtol=1e-12, atol=1e-12)
