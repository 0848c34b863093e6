"""Capabilities the engine reads from declarations, not from the class of an object: the
frozen ``Problem``, adaptive controllers, the user's term behind wrappers, the SDE split."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import torchnde as tn
from torchnde._core.packing import PackedTerm, ReversedTerm, StateSpec


class _Delegating(tn.AbstractAdaptiveController):
    """An adaptive controller that is not a PIDController: it declares rtol/atol/norm and
    delegates the stepping to one."""

    def __init__(self, rtol: float, atol: float) -> None:
        self.rtol, self.atol, self.norm = rtol, atol, None
        self._pid = tn.PIDController(rtol=rtol, atol=atol)

    def init(self, *a, **k):  # type: ignore[override]
        return self._pid.init(*a, **k)

    def adapt(self, *a, **k):  # type: ignore[override]
        return self._pid.adapt(*a, **k)


def _decay(t, y, args):
    return -y


def test_problem_is_frozen_after_normalisation():
    seen = {}

    class Mutating(tn.AbstractAdjoint):
        def apply(self, problem):
            seen["problem"] = problem
            with pytest.raises(dataclasses.FrozenInstanceError):
                problem.t1 = problem.t0  # type: ignore[misc]
            return tn.DirectAdjoint().apply(problem.replace(max_steps=100))

    y0 = torch.ones(2, dtype=torch.float64)
    sol = tn.solve(tn.ODETerm(_decay), tn.Tsit5(), 0.0, 1.0, y0, adjoint=Mutating())
    torch.testing.assert_close(sol.ys[-1], y0 * math.exp(-1.0), rtol=1e-4, atol=1e-6)
    assert seen["problem"].max_steps == 65536  # replace made a new problem


def test_a_declared_adaptive_controller_is_refused_with_a_fixed_step_solver():
    with pytest.raises(ValueError, match=r"`controller` is a _Delegating but RK4\(\) has no error"):
        tn.solve(
            tn.ODETerm(_decay), tn.RK4(), 0.0, 1.0, torch.ones(2), dt0=0.1,
            controller=_Delegating(1e-6, 1e-8),
        )  # fmt: skip


def test_adams_measures_its_error_with_the_tolerances_a_declared_controller_gives():
    y0 = torch.ones(3, dtype=torch.float64)
    sol = tn.solve(
        tn.ODETerm(_decay), tn.Adams(), 0.0, 2.0, y0, controller=_Delegating(1e-9, 1e-11)
    )
    ref = tn.solve(
        tn.ODETerm(_decay), tn.Adams(), 0.0, 2.0, y0,
        controller=tn.PIDController(rtol=1e-9, atol=1e-11),
    )  # fmt: skip
    torch.testing.assert_close(sol.ys[-1], y0 * math.exp(-2.0), rtol=1e-7, atol=0)
    assert sol.stats["num_steps"] == ref.stats["num_steps"]
    torch.testing.assert_close(sol.ys, ref.ys, rtol=0, atol=0)


def test_a_declared_controller_with_tensor_tolerances_is_checked_against_the_state():
    ctrl = _Delegating(1e-6, 1e-8)
    ctrl.rtol = torch.full((3,), 1e-6)
    with pytest.raises(ValueError, match=r"_Delegating `rtol` of shape \(3,\) does not broadcast"):
        tn.solve(tn.ODETerm(_decay), tn.Tsit5(), 0.0, 1.0, torch.ones(2), controller=ctrl)


def test_base_term_sees_through_packing_and_reverse_time():
    term = tn.ODETerm(_decay)
    spec = StateSpec((torch.ones(2), torch.ones(3)), per_sample=False)
    assert ReversedTerm(PackedTerm(term, spec)).base_term() is term
    assert term.base_term() is term


def test_sde_parts_are_declared_by_the_term_in_either_order():
    drift = tn.ODETerm(_decay)
    bm = tn.BrownianInterval(0.0, 1.0, shape=(2,), seed=0)
    diffusion = tn.ControlTerm(lambda t, y, args: y, bm, noise="diagonal")
    assert tn.MultiTerm(drift, diffusion).sde_parts() == (drift, diffusion)
    assert tn.MultiTerm(diffusion, drift).sde_parts() == (drift, diffusion)
    assert diffusion.sde_parts() == (None, diffusion)
    assert drift.sde_parts() is None
    assert tn.MultiTerm(drift, drift).sde_parts() is None
    with pytest.raises(TypeError, match=r"EulerMaruyama\(\) solves SDEs given as MultiTerm"):
        tn.solve(tn.MultiTerm(drift, drift), tn.EulerMaruyama(), 0.0, 1.0, torch.ones(2), dt0=0.1)


def test_runge_kutta_dense_output_is_declared_by_the_tableau():
    assert tn.Tsit5.dense_output == "polynomial"
    assert tn.Dopri5.dense_output == "polynomial"
    assert tn.RK4.dense_output == "hermite"
    midpoint = tn.ButcherTableau(a=[[0.5]], b=[0.0, 1.0], c=[0.0, 0.5], order=2)
    assert tn.ExplicitRungeKutta(midpoint).dense_output == "hermite"
    # RK4 carries a cubic Hermite interpolant: exact for a cubic solution y = t^3.
    term = tn.ODETerm(lambda t, y, args: 3 * t**2 * torch.ones_like(y))
    sol = tn.solve(
        term, tn.RK4(), 0.0, 1.0, torch.zeros(1, dtype=torch.float64), dt0=0.5,
        saveat=tn.SaveAt(dense=True),
    )  # fmt: skip
    t = torch.tensor([0.1, 0.3, 0.7], dtype=torch.float64)
    torch.testing.assert_close(sol.evaluate(t)[:, 0], t**3, rtol=1e-12, atol=1e-14)
