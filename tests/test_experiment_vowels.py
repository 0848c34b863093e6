"""The vowels experiment: sktime's JapaneseVowels read at run time, the message without
sktime, a tiny end-to-end run with the issue's metric keys, and the headline's verdicts."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from torchnde.cli import main
from torchnde.experiments import MissingDependency, get_experiment

pytest.importorskip("sktime")

TINY = [
    "--epochs",
    "1",
    "batch_size=270",
    "hidden=2",
    "cde_hidden=2",
    "width=2",
    "odernn_units=2",
    "method=euler",
]  # fmt: skip


def test_japanese_vowels_are_ragged_and_padded_with_nan():
    from torchnde.experiments.vowels import load_japanese_vowels

    d = load_japanese_vowels()
    assert d["x_train"].shape == (270, 29, 12) and d["x_test"].shape == (370, 29, 12)
    assert len(d["classes"]) == 9
    assert torch.bincount(d["y_train"]).tolist() == [30] * 9
    for split in ("train", "test"):
        x, lengths = d[f"x_{split}"], d[f"len_{split}"]
        assert int(lengths.min()) == 7 and int(lengths.max()) <= 29
        observed = ~torch.isnan(x).any(-1)
        assert torch.equal(observed, torch.arange(29) < lengths[:, None])
    assert int(d["len_test"].max()) == 29


def test_without_sktime_the_experiment_names_the_extra(monkeypatch):
    from torchnde.experiments.vowels import load_japanese_vowels

    monkeypatch.setitem(sys.modules, "sktime", None)
    monkeypatch.setitem(sys.modules, "sktime.datasets", None)
    with pytest.raises(MissingDependency, match=r"pip install 'torchnde\[timeseries\]'"):
        load_japanese_vowels()


def test_a_tiny_run_writes_the_issues_metrics(tmp_path, capsys):
    out = tmp_path / "vowels"
    assert main(["run", "vowels", "--out", str(out), "--quiet", *TINY, "plot=false"]) == 0
    ev = json.loads((out / "metrics.json").read_text())["eval"]
    for key in ("test_accuracy", "grud_test_accuracy", "odernn_test_accuracy"):
        assert 0.0 <= ev[key] <= 1.0 and math.isfinite(ev[key]), key
    assert "hermite_test_accuracy" in ev and ev["chance_accuracy"] == pytest.approx(88 / 370)
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(steps) == 1 and steps[0]["nfe_ncde"] > 0 and steps[0]["nfe_odernn"] > 0


def test_the_headline_says_whether_the_numbers_show_the_claims():
    task = get_experiment("vowels").task_cls
    good = {
        "test_accuracy": 0.97,
        "hermite_test_accuracy": 0.96,
        "grud_test_accuracy": 0.95,
        "odernn_test_accuracy": 0.96,
        "chance_accuracy": 0.24,
    }
    assert [h.verdict.split(" ")[0] for h in task.headline(good)] == ["yes", "yes"]
    bad = dict(good, test_accuracy=0.2, hermite_test_accuracy=0.1)
    assert [h.verdict.split(":")[0] for h in task.headline(bad)] == ["no", "no"]
    middle = dict(good, test_accuracy=0.9, hermite_test_accuracy=0.8)
    assert [h.verdict.split(":")[0] for h in task.headline(middle)] == ["partly", "partly"]
