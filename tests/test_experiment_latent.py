"""The periodic and co2 experiments: their data, the seasonal-naive baseline, the missing
dependency message and a run of each at a tiny size through the harness."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from torchnde.data import generate_periodic, subsample_points
from torchnde.experiments import MissingDependency, harness, make_config
from torchnde.experiments import co2 as co2_exp
from torchnde.experiments.periodic import Config as PeriodicConfig


def test_the_periodic_series_follow_the_papers_generator():
    ts, x = generate_periodic(64, 30, 5.0, noise=0.0, seed=1)
    assert ts.shape == (30,) and x.shape == (64, 30, 1)
    assert ts[0] == 0 and bool((ts.diff() > 0).all()) and float(ts[-1]) <= 5.0
    # a sine of amplitude 1 around an offset near 1: x(0) = offset, range within offset +- 1
    offset = x[:, 0, 0]
    assert float((offset - 1).abs().max()) < 0.5
    assert float((x[..., 0] - offset[:, None]).abs().max()) <= 1 + 1e-5
    idx = subsample_points(64, 30, 0.2, seed=2)
    assert idx.shape == (64, 6) and bool((idx.diff(dim=1) > 0).all())
    assert not torch.equal(idx[0], idx[1])  # each series its own subset
    with pytest.raises(ValueError, match=r"`fraction` must be in \(0, 1\]"):
        subsample_points(4, 30, 0.0)
    with pytest.raises(ValueError, match="`num_points` must be an int >= 2"):
        generate_periodic(4, 1)


def test_seasonal_naive_repeats_the_last_season_and_fills_gaps():
    y = np.tile(np.arange(52, dtype=float), 4)
    y[150] = np.nan  # a gap in the last season: filled forward
    pred = seasonal_naive = co2_exp.seasonal_naive(y, 156, 60)
    expect = np.concatenate([np.arange(52), np.arange(8)]).astype(float)
    expect[150 - 104] = 45.0
    np.testing.assert_array_equal(pred, expect)
    assert seasonal_naive.shape == (60,)


def test_co2_names_the_timeseries_extra_when_statsmodels_is_missing(monkeypatch):
    def missing(module, package, experiment):
        raise MissingDependency(f"{package} missing")

    monkeypatch.setattr(co2_exp, "require", missing)
    with pytest.raises(MissingDependency, match=r"pip install 'torchnde\[timeseries\]'"):
        co2_exp.load_co2()


def test_periodic_runs_at_a_tiny_size_and_reports_every_key(tmp_path):
    cfg = make_config(
        PeriodicConfig,
        {"out": tmp_path / "p", "quiet": True, "plot": False, "epochs": 1, "num_train": 8,
         "num_test": 4, "batch_size": 8, "num_points": 12, "hidden": 4, "units": 4,
         "latent": 2, "method": "rk4", "step_size": 1.0},
    )  # fmt: skip
    metrics = harness.run("periodic", cfg)
    assert metrics is not None
    ev = metrics["eval"]
    for key in ("latent_ode_interp_mse", "odernn_interp_mse", "rnn_interp_mse",
                "latent_ode_extrap_mse", "rnn_extrap_mse"):  # fmt: skip
        assert math.isfinite(ev[key]) and ev[key] >= 0, key
    assert metrics["headline"][0]["verdict"].split(":")[0] in ("yes", "partly", "no")


def test_co2_runs_at_a_tiny_size_against_the_seasonal_naive_forecast(tmp_path):
    pytest.importorskip("statsmodels")
    cfg = make_config(
        co2_exp.Config,
        {"out": tmp_path / "c", "quiet": True, "plot": False, "epochs": 1, "num_windows": 4,
         "batch_size": 4, "context_years": 0.5, "test_years": 0.5, "hidden": 4, "units": 4,
         "latent": 2},
    )  # fmt: skip
    metrics = harness.run("co2", cfg)
    assert metrics is not None
    ev = metrics["eval"]
    assert math.isfinite(ev["latent_ode_forecast_mse"]) and math.isfinite(ev["seasonal_naive_mse"])
    assert ev["missing_weeks_total"] == 59 and ev["test_weeks"] == 26
