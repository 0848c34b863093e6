"""Opening a run folder safely: one writer at a time, no stale temporary files, a checked log.

- :class:`RunLock` makes the run folder belong to one process: ``torchnde run`` and ``torchnde
  resume`` hold it for their whole life (rank 0 only under ``torchrun``), and a second one on
  the same folder stops at once with :class:`RunFolderError` naming the owner's pid.
- :func:`remove_stale_tmp` deletes the temporary files (``.NAME.PID.tmp``) that a killed
  process left behind.
- :func:`read_jsonl` reads ``metrics.jsonl``, dropping a torn last line (a process killed in
  the middle of a write) with a warning, and refusing a corrupt line anywhere else.

The lock is ``fcntl.flock`` on the file ``.lock`` in the folder, which records the owner's pid,
host and start time. ``flock`` rather than an ``O_CREAT | O_EXCL`` lock file: the kernel drops
the lock when its process ends, however it ends (``SIGKILL``, out of memory, a power cut), so a
lock is stale exactly when nobody holds it. There is no guess from a pid that may have been
reused, and no race between two processes that both find a stale file and both take it over.
The file's content only serves the messages. Where ``fcntl`` does not exist (Windows) the lock
falls back to ``O_CREAT | O_EXCL`` creation, and a lock file is stale when its pid, on this
host, is not alive.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "LOCK_FILE",
    "RunFolderError",
    "RunLock",
    "make_run_folder",
    "pid_alive",
    "read_jsonl",
    "remove_stale_tmp",
]

#: The lock file in a run folder.
LOCK_FILE = ".lock"

_TMP = re.compile(r"^\..+\.(\d+)\.tmp$")


class RunFolderError(RuntimeError):
    """The run folder cannot be used: it cannot be created or written, another process holds
    it, or one of its files is corrupt."""


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def make_run_folder(out: Path) -> None:
    """Create ``out`` (and its parents); any OS error becomes one clear line."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not os.access(out, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as e:
        raise RunFolderError(
            f"cannot create the run folder {str(out)!r}: {e.strerror or e}; choose another "
            "--out (a writable folder)."
        ) from None


def _describe(owner: dict[str, Any]) -> str:
    started = owner.get("started")
    when = (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
        if isinstance(started, (int, float))
        else "an unknown time"
    )
    return f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}, started {when}"


def _read_owner(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    data = b""
    while chunk := os.read(fd, 4096):
        data += chunk
    try:
        owner = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


class RunLock:
    """An exclusive lock on the run folder ``out``, for a ``with`` block.

    Raises:
        RunFolderError: another live process holds the folder (the message names its pid, host
            and start time), or the lock file cannot be written.

    A lock left by a process that died is taken over with a warning.
    """

    def __init__(self, out: Path, command: str = "torchnde run") -> None:
        self.path = Path(out) / LOCK_FILE
        self.command = command
        self.fd: int | None = None

    def _busy(self, owner: dict[str, Any]) -> RunFolderError:
        return RunFolderError(
            f"the run folder {str(self.path.parent)!r} is in use by another torchnde process "
            f"({_describe(owner)}); wait for it to finish or stop it, or choose another --out."
        )

    def _cannot(self, e: OSError) -> RunFolderError:
        return RunFolderError(
            f"cannot lock the run folder {str(self.path.parent)!r} ({self.path.name}: "
            f"{e.strerror or e}); choose another --out (a writable folder)."
        )

    def acquire(self) -> None:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        me["command"] = self.command
        try:
            fd = self._acquire_flock() if fcntl is not None else self._acquire_excl()
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, (json.dumps(me) + "\n").encode())
            os.fsync(fd)
        except OSError as e:
            raise self._cannot(e) from None
        self.fd = fd

    def _acquire_flock(self) -> int:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _read_owner(fd)
                os.close(fd)
                raise self._busy(owner) from None
            except OSError:
                os.close(fd)
                raise
            # The holder we waited for may have removed the file as it released it: then the
            # lock is on an orphaned inode, and another process may lock a new file. Retry.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            owner = _read_owner(fd)
            if owner:
                warnings.warn(
                    f"taking over the lock of {str(self.path.parent)!r} left by a process that "
                    f"ended without releasing it ({_describe(owner)}).",
                    stacklevel=3,
                )
            return fd

    def _acquire_excl(self) -> int:
        host = socket.gethostname()
        for _ in range(100):
            try:
                return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                pass
            try:
                fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            owner = _read_owner(fd)
            os.close(fd)
            pid = owner.get("pid")
            dead = owner.get("host") == host and isinstance(pid, int) and not pid_alive(pid)
            if not dead:
                raise self._busy(owner)
            warnings.warn(
                f"taking over the lock of {str(self.path.parent)!r} left by a process that no "
                f"longer runs ({_describe(owner)}).",
                stacklevel=3,
            )
            self.path.unlink(missing_ok=True)
        raise self._busy({})

    def release(self) -> None:
        if self.fd is None:
            return
        # Remove the file while still holding the lock, so nobody reads it as stale.
        self.path.unlink(missing_ok=True)
        os.close(self.fd)  # closing drops the flock
        self.fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def remove_stale_tmp(out: Path) -> list[Path]:
    """Delete the temporary files ``.NAME.PID.tmp`` in ``out`` whose process no longer runs
    (left by a run killed while it wrote); return the deleted paths."""
    removed = []
    for p in Path(out).iterdir():
        m = _TMP.match(p.name)
        if m and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` (``[]`` when the file does not exist).

    A torn last line (an interrupted write) is dropped with a warning.

    Raises:
        RunFolderError: a line other than the last is not a JSON record with a ``step``.
    """
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    records: list[dict[str, Any]] = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            ok = isinstance(record, dict) and isinstance(record.get("step"), int)
        except ValueError:
            ok = False
        if ok:
            records.append(record)
        elif i == len(lines):
            warnings.warn(
                f"{str(path)!r}: dropped its last line, torn by an interrupted write "
                f"({line[:40]!r}...).",
                stacklevel=2,
            )
        else:
            raise RunFolderError(
                f"{str(path)!r} line {i} is not a JSON record with a step ({line[:60]!r}); "
                "repair or delete that line, or start the run over with `torchnde run`."
            )
    return records
