"""The latent-sde and sde-gan experiments: their exact pieces (KS statistic, simulated
processes) and tiny runs end to end through the harness."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from torchnde.experiments import harness, make_config
from torchnde.experiments.latent_sde import Config as LatentConfig
from torchnde.experiments.latent_sde import ks_statistic, lorenz_diffusion, lorenz_drift
from torchnde.experiments.sde_gan import OU, simulate_ou
from torchnde.experiments.sde_gan import Config as GANConfig

#: The tiny configurations (also the ones to add to tests/test_cli.py's TINY).
TINY = {
    "latent-sde": {"epochs": 1, "num_train": 16, "num_test": 16, "batch_size": 8,
                   "num_times": 10, "latent": 2, "context": 4, "hidden": 8, "dt": 0.1,
                   "sim_dt": 0.01, "eval_samples": 1},
    "sde-gan": {"epochs": 1, "num_train": 32, "num_test": 32, "batch_size": 16, "num_times": 6,
                "hidden": 4, "mlp": 4, "sim_dt": 0.5},
}  # fmt: skip


def test_ks_statistic_by_its_definition():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50), rng.normal(0.5, 1.0, size=70)
    grid = np.concatenate([a, b])
    want = max(abs((a <= x).mean() - (b <= x).mean()) for x in grid)
    assert math.isclose(ks_statistic(a, b), want)
    assert ks_statistic(a, a) == 0.0
    assert ks_statistic(a, a + 100.0) == 1.0


def test_simulated_ou_has_the_exact_mean():
    """E Y_t = mu / theta (t - (1 - exp(-theta t)) / theta) from E Y_0 = 0; within 4
    standard errors at the end of the window."""
    ts = torch.linspace(0, OU["t_end"], 4, dtype=torch.float64)
    ys = simulate_ou(2000, ts, seed=0, dt=0.3)
    mu, th, t = OU["mu"], OU["theta"], OU["t_end"]
    want = mu / th * (t - (1 - math.exp(-th * t)) / th)
    end = ys[-1, :, 0]
    se = float(end.std()) / math.sqrt(2000)
    assert abs(float(end.mean()) - want) < 4 * se, (float(end.mean()), want, se)
    assert ys.shape == (4, 2000, 1)


def test_lorenz_fields_have_the_papers_constants():
    x = torch.tensor([[1.0, 2.0, 3.0]])
    torch.testing.assert_close(
        lorenz_drift(torch.tensor(0.0), x), torch.tensor([[10.0, 28 - 2 - 3, 2 - 8.0]])
    )
    torch.testing.assert_close(
        lorenz_diffusion(torch.tensor(0.0), x), torch.tensor([[0.1, 0.56, 0.9]])
    )


def test_the_configs_check_their_keys():
    with pytest.raises(ValueError, match="`adjoint` must be 'direct' with lipschitz=gp"):
        GANConfig(lipschitz="gp", adjoint="reversible")
    with pytest.raises(ValueError, match="`average_last` must be a number in"):
        GANConfig(average_last=2.0)
    with pytest.raises(ValueError, match="`kl_anneal_steps` must be an int >= 0"):
        LatentConfig(kl_anneal_steps=-1)
    cfg = GANConfig(full=True, batch_size=256)
    assert (cfg.num_train, cfg.num_times, cfg.batch_size, cfg.adjoint) == (
        8192, 64, 256, "reversible",
    )  # fmt: skip


@pytest.mark.parametrize("name", sorted(TINY))
def test_each_experiment_runs_at_a_tiny_size(name, tmp_path):
    cls = LatentConfig if name == "latent-sde" else GANConfig
    cfg = make_config(cls, {"out": tmp_path / name, "quiet": True, "plot": False, **TINY[name]})
    ev = harness.run(name, cfg)["eval"]
    if name == "latent-sde":
        keys = ("elbo", "test_nll", "gaussian_test_nll", "untrained_test_nll",
                "prior_ks_marginal", "prior_ks_marginal_untrained")  # fmt: skip
    else:
        keys = ("ks_marginal", "ks_marginal_untrained", "ks_marginal_floor")
    for k in keys:
        assert math.isfinite(ev[k]), (k, ev[k])
    for k in keys:
        if "ks" in k:
            assert 0 <= ev[k] <= 1
    # The untrained generator / prior is far from the data, two true samples are not.
    untrained = ev["ks_marginal_untrained" if name == "sde-gan" else "prior_ks_marginal_untrained"]
    assert ev["ks_marginal_floor"] < untrained
