"""The run lock: one process at a time changes a run's deletion state.

The lock is an OS lock (``flock``) on the run directory itself, released automatically
when its process dies, plus the same on the file ``RUN_DIR/.lock`` for tools that look
for one; while it is held, ``.lock.owner`` names the holder for error messages. A lock
file that stays in the run looks stale and may be deleted by a person while a command
holds it; a second command would then lock a new file. The directory cannot be swapped
that way, so the directory lock is the one that excludes: deleting ``.lock`` lets no
second command in. :meth:`HeldLock.check` re-checks, before every commit, that the run
path is still the directory this process locked.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import LedgerError
from .fileio import atomic_write_json, open_regular

LOCK_FILENAME = ".lock"
"""File name of the run lock inside a run directory."""

LOCK_OWNER_FILENAME = ".lock.owner"
"""JSON file naming the process that holds the run lock, for error messages."""


class HeldLock(os.PathLike[str]):
    """A run lock this process holds: the lock file's path and the locked directory."""

    def __init__(self, path: Path, directory_fd: int) -> None:
        self.path = path
        info = os.fstat(directory_fd)
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
        """Raise LedgerError unless the run path is still the directory this process locked."""
        try:
            info = os.stat(self.path.parent)
            same = (info.st_dev, info.st_ino) == self._identity
        except FileNotFoundError:
            same = False
        if not same:
            raise LedgerError(
                f"the run directory {self.path.parent} was moved or replaced while this command held its "
                "lock, so another command may have changed it meanwhile; nothing was committed. Send the "
                "request again"
            )


def _holder(owner_path: Path) -> str:
    """' (lock held by pid N on HOST since T)' from the owner file, or '' when unknown."""
    with contextlib.suppress(OSError, ValueError, TypeError, AttributeError, KeyError):
        with open_regular(owner_path) as handle:  # never blocks on a FIFO planted in its place
            info = json.loads(handle.read(4096))
        return (
            f" (lock held by pid {int(info['pid'])} on {info.get('host', '?')} "
            f"since {info.get('acquired_at', '?')})"
        )
    return ""


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike[str], timeout: float = 0.0) -> Iterator[HeldLock]:
    """Hold the exclusive lock of ``run_dir`` for the duration of the block.

    Waits up to ``timeout`` seconds (0: try once; negative: wait forever) for the
    lock on the directory ``run_dir`` (then on its file ``.lock``), then raises
    :class:`LedgerError` saying another command is running and, when known, the pid
    that holds it. Yields a
    :class:`HeldLock` (compares equal to the lock's path). Not re-entrant: taking it
    twice in one process waits for itself and times out.
    """
    import fcntl

    import filelock

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LedgerError(f"cannot lock {run_dir}: it is not a directory")
    lock_path = run_dir / LOCK_FILENAME
    owner_path = run_dir / LOCK_OWNER_FILENAME
    directory = os.open(run_dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        _flock_within(directory, fcntl, timeout, run_dir, owner_path, lock_path)
        lock = filelock.FileLock(str(lock_path), timeout=-1, thread_local=False)
        lock.acquire()  # the directory lock excludes everyone; this one only keeps .lock meaningful
        try:
            held = HeldLock(lock_path, directory)
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
    finally:
        os.close(directory)  # releases the directory lock


def _flock_within(
    fd: int, fcntl: Any, timeout: float, run_dir: Path, owner_path: Path, lock_path: Path
) -> None:
    """Take an exclusive flock on ``fd``, trying for ``timeout`` seconds (negative: forever);
    raise LedgerError naming the holder when it cannot."""
    deadline = None if timeout < 0 else time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if deadline is not None and time.monotonic() >= deadline:
                raise LedgerError(
                    f"another forget is running on {run_dir}{_holder(owner_path)}; waited {timeout:g} s for "
                    f"{lock_path}. Wait for it to finish and try again (the lock is freed "
                    f"automatically when that process exits)."
                ) from None
            time.sleep(0.05)
