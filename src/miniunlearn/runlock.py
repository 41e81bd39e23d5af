"""The run lock: one process at a time changes a run's deletion state.

The lock is an OS file lock on ``RUN_DIR/.lock`` (released automatically when its
process dies); while it is held, ``.lock.owner`` names the holder for error messages.
Because the lock file stays in the run, a person may take it for stale and delete it
while a command holds it; a second command would then lock a new file and both would
believe they hold the run. :meth:`HeldLock.check` detects that: the lock file must
still be the very file (device and inode) that was locked. Every commit of a new model
version calls it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from .errors import LedgerError
from .fileio import atomic_write_json

LOCK_FILENAME = ".lock"
"""File name of the run lock inside a run directory."""

LOCK_OWNER_FILENAME = ".lock.owner"
"""JSON file naming the process that holds the run lock, for error messages."""


class HeldLock(os.PathLike[str]):
    """A run lock this process holds: its path and the identity of the locked file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        info = os.stat(path)
        self._identity = (info.st_dev, info.st_ino)

    def __fspath__(self) -> str:
        return str(self.path)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, HeldLock):
            return self.path == other.path
        if isinstance(other, str | os.PathLike):
            return self.path == Path(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.path)

    def check(self) -> None:
        """Raise LedgerError unless the lock file is still the file this process locked."""
        try:
            info = os.stat(self.path)
            same = (info.st_dev, info.st_ino) == self._identity
        except FileNotFoundError:
            same = False
        if not same:
            raise LedgerError(
                f"the run's lock file {self.path} was deleted or replaced while this command held it, "
                "so another command may have changed the run meanwhile; nothing was committed. "
                "Never delete .lock (it is freed when its process exits); send the request again"
            )


def _holder(owner_path: Path) -> str:
    """' (lock held by pid N on HOST since T)' from the owner file, or '' when unknown."""
    with contextlib.suppress(OSError, ValueError, TypeError, AttributeError, KeyError):
        info = json.loads(owner_path.read_text())
        return (
            f" (lock held by pid {int(info['pid'])} on {info.get('host', '?')} "
            f"since {info.get('acquired_at', '?')})"
        )
    return ""


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike[str], timeout: float = 0.0) -> Iterator[HeldLock]:
    """Hold the exclusive lock of ``run_dir`` for the duration of the block.

    Waits up to ``timeout`` seconds (0: try once; negative: wait forever) for the
    lock file ``.lock`` in ``run_dir``, then raises :class:`LedgerError` saying
    another command is running and, when known, the pid that holds it. Yields a
    :class:`HeldLock` (compares equal to the lock's path). Not re-entrant: taking it
    twice in one process waits for itself and times out.
    """
    import filelock

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LedgerError(f"cannot lock {run_dir}: it is not a directory")
    lock_path = run_dir / LOCK_FILENAME
    owner_path = run_dir / LOCK_OWNER_FILENAME
    lock = filelock.FileLock(str(lock_path), timeout=timeout, thread_local=False)
    try:
        lock.acquire()
    except filelock.Timeout as exc:
        raise LedgerError(
            f"another forget is running on {run_dir}{_holder(owner_path)}; waited {timeout:g} s for "
            f"{lock_path}. Wait for it to finish and try again (the lock is freed "
            f"automatically when that process exits)."
        ) from exc
    try:
        held = HeldLock(lock_path)
        atomic_write_json(
            owner_path,
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "acquired_at": datetime.now(UTC).isoformat(timespec="seconds"),
            },
        )
        yield held
    finally:
        with contextlib.suppress(OSError):
            owner_path.unlink()
        lock.release()
