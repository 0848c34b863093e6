"""Checkpoints of a run: written atomically, validated on load, with every RNG state.

A checkpoint is one ``torch.save`` file that loads with ``weights_only=True`` (no pickled code):
the model, optimizer and scheduler state, the epoch and step reached, and the states of the
Python, NumPy and torch (CPU and CUDA) random generators, so that a resumed run continues
exactly where the interrupted one stopped. It is written to a temporary file in the same
folder, flushed to disk and renamed over the old one (``os.replace`` is atomic), so the latest
checkpoint is always a complete file.

Every checkpoint carries the sha256 of its content (:func:`content_digest`: every tensor's
dtype, shape and bytes, and every other value, in a fixed order), verified on load, so a file
altered after it was written (a flipped bit on disk, a bad copy) is a :class:`CheckpointError`
instead of a resumed run that silently continues from different weights. Checkpoints of the
first layout (``torchnde.checkpoint/1``, before checksums) still load, with a warning that they
cannot be verified.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "content_digest",
    "get_rng_state",
    "load_checkpoint",
    "save_checkpoint",
    "set_rng_state",
]

#: The tag every torchnde checkpoint carries (and the version of its layout).
CHECKPOINT_FORMAT = "torchnde.checkpoint/2"
#: The layout before checksums: loaded unverified, with a warning.
_UNVERIFIED_FORMAT = "torchnde.checkpoint/1"


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


def _feed(h: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        h.update(f"T{obj.dtype}{tuple(obj.shape)}".encode())
        flat = obj.detach().cpu().contiguous().reshape(-1)
        h.update(flat.view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for key in sorted(obj, key=repr):
            _feed(h, key)
            _feed(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(f"{type(obj).__name__}{len(obj)}".encode())
        for item in obj:
            _feed(h, item)
    else:
        h.update(f"{type(obj).__name__}:{obj!r};".encode())


def content_digest(state: Any) -> str:
    """The sha256 (hex) of ``state``: every tensor's dtype, shape and bytes and every other
    value, in an order fixed by the keys, so it does not depend on how ``torch.save`` lays
    the file out."""
    h = hashlib.sha256()
    _feed(h, state)
    return h.hexdigest()


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` (tagged with :data:`CHECKPOINT_FORMAT` and the sha256 of its content)
    to ``path`` atomically; the temporary file is removed if the write fails."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    payload = {"format": CHECKPOINT_FORMAT, **state}
    payload["sha256"] = content_digest(payload)
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
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
            pickled objects other than tensors), is not a torchnde checkpoint, its content does
            not match its checksum, or it belongs to another experiment.

    A checkpoint of the layout before checksums loads with a warning that it is unverified.
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
    formats = (CHECKPOINT_FORMAT, _UNVERIFIED_FORMAT)
    if not isinstance(state, dict) or state.get("format") not in formats:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{str(path)!r} is not a torchnde checkpoint (expected format "
            f"{CHECKPOINT_FORMAT!r}, found {found!r}); was it written by `torchnde run`?"
        )
    if state["format"] == _UNVERIFIED_FORMAT:
        warnings.warn(
            f"checkpoint {str(path)!r} was written before checkpoints had checksums "
            f"({_UNVERIFIED_FORMAT}): loading it unverified.",
            stacklevel=2,
        )
    else:
        stored = state.pop("sha256", None)
        if stored != content_digest(state):
            raise CheckpointError(
                f"checkpoint {str(path)!r} is corrupt: its content does not match its sha256 "
                "checksum (the file was altered or damaged after it was written). Delete it and "
                "start over without resuming (`torchnde run`), or resume from another copy."
            )
    if experiment is not None and state.get("experiment") != experiment:
        raise CheckpointError(
            f"checkpoint {str(path)!r} belongs to experiment {state.get('experiment')!r}, not "
            f"{experiment!r}."
        )
    return state
