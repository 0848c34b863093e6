"""Run every experiment of ``torchnde run`` at its default settings: wall time and headlines.

Each experiment runs in a fresh process (``python -m torchnde run NAME --out DIR --quiet``),
one after the other, so the times include start-up and imports as a user sees them. The load
average before and after each run is recorded: on a shared machine the times are upper bounds.

    .venv/bin/python benchmarks/experiments.py                    # all, default settings
    .venv/bin/python benchmarks/experiments.py --names spiral,sde
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from _common import machine_info, write_json

SRC = str(Path(__file__).resolve().parents[1] / "src")


def main() -> None:
    sys.path.insert(0, SRC)
    from torchnde.experiments import EXPERIMENTS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", default=",".join(EXPERIMENTS))
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.names.split(","):
            out = Path(tmp) / name
            load0 = os.getloadavg()[0]
            start = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "torchnde", "run", name, "--out", str(out), "--quiet"],
                env=env,
                capture_output=True,
                text=True,
            )
            wall = time.perf_counter() - start
            row = {
                "name": name,
                "rc": proc.returncode,
                "wall_s": wall,
                "load_before": load0,
                "load_after": os.getloadavg()[0],
            }
            if proc.returncode == 0:
                m = json.loads((out / "metrics.json").read_text())
                row |= {
                    "train_s": m["timing"]["train_s"],
                    "steps": m["train"]["steps"],
                    "headline": m["headline"],
                    "eval": m["eval"],
                }
            else:
                row["stderr"] = proc.stderr[-2000:]
            rows.append(row)
            print(
                f"{name}: rc={proc.returncode} wall {wall:.1f} s "
                f"(load {load0:.1f} -> {row['load_after']:.1f})",
                flush=True,
            )
            for h in row.get("headline", []):
                print(f"    {h['label']}: {h['value']}", flush=True)
    path = write_json("experiments", {"machine": machine_info(), "rows": rows}, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
