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
