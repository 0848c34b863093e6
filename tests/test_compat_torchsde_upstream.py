"""torchsde's own test suite, run against torchnde.compat.torchsde (issue 9, "Proof").

At test time the torchsde 0.2.6 source distribution is fetched with pip into a temporary
folder (skipped, with the reason, when pip or the network fails), and the selected upstream
test files run in a subprocess pytest in which ``import torchsde`` gives
``torchnde.compat.torchsde``. The selection, and why the rest is left out, is listed below and
in docs/usage/from-torchsde.md.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

UPSTREAM = "torchsde==0.2.6"
SRC = Path(__file__).resolve().parents[1] / "src"

# Upstream test files that run (all of their CPU cases but those deselected below).
SELECTED = [
    "tests/test_brownian_interval.py",
    "tests/test_brownian_path.py",
    "tests/test_brownian_tree.py",
]
# Upstream test files left out, and why.
EXCLUDED_FILES = {
    "tests/test_sdeint.py": "imports tests/problems.py, which the sdist does not ship",
    "tests/test_adjoint.py": "imports tests/problems.py and tests/utils.py, not in the sdist",
}
# Cases deselected (pytest -k), and why.
DESELECTED = {
    "device1": "the CUDA parametrisation: no GPU here, and its skip uses pytest.skip(msg=), "
    "which pytest >= 8 rejects (TypeError) before any torchsde code runs",
    "test_normality_conditional and not none": "slow (~11 s each: 50 KS tests on 131072 "
    "samples with Lévy areas); the 'none' case runs",
    "test_entropy_determinism and True]": "slow (~7 s each: 2000 queries of a "
    "halfway_tree=True motion at tol=1e-6); the random_order=False cases run",
    "davie and (determinism_large or entropy_determinism or consistency)": "runtime (~3 s "
    "each); the foster cases run the same code (the Lévy-area formulas differ by one term)",
}
EXPECTED_PASSED = 50
# TORCHNDE_UPSTREAM_ALL=1 runs every CPU case (73, ~3 min): only the CUDA ones are deselected.
RUN_ALL = os.environ.get("TORCHNDE_UPSTREAM_ALL") == "1"

# The upstream tests seed torch but not NumPy or Python's `random`, from which they draw
# query times and values; their Kolmogorov-Smirnov tests at ALPHA = 1e-5 then fail now and then
# with torchsde itself (p = 2.5e-6 in 20 draws of test_normality_simple's W at t = 0.9999,
# float32; a CI run against the compat module failed so, at p = 7.9e-6). Seeded here: the
# same draws every run.
CONFTEST = """
import random
import sys

import numpy

import torchnde.compat.torchsde as _compat

sys.modules["torchsde"] = _compat
sys.modules["torchsde.settings"] = _compat.settings
random.seed(0)
numpy.random.seed(0)
"""


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("torchsde_sdist")
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
        "--no-build-isolation", "--timeout", "10", "--retries", "0", "-q", UPSTREAM,
        "-d", str(where),
    ]  # fmt: skip
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"cannot fetch the {UPSTREAM} sdist with pip (offline, or pip failed): {e}")
    archives = list(where.glob("torchsde-*.tar.gz"))
    if done.returncode != 0 or not archives:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        pytest.skip(f"cannot fetch the {UPSTREAM} sdist with pip (offline, or pip failed): {tail}")
    with tarfile.open(archives[0]) as tar:
        members = [m for m in tar.getmembers() if m.isfile() or m.isdir()]
        for m in members:  # plain files inside the folder only (Python 3.10 has no filter=)
            if m.name.startswith(("/", "\\")) or ".." in Path(m.name).parts:
                pytest.fail(f"unexpected path {m.name!r} in {archives[0].name}")
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(where, members=members, **safe)
    root = next(p for p in where.iterdir() if p.is_dir() and p.name.startswith("torchsde-"))
    (root / "tests" / "conftest.py").write_text(CONFTEST)
    return root


def test_upstream_files_are_accounted_for(upstream: Path) -> None:
    shipped = {f"tests/{p.name}" for p in (upstream / "tests").glob("test_*.py")}
    assert shipped == set(SELECTED) | set(EXCLUDED_FILES)
    for name in EXCLUDED_FILES:  # the reason given for leaving them out holds
        assert not (upstream / "tests" / "problems.py").exists(), name


@pytest.mark.slow  # torchsde's own suite in a subprocess: about 40 s
def test_upstream_suite_passes(upstream: Path) -> None:
    deselected = ["device1"] if RUN_ALL else list(DESELECTED)
    keep = " and ".join(f"not ({expr})" for expr in deselected)
    cmd = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
        "--rootdir", str(upstream), *SELECTED, "-k", keep,
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS="1")
    done = subprocess.run(cmd, cwd=upstream, env=env, capture_output=True, text=True, timeout=600)
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    passed = re.search(r"(\d+) passed", summary)
    assert passed is not None and int(passed.group(1)) == (73 if RUN_ALL else EXPECTED_PASSED), (
        summary
    )
    assert "failed" not in summary and "error" not in summary, summary
