"""The code blocks of README.md and docs/**/*.md run, so that a snippet cannot rot.

Every ```python block of a page runs, in the page's order, in one namespace per page (a page's
blocks build on each other), in a temporary working directory. A block that must not run here
(it downloads data, needs a GPU or torchrun, or fails on purpose) is preceded in the markdown by

    <!-- no-test: the reason -->

and is reported as skipped with that reason (``pytest -ra``); a block that runs but takes more
than a few seconds (a training loop) is preceded by ``<!-- slow-test: the reason -->`` and runs
with the slow tests (``pytest -m slow``), as do the page's later blocks.

```bash blocks are not run, but each ``torchnde`` command in them must parse and name a real
experiment, real options and real config keys; the ``$ torchnde ...`` lines of ```text blocks
must print the error shown below them. See docs/devdocs/tests.md.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

_FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w+-]*)\s*$")
_MARKER = re.compile(r"^\s*<!--\s*(?P<kind>no-test|slow-test):\s*(?P<reason>.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    skip: str | None  # the reason of a preceding <!-- no-test: reason -->
    slow: str | None  # the reason of a preceding <!-- slow-test: reason -->

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def parse_blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a markdown page, with their no-test reasons."""
    lines = page.read_text().splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None or not m["lang"]:
            i += 1
            continue
        indent, start = m["indent"], i
        i += 1
        body: list[str] = []
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        prev = next((x for x in reversed(lines[:start]) if x.strip()), "")
        marker = _MARKER.match(prev)
        code = "\n" * (start + 1) + "\n".join(body) + "\n"  # line numbers of the page
        kind = marker["kind"] if marker else None
        reason = marker["reason"] if marker else None
        blocks.append(
            Block(
                page,
                start + 1,
                m["lang"],
                code,
                skip=reason if kind == "no-test" else None,
                slow=reason if kind == "slow-test" else None,
            )
        )
        i += 1
    return blocks


BLOCKS = [b for page in PAGES for b in parse_blocks(page)]
PYTHON = [b for b in BLOCKS if b.lang == "python"]


def _params() -> list[Any]:
    # A slow block makes the rest of its page slow too: later blocks may use what it built.
    params, slow_pages = [], set()
    for b in PYTHON:
        if b.slow is not None:
            slow_pages.add(b.page)
        marks = [pytest.mark.slow] if b.page in slow_pages else []
        params.append(pytest.param(b, marks=marks, id=b.where))
    return params


@dataclass
class _Page:
    """The shared namespace of one page and how far its blocks have run."""

    namespace: dict[str, Any] = field(default_factory=lambda: {"__name__": "__docs__"})
    done: int = 0
    failed: str | None = None


_STATE: dict[Path, _Page] = {}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("docs")


def _run_page_up_to(block: Block, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the page's Python blocks up to and including ``block`` (each once, in order)."""
    page = _STATE.setdefault(block.page, _Page())
    blocks = [b for b in PYTHON if b.page == block.page]
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    while page.done <= blocks.index(block):
        current = blocks[page.done]
        page.done += 1
        if page.failed is not None:
            break
        if current.skip is not None:
            continue
        dtype, grad = torch.get_default_dtype(), torch.is_grad_enabled()
        try:
            with torch.random.fork_rng():  # each block seeded, the other tests' RNG untouched
                torch.manual_seed(0)
                exec(compile(current.code, str(current.page), "exec"), page.namespace)
        except Exception:
            page.failed = f"{current.where} failed:\n{traceback.format_exc(limit=-8)}"
            if current is not block:
                pytest.fail(page.failed, pytrace=False)
            raise
        finally:
            torch.set_default_dtype(dtype)
            torch.set_grad_enabled(grad)
    if page.failed is not None:
        pytest.fail(f"an earlier block of the page failed: {page.failed}", pytrace=False)


@pytest.mark.parametrize("block", _params())
def test_python_block_runs(block: Block, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if block.skip is not None:
        pytest.skip(f"{block.where} no-test: {block.skip}")
    _run_page_up_to(block, workdir, monkeypatch)


def test_every_page_with_code_is_found() -> None:
    # The collection itself: the README and the usage guides have Python blocks.
    pages = {b.page.relative_to(ROOT).as_posix() for b in PYTHON}
    assert "README.md" in pages
    assert "docs/usage/models.md" in pages


def test_markers_precede_a_python_block_and_give_a_reason() -> None:
    problems = []
    for page in PAGES:
        lines = page.read_text().splitlines()
        fenced = False
        for i, line in enumerate(lines):
            if line.strip().startswith("```"):
                fenced = not fenced
            kind = next((k for k in ("no-test", "slow-test") if k in line), None)
            if kind is None or fenced or "<!--" not in line:
                continue
            m = _MARKER.match(line)
            where = f"{page.relative_to(ROOT)}:{i + 1}"
            if m is None or not m["reason"]:
                problems.append(f"{where}: write `<!-- {kind}: the reason -->` on its own line")
                continue
            nxt = next((x for x in lines[i + 1 :] if x.strip()), "")
            fence = _FENCE.match(nxt)
            if fence is None or fence["lang"] != "python":
                problems.append(f"{where}: a {kind} marker must precede a ```python block")
    assert not problems, "\n".join(problems)


# --- shell blocks: the torchnde commands they show exist ------------------------------------


def _torchnde_argv(line: str) -> list[str] | None:
    """The torchnde arguments of a shell line (``torchnde ...``, ``python -m torchnde ...``,
    ``torchrun [opts] -m torchnde ...``), or None when the line runs something else."""
    words = shlex.split(line, comments=True)
    for i, w in enumerate(words):
        if w == "torchnde" and (i == 0 or words[i - 1] == "-m"):
            return words[i + 1 :]
    return None


def _commands() -> list[tuple[str, list[str]]]:
    out = []
    for b in BLOCKS:
        if b.lang not in ("bash", "sh", "shell", "console"):
            continue
        for k, line in enumerate(b.code.splitlines()):
            for part in line.split("&&"):
                argv = _torchnde_argv(part)
                if argv is not None:
                    out.append((f"{b.page.relative_to(ROOT)}:{k + 1}", argv))
    return out


COMMANDS = _commands()


def test_shell_blocks_show_torchnde_commands() -> None:
    assert any(argv[:1] == ["run"] for _, argv in COMMANDS)


@pytest.mark.parametrize(("where", "argv"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_shell_command_names_a_real_experiment_options_and_keys(
    where: str, argv: list[str]
) -> None:
    from torchnde.cli import build_parser
    from torchnde.experiments import get_experiment
    from torchnde.experiments.config import make_config, parse_overrides

    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            ns = build_parser().parse_args(argv)
        except SystemExit:
            pytest.fail(
                f"{where}: `torchnde {shlex.join(argv)}` does not parse:\n{stderr.getvalue()}"
            )
    if ns.command != "run":
        return
    exp = get_experiment(ns.experiment)
    if ns.device is not None:
        torch.device(ns.device)  # a device name (this machine need not have it)
    options = {"out": ns.out, "seed": ns.seed, "epochs": ns.epochs, "quiet": ns.quiet}
    make_config(exp.config_cls, parse_overrides(ns.overrides), options, experiment=exp.name)


def _shown_errors() -> list[tuple[str, list[str], str]]:
    """``$ torchnde ...`` lines of ```text blocks, with the output line shown below each."""
    out = []
    for b in BLOCKS:
        if b.lang != "text":
            continue
        lines = b.code.splitlines()
        for k, line in enumerate(lines[:-1]):
            if line.startswith("$ torchnde "):
                argv = shlex.split(line[len("$ torchnde ") :], comments=True)
                out.append((f"{b.page.relative_to(ROOT)}:{k + 1}", argv, lines[k + 1]))
    return out


SHOWN = _shown_errors()


@pytest.mark.parametrize(("where", "argv", "shown"), SHOWN, ids=[w for w, _, _ in SHOWN])
def test_shown_error_is_the_one_printed(
    where: str, argv: list[str], shown: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchnde.cli import main

    monkeypatch.chdir(tmp_path)
    if argv[:1] == ["run"]:
        argv = [*argv, "--print-config"]  # never train: a valid command prints its config
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            main(argv)
        except SystemExit:
            pass
        else:
            pytest.skip(
                f"{where}: the arguments are valid; the error shown needs a situation (such as "
                "a run in progress) that this test does not set up"
            )
    printed = stderr.getvalue().strip().splitlines()[-1]
    pattern = ".*".join(re.escape(part) for part in shown.split("..."))
    assert re.fullmatch(pattern, printed), f"{where}: shown\n  {shown}\nprinted\n  {printed}"
