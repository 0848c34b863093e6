"""The ``torchnde`` command: ``torchnde run EXPERIMENT [options]``, ``torchnde list``.

Each registered experiment (:mod:`torchnde.experiments`) gets a ``run`` subcommand whose
options are generated from the fields of its ``Config`` dataclass.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "build_parser"]


def _version() -> str:
    from . import __version__

    return __version__


def _add_config_options(parser: argparse.ArgumentParser, config_cls: type, name: str) -> None:
    """One option per dataclass field: ``--field-name VALUE``; bools become switches.

    The experiment's own options come first, the ones every experiment shares after them.
    """
    from .experiments import ExperimentConfig

    shared = {f.name for f in dataclasses.fields(ExperimentConfig)}
    own_group = parser.add_argument_group(f"{name} options")
    shared_group = parser.add_argument_group("common options")
    fields = [f for f in dataclasses.fields(config_cls) if f.init]
    fields.sort(key=lambda f: f.name in shared)  # stable: keeps the declaration order
    for f in fields:
        group = shared_group if f.name in shared else own_group
        option = f.name.replace("_", "-")
        default = f.default
        help_ = f.metadata.get("help", "")
        if isinstance(default, bool):
            if default:
                group.add_argument(
                    f"--no-{option}",
                    dest=f.name,
                    action="store_false",
                    help=f"do not {help_}" if help_ else None,
                )
            else:
                group.add_argument(
                    f"--{option}", dest=f.name, action="store_true", help=help_ or None
                )
            continue
        kind = f.metadata.get("type") or (Path if isinstance(default, Path) else type(default))
        choices = f.metadata.get("choices")
        if choices:
            help_ += f"; one of {', '.join(map(str, choices))}"
        group.add_argument(
            f"--{option}",
            dest=f.name,
            type=kind,
            default=default,
            choices=choices,
            metavar=f.name.upper(),
            help=(help_ + " (default: %(default)s)").strip(),
        )


def build_parser() -> argparse.ArgumentParser:
    from .experiments import EXPERIMENTS

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
        description="Run an experiment; `torchnde run NAME --help` shows its options.",
    )
    experiments = run.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    for exp in EXPERIMENTS.values():
        sub = experiments.add_parser(
            exp.name,
            help=exp.summary,
            description=exp.summary[:1].upper() + exp.summary[1:] + ".",
        )
        _add_config_options(sub, exp.config_cls, exp.name)
        sub.set_defaults(_experiment=exp, _parser=sub)
    return parser


def _list() -> int:
    from .experiments import EXPERIMENTS

    width = max(len(name) for name in EXPERIMENTS)
    for exp in EXPERIMENTS.values():
        print(f"{exp.name:<{width}}  {exp.summary}")
    return 0


def _run(ns: argparse.Namespace) -> int:
    from . import SolveError

    exp = ns._experiment
    config_cls = exp.config_cls
    values = {f.name: getattr(ns, f.name) for f in dataclasses.fields(config_cls) if f.init}
    try:
        config = config_cls(**values)
    except ValueError as e:
        ns._parser.error(str(e))  # exits with status 2 and the usage line
    try:
        exp.train(config)
    except SolveError as e:
        print(f"torchnde run {exp.name}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"torchnde run {exp.name}: interrupted", file=sys.stderr)
        return 130
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (``sys.argv[1:]`` by default); return the exit code.

    Bad arguments raise ``SystemExit(2)`` after printing the usage and the reason to stderr.
    """
    parser = build_parser()
    ns: Any = parser.parse_args(list(argv) if argv is not None else None)
    if ns.command == "list":
        return _list()
    return _run(ns)


if __name__ == "__main__":
    sys.exit(main())
