"""Typed experiment configs: dataclasses filled from defaults, a config file and ``key=value``.

Every experiment's ``Config`` subclasses :class:`ExperimentConfig`. Fields have defaults, a
type (``int``, ``float``, ``bool``, ``str`` or ``Path``) and optional metadata: ``help`` (shown
by ``torchnde run NAME --help``) and ``choices``. :func:`make_config` applies overrides in
order (a JSON/TOML file, then ``key=value`` strings, then keyword values) and turns every
mistake into a ``ValueError`` that names the key and the accepted values or type.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

__all__ = [
    "ExperimentConfig",
    "ODEConfig",
    "config_fields",
    "describe_config",
    "load_config_file",
    "make_config",
    "parse_overrides",
]

C = TypeVar("C", bound="ExperimentConfig")

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _fail(key: str, contract: str, value: Any) -> None:
    raise ValueError(f"config key `{key}` must be {contract}, got {value!r}.")


def check(ok: bool, key: str, contract: str, value: Any) -> None:
    """Raise ``ValueError`` naming ``key`` unless ``ok``."""
    if not ok:
        _fail(key, contract, value)


def is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def is_positive(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


@dataclass
class ExperimentConfig:
    """Options every experiment shares. Subclasses add their own fields (all with defaults)."""

    out: Path = field(default=Path("runs/experiment"), metadata={"help": "run folder"})
    seed: int = field(default=0, metadata={"help": "random seed (init, batches, noise)"})
    device: str = field(default="cpu", metadata={"help": "torch device: cpu, cuda or cuda:N"})
    epochs: int = field(default=10, metadata={"help": "passes over the training set"})
    batch_size: int = field(default=64, metadata={"help": "global batch (over all processes)"})
    lr: float = field(default=1e-2, metadata={"help": "Adam learning rate (cosine decay)"})
    checkpoint_every: int = field(
        default=1, metadata={"help": "write the checkpoint every this many epochs"}
    )
    threads: int = field(
        default=1,
        metadata={"help": "torch CPU threads (small models run fastest on one); 0: torch's"},
    )
    plot: bool = field(default=True, metadata={"help": "write PNG figures (needs matplotlib)"})
    quiet: bool = field(default=False, metadata={"help": "print nothing"})

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        check(is_int(self.seed) and self.seed >= 0, "seed", "an int >= 0", self.seed)
        for key in ("epochs", "batch_size", "checkpoint_every"):
            value = getattr(self, key)
            check(is_int(value) and value >= 1, key, "an int >= 1", value)
        check(is_int(self.threads) and self.threads >= 0, "threads", "an int >= 0", self.threads)
        check(is_positive(self.lr), "lr", "a positive number", self.lr)
        try:
            dev = torch.device(self.device)
        except (RuntimeError, TypeError):
            raise ValueError(
                f"config key `device` must be a torch device such as 'cpu' or 'cuda', got "
                f"{self.device!r}."
            ) from None
        if dev.type not in ("cpu", "cuda"):
            _fail("device", "'cpu', 'cuda' or 'cuda:N'", self.device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                f"config key `device` is {self.device!r} but torch sees no CUDA device; use "
                "--device cpu."
            )

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-ready values (paths as strings)."""
        return {
            k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()
        }

    def __str__(self) -> str:
        return describe_config(self)


@dataclass
class ODEConfig(ExperimentConfig):
    """Options of experiments that solve ODEs: the method and its tolerances."""

    method: str = field(
        default="dopri5",
        metadata={
            "help": "ODE solver (torchdiffeq's names)",
            "choices": (
                "dopri5",
                "tsit5",
                "bosh3",
                "dopri8",
                "fehlberg2",
                "adaptive_heun",
                "euler",
                "midpoint",
                "rk4",
            ),
        },
    )
    rtol: float = field(default=1e-3, metadata={"help": "relative tolerance (adaptive methods)"})
    atol: float = field(default=1e-4, metadata={"help": "absolute tolerance (adaptive methods)"})
    step_size: float = field(default=0.05, metadata={"help": "step of fixed-step methods"})
    per_sample: bool = field(
        default=False,
        metadata={
            "help": "step each sample on its own clock (each sample's solve independent of "
            "the rest of its batch; torchrun then matches one process up to rounding, see "
            "docs/usage/cli.md)"
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("rtol", "atol", "step_size"):
            value = getattr(self, key)
            check(is_positive(value), key, "a positive number", value)


def config_fields(cls: type[ExperimentConfig]) -> list[tuple[dataclasses.Field[Any], type]]:
    """The settable fields of ``cls`` with their resolved types."""
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls) if f.init]


def _type_name(kind: type) -> str:
    return {int: "an int", float: "a number", bool: "true or false", str: "a string"}.get(
        kind, "a path"
    )


def _convert(key: str, kind: type, choices: Any, value: Any) -> Any:
    """``value`` as a ``kind``; strings (from ``key=value``) are parsed for non-string keys."""
    if isinstance(value, str) and kind not in (str, Path):
        text = value.strip()
        if kind is bool:
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            _fail(key, "true or false", value)
        try:
            value = int(text) if kind is int else float(text)
        except ValueError:
            _fail(key, _type_name(kind), value)
    if kind is float and is_int(value):
        value = float(value)
    if kind is Path and isinstance(value, str):
        value = Path(value)
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if not ok:
        _fail(key, _type_name(kind), value)
    if choices and value not in choices:
        _fail(key, f"one of {', '.join(map(str, choices))}", value)
    return value


def parse_overrides(items: Iterable[str]) -> dict[str, str]:
    """``["lr=0.1", "method=rk4"]`` as ``{"lr": "0.1", "method": "rk4"}``."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"overrides are written key=value (e.g. lr=0.01), got {item!r}.")
        out[key] = value
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A config file: JSON (``.json``, as written to ``config.json``) or TOML (``.toml``).

    A ``config.json`` of an earlier run works: its ``"config"`` table is used.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ValueError(f"--config {str(path)!r} cannot be read: {e.strerror}.") from None
    try:
        if path.suffix == ".toml":
            import tomllib

            data: Any = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ValueError as e:
        kind = "TOML" if path.suffix == ".toml" else "JSON"
        raise ValueError(f"--config {str(path)!r} is not valid {kind}: {e}.") from None
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        data = data["config"]
    if not isinstance(data, dict):
        raise ValueError(
            f"--config {str(path)!r} must hold a table of key = value, got {type(data).__name__}."
        )
    return data


def make_config(cls: type[C], *layers: Mapping[str, Any], experiment: str = "") -> C:
    """Build ``cls`` from ``layers`` of values (a parsed file, ``key=value`` strings, options);
    later layers win and ``None`` values are skipped. Strings are parsed for non-string keys.

    Raises:
        ValueError: an unknown key (the message lists the accepted ones), a value of the wrong
            type or outside the choices, or a value the config's checks reject.
    """
    fields = {f.name: (f, kind) for f, kind in config_fields(cls)}
    values: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if value is None:
                continue
            if key not in fields:
                who = f" of experiment {experiment!r}" if experiment else ""
                raise ValueError(
                    f"unknown config key {key!r}{who}; accepted keys: {', '.join(fields)}."
                )
            f, kind = fields[key]
            values[key] = _convert(key, kind, f.metadata.get("choices"), value)
    return cls(**values)


def describe_config(config: ExperimentConfig) -> str:
    """One ``key = value`` line per field, aligned."""
    items = config.to_dict()
    width = max(map(len, items))
    return "\n".join(f"{k:<{width}} = {v!r}" for k, v in items.items())


def help_lines(cls: type[ExperimentConfig]) -> str:
    """The keys of ``cls`` for ``--help``: name, type, default, help and choices."""
    lines = []
    for f, kind in config_fields(cls):
        default = str(f.default) if isinstance(f.default, Path) else repr(f.default)
        kind_name = getattr(kind, "__name__", str(kind))
        text = f.metadata.get("help", "")
        choices = f.metadata.get("choices")
        if choices:
            text += f"; one of {', '.join(map(str, choices))}"
        lines.append(f"  {f.name}={kind_name} (default {default}): {text}")
    return "\n".join(lines)
