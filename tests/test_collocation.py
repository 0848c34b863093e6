"""Collocation: kernel-smoothed derivatives (DiffEqFlux's collocate_data) and fitting a vector
field by regression, no solver in the loop."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchnde.discovery import (
    KERNELS,
    STLSQ,
    CollocationDerivative,
    FiniteDifference,
    SINDy,
    collocate_data,
    fit_collocation,
)

D = torch.float64


@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_local_quadratic_derivatives_are_exact_on_quadratics(kernel):
    t = torch.linspace(0.0, 2.0, 41, dtype=D) ** 1.2  # uneven times
    x = torch.stack([1 + 2 * t - 0.5 * t**2, 3 * t], -1)
    x_dot, smooth = collocate_data(x, t, kernel)
    torch.testing.assert_close(x_dot, torch.stack([2 - t, 3 * torch.ones_like(t)], -1))
    # the local linear smoother is exact on the linear feature
    torch.testing.assert_close(smooth[:, 1], x[:, 1])


def test_kernel_smoothing_beats_finite_differences_on_noise():
    t = torch.linspace(0.0, 6.0, 121, dtype=D)
    g = torch.Generator().manual_seed(0)
    x = torch.sin(t)[:, None] + 0.02 * torch.randn(121, 1, generator=g, dtype=D)
    truth = torch.cos(t)[:, None]
    kernel = CollocationDerivative("epanechnikov", bandwidth=0.05)(x, t)
    fd = FiniteDifference()(x, t)
    err_k = float((kernel - truth)[5:-5].abs().mean())
    err_fd = float((fd - truth)[5:-5].abs().mean())
    assert err_k < 0.3 * err_fd, (err_k, err_fd)


def test_fit_collocation_recovers_a_linear_field_without_a_solver():
    a = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=D)
    t = torch.linspace(0.0, 4.0, 201, dtype=D)
    x0 = torch.tensor([2.0, 0.0], dtype=D)
    xs = torch.stack([torch.linalg.matrix_exp(a * float(s)) @ x0 for s in t])

    class Linear(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(2, 2, bias=False, dtype=D)
            nn.init.zeros_(self.lin.weight)

        def forward(self, t, y, args=None):
            return self.lin(y)

    field = Linear()
    mse = fit_collocation(field, xs, t, kernel="epanechnikov", bandwidth=0.03, steps=0,
                          lbfgs_steps=50)  # fmt: skip
    assert mse < 1e-4
    torch.testing.assert_close(field.lin.weight.detach(), a, atol=2e-2, rtol=0)


def test_sindy_with_collocation_derivatives_on_noisy_lotka_volterra():
    import torchnde

    def lv(t, y, args=None):
        return torch.stack([1.3 * y[..., 0] - 0.9 * y[..., 0] * y[..., 1],
                            0.8 * y[..., 0] * y[..., 1] - 1.8 * y[..., 1]], -1)  # fmt: skip

    ts = torch.linspace(0, 10, 501, dtype=D)
    xs = torchnde.solve(
        torchnde.ODETerm(lv), torchnde.Dopri5(), 0.0, 10.0, torch.tensor([2.0, 1.0], dtype=D),
        saveat=torchnde.SaveAt(ts=ts), controller=torchnde.PIDController(rtol=1e-10, atol=1e-12),
    ).ys  # fmt: skip
    g = torch.Generator().manual_seed(0)
    noisy = xs + 0.01 * xs.std(0) * torch.randn(xs.shape, generator=g, dtype=D)
    model = SINDy(
        optimizer=STLSQ(0.2, alpha=0.0),
        differentiation_method=CollocationDerivative("epanechnikov", bandwidth=0.01),
    ).fit(noisy, t=ts)
    want = torch.zeros(2, 6, dtype=D)
    want[0, 1], want[0, 4], want[1, 2], want[1, 4] = 1.3, -0.9, -1.8, 0.8
    coef = model.coefficients()
    assert torch.equal(coef != 0, want != 0)
    assert float((coef - want).abs().max()) < 0.05


def test_collocation_bad_inputs():
    x = torch.zeros(10, 2, dtype=D)
    with pytest.raises(ValueError, match="`kernel` must be one of"):
        collocate_data(x, 0.1, "box")
    with pytest.raises(ValueError, match="`bandwidth` must be a number > 0"):
        collocate_data(x, 0.1, bandwidth=-1.0)
    with pytest.raises(ValueError, match="leaves fewer than 3 samples"):
        collocate_data(x, 0.1, bandwidth=0.05)
    with pytest.raises(ValueError, match="at least 3 samples"):
        collocate_data(x[:2], 0.1)
    with pytest.raises(ValueError, match="`steps` must be an int >= 0"):
        fit_collocation(nn.Linear(2, 2), x, 0.1, steps=-1)
    with pytest.raises(ValueError, match="`lr` must be a number > 0"):
        fit_collocation(nn.Linear(2, 2), x, 0.1, lr=0.0)
