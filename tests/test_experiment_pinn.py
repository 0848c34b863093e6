"""The physics-informed and deep BSDE experiments: each runs end to end at a tiny size with the
issue's metric keys, and their references are right."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from torchnde.experiments import harness, make_config
from torchnde.experiments.deep_bsde import Config as BSDEConfig
from torchnde.experiments.pinn_burgers import Config as BurgersConfig
from torchnde.experiments.pinn_burgers import reference as burgers_reference
from torchnde.experiments.pinn_ode import reference as ode_reference

TINY = {
    "pinn-ode": ({"epochs": 1, "steps_per_epoch": 5, "batch_size": 16, "hidden": 4},
                 ["oscillator_max_abs_error", "lotka_volterra_max_abs_error", "max_abs_error"]),
    "pinn-poisson": ({"epochs": 1, "steps_per_epoch": 5, "batch_size": 16, "hidden": 4},
                     ["rel_l2"]),
    "pinn-burgers": ({"epochs": 1, "steps_per_epoch": 3, "batch_size": 16, "hidden": 4,
                      "layers": 1, "nu": 0.1, "reference_modes": 256, "lbfgs_iters": 2,
                      "reference_dt": 1e-3}, ["rel_l2", "rel_l2_adam"]),
    "deep-bsde": ({"epochs": 1, "steps_per_epoch": 3, "batch_size": 8, "dim": 100,
                   "num_time_interval": 3, "reference_samples": 1000},
                  ["hjb_u0", "hjb_rel_error", "allen_cahn_u0", "allen_cahn_rel_error"]),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(TINY))
def test_each_experiment_runs_tiny_with_the_issue_keys(name, tmp_path):
    from torchnde.experiments import get_experiment

    overrides, keys = TINY[name]
    cfg_cls = get_experiment(name).task_cls.Config
    cfg = make_config(cfg_cls, {"out": tmp_path / name, "quiet": True, "plot": False, **overrides})
    metrics = harness.run(name, cfg)
    ev = metrics["eval"]
    for key in keys:
        assert key in ev, (key, ev)
        assert math.isfinite(ev[key]), (key, ev[key])
    if name == "pinn-ode":
        assert ev["max_abs_error"] == max(
            ev["oscillator_max_abs_error"], ev["lotka_volterra_max_abs_error"]
        )
    assert (tmp_path / name / "report.md").is_file()


def test_the_ode_reference_is_the_damped_oscillators_closed_form():
    ts, ys = ode_reference("oscillator", 5.0, 51)
    z, w = 0.1, 2.0
    wd = w * math.sqrt(1 - z * z)
    exact = torch.exp(-z * w * ts) * (torch.cos(wd * ts) + z * w / wd * torch.sin(wd * ts))
    torch.testing.assert_close(ys[:, 0], exact, rtol=0, atol=1e-8)


def test_the_burgers_reference_is_odd_vanishes_at_the_ends_and_is_converged():
    x, ts, u = burgers_reference(0.1, 256, num_x=64, num_t=11, dt=1e-3)
    np.testing.assert_allclose(u[0], -np.sin(np.pi * x), atol=1e-12)
    # x_j = -1 + 2j/n: the mirror of j is n - j; u(-1) = 0 (and so u(1) by periodicity).
    np.testing.assert_allclose(u[:, 1:], -u[:, 1:][:, ::-1], atol=1e-10)
    np.testing.assert_allclose(u[:, 0], 0.0, atol=1e-10)
    _, _, u2 = burgers_reference(0.1, 512, num_x=64, num_t=11, dt=5e-4)
    np.testing.assert_allclose(u, u2, atol=1e-9)
    # viscosity damps: the energy decreases
    energy = (u**2).sum(1)
    assert np.all(np.diff(energy) < 0)


def test_full_configs_set_the_longer_runs_except_where_given():
    cfg = BSDEConfig(full=True, epochs=5)
    assert (cfg.epochs, cfg.allen_cahn_lr) == (5, 5e-4)
    full = BurgersConfig(full=True)
    assert (full.layers, full.hidden, full.lbfgs_iters) == (8, 20, 20000)
    assert BurgersConfig(full=True, lbfgs_iters=7).lbfgs_iters == 7
    with pytest.raises(ValueError, match="lbfgs_iters"):
        BurgersConfig(lbfgs_iters=-1)
    with pytest.raises(ValueError, match="reference_modes"):
        BurgersConfig(reference_modes=300)
