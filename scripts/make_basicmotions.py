"""Regenerate ``src/torchnde/data/basicmotions.npz`` from the UEA BasicMotions files in sktime.

sktime (BSD 3-Clause) ships the UEA archive's BasicMotions recordings as ``.ts`` files. This
script takes them from an sktime wheel, without installing sktime::

    pip download sktime --no-deps -d /tmp/sk
    python scripts/make_basicmotions.py /tmp/sk/sktime-*.whl

and writes ``x_train (40, 100, 6)``, ``y_train (40,)``, ``x_test``, ``y_test`` (float32 and
int64; channels: 3-D accelerometer, 3-D gyroscope, 10 Hz for 10 s) and ``classes`` (the label
names, in the order of the integer labels).
"""

from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path

import numpy as np

MEMBER = "sktime/datasets/data/BasicMotions/BasicMotions_{}.ts"
OUT = Path(__file__).resolve().parents[1] / "src" / "torchnde" / "data" / "basicmotions.npz"


def parse_ts(text: str) -> tuple[np.ndarray, list[str], list[str]]:
    """A multivariate, equal-length ``.ts`` file: ``(series, length, channels)``, the labels
    and the class names declared in its header."""
    series, labels, classes = [], [], []
    in_data = False
    for line in io.StringIO(text):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.lower().startswith("@classlabel"):
            classes = line.split()[2:]
        elif line.lower() == "@data":
            in_data = True
        elif in_data:
            *dims, label = line.split(":")
            series.append([[float(v) for v in d.split(",")] for d in dims])
            labels.append(label)
    x = np.asarray(series, dtype=np.float32).transpose(0, 2, 1)
    return x, labels, classes


def main(wheel: str) -> None:
    with zipfile.ZipFile(wheel) as z:
        x_tr, l_tr, classes = parse_ts(z.read(MEMBER.format("TRAIN")).decode())
        x_te, l_te, _ = parse_ts(z.read(MEMBER.format("TEST")).decode())
    index = {c: i for i, c in enumerate(classes)}
    np.savez_compressed(
        OUT,
        x_train=x_tr,
        y_train=np.asarray([index[c] for c in l_tr], dtype=np.int64),
        x_test=x_te,
        y_test=np.asarray([index[c] for c in l_te], dtype=np.int64),
        classes=np.asarray(classes),
    )
    print(f"wrote {OUT}: train {x_tr.shape}, test {x_te.shape}, classes {classes}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
