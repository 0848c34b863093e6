"""Inputs that used to give silent garbage or unclear failures now give the right answer, a
clear error naming the argument and the fix, or a failed solve whose status and message say
where the NaN is.

Non-finite starts end at once (zero steps, no spinning to ``max_steps``); a step that blows up
mid-solve is still rejected and retried smaller; per sample, only the bad sample fails.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch

import torchnde as tn

F64 = torch.float64
NAN = math.nan


def decay(t, y, args):
    return -y


TERM = tn.ODETerm(decay)
PER_SAMPLE = tn.PIDController(per_sample=True)


def solve(terms=TERM, solver=None, t0=0.0, t1=1.0, y0=None, **kw):
    solver = tn.Tsit5() if solver is None else solver
    y0 = torch.ones(2, dtype=F64) if y0 is None else y0
    return tn.solve(terms, solver, t0, t1, y0, **kw)


class Counted:
    """A vector field that counts its evaluations."""

    def __init__(self, f):
        self.f, self.n = f, 0

    def __call__(self, t, y, args):
        self.n += 1
        return self.f(t, y, args)


# --------------------------------------------------------------------------- 1. tolerances


@pytest.mark.parametrize(
    "kw, name",
    [
        (dict(rtol=math.inf, atol=math.inf), "rtol"),
        (dict(atol=math.inf), "atol"),
        (dict(rtol=-math.inf), "rtol"),
        (dict(atol=NAN), "atol"),
        (dict(rtol=torch.tensor([1e-6, math.inf], dtype=F64)), "rtol"),
        (dict(atol=torch.tensor([1e-6, NAN], dtype=F64)), "atol"),
        (dict(dtmin=math.inf), "dtmin"),
        (dict(dtmax=NAN), "dtmax"),
        (dict(pcoeff=NAN), "pcoeff"),
        (dict(dcoeff=math.inf), "dcoeff"),
    ],
)
def test_non_finite_controller_settings_are_a_value_error_naming_them(kw, name):
    with pytest.raises(ValueError, match=rf"PIDController: `{name}` must be .*finite"):
        tn.PIDController(**kw)


def test_infinite_tolerances_no_longer_succeed_with_an_arbitrary_error():
    # Used to "succeed" in 7 steps with an error of 186 on y' = -y.
    with pytest.raises(ValueError, match=r"`rtol` must be a positive, finite number"):
        solve(controller=tn.PIDController(rtol=math.inf, atol=math.inf))


def test_factor_bounds_of_the_wrong_type_are_a_type_error():
    with pytest.raises(TypeError, match=r"PIDController: `factormax` must be a number"):
        tn.PIDController(factormax="10")


def test_infinite_dtmax_means_no_limit():
    a = solve(controller=tn.PIDController(dtmax=math.inf))
    b = solve(controller=tn.PIDController())
    assert a.stats["num_steps"] == b.stats["num_steps"]
    torch.testing.assert_close(a.ys, b.ys, rtol=0, atol=0)


# --------------------------------------------------------------------------- 2. events


def test_boolean_event_is_a_type_error_naming_the_continuous_fix():
    event = tn.Event(lambda t, y, a: y[0, 0] < 0.5)
    with pytest.raises(TypeError, match=r"returned a bool.*`y\[0, 0\] - 0.5` instead of"):
        solve(y0=torch.ones(1, 2, dtype=F64), event=event)


def test_the_suggested_continuous_event_fires_where_the_boolean_never_did():
    event = tn.Event(lambda t, y, a: y[0, 0] - 0.5)
    sol = solve(y0=torch.ones(1, 2, dtype=F64), event=event)
    assert int(sol.status) == tn.Status.EVENT_OCCURRED
    torch.testing.assert_close(sol.ts[-1], torch.tensor(math.log(2), dtype=F64), rtol=1e-5, atol=0)


@pytest.mark.parametrize(
    "fn, match",
    [
        (lambda t, y, a: float(y[0]) - 0.5, r"`fn` must return a tensor, got float.*not `float"),
        (lambda t, y, a: None, r"`fn` must return a tensor, got NoneType None \(a missing"),
        (lambda t, y, a: (y[0] > 0.5).long(), r"`fn` must return a real floating-point tensor"),
        (lambda t, y, a: y[:0], r"`fn` returned an empty tensor"),
    ],
)
def test_event_functions_returning_a_non_tensor_or_no_sign_are_clear_errors(fn, match):
    with pytest.raises((TypeError, ValueError), match=match):
        solve(event=tn.Event(fn))


def test_each_of_several_event_functions_is_named():
    good = lambda t, y, a: y[0] - 0.5
    with pytest.raises(TypeError, match=r"Event: `fn\[1\]` returned a bool"):
        solve(event=tn.Event([good, lambda t, y, a: y[0] < 0.5]))


@pytest.mark.parametrize("fn", [lambda t, y, a: y[0, 0] - 0.5, lambda t, y, a: y[:2, 0] - 0.5])
def test_per_sample_event_of_the_wrong_shape_is_a_value_error(fn):
    with pytest.raises(ValueError, match=r"per-sample stepping `fn` must return one value per "):
        solve(y0=torch.ones(3, 2, dtype=F64), controller=PER_SAMPLE, event=tn.Event(fn))


def test_event_nan_at_the_start_is_a_failed_solve_not_a_success():
    event = tn.Event(lambda t, y, a: y[0] * NAN)
    with pytest.raises(tn.SolveError, match=r"NONFINITE: an event function returned NaN") as e:
        solve(event=event)
    assert e.value.num_steps == 0
    sol = solve(event=event, throw=False)
    assert int(sol.status) == tn.Status.NONFINITE and not sol.success


def test_event_nan_mid_solve_fails_at_the_first_accepted_point_where_it_is_nan():
    nan_late = lambda t, y, a: torch.where(t > 0.5, NAN, 1.0) + 0 * y[0]
    with pytest.raises(tn.SolveError, match=r"NONFINITE: an event function returned NaN") as e:
        solve(event=tn.Event(nan_late))
    assert 0.5 < e.value.t < 1.0
    fixed = solve(solver=tn.RK4(), dt0=0.1, event=tn.Event(nan_late), throw=False)
    assert int(fixed.status) == tn.Status.NONFINITE


def test_per_sample_event_nan_fails_only_its_sample():
    # Sample 0's event is NaN after t = 0.5, sample 1's crosses zero at t = log 2.
    def fn(t, y, a):
        return torch.where((t > 0.5) & (torch.arange(2) == 0), NAN, y[:, 0] - 0.5)

    y0 = torch.ones(2, 1, dtype=F64)
    sol = solve(y0=y0, controller=PER_SAMPLE, event=tn.Event(fn), throw=False)
    assert sol.status.tolist() == [tn.Status.NONFINITE, tn.Status.EVENT_OCCURRED]
    torch.testing.assert_close(
        sol.ts[1, -1], torch.tensor(math.log(2), dtype=F64), rtol=1e-5, atol=0
    )


# --------------------------------------------------------------------------- 3. non-finite


@pytest.mark.parametrize("bad", [NAN, math.inf])
@pytest.mark.parametrize(
    "solver, kw",
    [(tn.Tsit5(), {}), (tn.Tsit5(), dict(dt0=0.1)), (tn.RK4(), dict(dt0=0.1))],
    ids=["adaptive", "adaptive-dt0", "fixed"],
)
def test_non_finite_y0_ends_at_once_naming_y0(bad, solver, kw):
    y0 = torch.tensor([1.0, bad, 2.0], dtype=F64)
    with pytest.raises(tn.SolveError, match=r"NONFINITE: `y0` contains NaN or inf \(1 of 3") as e:
        solve(solver=solver, y0=y0, **kw)
    assert e.value.status is tn.Status.NONFINITE
    assert e.value.num_steps == 0 and e.value.t == 0.0
    sol = solve(solver=solver, y0=y0, throw=False, **kw)
    assert int(sol.status) == tn.Status.NONFINITE and sol.stats["num_steps"] == 0


def test_huge_finite_y0_is_not_mistaken_for_inf():
    # The joint start check sums y0 and f(t0, y0) first; the sum overflows, the state does not.
    y0 = torch.full((3,), 1e308, dtype=F64)
    sol = solve(y0=y0)
    assert int(sol.status) == tn.Status.SUCCESSFUL
    torch.testing.assert_close(sol.ys[-1], y0 / math.e, rtol=1e-5, atol=0)


@pytest.mark.parametrize("kw", [{}, dict(dt0=0.1)], ids=["dt0-chosen", "dt0-given"])
def test_nan_weights_end_at_once_naming_the_vector_field_without_extra_evaluations(kw):
    w = torch.full((2, 2), NAN, dtype=F64)
    f = Counted(lambda t, y, a: y @ w)
    with pytest.raises(
        tn.SolveError, match=r"NONFINITE: the vector field returned NaN or inf at t0"
    ):
        solve(terms=tn.ODETerm(f), **kw)
    sol = solve(terms=tn.ODETerm(f), throw=False, **kw)
    assert sol.stats["num_steps"] == 0
    # The check reuses what initialisation evaluates anyway: no evaluation is added.
    healthy = Counted(decay)
    f.n = 0
    solve(terms=tn.ODETerm(f), throw=False, max_steps=1, **kw)
    solve(terms=tn.ODETerm(healthy), max_steps=1, throw=False, **kw)
    assert f.n <= healthy.n


@pytest.mark.parametrize("kw", [{}, dict(dt0=0.1)], ids=["dt0-chosen", "dt0-given"])
def test_norm_nan_everywhere_ends_at_once_naming_the_norm(kw):
    ctrl = tn.PIDController(norm=lambda x: x.abs().max() * NAN)
    with pytest.raises(tn.SolveError, match=r"NONFINITE: the error `norm` returned NaN .* at t0"):
        solve(controller=ctrl, **kw)
    assert solve(controller=ctrl, throw=False, **kw).stats["num_steps"] == 0


def _nan_below_one(x):
    # Finite for y0 / tolerance (about 1e5), NaN for the small scaled errors of a solve.
    m = x.abs().max()
    return torch.where(m < 1, NAN, m)


def test_norm_nan_for_a_finite_error_is_nonfinite_not_an_underflow_blamed_on_stiffness():
    ctrl = tn.PIDController(norm=_nan_below_one)
    with pytest.raises(
        tn.SolveError,
        match=r"NONFINITE: the error `norm` returned NaN or inf "
        r"for a finite error estimate",
    ) as e:
        solve(controller=ctrl, dt0=0.1)
    assert "stiff" not in str(e.value)
    # Only the rejections it takes to shrink the step to the floor: no spinning.
    assert e.value.num_steps < 50


def test_per_sample_nan_y0_fails_only_its_sample_and_the_others_are_unchanged():
    y0 = torch.tensor([[1.0], [NAN], [2.0]], dtype=F64)
    kw = dict(controller=PER_SAMPLE, saveat=tn.SaveAt(ts=[0.5, 1.0]))
    sol = solve(y0=y0, throw=False, **kw)
    assert sol.status.tolist() == [0, tn.Status.NONFINITE, 0]
    alone = solve(y0=y0[[0, 2]], **kw)
    torch.testing.assert_close(sol.ys[:, [0, 2]], alone.ys, rtol=0, atol=0)
    exact = torch.tensor([1.0, 2.0], dtype=F64) / math.e
    torch.testing.assert_close(sol.ys[-1, [0, 2], 0], exact, rtol=1e-5, atol=0)
    with pytest.raises(
        tn.SolveError, match=r"`y0` contains NaN or inf \(1 of 1 elements for sample 1\)"
    ):
        solve(y0=y0, **kw)


def test_per_sample_nan_weights_or_norm_fail_only_their_sample():
    w = torch.tensor([1.0, NAN, 1.0], dtype=F64)[:, None]
    sol = solve(
        tn.ODETerm(lambda t, y, a: -y * w),
        y0=torch.ones(3, 1, dtype=F64),
        controller=PER_SAMPLE,
        throw=False,
    )
    assert sol.status.tolist() == [0, tn.Status.NONFINITE, 0]

    def norm(x):  # NaN for sample 1 once the error is small
        m = x.reshape(x.shape[0], -1).abs().amax(1)
        return torch.where((m < 1) & (torch.arange(3) == 1), NAN, m)

    ctrl = tn.PIDController(per_sample=True, norm=norm)
    sol = solve(y0=torch.ones(3, 1, dtype=F64), controller=ctrl, dt0=0.1, throw=False)
    assert sol.status.tolist() == [0, tn.Status.NONFINITE, 0]
    exact = torch.full((2,), 1 / math.e, dtype=F64)
    torch.testing.assert_close(sol.ys[-1, [0, 2], 0], exact, rtol=1e-5, atol=0)


def _inf_above_three(t, y, args):
    # y' = y², y(0) = 1: y = 1 / (1 - t) stays below 3 up to t = 0.6, where it is 2.5.
    return torch.where(y > 3, torch.full_like(y, math.inf), y * y)


@pytest.mark.parametrize(
    "controller",
    [
        tn.PIDController(rtol=1e-8, atol=1e-8),
        tn.PIDController(rtol=1e-8, atol=1e-8, per_sample=True),
    ],
)
def test_a_step_that_overflows_mid_solve_is_still_rejected_and_retried_smaller(controller):
    # dt0 = 0.5 overshoots into the region where f is inf: rejected, shrunk, then fine.
    y0 = torch.ones(2, 1, dtype=F64)
    sol = solve(tn.ODETerm(_inf_above_three), t1=0.6, y0=y0, dt0=0.5, controller=controller)
    assert bool((sol.status == 0).all())
    assert int(torch.as_tensor(sol.stats["num_rejected_steps"]).min()) >= 1
    torch.testing.assert_close(sol.ys[-1], torch.full_like(y0, 2.5), rtol=1e-6, atol=0)


def test_a_vector_field_nan_past_a_time_is_nonfinite_with_the_time():
    nan_late = lambda t, y, a: torch.where(t > 0.5, torch.full_like(y, NAN), -y)
    with pytest.raises(tn.SolveError, match=r"NONFINITE: every step from the point reached") as e:
        solve(tn.ODETerm(nan_late), solver=tn.Dopri5())
    assert e.value.t == pytest.approx(0.5, abs=1e-9)


# --------------------------------------------------------------------------- 4. precision


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("solver, kw", [(tn.Tsit5(), {}), (tn.RK4(), dict(dt0=0.1))])
def test_half_precision_states_are_refused_up_front_with_the_fix(dtype, solver, kw):
    match = rf"`y0` has dtype {dtype}.*float32 or float64 \(y0.float\(\)\).*torch.autocast"
    with pytest.raises(TypeError, match=match):
        solve(solver=solver, y0=torch.ones(2, dtype=dtype), **kw)


def test_underflow_from_a_coarse_time_dtype_names_precision_not_stiffness():
    # float32 times near 1e5 cannot resolve steps below about 0.2 on an interval of length 1.
    f = tn.ODETerm(lambda t, y, a: -1000 * (y - torch.cos(t)))
    kw = dict(controller=tn.PIDController(rtol=1e-5, atol=1e-6))
    with pytest.raises(
        tn.SolveError,
        match=r"DT_UNDERFLOW: .*resolution of the time dtype "
        r"torch.float32.*pass t0 and t1 as float64 tensors",
    ) as e:
        tn.solve(f, tn.Dopri5(), 1e5, 1e5 + 1, torch.ones(2), **kw)
    assert "stiff" not in str(e.value)
    # The fix works: float64 time, float32 state.
    t0, t1 = torch.tensor(1e5, dtype=F64), torch.tensor(1e5 + 1, dtype=F64)
    sol = tn.solve(f, tn.Dopri5(), t0, t1, torch.ones(2), **kw)
    assert int(sol.status) == 0 and sol.ys.dtype == torch.float32
    torch.testing.assert_close(sol.ys[-1], torch.cos(t1).float().expand(2), rtol=1e-3, atol=1e-3)


def test_underflow_below_dtmin_names_dtmin():
    stiff = tn.ODETerm(lambda t, y, a: -1e6 * (y - torch.cos(t)))
    with pytest.raises(
        tn.SolveError, match=r"DT_UNDERFLOW: the step size fell below `dtmin`=0.001"
    ):
        solve(stiff, solver=tn.Dopri5(), controller=tn.PIDController(dtmin=1e-3))


# --------------------------------------------------------------------------- 5. clear errors


@pytest.mark.parametrize(
    "solver, kw",
    [
        (tn.Tsit5(), {}),
        (tn.Tsit5(), dict(dt0=0.1)),
        (tn.RK4(), dict(dt0=0.1)),
        (tn.Kvaerno5(), {}),
    ],
)
def test_vector_field_returning_none_names_the_missing_return(solver, kw):
    def f(t, y, args):
        -y  # noqa: B018 - the bug under test

    with pytest.raises(
        TypeError,
        match=r"vector field must return a tensor.*got NoneType None "
        r"\(a missing `return`\?\)",
    ):
        solve(tn.ODETerm(f), solver=solver, **kw)


def test_vector_field_on_another_device_names_both_devices():
    f = lambda t, y, a: (-y).to("meta")
    with pytest.raises(
        ValueError,
        match=r"vector field returned a tensor on meta for a state on "
        r"cpu.*module.to\(y0.device\)",
    ):
        solve(tn.ODETerm(f))


def test_vector_field_dtype_message_mentions_autocast():
    with pytest.raises(
        TypeError,
        match=r"dtype torch.float32 for a state of dtype torch.float64.*"
        r"autocast",
    ):
        solve(tn.ODETerm(lambda t, y, a: (-y).float()))


class TwoArgField(torch.nn.Module):
    def forward(self, t, y):
        return -y


@pytest.mark.parametrize(
    "f, shown",
    [
        (lambda t, y: -y, r"\(t, y\)"),
        (TwoArgField(), r"TwoArgField.forward has signature \(t, y\)"),
    ],
)
def test_odeterm_with_a_t_y_function_says_how_to_wrap_it(f, shown):
    with pytest.raises(TypeError, match=shown + r".*ODETerm\(lambda t, y, args: f\(t, y\)\)"):
        tn.ODETerm(f)


def test_odeterm_accepts_what_can_be_called_with_t_y_args():
    def four(scale, t, y, args):
        return -scale * y

    class Field(torch.nn.Module):
        def forward(self, t, y, args=None):
            return -y

    # torch.add: a builtin whose signature Python cannot inspect is let through.
    for f in (functools.partial(four, 2.0), Field(), lambda t, y, *a: -y, torch.add):
        tn.ODETerm(f)
    with pytest.raises(TypeError, match=r"Identity.forward has signature \(input.*give it the "):
        tn.ODETerm(torch.nn.Identity())
    # The wrapped (t, y) function solves as the message says.
    sol = solve(tn.ODETerm(lambda t, y, args: TwoArgField()(t, y)))
    torch.testing.assert_close(
        sol.ys[-1], torch.full((2,), 1 / math.e, dtype=F64), rtol=1e-5, atol=0
    )


@pytest.mark.parametrize("ts", [["a", "b"], [0.5, None], [True, False], "0.5"])
def test_saveat_ts_that_are_not_numbers_are_a_type_error(ts):
    with pytest.raises(TypeError, match=r"SaveAt: `ts` must be a tensor or a sequence of real"):
        tn.SaveAt(ts=ts)


def test_saveat_nested_per_sample_lists_are_still_accepted():
    saveat = tn.SaveAt(ts=[[0.5, 1.0], [0.25, 1.0]])
    sol = solve(y0=torch.ones(2, 1, dtype=F64), controller=PER_SAMPLE, saveat=saveat)
    expect = torch.exp(-torch.tensor([[0.5, 1.0], [0.25, 1.0]], dtype=F64)).T[..., None]
    torch.testing.assert_close(sol.ys, expect, rtol=1e-5, atol=0)


@pytest.mark.parametrize(
    "norm, per_sample, exc, match",
    [
        (lambda x: x.abs(), False, ValueError, r"must return a 0-d tensor .* got shape \(2,\)"),
        (
            lambda x: x.abs().max()[None],
            False,
            ValueError,
            r"must return a 0-d .* got shape \(1,\)",
        ),
        (
            lambda x: x.abs().max(),
            True,
            ValueError,
            r"must return shape \(2,\), one value per sample.*"
            r"got shape \(\)",
        ),
        (lambda x: 1.0, False, TypeError, r"must return a floating-point tensor.*got float"),
    ],
)
def test_a_norm_of_the_wrong_shape_or_type_is_a_clear_error(norm, per_sample, exc, match):
    ctrl = tn.PIDController(norm=norm, per_sample=per_sample)
    with pytest.raises(exc, match=r"PIDController `norm` " + match):
        solve(y0=torch.ones(2, 2, dtype=F64) if per_sample else None, controller=ctrl)


def test_a_valid_norm_on_a_tuple_state_is_accepted():
    ctrl = tn.PIDController(norm=lambda parts: max(p.abs().max() for p in parts))
    y0 = (torch.ones(2, dtype=F64), torch.ones(3, dtype=F64))
    sol = solve(tn.ODETerm(lambda t, y, a: (-y[0], -y[1])), y0=y0, controller=ctrl)
    torch.testing.assert_close(
        sol.ys[1][-1], torch.full((3,), 1 / math.e, dtype=F64), rtol=1e-4, atol=0
    )
