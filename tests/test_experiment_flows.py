"""The flow experiments' exact pieces (densities, energy, MCMC, transport distances) and
each experiment end to end at a tiny size with the metric keys of issue 18."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from torchnde.experiments import harness, make_config
from torchnde.experiments.dimer import (
    double_well_energy,
    mean_free_basis,
    metropolis,
)
from torchnde.experiments.flows_2d import sample_density, true_log_prob
from torchnde.experiments.trajectorynet import (
    linear_interpolation,
    simulate_branching,
    wasserstein1,
)


@pytest.mark.parametrize("name", ["moons", "8gaussians"])
def test_the_true_2d_densities_integrate_to_one_and_match_their_samples(name):
    # A Riemann sum at a spacing of one noise std is exact to ~1e-8 for Gaussian blurs.
    # The box holds the density but for ~1e-9 (6 noise stds beyond the arcs or centres).
    lo, hi = {"moons": ((-1.6, -1.1), (2.6, 1.6)), "8gaussians": ((-2.6, -2.6), (2.6, 2.6))}[name]
    gx = torch.arange(lo[0], hi[0] + 1e-9, 0.1, dtype=torch.float64)
    gy = torch.arange(lo[1], hi[1] + 1e-9, 0.1, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), -1).reshape(-1, 2)
    mass = true_log_prob(name, grid, 0.1).exp().sum() * 0.1**2
    assert abs(float(mass) - 1) < 1e-3
    # The samples sit where the density is: shifting them by one noise std loses likelihood.
    x = sample_density(name, 1000, 0.1, torch.Generator().manual_seed(0))
    lp = true_log_prob(name, x, 0.1)
    shifted = true_log_prob(name, x + 0.1, 0.1)
    assert float(lp.mean()) > float(shifted.mean()) + 0.2


def test_the_double_well_energy_is_symmetric_and_has_two_bond_lengths():
    x = torch.randn(5, 4, 2, dtype=torch.float64)
    e = double_well_energy(x)
    q = torch.tensor([[0.6, -0.8], [0.8, 0.6]], dtype=torch.float64)
    torch.testing.assert_close(double_well_energy(x[:, [3, 1, 0, 2]] @ q.T + 2.0), e)
    r = torch.linspace(0.5, 7.5, 7001, dtype=torch.float64)
    pair = torch.stack([torch.zeros_like(r), r], -1)
    two = torch.stack([torch.zeros(len(r), 2, dtype=torch.float64), pair], 1)
    er = double_well_energy(two)
    minima = r[1:-1][(er[1:-1] < er[:-2]) & (er[1:-1] < er[2:])]
    torch.testing.assert_close(minima, 4 + torch.tensor([-1.0, 1.0], dtype=torch.float64)
                               * math.sqrt(4 / 1.8), atol=2e-3, rtol=0)  # fmt: skip


def test_metropolis_samples_the_dimer_bond_length_distribution():
    # Two particles in 2-D: the bond length r has density proportional to r exp(-E(r)).
    x, acc = metropolis(1500, 2, 2, 1500, 0.5, torch.Generator().manual_seed(0))
    assert 0.05 < acc < 0.9
    torch.testing.assert_close(x.sum(1), torch.zeros(1500, 2, dtype=torch.float64))
    r = (x[:, 0] - x[:, 1]).norm(dim=-1)
    grid = torch.linspace(1e-3, 9, 20001, dtype=torch.float64)
    pair = torch.stack([torch.zeros(len(grid), 2, dtype=torch.float64),
                        torch.stack([torch.zeros_like(grid), grid], -1)], 1)  # fmt: skip
    w = grid * torch.exp(-double_well_energy(pair))
    mean = float((w * grid).sum() / w.sum())
    se = float(r.std() / math.sqrt(len(r)))
    assert abs(float(r.mean()) - mean) < 4 * se + 0.01, (float(r.mean()), mean, se)


def test_the_mean_free_basis_is_orthonormal_and_orthogonal_to_the_centre_of_mass():
    u = mean_free_basis(5)
    torch.testing.assert_close(u.T @ u, torch.eye(4, dtype=torch.float64))
    torch.testing.assert_close(u.T @ torch.ones(5, dtype=torch.float64),
                               torch.zeros(4, dtype=torch.float64))  # fmt: skip


def test_w1_and_displacement_interpolation():
    a = torch.randn(50, 2, dtype=torch.float64)
    assert math.isclose(wasserstein1(a, a + torch.tensor([3.0, 4.0])), 5.0, rel_tol=1e-12)
    b = a[torch.randperm(50)] * 2
    mid = linear_interpolation(a, b, 0.5)
    # the optimal coupling of a and 2a is x -> 2x (a gradient of a convex map)
    torch.testing.assert_close(mid, 1.5 * a)
    with pytest.raises(ValueError, match="equal shape"):
        wasserstein1(a, a[:3])


def test_the_branching_process_moves_right_and_splits():
    x = simulate_branching(2000, 3.0, 0.75, 0.1, torch.Generator().manual_seed(0))
    assert abs(float(x[:, 0].mean()) - 3.0) < 0.05
    # branches at y = +-kappa (t - 1)^2 / 2 = +-1.5
    np.testing.assert_allclose(float(x[:, 1].abs().mean()), 1.5, atol=0.05)


TINY = {
    "flows-2d": {"epochs": 1, "num_train": 64, "num_test": 32, "hidden": 4, "batch_size": 64,
                 "step_size": 0.5, "cpflow_blocks": 1, "cpflow_estimator": "stochastic"},
    "dimer": {"epochs": 1, "num_train": 32, "num_test": 16, "num_ess": 16, "mcmc_steps": 20,
              "hidden": 4, "layers": 1, "batch_size": 32, "step_size": 0.5},
    "trajectorynet": {"epochs": 1, "num_train": 16, "num_test": 16, "batch_size": 16,
                      "hidden": 4, "step_size": 1.0},
}  # fmt: skip
KEYS = {
    "flows-2d": ["ffjord_test_loglik", "monge_ampere_test_loglik", "cpflow_test_loglik",
                 "true_test_loglik"],
    "dimer": ["equivariant_test_nll", "plain_test_nll", "equivariant_ess", "plain_ess"],
    "trajectorynet": ["holdout_w1", "linear_holdout_w1", "w1_floor"],
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(TINY))
def test_each_flow_experiment_runs_tiny_with_the_issue_keys(name, tmp_path):
    from torchnde.experiments import get_experiment

    cfg = make_config(
        get_experiment(name).config_cls,
        {"out": tmp_path / name, "quiet": True, "plot": False, **TINY[name]},
    )
    metrics = harness.run(name, cfg)
    ev = metrics["eval"]
    for key in KEYS[name]:
        assert math.isfinite(ev[key]), (key, ev)
    assert all(h["verdict"].split(":")[0] in ("yes", "partly", "no") for h in metrics["headline"])
