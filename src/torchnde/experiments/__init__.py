"""Runnable experiments (paper reproductions and demos), behind ``torchnde run NAME``.

The contract of an experiment module (see :mod:`torchnde.experiments.spiral`):

1. ``Config``: a dataclass subclassing :class:`ExperimentConfig`. Every field has a default
   and becomes a command-line option ``--field-name`` (``bool`` fields become switches;
   ``metadata={"help": ..., "choices": ...}`` feeds ``--help``). ``__post_init__`` validates
   the values and raises ``ValueError`` naming the option, so the command line and Python
   callers get the same messages.
2. ``train(config) -> dict``: runs the experiment, writes its outputs into ``config.out``
   and returns the metrics (the content of ``metrics.json``).
3. The module imports only the standard library, torch and torchnde at import time; plotting
   and other optional dependencies are imported where used.

Register a new experiment with one :func:`register` call at the bottom of this file; the
module is imported only when the experiment is run.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

__all__ = [
    "EXPERIMENTS",
    "Experiment",
    "ExperimentConfig",
    "ProgressReporter",
    "get_experiment",
    "register",
    "seed_everything",
    "write_json",
]


@dataclass(frozen=True)
class Experiment:
    """A registered experiment: its name, a one-line summary and the module that runs it."""

    name: str
    summary: str
    module: str

    def load(self) -> ModuleType:
        """Import the experiment's module (which defines ``Config`` and ``train``)."""
        return importlib.import_module(self.module)

    @property
    def config_cls(self) -> type[ExperimentConfig]:
        return self.load().Config

    @property
    def train(self) -> Callable[[Any], dict[str, Any]]:
        return self.load().train


#: All registered experiments, by name, in registration order.
EXPERIMENTS: dict[str, Experiment] = {}


def register(name: str, summary: str, module: str) -> Experiment:
    """Register an experiment run by ``module`` (a dotted module path) under ``name``."""
    if name in EXPERIMENTS:
        raise ValueError(f"an experiment named {name!r} is already registered.")
    EXPERIMENTS[name] = exp = Experiment(name, summary, module)
    return exp


def get_experiment(name: str) -> Experiment:
    """The experiment called ``name``; ``ValueError`` lists the known ones."""
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise ValueError(
            f"unknown experiment {name!r}; known experiments: {', '.join(EXPERIMENTS)}."
        ) from None


def _check(ok: bool, option: str, contract: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"--{option.replace('_', '-')} must be {contract}, got {value!r}.")


@dataclass
class ExperimentConfig:
    """Options every experiment shares. Subclasses add their own fields (all with defaults)."""

    out: Path = field(
        default=Path("runs"), metadata={"help": "output folder for metrics, plot and checkpoint"}
    )
    seed: int = field(default=0, metadata={"help": "random seed (model init and batches)"})
    device: str = field(default="cpu", metadata={"help": "torch device, e.g. cpu or cuda"})
    threads: int = field(
        default=1,
        metadata={
            "help": "CPU threads for torch (small models run fastest on one); 0 keeps "
            "torch's default"
        },
    )
    plot: bool = field(default=True, metadata={"help": "write a plot (needs matplotlib)"})
    quiet: bool = field(default=False, metadata={"help": "print nothing"})

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        _check(_is_int(self.seed) and self.seed >= 0, "seed", "an int >= 0", self.seed)
        _check(_is_int(self.threads) and self.threads >= 0, "threads", "an int >= 0", self.threads)
        try:
            dev = torch.device(self.device)
        except (RuntimeError, TypeError):
            raise ValueError(
                f"--device must be a torch device such as 'cpu' or 'cuda', got {self.device!r}."
            ) from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                f"--device {self.device!r} asks for CUDA but torch sees no CUDA device; use "
                "--device cpu."
            )

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-ready values (paths as strings)."""
        return {
            k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()
        }


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_positive(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a fresh CPU generator for data sampling."""
    random.seed(seed)
    # The legacy global NumPy generator, on purpose: it is what third-party code draws from.
    np.random.seed(seed % 2**32)  # noqa: NPY002
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically (a temporary file, then a rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, allow_nan=True) + "\n")
    os.replace(tmp, path)


class ProgressReporter:
    """Training progress: a tqdm bar when tqdm is installed, otherwise a line every tenth.

    Args:
        total: the number of iterations.
        desc: a label for the bar or the lines.
        quiet: show nothing.
    """

    def __init__(self, total: int, desc: str, quiet: bool = False) -> None:
        self.total = total
        self.desc = desc
        self.quiet = quiet
        self.every = max(1, total // 10)
        self.n = 0
        self.start = time.perf_counter()
        self.bar: Any = None
        if not quiet:
            try:
                from tqdm import tqdm
            except ImportError:
                self.bar = None
            else:
                self.bar = tqdm(total=total, desc=desc, unit="it", dynamic_ncols=True)

    def update(self, **values: float) -> None:
        """Advance by one iteration and show ``values`` (e.g. ``loss=...``)."""
        self.n += 1
        if self.quiet:
            return
        text = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
        if self.bar is not None:
            self.bar.update(1)
            if self.n % max(1, self.every // 10) == 0 or self.n == self.total:
                self.bar.set_postfix_str(text, refresh=False)
        elif self.n % self.every == 0 or self.n == 1 or self.n == self.total:
            elapsed = time.perf_counter() - self.start
            print(f"{self.desc}: iter {self.n}/{self.total} {text} ({elapsed:.1f} s)", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


register(
    "spiral",
    "fit a neural ODE to a 2-D spiral (torchdiffeq's ode_demo) on bundled data",
    "torchnde.experiments.spiral",
)
