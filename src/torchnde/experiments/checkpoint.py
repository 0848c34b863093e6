"""Checkpoints of a run: written atomically, validated on load, with every RNG state.

A checkpoint is one ``torch.save`` file that loads with ``weights_only=True`` (no pickled code):
the model, optimizer and scheduler state, the epoch and step reached, and the states of the
Python, NumPy and torch (CPU and CUDA) random generators, so that a resumed run continues
exactly where the interrupted one stopped. It is written to a temporary file in the same
folder, flushed to disk and renamed over the old one (``os.replace`` is atomic), so the latest
checkpoint is always a complete file.
"""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "get_rng_state",
    "load_checkpoint",
    "save_checkpoint",
    "set_rng_state",
]

#: The tag every torchnde checkpoint carries (and the version of its layout).
CHECKPOINT_FORMAT = "torchnde.checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, foreign or does not fit the run."""


def get_rng_state() -> dict[str, Any]:
    """The states of Python's, NumPy's (legacy global) and torch's generators, as tensors and
    plain values (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]  # noqa: NPY002
    version, py_state, gauss = random.getstate()
    state: dict[str, Any] = {
        "python": [version, list(py_state), gauss],
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators from :func:`get_rng_state`'s output."""
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` (tagged with :data:`CHECKPOINT_FORMAT`) to ``path`` atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save({"format": CHECKPOINT_FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(
    path: str | Path, experiment: str | None = None, map_location: Any = "cpu"
) -> dict[str, Any]:
    """Load and check a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: the checkpoint file.
        experiment: when given, the checkpoint must belong to this experiment.
        map_location: passed to ``torch.load``.

    Raises:
        CheckpointError: the file is missing, cannot be read (truncated, not a torch file,
            pickled objects other than tensors), is not a torchnde checkpoint, or belongs to
            another experiment.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {str(path)!r}.")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt or not a torchnde checkpoint ({first}); "
            "delete it and rerun, or resume from another copy."
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{str(path)!r} is not a torchnde checkpoint (expected format "
            f"{CHECKPOINT_FORMAT!r}, found {found!r}); was it written by `torchnde run`?"
        )
    if experiment is not None and state.get("experiment") != experiment:
        raise CheckpointError(
            f"checkpoint {str(path)!r} belongs to experiment {state.get('experiment')!r}, not "
            f"{experiment!r}."
        )
    return state
