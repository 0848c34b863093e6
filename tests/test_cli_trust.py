"""The command line never loses or mixes a run: the run-folder lock, checkpoint checksums, a
torn or missing ``metrics.jsonl``, stale temporary files, unwritable ``--out``, torchrun
reproducing one process, and report headlines that say what the numbers show."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from torchnde.cli import main
from torchnde.experiments import CheckpointError, RunFolderError
from torchnde.experiments.checkpoint import load_checkpoint, save_checkpoint
from torchnde.experiments.runfolder import LOCK_FILE, RunLock, read_jsonl, remove_stale_tmp

SRC = Path(__file__).resolve().parents[1] / "src"
TINY = ["--epochs", "2", "batch_size=100", "hidden=16", "plot=false", "--quiet"]


def _run(out: Path, *extra: str) -> int:
    return main(["run", "spiral", "--out", str(out), *TINY, *extra])


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def lock_holder(tmp_path):
    """Start a process that holds the lock of a folder (the run-folder module alone, loaded
    from its file: no torch import, so it starts in a blink); yield ``(start, procs)``."""
    procs: list[subprocess.Popen] = []
    code = (
        "import importlib.util, sys, time\n"
        f"spec = importlib.util.spec_from_file_location('rf', {str(SRC / 'torchnde' / 'experiments' / 'runfolder.py')!r})\n"  # noqa: E501
        "rf = importlib.util.module_from_spec(spec); spec.loader.exec_module(rf)\n"
        "lock = rf.RunLock(rf.Path(sys.argv[1])); lock.acquire()\n"
        "print('locked', flush=True); time.sleep(60)\n"
    )

    def start(folder: Path) -> subprocess.Popen:
        folder.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True
        )
        procs.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------------- the lock


def test_a_second_run_on_a_locked_folder_fails_naming_the_owner(tmp_path, lock_holder, capsys):
    out = tmp_path / "run"
    holder = lock_holder(out)
    assert _run(out) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line
    assert f"is in use by another torchnde process (pid {holder.pid} on " in err
    assert "choose another --out" in err
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # nothing written


def test_resume_on_a_locked_folder_fails_and_leaves_it_untouched(tmp_path, lock_holder, capsys):
    out = tmp_path / "run"
    assert _run(out) == 0
    (out / "metrics.json").unlink()  # an interrupted run, resumable
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    holder = lock_holder(out)
    assert main(["resume", str(out), "--quiet"]) == 1
    assert f"(pid {holder.pid} on {socket.gethostname()}" in capsys.readouterr().err
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.name != LOCK_FILE}
    assert after == before


@pytest.mark.slow
def test_two_concurrent_runs_into_one_folder(tmp_path, capsys):
    # The real thing: a `torchnde run` in another process, and a second one while it runs.
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(SRC))
    first = subprocess.Popen(
        [sys.executable, "-m", "torchnde", "run", "spiral", "--out", str(out), "--epochs", "50"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (out / "config.json").exists():  # written under the lock
            assert first.poll() is None, first.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        config = (out / "config.json").read_text()
        assert _run(out) == 1
        assert f"in use by another torchnde process (pid {first.pid} " in capsys.readouterr().err
        assert (out / "config.json").read_text() == config
    finally:
        first.kill()  # SIGKILL: no cleanup, the lock file stays behind
        first.wait()
    # A stale lock of a dead process is taken over, with a warning naming it.
    assert json.loads((out / LOCK_FILE).read_text())["pid"] == first.pid
    assert _run(out) == 0
    err = capsys.readouterr().err
    assert "torchnde run spiral: warning: taking over the lock" in err and str(first.pid) in err
    assert not (out / LOCK_FILE).exists()
    assert json.loads((out / "config.json").read_text())["config"]["epochs"] == 2


def test_a_stale_lock_file_of_a_dead_pid_is_taken_over(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    pid = _dead_pid()
    owner = {"pid": pid, "host": socket.gethostname(), "started": time.time() - 60}
    (out / LOCK_FILE).write_text(json.dumps(owner))
    assert _run(out) == 0
    err = capsys.readouterr().err
    assert f"warning: taking over the lock of {str(out)!r}" in err and f"pid {pid} " in err
    assert not (out / LOCK_FILE).exists() and (out / "metrics.json").is_file()


def test_the_lock_is_released_on_errors_and_interrupts(tmp_path, monkeypatch, capsys):
    from torchnde.experiments import harness, spiral

    out = tmp_path / "run"

    def interrupt(self, step):
        raise KeyboardInterrupt

    monkeypatch.setattr(harness._Run, "_after_step", interrupt)
    assert _run(out) == 130
    assert not (out / LOCK_FILE).exists()
    monkeypatch.undo()

    def boom(self, model, index):
        raise RuntimeError("boom")

    monkeypatch.setattr(spiral.Task, "step", boom)
    with pytest.raises(RuntimeError, match="boom"):
        _run(out)
    assert not (out / LOCK_FILE).exists()
    monkeypatch.undo()
    assert _run(out) == 0  # the folder is free again


def test_run_lock_in_python(tmp_path):
    with RunLock(tmp_path) as lock:
        owner = json.loads((tmp_path / LOCK_FILE).read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        # flock is per open file: a second lock from this very process is refused too.
        with pytest.raises(RunFolderError, match=r"in use by another torchnde process \(pid "):
            RunLock(tmp_path).acquire()
        assert lock.fd is not None
    assert not (tmp_path / LOCK_FILE).exists()


def test_without_fcntl_the_lock_file_is_exclusive_and_stale_when_its_pid_is_dead(
    tmp_path, monkeypatch
):
    from torchnde.experiments import runfolder

    monkeypatch.setattr(runfolder, "fcntl", None)  # as on Windows
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as live:
        try:
            owner = {"pid": live.pid, "host": socket.gethostname(), "started": time.time()}
            (tmp_path / LOCK_FILE).write_text(json.dumps(owner))
            with pytest.raises(RunFolderError, match=rf"in use .* \(pid {live.pid} on "):
                RunLock(tmp_path).acquire()
        finally:
            live.kill()
    dead = _dead_pid()
    owner["pid"] = dead
    (tmp_path / LOCK_FILE).write_text(json.dumps(owner))
    with pytest.warns(UserWarning, match=rf"no longer runs \(pid {dead} on"):
        lock = RunLock(tmp_path)
        lock.acquire()
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    with pytest.raises(RunFolderError, match=rf"\(pid {os.getpid()} on "):
        RunLock(tmp_path).acquire()
    lock.release()
    assert not (tmp_path / LOCK_FILE).exists()


# --------------------------------------------------------------------------- checkpoints


def _flip_tensor_bytes(path: Path, name: str = "net.0.weight", count: int = 16) -> None:
    data = bytearray(path.read_bytes())
    raw = load_checkpoint(path)["model"][name].numpy().tobytes()
    at = bytes(data).find(raw[:32])
    assert at > 0
    for k in range(count):
        data[at + k] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_checkpoint_with_altered_tensor_bytes_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(out) == 0
    (out / "metrics.json").unlink()
    ckpt = out / "checkpoint.pt"
    _flip_tensor_bytes(ckpt)
    assert main(["resume", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"torchnde resume: error: checkpoint {str(ckpt)!r} is corrupt" in err
    assert "does not match its sha256 checksum" in err
    assert "Delete it and start over without resuming (`torchnde run`)" in err
    with pytest.raises(CheckpointError, match=r"does not match its sha256 checksum"):
        load_checkpoint(ckpt)


def test_a_checkpoint_with_an_altered_value_is_refused(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"experiment": "x", "step": 7, "w": torch.ones(3)})
    state = torch.load(path, weights_only=True)
    state["step"] = 8  # re-saved by hand without a new checksum
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"'.*c\.pt' is corrupt: its content does not"):
        load_checkpoint(path)
    del state["sha256"]
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"does not match its sha256"):
        load_checkpoint(path)


def test_a_checkpoint_from_before_checksums_loads_with_a_warning(tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(out) == 0
    (out / "metrics.json").unlink()
    ckpt = out / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=True)
    del state["sha256"]
    state["format"] = "torchnde.checkpoint/1"
    torch.save(state, ckpt)
    assert main(["resume", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "torchnde resume: warning: checkpoint" in err
    assert "was written before checkpoints had checksums" in err and "unverified" in err


# --------------------------------------------------------------------------- metrics.jsonl


def _interrupted(tmp_path: Path, monkeypatch) -> Path:
    """A spiral run interrupted in its second epoch (the checkpoint is at the first's end)."""
    from torchnde.experiments import harness

    out = tmp_path / "run"

    def interrupt(self, step):
        if step == 13:
            raise KeyboardInterrupt

    monkeypatch.setattr(harness._Run, "_after_step", interrupt)
    assert _run(out) == 130
    monkeypatch.undo()
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 9
    return out


def test_a_torn_last_line_is_dropped_with_a_warning(tmp_path, monkeypatch, capsys):
    out = _interrupted(tmp_path, monkeypatch)
    jsonl = out / "metrics.jsonl"
    text = jsonl.read_text()
    jsonl.write_text(text + text.splitlines()[0][:25])  # killed in the middle of a write
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    assert "torchnde report: warning: " in capsys.readouterr().err
    assert main(["resume", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"torchnde resume: warning: {str(jsonl)!r}: dropped its last line, torn" in err
    rows = _jsonl(jsonl)
    assert [r["step"] for r in rows] == list(range(1, 19))
    assert json.loads((out / "metrics.json").read_text())["train"]["steps_missing_from_log"] == 0


def test_a_corrupt_line_before_the_last_is_an_error_naming_it(tmp_path, monkeypatch, capsys):
    out = _interrupted(tmp_path, monkeypatch)
    jsonl = out / "metrics.jsonl"
    lines = jsonl.read_text().splitlines()
    lines[2] = lines[2][:20]
    jsonl.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert main(["resume", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"torchnde resume: error: {str(jsonl)!r} line 3 is not a JSON record" in err
    with pytest.raises(RunFolderError, match=r"line 3 is not a JSON record with a step"):
        read_jsonl(jsonl)


def test_a_deleted_history_is_reported_not_silently_short(tmp_path, monkeypatch, capsys):
    out = _interrupted(tmp_path, monkeypatch)
    (out / "metrics.jsonl").unlink()
    capsys.readouterr()
    assert main(["resume", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "warning: the checkpoint is at step 9 but" in err and "does not exist" in err
    train = json.loads((out / "metrics.json").read_text())["train"]
    assert train["steps"] == 18 and train["steps_missing_from_log"] == 9
    assert math.isnan(train["loss_first_epoch"])  # not the second epoch's loss passed off
    assert "**Incomplete history**: 9 of the 18 steps are missing" in (
        (out / "report.md").read_text()
    )


def test_stale_temporary_files_are_removed_when_the_folder_is_opened(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    dead = _dead_pid()
    stale = [out / f".checkpoint.pt.{dead}.tmp", out / f".metrics.json.{dead}.tmp"]
    for p in stale:
        p.write_bytes(b"partial")
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as live:
        busy = out / f".checkpoint.pt.{live.pid}.tmp"  # another live process's: kept
        busy.write_bytes(b"partial")
        try:
            assert _run(out) == 0
        finally:
            live.kill()
    assert not any(p.exists() for p in stale) and busy.exists()
    assert remove_stale_tmp(out) == [busy]  # now its process is gone too


def test_a_failed_atomic_write_removes_its_temporary_file(tmp_path, monkeypatch):
    from torchnde.experiments import report

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report.os, "replace", fail)
    with pytest.raises(OSError, match="No space left"):
        report.write_json(tmp_path / "metrics.json", {"a": 1})
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- --out


@pytest.mark.parametrize(
    ("out", "reason"),
    [
        ("/dev/null/x", "Not a directory"),
        ("/proc/x", "No such file or directory"),
        ("/proc/x/y", "No such file or directory"),
    ],
)
def test_an_unusable_out_is_one_clear_line(out, reason, capsys):
    assert _run(Path(out)) == 1
    err = capsys.readouterr().err
    assert err == (
        f"torchnde run spiral: error: cannot create the run folder {out!r}: {reason}; choose "
        "another --out (a writable folder).\n"
    )


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_out_is_one_clear_line(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert _run(ro / "run") == 1
        assert _run(ro) == 1
    finally:
        ro.chmod(0o700)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all("Permission denied; choose another --out" in e for e in err)


# --------------------------------------------------------------------------- headlines


def test_spiral_compares_with_predicting_the_mean(tmp_path):
    from torchnde.data import load_spiral
    from torchnde.experiments import harness, make_config
    from torchnde.experiments.spiral import Config, Task

    cfg = make_config(Config, {"out": tmp_path, "epochs": 1, "quiet": True, "plot": False})
    ev = harness.run("spiral", cfg)["eval"]
    _, y = load_spiral()
    y = y.double()
    expected = float(((y - y.mean(0)) ** 2).sum(1).mean() / 2)  # mean over points and coords
    assert math.isclose(ev["mean_predictor_mse"], expected, rel_tol=1e-5)
    assert math.isclose(ev["r2"], 1 - ev["trajectory_mse"] / expected, rel_tol=1e-4)
    (h,) = Task.headline(ev)
    assert f"predicting the mean: {expected:.3g}" in h.value
    worse = dict(ev, trajectory_mse=2 * expected, r2=-1.0)
    assert Task.headline(worse)[0].verdict == "no: no better than predicting the mean"
    half = dict(ev, trajectory_mse=expected / 2, r2=0.5)
    assert Task.headline(half)[0].verdict == (
        "partly: 2x below predicting the mean, but R² is only 0.500 (criterion 0.9)"
    )
    good = dict(ev, trajectory_mse=expected / 20, r2=0.95)
    assert (
        Task.headline(good)[0].verdict == "yes (criterion R² >= 0.9): 20x below predicting the mean"
    )


def test_density_says_when_rnode_loses_likelihood():
    from torchnde.experiments.density import Task

    metrics = {
        "dataset": "moons",
        "ffjord": {"test_log_likelihood": -1.20, "test_nfe": 44},
        "rnode": {"test_log_likelihood": -1.35, "test_nfe": 26},
        "gaussian": {"test_log_likelihood": -2.5},
    }
    fits, nfe = Task.headline(metrics)
    assert fits.verdict == "yes: FFJORD's likelihood is 1.300 nats above the Gaussian's"
    assert nfe.value == "44 vs 26; -0.150 nats"
    assert nfe.verdict.startswith("partly: 41% fewer NFE, but RNODE's likelihood is 0.150 nats")
    assert "not similar" in nfe.verdict
    metrics["rnode"]["test_log_likelihood"] = -1.22
    assert Task.headline(metrics)[1].verdict.startswith("yes: 41% fewer NFE")
    metrics["rnode"]["test_nfe"] = 50
    assert Task.headline(metrics)[1].verdict.startswith("no:")


@pytest.mark.parametrize(
    ("name", "good", "bad"),
    [
        (
            "circles",
            {
                "node": {"test_accuracy": 0.8, "test_mse": 0.5, "test_nfe": 80},
                "anode": {"test_accuracy": 1.0, "test_mse": 0.1, "test_nfe": 30},
            },
            {
                "node": {"test_accuracy": 1.0, "test_mse": 0.1, "test_nfe": 30},
                "anode": {"test_accuracy": 0.9, "test_mse": 0.5, "test_nfe": 80},
            },
        ),
        (
            "digits",
            {
                "plain": {"test_accuracy": 0.95, "test_nfe": 80},
                "regularised": {"test_accuracy": 0.945, "test_nfe": 40},
            },
            {
                "plain": {"test_accuracy": 0.95, "test_nfe": 40},
                "regularised": {"test_accuracy": 0.90, "test_nfe": 80},
            },
        ),
        (
            "motions",
            {
                "test_accuracy": 0.95,
                "chance_accuracy": 0.25,
                "dropped_fraction": 0.3,
                **{f"test_accuracy_drop{p}": 0.95 for p in (30, 50, 70)},
            },
            {
                "test_accuracy": 0.25,
                "chance_accuracy": 0.25,
                "dropped_fraction": 0.3,
                **{f"test_accuracy_drop{p}": 0.25 for p in (30, 50, 70)},
            },
        ),
        (
            "sde",
            {
                "process": "ou",
                **dict.fromkeys(("model_mean_t1", "data_mean_t1", "true_mean_t1"), 0.5),
                **dict.fromkeys(("model_std_t1", "data_std_t1", "true_std_t1"), 0.3),
                "wasserstein_mean_over_times": 0.011,
                "wasserstein_floor_mean_over_times": 0.01,
            },
            {
                "process": "ou",
                **dict.fromkeys(("data_mean_t1", "true_mean_t1"), 0.5),
                **dict.fromkeys(("data_std_t1", "true_std_t1"), 0.3),
                "model_mean_t1": 0.8,
                "model_std_t1": 0.3,
                "wasserstein_mean_over_times": 0.05,
                "wasserstein_floor_mean_over_times": 0.01,
            },
        ),
    ],
)
def test_every_headline_says_whether_the_numbers_show_the_claim(name, good, bad):
    from torchnde.experiments import get_experiment

    task = get_experiment(name).task_cls
    for h in task.headline(good):
        assert h.verdict.startswith("yes"), h
    for h in task.headline(bad):
        assert h.verdict.startswith("no"), h


def test_the_report_shows_the_verdicts(tmp_path):
    out = tmp_path / "run"
    assert _run(out) == 0
    report = (out / "report.md").read_text()
    assert "| quantity | this run | paper | shown by this run? |" in report
    for h in json.loads((out / "metrics.json").read_text())["headline"]:
        assert h["verdict"] and f"| {h['paper']} | {h['verdict']} |" in report


# --------------------------------------------------------------------------- torchrun


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _first_losses_one_and_two_processes(tmp_path: Path, monkeypatch, dtype: str, steps: int):
    """The first ``steps`` losses of the default-schedule spiral (10 epochs of 49 steps, the
    learning rate still high at step 100), per-sample stepping, in one process and under
    torchrun with two; both runs are stopped after ``steps`` steps."""
    from torchnde.experiments import harness

    args = ["--epochs", "10", "--seed", "0", "hidden=16", "per_sample=true", f"dtype={dtype}"]
    args += ["plot=false", "--quiet"]
    one, two = tmp_path / f"one_{dtype}", tmp_path / f"two_{dtype}"

    def stop(self, step):
        if step == steps:
            raise KeyboardInterrupt

    monkeypatch.setattr(harness._Run, "_after_step", stop)
    assert main(["run", "spiral", "--out", str(one), *args]) == 130
    monkeypatch.undo()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(SRC))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2"]
    cmd += ["--master_addr=127.0.0.1", f"--master_port={_free_port()}", "-m", "torchnde"]
    cmd += ["run", "spiral", "--out", str(two), *args]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    jsonl = two / "metrics.jsonl"
    try:
        deadline = time.monotonic() + 600
        while not jsonl.is_file() or jsonl.read_text().count("\n") < steps:
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and its two workers
        proc.wait()
    a = _jsonl(one / "metrics.jsonl")
    b = [json.loads(line) for line in jsonl.read_text().splitlines()[:steps]]
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, steps + 1))
    return [r["loss"] for r in a], [r["loss"] for r in b]


@pytest.mark.slow
def test_torchrun_reproduces_one_process_past_step_100_in_float64(tmp_path, monkeypatch):
    # In float32 the two runs start 1e-7 apart (the shards' sums are added in another order);
    # an adaptive step that rounding accepts in one run and rejects in the other moves a
    # sample's loss by about the tolerance, and training amplifies it: about 10% apart by step
    # 110 of this schedule (the issue's 5.5% at step 101). In float64 the two runs agree.
    a, b = _first_losses_one_and_two_processes(tmp_path, monkeypatch, "float64", 110)
    for step, (la, lb) in enumerate(zip(a, b), 1):
        assert math.isclose(la, lb, rel_tol=1e-8), (step, la, lb)
