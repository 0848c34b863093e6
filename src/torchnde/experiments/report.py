"""The files of a run folder: JSON written atomically, the loss plot and ``report.md``.

:func:`write_report` needs only the folder's files (``config.json``, ``metrics.jsonl``,
``metrics.json`` and the PNGs), so ``torchnde report DIR`` rebuilds the report of a finished or
an interrupted run without the model.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from .runfolder import read_jsonl

__all__ = [
    "new_figure",
    "plot_loss",
    "require_matplotlib",
    "write_json",
    "write_report",
    "write_text_atomic",
]


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (the temporary file is
    removed if the write fails)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, allow_nan=True) + "\n")


def require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    except ImportError:
        raise ImportError(
            "matplotlib is not installed (pip install 'torchnde[experiments]' or pip install "
            "matplotlib)"
        ) from None


def new_figure(width: float, height: float) -> Any:
    """A bare matplotlib ``Figure`` on the Agg canvas (no pyplot, no global backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _smooth(xs: list[float], w: int) -> list[float]:
    out, acc = [], 0.0
    for i, x in enumerate(xs):
        acc += x
        if i >= w:
            acc -= xs[i - w]
        out.append(acc / min(i + 1, w))
    return out


def plot_loss(history: list[dict[str, Any]], path: Path, name: str) -> None:
    """Training loss and function evaluations per step, against the step."""
    fig = new_figure(10, 3.6)
    ax_loss, ax_nfe = fig.subplots(1, 2)
    steps = [r["step"] for r in history]
    losses = [r["loss"] for r in history]
    w = max(1, len(history) // 25)
    ax_loss.plot(steps, losses, color="tab:gray", lw=0.6, alpha=0.6, label="per step")
    ax_loss.plot(steps, _smooth(losses, w), color="tab:blue", lw=1.5, label=f"mean of {w}")
    if losses and min(losses) > 0:
        ax_loss.set_yscale("log")
    ax_loss.set(xlabel="step", ylabel="training loss", title=f"{name}: training loss")
    ax_loss.legend(fontsize="small")
    nfe_keys = [k for k in (history[0] if history else {}) if k.startswith("nfe")]
    for k in nfe_keys:
        ax_nfe.plot(steps, _smooth([r[k] for r in history], w), lw=1.2, label=k)
    ax_nfe.set(xlabel="step", ylabel="function evaluations", title="forward NFE per step")
    if nfe_keys:
        ax_nfe.legend(fontsize="small")
    fig.savefig(path, dpi=100)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return str(v)


def _flat(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for k, v in d.items():
        if isinstance(v, dict):
            rows += _flat(v, f"{prefix}{k}.")
        elif not isinstance(v, list):
            rows.append((prefix + k, v))
    return rows


def write_report(out: Path) -> Path:
    """Write ``out / "report.md"`` from the run folder's files and return its path.

    Raises:
        ValueError: ``out`` is not a run folder (no ``config.json``).
    """
    out = Path(out)
    cfg_path = out / "config.json"
    if not cfg_path.is_file():
        raise ValueError(f"{str(out)!r} is not a run folder: it has no config.json.")
    meta = json.loads(cfg_path.read_text())
    config = meta["config"]
    metrics_path = out / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
    jsonl = out / "metrics.jsonl"
    history = read_jsonl(jsonl)
    name = meta["experiment"]
    lines = [f"# {name}: {meta.get('title', '')}", "", f"Paper: {meta.get('paper', '')}.", ""]
    versions = meta.get("versions", {})
    lines.append(
        f"Run: {config['epochs']} epochs, global batch {config['batch_size']}, seed "
        f"{config['seed']}, device {config['device']}, {meta.get('world_size', 1)} process(es); "
        f"torchnde {versions.get('torchnde', '?')}, torch {versions.get('torch', '?')}."
    )
    lines.append("")
    if metrics is None:
        done = history[-1]["step"] if history else 0
        lines += [
            f"**Incomplete run**: {done} steps logged, no final metrics. Continue it with "
            f"`torchnde resume {out}`.",
            "",
        ]
    else:
        timing = metrics.get("timing", {})
        lines += [
            f"Training took {_fmt(timing.get('train_s', float('nan')))} s "
            f"({_fmt(timing.get('s_per_step', float('nan')))} s per step, "
            f"{metrics['train']['steps']} steps); evaluation "
            f"{_fmt(timing.get('eval_s', float('nan')))} s.",
            "",
            "## Headline",
            "",
            "| quantity | this run | paper | shown by this run? |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {h['label']} | {h['value']} | {h['paper']} | {h.get('verdict', '')} |"
            for h in metrics["headline"]
        ]
        lines.append("")
        missing = metrics["train"].get("steps_missing_from_log", 0)
        if missing:
            lines += [
                f"**Incomplete history**: {missing} of the {metrics['train']['steps']} steps are "
                "missing from `metrics.jsonl` (deleted or lost before a resume); the loss plot and "
                "the training summary cover only the logged steps.",
                "",
            ]
    figures = [p for p in ("loss.png", f"{name}.png") if (out / p).is_file()]
    if figures:
        lines += ["## Figures", ""]
        lines += [f"![{p[:-4]}]({p})" for p in figures[::-1]]
        lines.append("")
    if metrics is not None:
        lines += ["## Metrics", "", "| metric | value |", "|---|---|"]
        lines += [
            f"| {k} | {_fmt(v)} |"
            for k, v in _flat({"eval": metrics["eval"], "train": metrics["train"]})
        ]
        lines.append("")
    lines += ["## Config", "", "```"]
    lines += [f"{k} = {v!r}" for k, v in config.items()]
    lines += ["```", ""]
    path = out / "report.md"
    write_text_atomic(path, "\n".join(lines))
    return path
