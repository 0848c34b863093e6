"""Delay differential equations: DelayTerm and solve(..., history=) by the method of steps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from numpy.polynomial import Polynomial

import torchnde as tn
from problems.dde import scipy_dde


@pytest.fixture(autouse=True)
def _float64():
    """Every test of this file in float64 (restored afterwards: other files see float32)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _exact_minus_delayed(t1: int) -> list[Polynomial]:
    """y'(t) = -y(t - 1), y = 1 on [-1, 0]: the polynomial on [k, k+1] for k < t1, by the
    method of steps done exactly, y_{k+1}(t) = y_k(k+1) - int_{k+1}^t y_k(s - 1) ds."""
    pieces = [Polynomial([1.0])]  # on [-1, 0]
    for k in range(t1 + 1):
        prev = pieces[-1]  # on [k - 1, k]
        shifted = prev(Polynomial([-1.0, 1.0]))  # s -> prev(s - 1)
        anti = -shifted.integ()
        pieces.append(anti - anti(k) + prev(k))
    return pieces[1:]  # pieces[k] on [k, k+1]


def _eval_pieces(pieces: list[Polynomial], t: float) -> float:
    k = min(int(math.floor(t)), len(pieces) - 1)
    if t == k and k > 0:
        k -= 1
    return float(pieces[k](t))


def test_exact_pieces_are_the_known_polynomials():
    p = _exact_minus_delayed(3)
    for t in (0.3, 1.4, 2.7):
        by_hand = 1 - t if t <= 1 else 1 - t + (t - 1) ** 2 / 2
        if t > 2:
            by_hand -= (t - 2) ** 3 / 6
        assert _eval_pieces(p, t) == pytest.approx(by_hand, abs=1e-14)


@pytest.mark.parametrize("solver", [tn.Dopri5(), tn.Tsit5()])
def test_minus_delayed_matches_the_piecewise_polynomial_solution(solver):
    term = tn.DelayTerm(lambda t, y, yd, args: -yd[0], [1.0])
    ts = torch.linspace(0, 6, 25)
    sol = tn.solve(
        term,
        solver,
        0.0,
        6.0,
        torch.ones(()),
        saveat=tn.SaveAt(ts=ts),
        controller=tn.PIDController(rtol=1e-9, atol=1e-11),
    )
    pieces = _exact_minus_delayed(6)
    exact = torch.tensor([_eval_pieces(pieces, float(t)) for t in ts])
    torch.testing.assert_close(sol.ys, exact, rtol=0, atol=1e-8)
    torch.testing.assert_close(sol.ts, ts)
    # The dense solution covers the history too.
    dense = tn.solve(
        term, solver, 0.0, 6.0, torch.ones(()), saveat=tn.SaveAt(dense=True, t1=True),
        controller=tn.PIDController(rtol=1e-10, atol=1e-12),
    )  # fmt: skip
    assert float(dense.evaluate(torch.tensor(-0.5))) == 1.0
    assert float(dense.evaluate(torch.tensor(2.5))) == pytest.approx(
        _eval_pieces(pieces, 2.5), abs=1e-8
    )


def test_state_dependent_delay_matches_an_independent_scipy_reference():
    # y' = -y(t - tau(y)) + 0.1 sin t, tau = 1 + y^2 / (1 + y^2) in [1, 2]; history cos t.
    def tau_np(t, y):
        return 1.0 + y[0] ** 2 / (1 + y[0] ** 2)

    ref, _ = scipy_dde(
        lambda t, y, yd: -yd[0] + 0.1 * np.sin(t),
        [tau_np],
        lambda t: np.array([np.cos(t)]),
        0.0,
        8.0,
        np.array([1.0]),
        min_delay=1.0,
        rtol=1e-12,
        atol=1e-13,
    )
    term = tn.DelayTerm(
        lambda t, y, yd, args: -yd[0] + 0.1 * torch.sin(t),
        [lambda t, y, args: 1.0 + y[..., 0] ** 2 / (1 + y[..., 0] ** 2)],
        min_delay=1.0,
    )
    ts = torch.linspace(0.5, 8.0, 16)
    sol = tn.solve(
        term,
        tn.Dopri5(),
        0.0,
        8.0,
        torch.ones(1),
        saveat=tn.SaveAt(ts=ts),
        history=lambda t: torch.cos(t).reshape(1),
        controller=tn.PIDController(rtol=1e-11, atol=1e-12),
    )
    expect = torch.tensor(np.array([ref(float(t)) for t in ts]))
    torch.testing.assert_close(sol.ys, expect, rtol=0, atol=1e-7)


def _two_delay_problem():
    """y' = -sin(y)/2 - y(t - 1) - y(t - sqrt 2)/2, y = 1 before 0: the derivatives jump at
    1, sqrt 2, 2, 1 + sqrt 2, 2 sqrt 2 (discontinuities the method must step to)."""
    r2 = math.sqrt(2.0)
    points = sorted({1.0, r2, 2.0, 1 + r2, 2 * r2, 3.0, 2 + r2})
    ref, _ = scipy_dde(
        lambda t, y, yd: -0.5 * np.sin(y) - yd[0] - 0.5 * yd[1],
        [1.0, r2],
        lambda t: np.array([1.0]),
        0.0,
        3.0,
        np.array([1.0]),
        breakpoints=points,
        rtol=1e-13,
        atol=1e-14,
    )
    term_on = tn.DelayTerm(
        lambda t, y, yd, args: -0.5 * torch.sin(y) - yd[0] - 0.5 * yd[1], [1.0, r2]
    )
    term_off = tn.DelayTerm(
        lambda t, y, yd, args: -0.5 * torch.sin(y) - yd[0] - 0.5 * yd[1],
        [1.0, r2],
        track_discontinuities=False,
    )
    return ref, term_on, term_off


def _slope(term, ref, ns):
    errs = []
    for n in ns:
        sol = tn.solve(term, tn.RK4(), 0.0, 3.0, torch.ones(1), dt0=1.0 / n)
        errs.append(abs(float(sol.ys[-1, 0]) - float(ref(3.0)[0])))
    return np.polyfit(np.log(1.0 / np.array(ns)), np.log(errs), 1)[0], errs


def test_segment_ends_with_rounding_read_the_history():
    # Segments of 0.4: at t = 0.4 * 3 the delayed time t - 0.4 is 0.8000000000000002, ulps
    # past the solved history's end 0.4 * 2 (this raised "internal error" before).
    f = lambda t, y, yd: -yd[0] - 0.5 * yd[1]
    ref, _ = scipy_dde(f, [0.4, 0.7], lambda t: np.ones(1), 0.0, 2.0, np.ones(1))
    term = tn.DelayTerm(lambda t, y, yd, args: f(t, y, yd), [0.4, 0.7])
    sol = tn.solve(
        term, tn.Dopri5(), 0.0, 2.0, torch.ones(1, dtype=torch.float64),
        controller=tn.PIDController(rtol=1e-10, atol=1e-12), saveat=tn.SaveAt(ts=[1.0, 2.0]),
    )  # fmt: skip
    np.testing.assert_allclose(sol.ys.numpy(), np.stack([ref(1.0), ref(2.0)]), atol=1e-8)


def test_convergence_order_with_and_without_discontinuity_tracking():
    ref, term_on, term_off = _two_delay_problem()
    ns = [8, 16, 32, 64]
    on, errs_on = _slope(term_on, ref, ns)
    off, errs_off = _slope(term_off, ref, ns)
    # RK4 (with its cubic Hermite dense output for the history) keeps order 4 when it steps
    # to the discontinuities; stepping over the jump of y'' at sqrt 2 costs an order.
    assert on > 3.7, (on, errs_on)
    assert off < 3.3, (off, errs_off)
    assert errs_off[-1] > 10 * errs_on[-1]


def test_discontinuities_are_sums_of_delays_up_to_the_order():
    term = tn.DelayTerm(lambda t, y, yd, args: yd[0], [1.0, 1.5])
    assert term.discontinuities(0.0, 10.0, 2) == [1.0, 1.5, 2.0, 2.5, 3.0]
    off = tn.DelayTerm(lambda t, y, yd, args: yd[0], [1.0], track_discontinuities=False)
    assert off.discontinuities(0.0, 10.0, 5) == []


def test_per_sample_batch_composition_does_not_change_a_sample():
    def f(t, y, yd, args):
        return -yd[0] * (1 + 0.5 * y)

    term = tn.DelayTerm(f, [0.7, lambda t, y, args: 0.8 + 0.1 * torch.tanh(y[:, 0])], min_delay=0.7)
    y0 = torch.tensor([[0.5], [1.0], [2.0]])

    def run(y):
        return tn.solve(
            term, tn.Tsit5(), 0.0, 3.0, y,
            controller=tn.PIDController(rtol=1e-8, atol=1e-9, per_sample=True),
            history=lambda t: y * torch.cos(t)[:, None],
        ).ys[-1]  # fmt: skip

    both = run(y0)
    for i in range(3):
        # Equal up to the rounding of batched arithmetic.
        torch.testing.assert_close(both[i : i + 1], run(y0[i : i + 1]), rtol=0, atol=1e-14)
    # Joint stepping gives the same solution to the tolerance.
    joint = tn.solve(
        term, tn.Tsit5(), 0.0, 3.0, y0, controller=tn.PIDController(rtol=1e-10, atol=1e-11),
        history=lambda t: y0 * torch.cos(t).reshape(-1, 1),
    ).ys[-1]  # fmt: skip
    torch.testing.assert_close(joint, both, rtol=0, atol=1e-6)


class _History(torch.nn.Module):
    """phi(t) = a + b t, learnable."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor([0.8]))
        self.b = torch.nn.Parameter(torch.tensor([0.3]))

    def forward(self, t):
        return self.a + self.b * t.reshape(-1)[:1]


@pytest.mark.parametrize("adjoint", [tn.DirectAdjoint, tn.CheckpointAdjoint])
@pytest.mark.parametrize("learnable_history", [False, True])
def test_gradients_match_central_finite_differences(learnable_history, adjoint):
    # Fixed steps: the discrete map is smooth in every input (adaptive step choices would
    # add noise of the tolerance's size to the differences). Inputs: a parameter of f, a
    # learnable delay, and y0 (constant history) or the history's parameters (an nn.Module,
    # with y0 = phi(t0): a history continuous at t0, see docs/usage/delay.md).
    k = torch.tensor(1.3, requires_grad=True)
    tau = torch.tensor(0.93, requires_grad=True)
    y0 = torch.tensor([1.1], requires_grad=True)
    phi = _History()

    def loss():
        term = tn.DelayTerm(
            lambda t, y, yd, args: -k * yd[0] + 0.2 * torch.sin(y) * yd[1], [tau, 0.5]
        )
        start = phi(torch.zeros(())) if learnable_history else y0
        sol = tn.solve(
            term, tn.RK4(), 0.0, 2.0, start, dt0=1 / 20,
            history=phi if learnable_history else None, saveat=tn.SaveAt(ts=[0.7, 1.3, 2.0]),
            adjoint=adjoint(),
        )  # fmt: skip
        return (sol.ys**2).sum()

    inputs = (k, tau, phi.a, phi.b) if learnable_history else (k, tau, y0)
    grads = torch.autograd.grad(loss(), inputs)
    eps = 1e-6
    for x, g in zip(inputs, grads):
        fd = torch.zeros_like(x)
        for j in range(x.numel()):
            with torch.no_grad():
                x.view(-1)[j] += eps
                up = loss()
                x.view(-1)[j] -= 2 * eps
                dn = loss()
                x.view(-1)[j] += eps
            fd.view(-1)[j] = (up - dn) / (2 * eps)
        torch.testing.assert_close(g, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("adjoint", [tn.DirectAdjoint, tn.CheckpointAdjoint])
def test_learnable_delay_gradient_matches_the_exact_derivative(adjoint):
    # y' = -y(t - tau), y = 1 before 0, on [0, 1] with tau in (0.5, 1): y = 1 - t for
    # t <= tau, then y = 1 - t + (t - tau)^2 / 2, so dy(1)/dtau = -(1 - tau) exactly.
    tau = torch.tensor(0.75, requires_grad=True)
    term = tn.DelayTerm(lambda t, y, yd, args: -yd[0], [tau])
    sol = tn.solve(
        term, tn.Dopri5(), 0.0, 1.0, torch.ones(()),
        controller=tn.PIDController(rtol=1e-11, atol=1e-12), adjoint=adjoint(),
    )  # fmt: skip
    assert float(sol.ys[-1].detach()) == pytest.approx(1 - 1 + 0.25**2 / 2, abs=1e-9)
    (g,) = torch.autograd.grad(sol.ys[-1], tau)
    assert float(g) == pytest.approx(-(1 - 0.75), abs=1e-7)


def test_checkpoint_adjoint_keeps_no_activations_after_the_forward_pass():
    # Tensors saved for backward outside the segments' checkpoints (seen by an outer
    # saved-tensor hook): Direct's grow with the number of steps, Checkpoint's do not (each
    # segment's activations are recomputed in the backward pass).
    k = torch.tensor(1.3, requires_grad=True)

    def saved(adjoint, dt):
        n = [0]

        def pack(x):
            n[0] += 1
            return x

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            term = tn.DelayTerm(lambda t, y, yd, args: -k * yd[0], [0.5])
            y0 = torch.ones(1, dtype=torch.float64)
            tn.solve(term, tn.RK4(), 0.0, 2.0, y0, dt0=dt, adjoint=adjoint)
        return n[0]

    direct = [saved(tn.DirectAdjoint(), dt) for dt in (1 / 8, 1 / 16)]
    checkpoint = [saved(tn.CheckpointAdjoint(), dt) for dt in (1 / 8, 1 / 16)]
    assert direct[1] > 1.9 * direct[0]
    assert checkpoint[1] == checkpoint[0] < direct[0] / 10


def _f(t, y, yd, args):
    return -yd[0]


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: tn.DelayTerm(_f, [-1.0]), ValueError, r"`delays\[0\]` must be a positive"),
        (lambda: tn.DelayTerm(_f, [0.0]), ValueError, r"`delays\[0\]` must be a positive"),
        (
            lambda: tn.DelayTerm(_f, [torch.tensor(-0.5)]),
            ValueError,
            r"`delays\[0\]` must be positive, got -0.5",
        ),
        (lambda: tn.DelayTerm(_f, 1.0), TypeError, r"write delays=\[tau\]"),
        (lambda: tn.DelayTerm(_f, []), ValueError, r"`delays` is empty"),
        (lambda: tn.DelayTerm(_f, ["x"]), TypeError, r"`delays\[0\]` must be a number"),
        (
            lambda: tn.DelayTerm(_f, [lambda t, y, args: 1.0]),
            ValueError,
            r"needs `min_delay`",
        ),
        (
            lambda: tn.DelayTerm(_f, [1.0], min_delay=-1.0),
            ValueError,
            r"`min_delay` must be positive",
        ),
        (lambda: tn.DelayTerm(3, [1.0]), TypeError, r"`vector_field` must be callable"),
    ],
)
def test_bad_delay_term_is_refused(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_history_of_the_wrong_shape_is_refused():
    term = tn.DelayTerm(_f, [1.0])
    with pytest.raises(ValueError, match=r"`history` must return the shape of `y0` \(3,\)"):
        tn.solve(term, tn.Tsit5(), 0.0, 1.0, torch.ones(3), history=lambda t: torch.ones(2))
    with pytest.raises(TypeError, match=r"`history` must be callable as phi\(t\)"):
        tn.solve(term, tn.Tsit5(), 0.0, 1.0, torch.ones(3), history=torch.ones(3))


def test_history_without_a_delay_term_is_refused():
    with pytest.raises(TypeError, match=r"`history` is for a DelayTerm"):
        tn.solve(
            tn.ODETerm(lambda t, y, a: -y), tn.Tsit5(), 0.0, 1.0, torch.ones(1), history=lambda t: 1
        )


def test_state_dependent_delay_below_its_bound_fails_clearly():
    term = tn.DelayTerm(_f, [lambda t, y, args: 0.5 * torch.ones(())], min_delay=1.0)
    with pytest.raises(ValueError, match=r"fell below `min_delay`=1"):
        tn.solve(term, tn.Tsit5(), 0.0, 2.0, torch.ones(1))


def test_unsupported_adjoint_is_refused():
    term = tn.DelayTerm(_f, [1.0])
    with pytest.raises(NotImplementedError, match=r"BacksolveAdjoint\(\) is not supported"):
        tn.solve(term, tn.Tsit5(), 0.0, 1.0, torch.ones(1), adjoint=tn.BacksolveAdjoint())
