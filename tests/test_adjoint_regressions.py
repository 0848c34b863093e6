"""Regression tests for the wrong gradients of issue 13, each the exact case reported, checked
against float64 central differences (the derivative of the computed solution).

- A save time on a step's end had gradient exactly 0 with respect to itself (the loop took the
  step's end value, which does not depend on the save time).
- The data of a natural cubic spline got twice its gradient (the spline's coefficient tensor
  and the slices of it the spline keeps were all taken as independent inputs).
- ``LinearInterpolation`` with data requiring grad, and a tensor ``q = 2 * p`` computed
  outside the solve, hit "backward through the graph a second time" (the slopes, or ``q``,
  were differentiated through their history once per step without keeping it).
- Fixed-step ``t1`` on a multiple of the step: the computed solution has a kink there (see
  ``test_t1_on_the_step_grid_is_a_kink_and_the_gradient_is_its_left_derivative``).
"""

from __future__ import annotations

import warnings

import pytest
import torch

import torchnde as tn
from torchnde.compat import torchdiffeq as tdq
from torchnde.compat import torchsde as tsde

F64 = torch.float64
EXACT = [tn.DirectAdjoint, tn.CheckpointAdjoint]


def _central(fn, x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Central differences of the scalar ``fn`` at ``x``, entry by entry."""
    out = torch.zeros_like(x)
    with torch.no_grad():
        for i in range(x.numel()):
            e = torch.zeros_like(x).reshape(-1)
            e[i] = eps
            e = e.reshape(x.shape)
            out.reshape(-1)[i] = (fn(x + e) - fn(x - e)) / (2 * eps)
    return out


def _left(fn, x: torch.Tensor, i: int, h: float = 1e-5) -> torch.Tensor:
    """Second-order backward difference of the scalar ``fn`` at ``x`` in entry ``i`` (for a
    save time on t1, which cannot move past it)."""
    e = torch.zeros_like(x).reshape(-1)
    e[i] = h
    e = e.reshape(x.shape)
    with torch.no_grad():
        return (3 * fn(x) - 4 * fn(x - e) + fn(x - 2 * e)) / (2 * h)


def _save_time_fd(fn, ts: torch.Tensor) -> torch.Tensor:
    """The left derivative in each save time: that of the step ending there (the convention
    for save times on step ends, where the interpolants of two steps meet)."""
    return torch.stack([_left(fn, ts, i) for i in range(ts.numel())]).reshape(ts.shape)


def _decay(solver, ts, adjoint, **kw):
    return tn.solve(
        tn.ODETerm(lambda t, y, a: -y),
        solver,
        0.0,
        1.0,
        torch.ones(2, dtype=F64),
        dt0=kw.pop("dt0", 0.25),
        saveat=tn.SaveAt(ts=ts),
        adjoint=adjoint,
        **kw,
    ).ys.sum()


@pytest.mark.parametrize("adjoint", [*EXACT, tn.BacksolveAdjoint])
@pytest.mark.parametrize("solver", [tn.RK4, tn.Euler])
def test_save_times_on_fixed_step_ends_get_their_gradient(solver, adjoint):
    ts = torch.tensor([0.5, 1.0], dtype=F64, requires_grad=True)
    (g,) = torch.autograd.grad(_decay(solver(), ts, adjoint()), ts)
    fd = _save_time_fd(lambda s: _decay(solver(), s, tn.DirectAdjoint()), ts.detach())
    assert (g != 0).all()
    if adjoint is tn.BacksolveAdjoint:  # f(ts, y(ts)): the exact solution's derivative
        torch.testing.assert_close(g, fd, rtol=0, atol=1e-6)
    else:
        torch.testing.assert_close(g, fd, rtol=1e-6, atol=0)
    if solver is tn.RK4:  # the reported values: d/ds 2 exp(-s)
        torch.testing.assert_close(g, -2 * torch.exp(-ts.detach()), rtol=1e-3, atol=0)


def test_save_times_on_step_ends_get_their_gradient_with_reversible_adjoint():
    ts = torch.tensor([0.5, 1.0], dtype=F64, requires_grad=True)
    solver = tn.ReversibleHeun()
    (g,) = torch.autograd.grad(_decay(solver, ts, tn.ReversibleAdjoint()), ts)
    fd = _save_time_fd(lambda s: _decay(solver, s, tn.DirectAdjoint()), ts.detach())
    torch.testing.assert_close(g, fd, rtol=1e-6, atol=0)


@pytest.mark.parametrize("adjoint", EXACT)
@pytest.mark.parametrize("where", ["step_ts", "jump_ts"])
def test_save_times_on_step_ts_and_jump_ts_get_their_gradient(where, adjoint):
    knots = torch.tensor([0.3, 0.7], dtype=F64)

    def loss(ts, adj):
        ctrl = tn.PIDController(rtol=1e-6, atol=1e-8, **{where: knots})
        return _decay(tn.Tsit5(), ts, adj, dt0=None, controller=ctrl)

    ts = knots.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(ts, adjoint()), ts)
    # The steps stay on the knots; only the save times move.
    fd = _save_time_fd(lambda s: loss(s, tn.DirectAdjoint()), ts.detach())
    torch.testing.assert_close(g, fd, rtol=1e-6, atol=0)


def _neural_cde(x, t, adjoint, interpolation):
    torch.manual_seed(0)
    w = torch.randn(3, 6, dtype=F64) * 0.3
    if interpolation == "cubic":
        path = tn.CubicSpline(tn.natural_cubic_coeffs(x, t), t)
    else:
        path = tn.LinearInterpolation(tn.linear_interpolation_coeffs(x, t), t)
    term = tn.CDETerm(lambda s, z, a: torch.tanh(z @ w).reshape(z.shape[0], 3, 2), path)
    z0 = torch.full((1, 3), 0.1, dtype=F64)
    return tn.solve(term, tn.RK4(), 0.0, 1.0, z0, dt0=0.05, adjoint=adjoint).ys.sum()


ALL_CDE_ADJOINTS = [tn.CheckpointAdjoint, tn.BacksolveAdjoint, tn.InterpolatedAdjoint]


@pytest.mark.parametrize("adjoint", ALL_CDE_ADJOINTS)
@pytest.mark.parametrize("interpolation", ["cubic", "linear"])
def test_cde_data_gets_its_gradient_once(interpolation, adjoint):
    torch.manual_seed(1)
    t = torch.linspace(0, 1, 5, dtype=F64)
    x = torch.randn(1, 5, 2, dtype=F64)
    fd = _central(lambda v: _neural_cde(v, t, tn.DirectAdjoint(), interpolation), x)
    xr = x.clone().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "gets no gradient" warning either
        (g,) = torch.autograd.grad(_neural_cde(xr, t, adjoint(), interpolation), xr)
    if adjoint is tn.CheckpointAdjoint:
        torch.testing.assert_close(g, fd, rtol=1e-6, atol=1e-9)
    else:  # approximate; was 2x before (an error of 100%)
        torch.testing.assert_close(g, fd, rtol=0, atol=5e-3 * float(fd.abs().max()))


def test_cde_data_gets_its_gradient_once_with_reversible_adjoint():
    torch.manual_seed(1)
    t = torch.linspace(0, 1, 5, dtype=F64)
    x = torch.randn(1, 5, 2, dtype=F64)
    w = torch.randn(3, 6, dtype=F64) * 0.3

    def loss(v, adjoint):
        path = tn.CubicSpline(tn.natural_cubic_coeffs(v, t), t)
        term = tn.CDETerm(lambda s, z, a: torch.tanh(z @ w).reshape(1, 3, 2), path)
        z0 = torch.full((1, 3), 0.1, dtype=F64)
        ctrl = tn.ConstantStepSize()
        sol = tn.solve(
            term, tn.ReversibleHeun(), 0.0, 1.0, z0, dt0=0.05, controller=ctrl, adjoint=adjoint
        )
        return sol.ys.sum()

    fd = _central(lambda v: loss(v, tn.DirectAdjoint()), x)
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(xr, tn.ReversibleAdjoint()), xr)
    torch.testing.assert_close(g, fd, rtol=1e-6, atol=1e-9)


def _derived(p, adjoint):
    q = 2 * p  # computed outside the solve from a parameter, closed over
    ctrl = tn.PIDController(rtol=1e-10, atol=1e-10)
    term = tn.ODETerm(lambda t, y, a: -q * y)
    y0 = torch.ones(2, dtype=F64)
    return tn.solve(term, tn.Dopri5(), 0.0, 1.0, y0, adjoint=adjoint, controller=ctrl).ys.sum()


@pytest.mark.parametrize(
    "adjoint",
    [
        tn.CheckpointAdjoint,
        lambda: tn.CheckpointAdjoint(params=[P]),
        tn.BacksolveAdjoint,
        lambda: tn.BacksolveAdjoint(params=[P]),
        tn.InterpolatedAdjoint,
    ],
    ids=["checkpoint", "checkpoint-params", "backsolve", "backsolve-params", "interpolated"],
)
def test_tensor_derived_from_a_parameter_outside_the_solve(adjoint):
    p = P
    fd = float(_central(lambda v: _derived(v, tn.DirectAdjoint()), p.detach()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (g,) = torch.autograd.grad(_derived(p, adjoint()), p)
    assert float(g) == pytest.approx(-4 * float(torch.exp(-2 * p)), rel=1e-6)
    assert float(g) == pytest.approx(fd, rel=1e-6)


P = torch.tensor(0.7, dtype=F64, requires_grad=True)


class _Field(torch.nn.Module):
    def __init__(self, q: torch.Tensor) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.3, dtype=F64))
        self.q = q

    def forward(self, t, y):
        return -self.q * y + self.w


def test_compat_odeint_adjoint_with_a_tensor_derived_from_a_parameter():
    def loss(p):
        func = _Field(2 * p)
        t = torch.tensor([0.0, 1.0], dtype=F64)
        y = tdq.odeint_adjoint(
            func,
            torch.ones(2, dtype=F64),
            t,
            rtol=1e-10,
            atol=1e-10,
            adjoint_params=(func.w, p) if p.requires_grad else (),
        )
        return y[-1].sum()

    p = torch.tensor(0.7, dtype=F64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (g,) = torch.autograd.grad(loss(p), p)
    assert float(g) == pytest.approx(float(_central(loss, p.detach())), rel=1e-6)


class _SDE(torch.nn.Module):
    noise_type = "diagonal"
    sde_type = "stratonovich"

    def __init__(self, q: torch.Tensor) -> None:
        super().__init__()
        self.q = q

    def f(self, t, y):
        return -self.q * y

    def g(self, t, y):
        return 0.1 * torch.ones_like(y)


def test_compat_sdeint_adjoint_with_a_tensor_derived_from_a_parameter():
    def loss(p, dt):
        bm = tsde.BrownianInterval(0.0, 1.0, size=(1, 2), dtype=F64, entropy=1)
        t = torch.tensor([0.0, 1.0], dtype=F64)
        y0 = torch.ones(1, 2, dtype=F64)
        ys = tsde.sdeint_adjoint(
            _SDE(2 * p), y0, t, bm=bm, method="midpoint", dt=dt, adjoint_params=(p,)
        )
        return ys[-1].sum()

    p = torch.tensor(0.7, dtype=F64, requires_grad=True)
    errors = []
    for dt in (1e-1, 1e-2):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            (g,) = torch.autograd.grad(loss(p, dt), p)
        errors.append(abs(float(g) - float(_central(lambda v, dt=dt: loss(v, dt), p.detach()))))
    # The stochastic adjoint is approximate: its error shrinks with the step.
    assert errors[1] < errors[0] / 5
    assert errors[1] < 1e-4


def _fixed_t1(t1, adjoint=None):
    sol = tn.solve(
        tn.ODETerm(lambda t, y, a: -y),
        tn.Euler(),
        0.0,
        t1,
        torch.ones(2, dtype=F64),
        dt0=1e-2,
        adjoint=adjoint or tn.DirectAdjoint(),
    )
    return sol.ys.sum()


@pytest.mark.parametrize("adjoint", EXACT)
def test_fixed_step_t1_between_grid_points_matches_central_differences(adjoint):
    t1 = torch.tensor(1.00314, dtype=F64, requires_grad=True)
    (g,) = torch.autograd.grad(_fixed_t1(t1, adjoint()), t1)
    assert float(g) == pytest.approx(float(_central(_fixed_t1, t1.detach())), rel=1e-6)


@pytest.mark.parametrize("adjoint", EXACT)
def test_t1_on_the_step_grid_is_a_kink_and_the_gradient_is_its_left_derivative(adjoint):
    """Euler, dt 1e-2, t1 = 1: just below t1 the 100th step is cut at t1; just above it a
    101st step of length t1 - 1 follows. The computed solution has different one-sided
    derivatives there, -2 * 0.99**99 and -2 * 0.99**100, and central differences give their
    mean (the reported "5e-3 relative" is exactly (1 - 0.99) / (1 + 0.99)). The gradient is
    the derivative of the step ending at t1, the left one, as for a save time on a step end.
    """
    t1 = torch.tensor(1.0, dtype=F64, requires_grad=True)
    (g,) = torch.autograd.grad(_fixed_t1(t1, adjoint()), t1)
    h = 1e-5
    with torch.no_grad():
        f = [_fixed_t1(torch.tensor(1.0 - k * h, dtype=F64)) for k in range(3)]
        right = [_fixed_t1(torch.tensor(1.0 + k * h, dtype=F64)) for k in range(3)]
    left_fd = (3 * f[0] - 4 * f[1] + f[2]) / (2 * h)
    right_fd = (-3 * right[0] + 4 * right[1] - right[2]) / (2 * h)
    assert float(g) == pytest.approx(float(left_fd), rel=1e-6)
    assert float(g) == pytest.approx(-2 * 0.99**99, rel=1e-6)
    assert float(right_fd) == pytest.approx(-2 * 0.99**100, rel=1e-6)


class _CDEFunc(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.variable = torch.nn.Parameter(torch.full((1, 1, 3), 0.3, dtype=F64))

    def forward(self, t, z):
        return z.sigmoid().unsqueeze(-1) + self.variable


def test_compat_cdeint_adjoint_through_coefficients_and_their_knot_times():
    """torchcde's ``test_grad_paths``: ``adjoint_params`` holds the spline's coefficients
    and the knot times they were computed from, and the output times require grad too. The
    coefficients are replaced by what they were computed from (the times and the data), each
    differentiated once; this raised "backward through the graph a second time"."""
    from torchnde.compat import torchcde as tcde

    torch.manual_seed(0)
    t0 = torch.linspace(0, 9, 10, dtype=F64)
    path0 = torch.rand(1, 10, 3, dtype=F64)
    z00 = torch.rand(1, 3, dtype=F64)
    out0 = torch.tensor([0.0, 9.0], dtype=F64)
    func = _CDEFunc()

    def loss(path, t, z0, out, adjoint):
        coeffs = tcde.natural_cubic_coeffs(path, t)
        spline = tcde.CubicSpline(coeffs, t)
        extra = dict(adjoint_params=(*func.parameters(), coeffs, t)) if adjoint else {}
        z = tcde.cdeint(
            X=spline, func=func, z0=z0, t=out, adjoint=adjoint, method="rk4",
            options=dict(step_size=0.05), **extra,
        )  # fmt: skip
        return z[:, 1].sum()

    inputs = [x.clone().requires_grad_(True) for x in (path0, t0, z00, out0)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = torch.autograd.grad(loss(*inputs, True), (*inputs, func.variable))
    assert all(g is not None for g in got)
    gen = torch.Generator().manual_seed(2)
    v = [torch.randn(x.shape, generator=gen, dtype=F64) for x in (path0, t0, z00)]
    v.append(torch.zeros(2, dtype=F64))  # the output times: moving them changes the grid
    # The end knots stay put: moving them would take the output times outside X.interval.
    v[1][0] = v[1][-1] = 0.0
    eps = 1e-6
    with torch.no_grad():
        plus = loss(*(x + eps * d for x, d in zip((path0, t0, z00, out0), v)), False)
        minus = loss(*(x - eps * d for x, d in zip((path0, t0, z00, out0), v)), False)
    fd = float((plus - minus) / (2 * eps))
    analytic = float(sum((g * d).sum() for g, d in zip(got[:4], v)))
    # BacksolveAdjoint is approximate: RK4 with steps of 0.05 both ways.
    assert analytic == pytest.approx(fd, rel=1e-5)


@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_compat_cdeint_adjoint_torchcde_grad_paths_case(method):
    """torchcde's own ``test_grad_paths`` as it is (float32): it failed with "Trying to
    backward through the graph a second time"."""
    from torchnde.compat import torchcde as tcde

    class Func(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.variable = torch.nn.Parameter(torch.rand(1, 1, 3))

        def forward(self, t, z):
            return z.sigmoid().unsqueeze(-1) + self.variable

    torch.manual_seed(0)
    t = torch.linspace(0, 9, 10, requires_grad=True)
    path = torch.rand(1, 10, 3, requires_grad=True)
    coeffs = tcde.natural_cubic_coeffs(path, t)
    z0 = torch.rand(1, 3, requires_grad=True)
    func = Func()
    t_ = torch.tensor([0.0, 9.0], requires_grad=True)
    z = tcde.cdeint(
        X=tcde.CubicSpline(coeffs, t), func=func, z0=z0, t=t_, adjoint=True, method=method,
        rtol=1e-4, atol=1e-6, adjoint_params=(*func.parameters(), coeffs, t),
    )  # fmt: skip
    z[:, 1].sum().backward()
    for x in (t, path, z0, func.variable, t_):
        assert isinstance(x.grad, torch.Tensor)


@pytest.mark.parametrize(
    "adjoint",
    [tn.DirectAdjoint, tn.CheckpointAdjoint, tn.BacksolveAdjoint, tn.InterpolatedAdjoint],
)
def test_complex_parameter_keeps_the_imaginary_part_of_its_gradient(adjoint):
    """A complex parameter (spectral weights) read by a real field: the continuous adjoints
    cast its gradient to the real state's dtype and dropped the imaginary part (with only a
    UserWarning). PyTorch's convention for a real loss is dL/dRe(w) + i dL/dIm(w)."""
    w = torch.tensor(0.3 + 0.4j, dtype=torch.complex128, requires_grad=True)

    def loss(w):
        sol = tn.solve(
            tn.ODETerm(lambda t, y, a: -(w**2).real * y), tn.Tsit5(), 0.0, 1.0,
            torch.ones(1, dtype=F64), controller=tn.PIDController(rtol=1e-10, atol=1e-12),
            adjoint=adjoint(),
        )  # fmt: skip
        return sol.ys.sum()

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (got,) = torch.autograd.grad(loss(w), w)
    eps = 1e-6
    with torch.no_grad():
        d_re = (loss(w + eps) - loss(w - eps)) / (2 * eps)
        d_im = (loss(w + 1j * eps) - loss(w - 1j * eps)) / (2 * eps)
    torch.testing.assert_close(got, torch.complex(d_re, d_im), rtol=1e-6, atol=1e-9)
