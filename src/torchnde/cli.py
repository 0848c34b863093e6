"""The ``torchnde`` command: ``list``, ``run NAME``, ``resume DIR``, ``report DIR``.

``torchnde run NAME [--out DIR] [--seed N] [--device cpu|cuda] [--epochs N] [--config FILE]
[key=value ...]`` trains and evaluates a registered experiment (:mod:`torchnde.experiments`)
into a run folder. Under ``torchrun --nproc_per_node=N -m torchnde run NAME`` it trains
data-parallel. Also runnable as ``python -m torchnde``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main"]


def _version() -> str:
    from . import __version__

    return __version__


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", metavar="DIR", help="run folder (default: runs/NAME)")
    parser.add_argument("--seed", metavar="N", type=int, help="random seed")
    parser.add_argument("--device", metavar="DEVICE", help="cpu, cuda or cuda:N")
    parser.add_argument("--epochs", metavar="N", type=int, help="passes over the training set")
    parser.add_argument(
        "--config", metavar="FILE", help="a JSON or TOML file of key = value (or a config.json)"
    )
    parser.add_argument("--quiet", action="store_true", default=None, help="print nothing")
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config values (see the keys below); later ones win",
    )


def build_parser() -> argparse.ArgumentParser:
    from .experiments import EXPERIMENTS
    from .experiments.config import help_lines

    parser = argparse.ArgumentParser(
        prog="torchnde",
        description="Neural differential equations in PyTorch: run the bundled experiments.",
    )
    parser.add_argument("--version", action="version", version=f"torchnde {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser("list", help="list the experiments", description="List the experiments.")

    run = commands.add_parser(
        "run",
        help="run an experiment",
        description="Run an experiment; `torchnde run NAME --help` lists its config keys.",
    )
    experiments = run.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    for exp in EXPERIMENTS.values():
        sub = experiments.add_parser(
            exp.name,
            help=exp.summary,
            description=f"{exp.summary[:1].upper()}{exp.summary[1:]} ({exp.paper}).",
            formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog="config keys (key=value):\n" + help_lines(exp.config_cls),
        )
        _add_run_options(sub)
        sub.set_defaults(_parser=sub)

    resume = commands.add_parser(
        "resume",
        help="continue an interrupted run",
        description="Continue the run in DIR from its last checkpoint, with its saved config.",
    )
    resume.add_argument("dir", metavar="DIR", help="the run folder")
    resume.add_argument("--quiet", action="store_true", default=None, help="print nothing")
    resume.set_defaults(_parser=resume)

    report = commands.add_parser(
        "report",
        help="rewrite and print a run's report.md",
        description="Rebuild report.md (and loss.png) of the run in DIR from its files.",
    )
    report.add_argument("dir", metavar="DIR", help="the run folder")
    report.set_defaults(_parser=report)
    return parser


def _list() -> int:
    from .experiments import EXPERIMENTS

    width = max(len(name) for name in EXPERIMENTS)
    for exp in EXPERIMENTS.values():
        print(f"{exp.name:<{width}}  {exp.summary} [{exp.paper}]")
    return 0


@contextlib.contextmanager
def _warnings_as_lines(command: str) -> Iterator[None]:
    """Show the warnings of a command as ``torchnde COMMAND: warning: ...`` lines on stderr
    (not Python's ``file:line: UserWarning:`` form), every time they occur."""

    def show(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
        print(f"torchnde {command}: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        warnings.showwarning = show
        yield


def _errors(command: str, fn: Any) -> int:
    """Run ``fn`` and turn the expected failures into a message and an exit code."""
    from . import SolveError
    from .experiments import MissingDependency
    from .experiments.checkpoint import CheckpointError
    from .experiments.harness import TrainingError
    from .experiments.runfolder import RunFolderError

    try:
        with _warnings_as_lines(command):
            fn()
    except (CheckpointError, MissingDependency, RunFolderError, SolveError, TrainingError) as e:
        print(f"torchnde {command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"torchnde {command}: interrupted", file=sys.stderr)
        return 130
    return 0


def _run(ns: Any) -> int:
    from .experiments import get_experiment, harness
    from .experiments.config import describe_config, load_config_file, make_config, parse_overrides

    exp = get_experiment(ns.experiment)
    try:
        file_values = load_config_file(ns.config) if ns.config else {}
        file_values = {"out": f"runs/{exp.name}", **file_values}
        options = {
            "out": ns.out,
            "seed": ns.seed,
            "device": ns.device,
            "epochs": ns.epochs,
            "quiet": ns.quiet,
        }
        config = make_config(
            exp.config_cls,
            file_values,
            parse_overrides(ns.overrides),
            options,
            experiment=exp.name,
        )
    except ValueError as e:
        ns._parser.error(str(e))  # exits with status 2 and the usage line
    if ns.print_config:
        print(describe_config(config))
        return 0

    def go() -> None:
        try:
            harness.run(exp.name, config)
        except KeyboardInterrupt:
            print(f"continue with: torchnde resume {config.out}", file=sys.stderr)
            raise

    return _errors(f"run {exp.name}", go)


def _resume(ns: Any) -> int:
    from .experiments import get_experiment, harness
    from .experiments.config import make_config

    out = Path(ns.dir)
    meta_path = out / "config.json"
    if not meta_path.is_file():
        ns._parser.error(f"{str(out)!r} is not a run folder: it has no config.json.")
    try:
        meta = json.loads(meta_path.read_text())
        exp = get_experiment(meta["experiment"])
        config = make_config(
            exp.config_cls,
            meta["config"],
            {"out": str(out), "quiet": ns.quiet},
            experiment=exp.name,
        )
    except (ValueError, KeyError, TypeError) as e:
        ns._parser.error(f"{str(meta_path)!r} is not a valid run config: {e}")
    if (out / "metrics.json").is_file():
        if not ns.quiet:
            print(f"torchnde resume: {out} is complete (it has metrics.json); nothing to do.")
        return 0
    return _errors("resume", lambda: harness.run(exp.name, config, resume=True))


def _report(ns: Any) -> int:
    out = Path(ns.dir)
    try:
        meta = json.loads((out / "config.json").read_text())
    except (OSError, ValueError):
        ns._parser.error(f"{str(out)!r} is not a run folder: it has no readable config.json.")
    return _errors("report", lambda: _write_report(out, meta))


def _write_report(out: Path, meta: dict[str, Any]) -> None:
    from .experiments import report
    from .experiments.runfolder import read_jsonl

    history = read_jsonl(out / "metrics.jsonl")
    if history:
        try:
            report.require_matplotlib()
        except ImportError:
            pass
        else:
            report.plot_loss(history, out / "loss.png", meta["experiment"])
    path = report.write_report(out)
    print(path.read_text(), end="")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (``sys.argv[1:]`` by default); return the exit code.

    Bad arguments raise ``SystemExit(2)`` after printing the usage and the reason to stderr.
    """
    parser = build_parser()
    ns: Any = parser.parse_args(list(argv) if argv is not None else None)
    if ns.command == "list":
        return _list()
    if ns.command == "run":
        return _run(ns)
    if ns.command == "resume":
        return _resume(ns)
    return _report(ns)


if __name__ == "__main__":
    sys.exit(main())
