"""Every documented bad argument fails at the boundary with a clear message.

Each message must name the argument as the user wrote it; most also show what was received.
``SolveError`` carries ``status``, ``t`` and ``num_steps``.
"""

from __future__ import annotations

import math

import pytest
import torch

import torchnde as tn

F64 = torch.float64


def decay(t, y, args):
    return -y


TERM = tn.ODETerm(decay)
Y0 = torch.ones(3, dtype=F64)
YB = torch.ones(2, 3, dtype=F64)  # a batch of 2


def solve(**kw):
    """``solve`` with sensible defaults, overridden by ``kw``."""
    a = dict(terms=TERM, solver=tn.Tsit5(), t0=0.0, t1=1.0, y0=Y0)
    a.update(kw)
    return tn.solve(a.pop("terms"), a.pop("solver"), a.pop("t0"), a.pop("t1"), a.pop("y0"), **a)


PER_SAMPLE = tn.PIDController(per_sample=True)

CASES = [
    # --- save times
    (
        "ts_not_monotonic",
        lambda: solve(saveat=tn.SaveAt(ts=[0.1, 0.5, 0.3])),
        ValueError,
        r"`saveat.ts` must be strictly increasing",
    ),
    (
        "ts_repeated",
        lambda: solve(saveat=tn.SaveAt(ts=[0.1, 0.5, 0.5])),
        ValueError,
        r"`saveat.ts` must be strictly increasing",
    ),
    (
        "ts_increasing_in_reverse_time",
        lambda: solve(t0=1.0, t1=0.0, saveat=tn.SaveAt(ts=[0.2, 0.8])),
        ValueError,
        r"`saveat.ts` must be strictly decreasing \(t1 < t0\)",
    ),
    (
        "ts_2d_in_joint_mode",
        lambda: solve(saveat=tn.SaveAt(ts=torch.rand(2, 3).sort(-1).values)),
        ValueError,
        r"`saveat.ts` must be 1-D.*per_sample=True",
    ),
    (
        "ts_wrong_batch_per_sample",
        lambda: solve(
            y0=YB, controller=PER_SAMPLE, saveat=tn.SaveAt(ts=torch.tensor([[0.1, 0.2]] * 3))
        ),
        ValueError,
        r"`saveat.ts` must have shape \(n,\) or \(2, n\)",
    ),
    (
        "ts_after_t1",
        lambda: solve(saveat=tn.SaveAt(ts=[0.5, 1.5])),
        ValueError,
        r"`saveat.ts` must lie within \[t0, t1\].*1\.5",
    ),
    (
        "ts_before_t0",
        lambda: solve(saveat=tn.SaveAt(ts=[-0.5, 0.5])),
        ValueError,
        r"`saveat.ts` must lie within \[t0, t1\].*-0\.5",
    ),
    (
        "ts_not_finite",
        lambda: solve(saveat=tn.SaveAt(ts=[0.5, math.nan])),
        ValueError,
        r"`saveat.ts` must be .*finite",
    ),
    ("ts_empty", lambda: solve(saveat=tn.SaveAt(ts=[])), ValueError, r"`saveat.ts` is empty"),
    (
        "ts_complex",
        lambda: solve(saveat=tn.SaveAt(ts=torch.tensor([0.5j]))),
        TypeError,
        r"`saveat.ts` must be real times",
    ),
    ("saveat_nothing", lambda: tn.SaveAt(), ValueError, r"SaveAt: nothing to save"),
    ("saveat_not_bool", lambda: tn.SaveAt(t1=1), TypeError, r"SaveAt: `t1` must be a bool"),
    (
        "saveat_wrong_type",
        lambda: solve(saveat={"t1": True}),
        TypeError,
        r"`saveat` must be a SaveAt",
    ),
    # --- the state
    (
        "y0_list_of_floats",
        lambda: solve(y0=[1.0, 2.0]),
        TypeError,
        r"`y0` must be a tensor or a tuple of tensors, got list",
    ),
    ("y0_numpy_like_float", lambda: solve(y0=1.0), TypeError, r"`y0` must be a tensor"),
    (
        "y0_integer",
        lambda: solve(y0=torch.ones(3, dtype=torch.int64)),
        TypeError,
        r"`y0` must be floating point.*torch.int64.*y0.double\(\)",
    ),
    (
        "y0_bool",
        lambda: solve(y0=torch.ones(3, dtype=torch.bool)),
        TypeError,
        r"`y0` must be floating point",
    ),
    (
        "y0_tuple_mixed_dtypes",
        lambda: solve(y0=(Y0, Y0.float())),
        ValueError,
        r"tuple `y0` must share one dtype",
    ),
    (
        "y0_tuple_with_integer",
        lambda: solve(y0=(Y0, torch.ones(2, dtype=torch.int32))),
        TypeError,
        r"`y0` must be floating point.*torch.int32",
    ),
    (
        "y0_scalar_per_sample",
        lambda: solve(y0=torch.ones((), dtype=F64), controller=PER_SAMPLE),
        ValueError,
        r"per-sample stepping needs `y0` with a leading batch dimension",
    ),
    (
        "y0_tuple_batches_differ_per_sample",
        lambda: solve(
            y0=(YB, torch.ones(3, 1, dtype=F64)),
            terms=tn.ODETerm(lambda t, y, a: y),
            controller=PER_SAMPLE,
        ),
        ValueError,
        r"leading batch dimension \(shared by every tensor",
    ),
    # --- the vector field
    (
        "f_wrong_shape",
        lambda: solve(terms=tn.ODETerm(lambda t, y, a: y[:2])),
        ValueError,
        r"vector field returned shape \(2,\) but the state has shape \(3,\)",
    ),
    (
        "f_broadcast_shape",
        lambda: solve(terms=tn.ODETerm(lambda t, y, a: -y[None])),
        ValueError,
        r"vector field returned shape \(1, 3\)",
    ),
    (
        "f_wrong_dtype",
        lambda: solve(terms=tn.ODETerm(lambda t, y, a: (-y).float())),
        TypeError,
        r"vector field returned dtype torch.float32 for a state of dtype torch.float64",
    ),
    (
        "f_not_a_tensor",
        lambda: solve(terms=tn.ODETerm(lambda t, y, a: 0.0)),
        TypeError,
        r"vector field must return a tensor.*float",
    ),
    (
        "f_tuple_wrong_length",
        lambda: solve(y0=(Y0, Y0), terms=tn.ODETerm(lambda t, y, a: (y[0],))),
        ValueError,
        r"vector field must return a tuple of 2 tensors.*length 1",
    ),
    (
        "f_tensor_for_tuple_state",
        lambda: solve(y0=(Y0, Y0), terms=tn.ODETerm(lambda t, y, a: y[0])),
        ValueError,
        r"vector field must return a tuple of 2 tensors.*Tensor",
    ),
    (
        "f_tuple_part_wrong_shape",
        lambda: solve(y0=(Y0, Y0), terms=tn.ODETerm(lambda t, y, a: (y[0], y[1][:1]))),
        ValueError,
        r"vector field returned shape \(4,\) but the state has shape \(6,\)",
    ),
    # --- tolerances and the controller
    ("rtol_zero", lambda: tn.PIDController(rtol=0.0), ValueError, r"`rtol` must be (a )?positive"),
    (
        "rtol_negative",
        lambda: tn.PIDController(rtol=-1e-3),
        ValueError,
        r"`rtol` must be (a )?positive.*-0.001",
    ),
    ("atol_zero", lambda: tn.PIDController(atol=0), ValueError, r"`atol` must be (a )?positive"),
    (
        "atol_negative_tensor",
        lambda: tn.PIDController(atol=torch.tensor([1e-6, -1.0])),
        ValueError,
        r"`atol` must be (a )?positive",
    ),
    (
        "rtol_nan",
        lambda: tn.PIDController(rtol=math.nan),
        ValueError,
        r"`rtol` must be (a )?positive",
    ),
    (
        "atol_does_not_broadcast",
        lambda: solve(controller=tn.PIDController(atol=torch.full((4,), 1e-6, dtype=F64))),
        ValueError,
        r"`atol` of shape \(4,\) does not broadcast against the state of shape \(3,\)",
    ),
    (
        "dtmin_above_dtmax",
        lambda: tn.PIDController(dtmin=1.0, dtmax=0.1),
        ValueError,
        r"`dtmin` \(1.0\) is larger than `dtmax` \(0.1\)",
    ),
    ("safety_above_one", lambda: tn.PIDController(safety=1.5), ValueError, r"`safety` must be in"),
    ("factors_inverted", lambda: tn.PIDController(factormin=2.0), ValueError, r"factormin"),
    (
        "pid_all_zero",
        lambda: tn.PIDController(icoeff=0.0),
        ValueError,
        r"`pcoeff`, `icoeff` and `dcoeff` are all 0",
    ),
    (
        "norm_not_callable",
        lambda: tn.PIDController(norm="rms"),
        TypeError,
        r"`norm` must be callable",
    ),
    (
        "step_ts_2d",
        lambda: tn.PIDController(step_ts=[[0.1, 0.2]]),
        ValueError,
        r"`step_ts` must be a 1-D sequence of times",
    ),
    (
        "jump_ts_2d",
        lambda: tn.ConstantStepSize(jump_ts=[[0.1], [0.2]]),
        ValueError,
        r"`jump_ts` must be a 1-D sequence of times",
    ),
    (
        "pid_with_fixed_step_solver",
        lambda: solve(solver=tn.RK4(), dt0=0.1, controller=tn.PIDController()),
        ValueError,
        r"`controller` is a PIDController but RK4\(\) has no error estimate",
    ),
    (
        "controller_wrong_type",
        lambda: solve(controller="pid"),
        TypeError,
        r"`controller` must be a step-size controller",
    ),
    # --- step size
    (
        "dt0_missing_fixed_step",
        lambda: solve(solver=tn.Euler()),
        ValueError,
        r"`dt0` is required with Euler\(\).*dt0=0.01",
    ),
    (
        "dt0_missing_constant_controller",
        lambda: solve(solver=tn.Dopri5(), controller=tn.ConstantStepSize()),
        ValueError,
        r"`dt0` is required",
    ),
    ("dt0_zero", lambda: solve(dt0=0.0), ValueError, r"`dt0` must be finite, non-zero"),
    ("dt0_wrong_sign", lambda: solve(dt0=-0.1), ValueError, r"`dt0` must .*point from t0 to t1"),
    ("dt0_nan", lambda: solve(dt0=math.nan), ValueError, r"`dt0` must be finite"),
    ("dt0_string", lambda: solve(dt0="0.1"), TypeError, r"`dt0` must be a number or a tensor"),
    (
        "max_steps_zero",
        lambda: solve(max_steps=0),
        ValueError,
        r"`max_steps` must be a positive int",
    ),
    (
        "max_steps_float",
        lambda: solve(max_steps=10.0),
        ValueError,
        r"`max_steps` must be a positive int",
    ),
    # --- solver, terms, adjoint, event
    (
        "solver_class",
        lambda: solve(solver=tn.Dopri5),
        TypeError,
        r"`solver` must be a solver instance: use Dopri5\(\)",
    ),
    ("solver_string", lambda: solve(solver="dopri5"), TypeError, r"`solver` must be a solver"),
    (
        "plain_function_as_terms",
        lambda: solve(terms=decay),
        TypeError,
        r"`terms` must be a term.*Wrap a function f\(t, y, args\) as ODETerm\(f\)",
    ),
    (
        "odeterm_not_callable",
        lambda: tn.ODETerm(3.0),
        TypeError,
        r"`vector_field` must be callable",
    ),
    (
        "adjoint_wrong_type",
        lambda: solve(adjoint="direct"),
        TypeError,
        r"`adjoint` must be an adjoint such as DirectAdjoint\(\)",
    ),
    (
        "event_plain_function",
        lambda: solve(event=lambda t, y, a: y[0]),
        TypeError,
        r"`event` must be an Event",
    ),
    (
        "event_bad_direction",
        lambda: tn.Event(lambda t, y, a: y, direction=2),
        ValueError,
        r"`direction` must be -1, 0 or \+1",
    ),
    (
        "event_direction_count",
        lambda: tn.Event([decay, decay], direction=[1]),
        ValueError,
        r"`direction` must be .*once per function \(2\)",
    ),
    ("event_not_callable", lambda: tn.Event(3), TypeError, r"Event: `fn` must be a callable"),
    # --- t0 / t1
    (
        "t0_vector_joint",
        lambda: solve(t0=torch.zeros(2)),
        ValueError,
        r"`t0` must be a scalar, got a tensor of shape \(2,\).*per_sample=True",
    ),
    ("t1_matrix_joint", lambda: solve(t1=torch.ones(1, 2)), ValueError, r"`t1` must be a scalar"),
    (
        "t1_wrong_batch_per_sample",
        lambda: solve(y0=YB, controller=PER_SAMPLE, t1=torch.ones(3)),
        ValueError,
        r"`t1` must be a scalar or shape \(2,\) \(per sample\)",
    ),
    ("t0_string", lambda: solve(t0="0"), TypeError, r"`t0` must be a number or a tensor"),
    ("t0_bool", lambda: solve(t0=True), TypeError, r"`t0` must be a number or a tensor"),
    ("t1_inf", lambda: solve(t1=math.inf), ValueError, r"`t1` must be finite"),
    ("t1_complex", lambda: solve(t1=torch.tensor(1j)), TypeError, r"`t1` must be a real time"),
    (
        "per_sample_mixed_directions",
        lambda: solve(y0=YB, controller=PER_SAMPLE, t1=torch.tensor([1.0, -1.0])),
        ValueError,
        r"`t0` and `t1` must run in one direction",
    ),
]


@pytest.mark.parametrize("make, exc, match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_argument_raises_a_message_naming_it(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


# --------------------------------------------------------------------------- odeint


def test_odeint_unknown_method_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"`method` must be one of \[.*'dopri5'.*'rk4'.*\]") as e:
        tn.odeint(lambda t, y: -y, Y0, torch.tensor([0.0, 1.0]), method="rk45")
    assert "'rk45'" in str(e.value)
    for name in tn.METHODS:
        assert repr(name) in str(e.value)


def test_odeint_unknown_options_are_named():
    with pytest.raises(ValueError, match=r"unknown `options` \['grid_points'\]; supported: \["):
        tn.odeint(lambda t, y: -y, Y0, torch.tensor([0.0, 1.0]), options={"grid_points": 3})


def test_odeint_t_must_be_1d():
    with pytest.raises(ValueError, match=r"odeint: `t` must be a 1-D tensor of times"):
        tn.odeint(lambda t, y: -y, Y0, torch.zeros(2, 2))


# --------------------------------------------------------------------------- Solution


def test_evaluate_with_wrong_per_sample_time_shape():
    sol = solve(y0=YB, controller=PER_SAMPLE, saveat=tn.SaveAt(dense=True))
    with pytest.raises(ValueError, match=r"per-sample solutions take a scalar or \(2,\) times"):
        sol.evaluate(torch.tensor([0.1, 0.2, 0.3], dtype=F64))


def test_evaluate_with_2d_time_in_joint_mode():
    sol = solve(saveat=tn.SaveAt(dense=True))
    with pytest.raises(ValueError, match=r"`t` must be a scalar or 1-D"):
        sol.evaluate(torch.zeros(2, 2, dtype=F64))


def test_evaluate_outside_the_solved_interval():
    sol = solve(saveat=tn.SaveAt(dense=True))
    with pytest.raises(ValueError, match=r"`t` lies outside the solved interval \[0, 1\]"):
        sol.evaluate(1.5)


# --------------------------------------------------------------------------- SolveError


def test_solve_error_carries_status_time_and_step_count():
    nan_after_half = lambda t, y, a: torch.where(t > 0.5, torch.full_like(y, math.nan), -y)
    with pytest.raises(tn.SolveError) as info:
        solve(terms=tn.ODETerm(nan_after_half), solver=tn.RK4(), dt0=0.125)
    err = info.value
    assert isinstance(err, RuntimeError)
    assert err.status is tn.Status.NONFINITE
    # Steps up to 0.5 are fine; the step from 0.5 evaluates f beyond 0.5 and fails.
    assert err.t == 0.5
    assert err.num_steps == 5
    msg = str(err)
    assert "t=0.5" in msg and "after 5 steps" in msg and "NONFINITE" in msg
    assert "throw=False" in msg


def test_solve_error_counts_failed_samples():
    nan_for_first = lambda t, y, a: torch.where(y > 1.5, torch.full_like(y, math.nan), -y)
    y0 = torch.tensor([[2.0], [1.0], [3.0]], dtype=F64)
    with pytest.raises(tn.SolveError, match=r"2 samples failed") as info:
        solve(
            terms=tn.ODETerm(nan_for_first),
            solver=tn.Euler(),
            y0=y0,
            dt0=0.1,
            controller=tn.ConstantStepSize(per_sample=True),
        )
    assert info.value.status is tn.Status.NONFINITE


@pytest.mark.parametrize("status", list(tn.Status))
def test_every_status_has_a_message(status):
    assert isinstance(status.message, str) and status.message
    assert status.is_success == (status in (tn.Status.SUCCESSFUL, tn.Status.EVENT_OCCURRED))
