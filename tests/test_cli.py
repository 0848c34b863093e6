"""The ``torchnde`` command line, the experiment registry and the bundled spiral data."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from torchnde import __version__
from torchnde.cli import main
from torchnde.data import generate_spiral, load_spiral
from torchnde.experiments import EXPERIMENTS, get_experiment, register
from torchnde.experiments.spiral import Config, load_model


def _finite_numbers(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _finite_numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _finite_numbers(v)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield obj


def test_run_spiral_writes_outputs_and_reduces_the_loss(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["run", "spiral", "--iters", "40", "--out", str(out), "--seed", "1", "--quiet"])
    assert rc == 0
    assert capsys.readouterr().out == ""
    for name in ("metrics.json", "model.pt", "spiral.png"):
        assert (out / name).is_file(), name

    metrics = json.loads((out / "metrics.json").read_text())
    assert all(math.isfinite(x) for x in _finite_numbers(metrics))
    assert metrics["iterations"] == 40
    assert len(metrics["loss_curve"]) == 40
    assert metrics["full_trajectory_mse"] < metrics["initial_full_trajectory_mse"]
    assert metrics["train_loss"] < metrics["train_loss_first"]
    assert metrics["nfe"]["train_forward_total"] > 0
    assert metrics["nfe"]["eval"]["status"] == "SUCCESSFUL"
    assert metrics["config"]["iters"] == 40
    assert metrics["config"]["seed"] == 1
    assert metrics["config"]["out"] == str(out)

    model = load_model(out / "model.pt")
    y = torch.tensor([[1.0, -0.5]])
    assert model(torch.tensor(0.0), y).shape == (1, 2)
    state = torch.load(out / "model.pt", weights_only=True)
    assert state["experiment"] == "spiral" and state["iteration"] == 40


def test_run_spiral_without_tqdm_or_matplotlib_prints_lines_and_skips_the_plot(
    tmp_path, capsys, monkeypatch
):
    # None in sys.modules makes the import fail as if the package were not installed.
    for name in ("tqdm", "matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    out = tmp_path / "run"
    # A fixed-step method exercises the ConstantStepSize path.
    assert main(["run", "spiral", "--iters", "10", "--method", "rk4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "iter 10/10" in printed
    assert "final train loss" in printed
    assert "matplotlib is not installed, skipping the plot" in printed
    assert (out / "metrics.json").is_file()
    assert not (out / "spiral.png").exists()


def test_no_plot_writes_no_png(tmp_path):
    out = tmp_path / "run"
    assert main(["run", "spiral", "--iters", "2", "--no-plot", "--quiet", "--out", str(out)]) == 0
    assert (out / "metrics.json").is_file()
    assert not (out / "spiral.png").exists()


def test_bundled_spiral_matches_the_generator():
    t, y = load_spiral()
    assert t.shape == (1000,) and y.shape == (1000, 2)
    assert t.dtype == y.dtype == torch.float32
    t_ref, y_ref = generate_spiral()
    assert t_ref.dtype == y_ref.dtype == torch.float64
    torch.testing.assert_close(t.double(), t_ref, rtol=0, atol=1e-6)
    # The file stores y in float32 (rounding up to 1.2e-7); the rest is the solve's own error.
    torch.testing.assert_close(y.double(), y_ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(y[0], torch.tensor([2.0, 0.0]))


def test_bundled_spiral_matches_scipy():
    integrate = pytest.importorskip("scipy.integrate")
    t, y = load_spiral(torch.float64)
    a = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=torch.float64).numpy()
    ref = integrate.solve_ivp(
        lambda _, u: (u**3) @ a,
        (0.0, 25.0),
        [2.0, 0.0],
        method="DOP853",
        t_eval=t.numpy(),
        rtol=1e-12,
        atol=1e-14,
    )
    assert ref.success
    torch.testing.assert_close(y, torch.from_numpy(ref.y.T), rtol=0, atol=1e-6)


def test_generate_spiral_noise_is_reproducible():
    kwargs = dict(num_points=50, t1=5.0, rtol=1e-6, atol=1e-8)
    _, clean = generate_spiral(**kwargs)
    _, a = generate_spiral(**kwargs, noise_std=0.01, seed=3)
    _, b = generate_spiral(**kwargs, noise_std=0.01, seed=3)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert 0 < (a - clean).abs().max() < 0.1


def test_list_names_every_experiment(capsys):
    assert main(["list"]) == 0
    printed = capsys.readouterr().out
    for name, exp in EXPERIMENTS.items():
        assert name in printed and exp.summary in printed
    assert "spiral" in printed


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert f"torchnde {__version__}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "spiral", "--iters", "0"], "--iters must be an int >= 1, got 0"),
        (["run", "spiral", "--batch-time", "1"], "--batch-time must be an int in [2, 1000]"),
        (["run", "spiral", "--lr", "-1"], "--lr must be a positive number, got -1.0"),
        (["run", "spiral", "--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
        (["run", "spiral", "--method", "nope"], "argument --method: invalid choice: 'nope'"),
        (["run", "spiral", "--device", "toaster"], "--device must be a torch device"),
        (["run", "nope"], "invalid choice: 'nope'"),
        (["run"], "the following arguments are required: EXPERIMENT"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_bad_arguments_exit_with_a_clear_message(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "usage: torchnde" in err


def test_config_validates_values_from_python_too():
    with pytest.raises(ValueError, match=r"--batch-size must be an int >= 1, got 0"):
        Config(batch_size=0)
    with pytest.raises(ValueError, match=r"--rtol must be a positive number"):
        Config(rtol=float("nan"))


def test_registry_lookup_and_duplicates():
    assert get_experiment("spiral").config_cls is Config
    with pytest.raises(ValueError, match=r"unknown experiment 'nope'; known experiments: spiral"):
        get_experiment("nope")
    with pytest.raises(ValueError, match=r"already registered"):
        register("spiral", "again", "torchnde.experiments.spiral")
