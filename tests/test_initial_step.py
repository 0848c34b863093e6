"""The automatic first step of `PIDController` against SciPy's `select_initial_step`.

Hairer, Nørsett & Wanner (1993), II.4 and their HINIT; SciPy uses the exponent
1 / (error_estimator_order + 1), which is 1 / error_order in torchnde's convention (the local
error estimate is ~ h^error_order): Dopri5 ~ RK45 (1/5), Bosh3 ~ RK23 (1/3), Dopri8 ~ DOP853 (1/8).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torchnde as tn

scipy_common = pytest.importorskip("scipy.integrate._ivp.common")


def _f(t, y):
    return torch.stack([y[..., 1], -torch.sin(y[..., 0]) - 0.3 * y[..., 1] ** 3], dim=-1)


@pytest.mark.parametrize(
    "solver, scipy_order",
    [(tn.Dopri5(), 4), (tn.Tsit5(), 4), (tn.Bosh3(), 2), (tn.Dopri8(), 7)],
)
@pytest.mark.parametrize("tol", [1e-3, 1e-7])
def test_first_step_matches_scipy(solver, scipy_order, tol):
    y0 = torch.tensor([1.3, -0.4], dtype=torch.float64)
    t0, t1 = torch.tensor(0.0, dtype=torch.float64), torch.tensor(10.0, dtype=torch.float64)
    term = tn.ODETerm(lambda t, y, args: _f(t, y))
    ctrl = tn.PIDController(rtol=tol, atol=tol)
    vf0 = term.vf(t0, y0, None)
    end, _, nfe = ctrl.init(term, t0, t1, y0, None, None, solver, vf0, None)
    assert nfe == 1

    def fun(t, y):
        return _f(t, torch.from_numpy(y)).numpy()

    y0n = y0.numpy()
    expected = scipy_common.select_initial_step(
        fun, 0.0, y0n, 10.0, np.inf, fun(0.0, y0n), 1.0, scipy_order, tol, tol
    )
    assert float(end - t0) == pytest.approx(expected, rel=1e-12)


def _first_end(ctrl, term, t0, t1, y0, grad):
    vf0 = term.vf(t0, y0, None)
    with torch.set_grad_enabled(grad):
        # With autograd on (and `differentiate_steps`), the first step is tensor arithmetic;
        # without, the same arithmetic on host numbers.
        end, _, nfe = ctrl.init(term, t0, t1, y0, None, None, tn.Dopri5(), vf0, ctrl.norm)
    assert nfe == 1
    return end.detach()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    "case", ["plain", "tiny interval", "dtmax", "flat", "blow-up", "nan norm", "zero state"]
)
def test_first_step_on_the_host_is_the_tensor_arithmetic(dtype, case):
    # The host arithmetic of `_initial_step_on_host` rounds where the tensors round; it
    # differs from them only where the tensor kernels round differently (a power, an FMA):
    # an ulp or two. Non-finite cases give the same non-finite result.
    y0 = torch.tensor([1.3, -0.4], dtype=dtype)
    t0, t1 = torch.tensor(0.0, dtype=dtype), torch.tensor(10.0, dtype=dtype)
    f = _f
    ctrl = tn.PIDController(rtol=1e-6, atol=1e-8)
    if case == "tiny interval":
        t1 = torch.tensor(1e-7, dtype=dtype)
    elif case == "dtmax":
        ctrl = tn.PIDController(rtol=1e-3, atol=1e-3, dtmax=1e-3)
    elif case == "flat":
        f = lambda t, y: torch.zeros_like(y)  # d1 < 1e-5: h0 = 1e-6
    elif case == "blow-up":
        f = lambda t, y: torch.where(t > 0, torch.inf, 1.0) * y
    elif case == "nan norm":
        ctrl = tn.PIDController(rtol=1e-6, atol=1e-8, norm=lambda x: x.sum() * torch.nan)
    elif case == "zero state":
        y0 = torch.zeros(2, dtype=dtype)
        f = lambda t, y: y + 1.0
    term = tn.ODETerm(lambda t, y, args: f(t, y))
    ctrl = ctrl.prepare(1.0, dtype, y0.device)
    a = _first_end(ctrl, term, t0, t1, y0, grad=True)
    b = _first_end(ctrl, term, t0, t1, y0, grad=False)
    if case == "nan norm":
        assert a.isnan() and b.isnan()
        return
    assert torch.isfinite(a) and torch.isfinite(b)
    torch.testing.assert_close(b, a, rtol=4 * torch.finfo(dtype).eps, atol=0)
