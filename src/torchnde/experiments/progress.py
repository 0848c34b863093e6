"""Training progress: a tqdm bar when tqdm is installed, otherwise a line every tenth."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["ProgressReporter"]


class ProgressReporter:
    """Shows the step, the loss, the function evaluations and the time per step.

    Args:
        total: the number of steps.
        desc: a label for the bar or the lines.
        quiet: show nothing.
        initial: the step to start from (a resumed run).
    """

    def __init__(self, total: int, desc: str, quiet: bool = False, initial: int = 0) -> None:
        self.total = total
        self.desc = desc
        self.quiet = quiet
        self.every = max(1, total // 10)
        self.n = initial
        self.start = time.perf_counter()
        self.bar: Any = None
        if not quiet:
            try:
                from tqdm import tqdm
            except ImportError:
                self.bar = None
            else:
                self.bar = tqdm(
                    total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True
                )

    def update(self, **values: float) -> None:
        """Advance by one step and show ``values`` (e.g. ``loss=...``)."""
        self.n += 1
        if self.quiet:
            return
        text = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(1)
        elif self.n % self.every == 0 or self.n == 1 or self.n == self.total:
            elapsed = time.perf_counter() - self.start
            print(f"{self.desc}: step {self.n}/{self.total} {text} ({elapsed:.1f} s)", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
