"""The operator data generators against mathematics: Burgers against exact Cole-Hopf solutions
and a finer step, the Gaussian random field's spectrum, Darcy flow against the Fourier series
of the Poisson problem with its second-order convergence; seeding and caching."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from torchnde.data.burgers import burgers, burgers_initial_condition, burgers_solve
from torchnde.data.darcy import darcy, darcy_coefficient, darcy_solve


def _cole_hopf(x: torch.Tensor, t: float, nu: float) -> torch.Tensor:
    """An exact periodic solution u = -2 nu phi_x / phi, phi a solution of phi_t = nu phi_xx."""
    terms = ((1, 1.0, 0.0), (2, 0.0, 0.5), (3, 0.3, 0.0))  # (k, cos amplitude, sin amplitude)
    phi = torch.full_like(x, 2.0)
    dphi = torch.zeros_like(x)
    for k, a, b in terms:
        w = 2 * math.pi * k
        decay = math.exp(-nu * w**2 * t)
        phi = phi + decay * (a * torch.cos(w * x) + b * torch.sin(w * x))
        dphi = dphi + decay * w * (-a * torch.sin(w * x) + b * torch.cos(w * x))
    return -2 * nu * dphi / phi


@pytest.mark.parametrize("nu, t1", [(0.1, 1.0), (0.02, 0.3)])
def test_burgers_solver_matches_exact_cole_hopf_solutions(nu, t1):
    n = 128
    x = torch.arange(n, dtype=torch.float64) / n
    u1 = burgers_solve(_cole_hopf(x, 0.0, nu)[None], t1, nu)
    exact = _cole_hopf(x, t1, nu)
    err = float((u1[0] - exact).abs().max() / exact.abs().max())
    assert err < 1e-7, err


def test_burgers_solver_is_fourth_order_in_time():
    nu, t1, n = 0.02, 0.3, 64
    x = torch.arange(n, dtype=torch.float64) / n
    u0, exact = _cole_hopf(x, 0.0, nu)[None], _cole_hopf(x, t1, nu)
    errs = [
        float((burgers_solve(u0, t1, nu, dt=dt)[0] - exact).abs().max()) for dt in (0.03, 0.015)
    ]
    order = math.log2(errs[0] / errs[1])
    assert 3.5 < order < 4.6, (errs, order)


def test_burgers_default_step_agrees_with_a_ten_times_finer_step_on_random_fields():
    # the early times, where |u| is largest and the field roughest, decide the stability
    gen = torch.Generator().manual_seed(0)
    u0 = burgers_initial_condition(4, 512, generator=gen)
    coarse = burgers_solve(u0, 0.2, 0.1)
    fine = burgers_solve(u0, 0.2, 0.1, dt=1e-4)
    rel = (coarse - fine).norm(dim=1) / fine.norm(dim=1)
    assert float(rel.max()) < 1e-6


def test_burgers_initial_condition_has_the_covariance_spectrum():
    # c_k = (n/2) sqrt(2 lambda_k) (xi - i eta) for the rfft coefficients (k >= 1), so
    # E|c_k|^2 = (n/2)^2 * 4 lambda_k; the mean mode is zero
    n, samples = 64, 4000
    u0 = burgers_initial_condition(samples, n, generator=torch.Generator().manual_seed(1))
    c = torch.fft.rfft(u0)
    k = torch.arange(1, 6, dtype=torch.float64)
    lam = 625.0 * ((2 * math.pi * k) ** 2 + 25.0) ** -2
    power = (c[:, 1:6].abs() ** 2).mean(0)
    expected = (n / 2) ** 2 * 4 * lam
    # |c_k|^2 / expected is chi-squared with 2 degrees of freedom over 2: sd 1 per sample
    assert torch.allclose(
        power / expected, torch.ones(5, dtype=torch.float64), atol=4 / samples**0.5
    )
    assert float(c[:, 0].abs().max()) < 1e-9


def test_burgers_data_are_seeded_cached_and_cast(tmp_path):
    u0, u1 = burgers(3, 64, seed=2, cache_dir=tmp_path)
    files = list(tmp_path.glob("burgers-*.pt"))
    assert [f.name for f in files] == ["burgers-n3-res64-nu0.1-t1.0-seed2.pt"]
    again = burgers(3, 64, seed=2, cache_dir=tmp_path, dtype=torch.float64)
    assert again[0].dtype == torch.float64
    torch.testing.assert_close(again[0].float(), u0)
    fresh = burgers(3, 64, seed=2)
    torch.testing.assert_close(fresh[1], u1)
    assert not torch.equal(burgers(3, 64, seed=3)[0], u0)
    with pytest.raises(ValueError, match="`n_samples` must be an int >= 1, got 0"):
        burgers(0)
    with pytest.raises(ValueError, match="`dt` must be a positive step"):
        burgers_solve(u0, 1.0, 0.1, dt=0.0)


def _poisson_series(s: int, c: float, terms: int = 401) -> np.ndarray:
    """-c Laplace u = 1 on the unit square, u = 0 on the boundary, by its sine series."""
    x = np.linspace(0.0, 1.0, s)
    odd = np.arange(1, terms, 2)
    sines = np.sin(np.pi * np.outer(odd, x))
    coef = (
        16
        / (np.pi**4 * c)
        / (odd[:, None] * odd[None, :] * (odd[:, None] ** 2 + odd[None, :] ** 2))
    )
    return sines.T @ coef @ sines


def test_darcy_solver_converges_at_second_order_to_the_poisson_series():
    errs = []
    sizes = (9, 17, 33)
    for s in sizes:
        a = torch.full((2, s, s), 3.0, dtype=torch.float64)
        u = darcy_solve(a)
        assert torch.equal(u[0], u[1])
        errs.append(np.abs(u[0].numpy() - _poisson_series(s, 3.0)).max())
    slopes = [math.log2(errs[i] / errs[i + 1]) for i in range(len(errs) - 1)]
    assert all(1.9 < p < 2.1 for p in slopes), (errs, slopes)
    assert errs[-1] < 3e-5


def test_darcy_solver_satisfies_its_discrete_equation_for_piecewise_coefficients():
    a = darcy_coefficient(1, 12, generator=torch.Generator().manual_seed(0))
    u = darcy_solve(a)[0].numpy()
    an = a[0].numpy()
    h = 1 / 11
    i, j = 5, 6
    flux = (
        0.5 * (an[i, j] + an[i + 1, j]) * (u[i + 1, j] - u[i, j])
        - 0.5 * (an[i, j] + an[i - 1, j]) * (u[i, j] - u[i - 1, j])
        + 0.5 * (an[i, j] + an[i, j + 1]) * (u[i, j + 1] - u[i, j])
        - 0.5 * (an[i, j] + an[i, j - 1]) * (u[i, j] - u[i, j - 1])
    )
    assert abs(-flux / h**2 - 1.0) < 1e-10
    assert np.all(u[0] == 0) and np.all(u[:, -1] == 0) and np.all(u > -1e-15)


def test_darcy_coefficients_take_two_values_and_data_are_seeded_and_cached(tmp_path):
    a, u = darcy(3, 16, seed=1, cache_dir=tmp_path)
    assert set(a.unique().tolist()) == {3.0, 12.0} and a.dtype == torch.float32
    assert [f.name for f in tmp_path.glob("darcy-*.pt")] == ["darcy-n3-res16-seed1.pt"]
    torch.testing.assert_close(darcy(3, 16, seed=1)[1], u)
    with pytest.raises(ValueError, match="`a` must be positive everywhere"):
        darcy_solve(torch.zeros(1, 5, 5))
    with pytest.raises(ValueError, match=r"`a` must have shape \(batch, s, s\)"):
        darcy_solve(torch.ones(5, 5))
