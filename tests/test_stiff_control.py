"""Step-size control for stiff solvers: Gustafsson's predictive controller and the step-size
hold (``PIDController(predictive=..., hold=...)``), and the solvers that declare them.

* The tensor controller follows Hairer & Wanner's formulas (Solving ODEs II, IV.8, RADAU5):
  a hand-written host version of them, step for step, and the host control agrees.
* A factor in the hold band keeps the step size exactly; outside it, it does not.
* The solver's declaration decides, not its class: a subclass that declares nothing gets the
  integral controller, and explicit settings override the declaration.
* Radau5, Rodas5 and Kvaerno5 with their declared control still match SciPy's Radau at
  rtol 1e-10 within the solve's tolerance, with step counts near SciPy's and, for Radau5,
  fewer Jacobians than steps.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import torchnde as tn
from problems.stiff import STIFF, radau_reference

F64 = torch.float64


def _hairer(ratios, hs, k, safety=0.9, fmin=0.2, fmax=10.0, band=None):
    """The next step sizes of RADAU5's controller (with Gustafsson's prediction), written
    from the book: h_new = h * min(fac, fac_gus) clipped, no growth after a rejection,
    the hold band, err_acc floored at 1e-2."""
    out = []
    h_acc, err_acc, rejected = None, None, False
    for err, h in zip(ratios, hs):
        accept = err <= 1
        fac = min(max(safety * max(err, 1e-10) ** (-1 / k), fmin), fmax)
        if accept:
            if h_acc is not None:
                gus = safety * (h / h_acc) * (err_acc / max(err, 1e-10)) ** (1 / k)
                gus *= max(err, 1e-10) ** (-1 / k)
                fac = min(fac, min(max(gus, fmin), fmax))
            if rejected:
                fac = min(fac, 1.0)
            if band is not None and band[0] <= fac <= band[1]:
                fac = 1.0
            h_acc, err_acc, rejected = h, max(err, 1e-2), False
        else:
            if rejected:
                fac = min(fac, 1.0)
            rejected = True
        out.append((accept, h * fac))
    return out


@pytest.mark.parametrize("band", [None, (1.0, 1.2)])
def test_predictive_controller_follows_hairers_formulas(band) -> None:
    ctrl = tn.PIDController(predictive=True, hold=band if band else False)
    g = torch.Generator().manual_seed(3)
    ratios = (10 ** (3 * torch.rand(60, generator=g, dtype=F64) - 2)).tolist()
    ratios[5:9] = [0.7, 0.69, 0.68, 0.5]  # factors near 1: inside the hold band
    hs = (0.1 * torch.rand(60, generator=g, dtype=F64) + 1e-3).tolist()
    expect = _hairer(ratios, hs, 4.0, band=band)
    y0 = torch.zeros(3, dtype=F64)
    state = (
        torch.tensor(1.0, dtype=F64), torch.tensor(0.0, dtype=F64), None,
        torch.tensor(False),
    )  # fmt: skip
    host = ctrl.host_state()
    t0 = torch.tensor(0.0, dtype=F64)
    held, prev_accept = 0, True
    for (acc_e, h_e), r, h in zip(expect, ratios, hs):
        e = torch.full((3,), r * ctrl.atol, dtype=F64)  # RMS ratio r (y = 0)
        t1 = t0 + h
        acc, nt0, nt1, _, state = ctrl.adapt(t0, t1, y0, y0, e, 4, state, None)
        acc_h, h_host, host = ctrl.host_adapt(r, float(t1 - t0), 4.0, host)
        assert bool(acc) == acc_e == acc_h
        assert math.isclose(float(nt1 - nt0), h_e, rel_tol=1e-9)
        assert math.isclose(h_host, h_e, rel_tol=1e-9)
        # (After a rejection the step is kept from growing, so it may stay the same too.)
        held += h_e == h and prev_accept
        prev_accept = acc_e
        t0 = nt0
    # The band was exercised (and only with a band does the step stay the same).
    assert (held > 0) == (band is not None)


def test_hold_keeps_the_step_size_exactly() -> None:
    ctrl = tn.PIDController(hold=(1.0, 1.2))
    y0 = torch.zeros(2, dtype=F64)
    t0, t1 = torch.tensor(0.25, dtype=F64), torch.tensor(0.5, dtype=F64)
    state = (torch.tensor(1.0, dtype=F64),) * 2 + (None,)
    for ratio, kept in ((0.6, True), (0.9**4, True), (0.1, False), (0.95, False)):
        # factor = 0.9 ratio^(-1/4): 1.02 and 1.0 are held, 1.6 and 0.91 are not.
        e = torch.full((2,), ratio * ctrl.atol, dtype=F64)
        acc, nt0, nt1, _, _ = ctrl.adapt(t0, t1, y0, y0, e, 4, state, None)
        assert bool(acc)
        assert (float(nt1 - nt0) == 0.25) == kept, ratio


class _Undeclared(tn.Radau5):
    predictive_control = False
    hold_step = None


def _robertson(rtol, solver, **kw):
    p = STIFF["robertson"]
    return tn.solve(
        tn.ODETerm(lambda t, y, a: p.f(t, y)), solver, 0.0, p.t1,
        torch.tensor(p.y0, dtype=F64), controller=tn.PIDController(rtol=rtol, atol=1e-10, **kw),
    )  # fmt: skip


def test_the_solvers_declaration_decides() -> None:
    declared = _robertson(1e-5, tn.Radau5())
    undeclared = _Undeclared()
    plain = _robertson(1e-5, undeclared)
    off = _robertson(1e-5, tn.Radau5(), predictive=False, hold=False)
    on = _robertson(1e-5, undeclared, predictive=True, hold=(1.0, 1.2))
    # Explicit settings override the declaration, both ways, with the same steps as the
    # declaration they copy.
    assert off.stats == plain.stats
    assert on.stats == declared.stats
    assert declared.stats["num_steps"] != plain.stats["num_steps"]
    torch.testing.assert_close(on.ys, declared.ys, rtol=0, atol=0)
    # A PID controller (pcoeff != 0) is not replaced by the prediction.
    pid = _robertson(1e-5, tn.Radau5(), pcoeff=0.3, icoeff=0.4)
    pid_plain = _robertson(1e-5, undeclared, pcoeff=0.3, icoeff=0.4, hold=(1.0, 1.2))
    assert pid.stats == pid_plain.stats


def test_bad_control_arguments() -> None:
    with pytest.raises(ValueError, match="pcoeff"):
        tn.PIDController(predictive=True, pcoeff=0.4, icoeff=0.3)
    with pytest.raises(ValueError, match="band"):
        tn.PIDController(hold=True)
    with pytest.raises(ValueError, match="lo <= 1"):
        tn.PIDController(hold=(1.1, 1.2))
    with pytest.raises(TypeError, match="pair"):
        tn.PIDController(hold=1.2)
    with pytest.raises(TypeError, match="predictive"):
        tn.PIDController(predictive=1)


def _scipy_steps(name: str, rtol: float, atol: float) -> int:
    p = STIFF[name]
    sol = solve_ivp(
        lambda t, y: p.f(t, y), (0.0, p.t1), np.array(p.y0, dtype=float), method="Radau",
        rtol=rtol, atol=atol,
    )  # fmt: skip
    return int(sol.t.size - 1)


@pytest.mark.parametrize("solver", [tn.Radau5, tn.Rodas5, tn.Kvaerno5], ids=lambda s: s.__name__)
def test_declared_control_keeps_robertson_accurate_in_few_steps(solver) -> None:
    p = STIFF["robertson"]
    rtol, atol = 1e-6, 1e-10
    sol = _robertson(rtol, solver(jacobian="finite_difference"))
    ref = radau_reference("robertson")
    # 100 rtol: a tolerance-proportional global error (the reference is 1e4 times tighter).
    err = np.abs(sol.ys[-1].numpy() - ref) / np.maximum(np.abs(ref), atol)
    assert err.max() < 100 * rtol, err
    steps = int(sol.stats["num_steps"])
    assert steps <= 1.5 * _scipy_steps("robertson", rtol, atol), sol.stats
    assert sol.stats["num_rejected_steps"] <= 0.2 * steps, sol.stats
    assert p.t1 == 1e5


def test_radau5_on_van_der_pol_rejects_few_steps_and_reuses_jacobians() -> None:
    p = STIFF["vdp1000"]
    rtol = atol = 1e-6
    sol = tn.solve(
        tn.ODETerm(lambda t, y, a: p.f(t, y)), tn.Radau5(jacobian="finite_difference"), 0.0,
        p.t1, torch.tensor(p.y0, dtype=F64), controller=tn.PIDController(rtol=rtol, atol=atol),
    )  # fmt: skip
    ref = radau_reference("vdp1000")
    # At t1 = the slow branch of the limit cycle (tolerance-proportional error).
    err = np.abs(sol.ys[-1].numpy() - ref) / np.maximum(np.abs(ref), atol)
    assert err.max() < 100 * rtol, err
    st = sol.stats
    assert st["num_steps"] <= 1.5 * _scipy_steps("vdp1000", rtol, atol), st
    assert st["num_rejected_steps"] <= 0.1 * st["num_steps"], st
    assert st["num_jacobians"] <= 0.5 * st["num_steps"], st


def test_time_derivative_of_rosenbrock_steps() -> None:
    from torchnde._core.newton import FlatODE
    from torchnde._core.rosenbrock import _time_derivative

    y = torch.tensor([[0.5, -2.0]], dtype=F64)
    t = torch.tensor(0.7, dtype=F64)
    h = torch.tensor(0.01, dtype=F64)

    def flat(fn):
        term = tn.ODETerm(fn)
        return FlatODE(term, None, y, False, "finite_difference", t)

    # Non-autonomous: d/dt (sin t) y = cos(t) y, to the central difference's eps^(2/3).
    g = flat(lambda t, y, a: torch.sin(t) * y)
    ft, evals = _time_derivative(g, t, y, g(t, y), h, central=True)
    assert evals == 2
    torch.testing.assert_close(ft, torch.cos(t) * y, rtol=1e-9, atol=1e-9)
    # Autonomous: exactly zero (None: the stages skip the term), from one evaluation.
    g = flat(lambda t, y, a: -y * y)
    ft, evals = _time_derivative(g, t, y, g(t, y), h, central=True)
    assert evals == 1 and ft is None
