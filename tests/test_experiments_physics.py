"""The physics experiments show their papers' claims at a small size (end to end through the
harness; the tiny runs of tests/test_cli.py only check the artefacts)."""

from __future__ import annotations

import pytest

from torchnde.experiments import harness, make_config
from torchnde.experiments.energy_shaping import Config as ShapingConfig
from torchnde.experiments.pendulum import Config as PendulumConfig


@pytest.mark.slow  # ~10 s: 150 epochs on 25 trajectories, 4 rollouts over 10 periods
def test_pendulum_hnn_conserves_energy_where_the_baseline_drifts(tmp_path):
    cfg = make_config(
        PendulumConfig,
        {"out": tmp_path / "p", "quiet": True, "plot": False, "epochs": 150, "num_eval": 4,
         "periods": 10, "num_save": 100, "rtol": 1e-6, "atol": 1e-8},
    )  # fmt: skip
    metrics = harness.run("pendulum", cfg)
    ev = metrics["eval"]
    assert ev["hnn_energy_drift"] < 0.25 * ev["node_energy_drift"], ev


@pytest.mark.slow  # ~15 s: 20 steps of RK4 solves with the double backward of the potential
def test_energy_shaping_brings_the_pendulum_closer_to_the_target_than_no_control(tmp_path):
    cfg = make_config(
        ShapingConfig,
        {"out": tmp_path / "e", "quiet": True, "plot": False, "epochs": 10, "num_train": 64,
         "num_eval": 64, "batch_size": 32, "hidden": 16},
    )  # fmt: skip
    metrics = harness.run("energy-shaping", cfg)
    ev = metrics["eval"]
    # 20 steps: 1.76 against 3.07 uncontrolled (the default 120 steps: 0.35).
    assert ev["final_distance"] < 0.75 * ev["final_distance_uncontrolled"], ev
