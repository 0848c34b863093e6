"""A progress meter for long solves (tqdm, imported only when asked for)."""

from __future__ import annotations

from typing import Any


class ProgressMeter:
    """Shows the fraction of [t0, t1] covered, the steps taken and the rejections."""

    def __init__(self, t0: float, t1: float, direction: float) -> None:
        try:
            from tqdm.auto import tqdm
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError(
                "progress=True needs tqdm: pip install tqdm (or torchnde[progress])."
            ) from e
        self.t0 = t0
        self.span = (t1 - t0) or 1.0
        self.direction = direction
        self.bar: Any = tqdm(total=100, unit="%", bar_format="{l_bar}{bar}| {postfix}")

    def update(self, t: float, num_steps: int, num_rejected: int) -> None:
        frac = min(max((t - self.t0) / self.span, 0.0), 1.0)
        self.bar.n = round(100 * frac, 2)
        self.bar.set_postfix_str(
            f"t={self.direction * t:.4g}, steps={num_steps}, rejected={num_rejected}",
            refresh=False,
        )
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()
