"""Caching generated data sets as ``.pt`` files named after the generator's parameters."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def cache_name(prefix: str, params: dict[str, Any]) -> str:
    """``prefix-key1_value1-key2_value2.pt`` (floats written with ``repr``, stable)."""
    parts = [f"{k}{v!r}" if isinstance(v, float) else f"{k}{v}" for k, v in params.items()]
    return "-".join([prefix, *parts]) + ".pt"


def cached(
    cache_dir: str | Path | None, prefix: str, params: dict[str, Any], make: Callable[[], dict]
) -> dict[str, torch.Tensor]:
    """``make()`` (a dict of CPU tensors), read from / written to ``cache_dir`` when given."""
    if cache_dir is None:
        return make()
    path = Path(cache_dir) / cache_name(prefix, params)
    if path.is_file():
        return torch.load(path, map_location="cpu", weights_only=True)
    data = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(data, tmp)
    os.replace(tmp, path)
    return data
