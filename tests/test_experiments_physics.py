"""The physics experiments show their papers' claims at a small size (end to end through the
harness; the tiny runs of tests/test_cli.py only check the artefacts)."""

from __future__ import annotations

import pytest
import torch

from torchnde.data.mechanics import double_pendulum_dynamics
from torchnde.experiments import harness, make_config
from torchnde.experiments.chain import (
    _canonical_derivative,
    _cartesian_derivative,
    _from_canonical,
    _rods,
    to_canonical,
    to_cartesian,
)
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
         "num_eval": 64, "batch_size": 32, "hidden": 16, "t1": 3.0},
    )  # fmt: skip
    metrics = harness.run("energy-shaping", cfg)
    ev = metrics["eval"]
    # 20 steps: 1.76 against 3.07 uncontrolled (120 steps at t1 = 3: 0.35).
    assert ev["final_distance"] < 0.75 * ev["final_distance_uncontrolled"], ev


def test_chain_coordinates_are_consistent_with_the_double_pendulum():
    # The Cartesian and canonical states and their derivatives (by hand) against central
    # differences along the true flow; the rods hold; the canonical map inverts.
    s = torch.randn(6, 4, dtype=torch.float64)
    ds = double_pendulum_dynamics(0.0, s)
    h = 1e-6
    for fwd, deriv in (
        (to_cartesian, _cartesian_derivative),
        (to_canonical, _canonical_derivative),
    ):
        fd = (fwd(s + h * ds) - fwd(s - h * ds)) / (2 * h)
        torch.testing.assert_close(deriv(s, ds), fd, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(_from_canonical(to_canonical(s)), s)
    rods = torch.stack([_rods(x) for x in to_cartesian(s)[:, :4]])
    torch.testing.assert_close(rods, torch.zeros_like(rods))
