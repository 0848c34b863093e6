"""The diffusion experiments' exact pieces, and each experiment at a tiny size."""

from __future__ import annotations

import json
import math

import pytest
import torch

from torchnde.experiments import get_experiment, make_config
from torchnde.experiments._diffusion import frechet_distance, mmd2
from torchnde.experiments.diffusion_2d import Config, sample_density, true_log_prob
from torchnde.experiments.harness import run


@pytest.mark.parametrize("name", ["mixture", "swiss_roll"])
def test_the_true_density_integrates_to_one(name):
    g = torch.linspace(-3.0, 3.0, 121, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)
    mass = true_log_prob(name, grid).exp().sum() * (g[1] - g[0]) ** 2
    assert abs(float(mass) - 1) < 2e-3


@pytest.mark.parametrize("name", ["mixture", "swiss_roll"])
def test_the_sampler_draws_from_the_true_density(name):
    """E_p[log p] by samples equals -entropy by the grid (within 4 standard errors)."""
    x = sample_density(name, 5000, torch.Generator().manual_seed(0))
    lp = true_log_prob(name, x)
    g = torch.linspace(-3.0, 3.0, 121, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)
    lpg = true_log_prob(name, grid)
    neg_entropy = float((lpg.exp() * lpg).sum() * (g[1] - g[0]) ** 2)
    assert abs(float(lp.mean()) - neg_entropy) < 4 * float(lp.std()) / math.sqrt(len(x)) + 5e-3


def test_mmd_is_about_zero_for_one_law_and_positive_for_two():
    gen = torch.Generator().manual_seed(1)
    a, b = (sample_density("mixture", 1000, gen) for _ in range(2))
    c = sample_density("swiss_roll", 1000, gen)
    assert abs(mmd2(a, b)) < 5e-3
    assert mmd2(a, c) > 0.05


def test_the_frechet_distance_of_gaussians_is_the_squared_mean_shift_for_equal_covariances():
    x = torch.randn(20000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    shift = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    assert abs(frechet_distance(x, x)) < 1e-6
    assert abs(frechet_distance(x, x + shift) - float(shift @ shift)) < 1e-6
    # Means m, 2m and covariances C, 4C: |m|^2 + tr(C + 4C - 2 (C^1/2 4C C^1/2)^1/2).
    m, c = x.mean(0), torch.cov(x.T)
    assert abs(frechet_distance(x, 2 * x) - float(m @ m + c.trace())) < 1e-9


def test_the_configs_check_their_lists_and_full_sets_the_larger_run():
    with pytest.raises(ValueError, match="`sdes` must be a comma-separated list"):
        Config(sdes="vp,xx")
    with pytest.raises(ValueError, match="`steps` must be a comma-separated list"):
        Config(steps="10,-1")
    cfg = Config(full=True, epochs=3)
    assert (cfg.num_train, cfg.epochs, cfg.hidden) == (32768, 3, 256)
    assert Config(weighting="score").importance_sampling is False
    from torchnde.experiments.diffusion_digits import Config as DigitsConfig

    assert (DigitsConfig(full=True).hidden, DigitsConfig(full=True).trace) == (512, "exact")


# slow: trains 2 tiny score networks, runs 5 samplers at 4 and 30 steps (~10 s).
@pytest.mark.slow
def test_diffusion_2d_runs_at_a_tiny_size(tmp_path):
    cfg = make_config(
        get_experiment("diffusion-2d").config_cls,
        {"out": str(tmp_path), "epochs": 1, "num_train": 256, "num_test": 64, "num_samples": 64,
         "steps": "4,30", "sdes": "vp,ve", "datasets": "mixture", "quiet": True, "plot": False,
         "samplers": "euler_maruyama,ddim,heun,dpm_solver++,pf_ode"},
    )  # fmt: skip
    run("diffusion-2d", cfg)
    m = json.loads((tmp_path / "metrics.json").read_text())
    ev = m["eval"]["mixture/vp"]
    for key in ("pf_ode_test_nll", "true_test_nll", "mmd_ddim_4", "mmd_heun_30",
                "mmd_pf_ode_adaptive", "mmd_heldout"):  # fmt: skip
        assert math.isfinite(ev[key]), key
    assert ev["nfe_heun_4"] == 8 and ev["nfe_dpm_solver++_4"] == 4
    assert len(m["headline"]) == 1  # no 20-step runs: no sampler headline
    assert m["headline"][0]["verdict"].split(":")[0] in ("yes", "partly", "no")


# slow: trains a tiny digits score network, a classifier and samples 4 ways (~10 s).
@pytest.mark.slow
def test_diffusion_digits_runs_at_a_tiny_size(tmp_path):
    cfg = make_config(
        get_experiment("diffusion-digits").config_cls,
        {"out": str(tmp_path), "epochs": 1, "num_samples": 40, "num_bpd": 4, "steps": "3",
         "sde_steps": 10, "classifier_steps": 5, "hidden": 16, "trace": "hutchinson",
         "quiet": True, "plot": False},
    )  # fmt: skip
    run("diffusion-digits", cfg)
    ev = json.loads((tmp_path / "metrics.json").read_text())["eval"]
    for key in ("test_bpd", "gaussian_bpd", "fd_ddim_3", "fd_heun_3", "fd_dpm_3",
                "fd_euler_maruyama_10", "fd_heldout"):  # fmt: skip
        assert math.isfinite(ev[key]), key
    assert ev["nfe_euler_maruyama_10"] == 10


def _row(nll, em, dpm20, ddim10, dpm10):
    return {"pf_ode_test_nll": nll, "true_test_nll": 1.0, "mmd_heldout": 0.0,
            "mmd_euler_maruyama_1000": em, "mmd_dpm_solver++_20": dpm20,
            "mmd_ddim_10": ddim10, "mmd_dpm_solver++_10": dpm10}  # fmt: skip


def test_the_headlines_say_whether_the_numbers_show_the_claims():
    from torchnde.experiments.diffusion_2d import Task as Task2d
    from torchnde.experiments.diffusion_digits import Task as TaskDigits

    good = {"mixture/vp": _row(1.05, 0.01, 0.01, 0.03, 0.01)}
    bad = {"mixture/vp": _row(1.5, 0.01, 0.05, 0.01, 0.03)}
    assert all(h.verdict.startswith("yes") for h in Task2d.headline(good))
    assert all(h.verdict.startswith("no") for h in Task2d.headline(bad))
    base = {"gaussian_bpd": 3.0, "uniform_bpd": 4.09, "fd_heldout": 1.0}
    good_d = {**base, "test_bpd": 2.5, "test_bpd_median": 2.4, "fd_ddim_10": 30.0,
              "fd_dpm_10": 12.0, "fd_euler_maruyama_1000": 10.0}  # fmt: skip
    bad_d = {**base, "test_bpd": 3.5, "test_bpd_median": 3.4, "fd_ddim_10": 30.0,
             "fd_dpm_10": 25.0, "fd_euler_maruyama_1000": 10.0}  # fmt: skip
    assert all(h.verdict.startswith("yes") for h in TaskDigits.headline(good_d))
    assert all(h.verdict.startswith("no") for h in TaskDigits.headline(bad_d))
