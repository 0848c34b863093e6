"""The motions experiment's drop protocol (Kidger et al. 2020): one neural CDE per drop rate,
30%, 50% and 70% of the time points removed, at a tiny size; and the headline's verdicts."""

from __future__ import annotations

import json

from torchnde.cli import main
from torchnde.experiments import get_experiment

TINY = ["--epochs", "1", "batch_size=40", "hidden=2", "width=2", "method=euler", "plot=false"]


def test_a_tiny_run_trains_one_model_per_drop_rate(tmp_path):
    out = tmp_path / "motions"
    assert main(["run", "motions", "--out", str(out), "--quiet", *TINY]) == 0
    ev = json.loads((out / "metrics.json").read_text())["eval"]
    for key in ("test_accuracy", "test_accuracy_drop30", "test_accuracy_drop50"):
        assert 0.0 <= ev[key] <= 1.0, key
    assert 0.0 <= ev["test_accuracy_drop70"] <= 1.0
    # drop=0.3 is the model of the sweep's 30%, not another one
    assert ev["test_accuracy"] == ev["test_accuracy_drop30"]
    step = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert {"loss_drop30", "loss_drop50", "loss_drop70"} <= set(step)


def test_without_the_sweep_only_the_main_rate_is_trained(tmp_path):
    out = tmp_path / "motions"
    args = ["run", "motions", "--out", str(out), "--quiet", *TINY, "sweep=false", "drop=0.5"]
    assert main(args) == 0
    ev = json.loads((out / "metrics.json").read_text())["eval"]
    assert "test_accuracy_drop30" not in ev and ev["dropped_fraction"] == 0.5


def test_the_drop_headline_says_whether_accuracy_survives_dropping():
    task = get_experiment("motions").task_cls
    base = {"test_accuracy": 0.95, "chance_accuracy": 0.25, "dropped_fraction": 0.3}
    flat = dict(base, test_accuracy_drop30=0.95, test_accuracy_drop50=0.93)
    flat["test_accuracy_drop70"] = 0.92
    assert task.headline(flat)[1].verdict.startswith("yes")
    falls = dict(flat, test_accuracy_drop70=0.6)
    assert task.headline(falls)[1].verdict.startswith("partly: all above chance")
    chance = dict(flat, test_accuracy_drop70=0.2)
    assert task.headline(chance)[1].verdict.startswith("no")
    assert len(task.headline(base)) == 1  # a run without the sweep has no drop headline
