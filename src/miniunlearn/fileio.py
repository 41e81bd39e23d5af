"""Crash-safe file writing and hashing shared by every module that writes to disk.

Nothing is ever written in place: content goes to a temporary file in the same
directory, is flushed and fsynced, then renamed over the target, so a reader sees
either the old file or the new one, never half of either.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from .errors import RunDirError

T = TypeVar("T")


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Return the hex sha256 of the file at ``path``, read in chunks.

    Only a regular file is read (a symbolic link is followed to one): a FIFO, a device such
    as ``/dev/zero``, a socket or a directory raises :class:`NotARegularFileError` (an
    OSError) up front instead of hanging or reading forever. Whether a file may be a link, or
    lie outside a run directory, is :func:`run_file`'s question, not this one's.
    """
    digest = hashlib.sha256()
    with open_regular(path) as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


class NotARegularFileError(OSError):
    """A file that was to be read whole is a FIFO, a device, a socket or a directory."""


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """Open ``path`` for binary reading, only if it is a regular file (links are followed).

    The type is checked before opening (so no device is ever opened) and again on the open
    descriptor (so a file swapped for a FIFO in between is caught); the open itself never
    blocks. Raises NotARegularFileError otherwise, FileNotFoundError when it is missing.
    """
    _require_regular(os.stat(path).st_mode, path)
    nonblock = getattr(os, "O_NONBLOCK", 0)  # POSIX: opening a FIFO must not wait for a writer
    fd = os.open(path, os.O_RDONLY | nonblock | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
    try:
        _require_regular(os.fstat(fd).st_mode, path)
        if nonblock:
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def _require_regular(mode: int, path: str | os.PathLike[str]) -> None:
    if not stat.S_ISREG(mode):
        raise NotARegularFileError(
            errno.EINVAL, f"{file_kind(mode)}, not a regular file; it cannot be read as data", str(path)
        )


def file_kind(mode: int) -> str:
    """Name the file type of an ``st_mode`` in words ("a FIFO", "a symbolic link", ...)."""
    kinds = (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "a special file")


_FIX = "replace it with the real {thing}, or restore the run directory from a backup"


def run_file(root: str | os.PathLike[str], relative: str | os.PathLike[str], what: str) -> Path:
    """Return ``root / relative``, a file that a run directory keeps inside itself.

    Raises RunDirError, naming ``what`` (e.g. "manifest file (model)") and the fix, when
    ``relative`` is absolute or climbs out with ``..``, when any part of the path below
    ``root`` is a symbolic link, when a folder on the way is not a real directory, or when the
    file exists but is not a regular file (a FIFO, a device, a directory). A file that does
    not exist yet passes: the caller reports it missing, or creates it. ``root`` itself may
    be a link (a run directory moved elsewhere and linked back).
    """
    path = _inside(Path(root), relative, what)
    mode = _lstat_mode(path, what)
    if mode is not None and not stat.S_ISREG(mode):
        _refuse(path, what, mode, "file")
    return _contained(Path(root), path, what)


def run_subdir(
    root: str | os.PathLike[str], relative: str | os.PathLike[str], *, create: bool = False
) -> Path:
    """Return ``root / relative``, a folder that a run directory keeps inside itself
    (``versions``, ``retrain``, ``cache``, ``history`` ...); with ``create``, make it first.

    Raises RunDirError when ``relative`` is absolute or climbs out with ``..``, or when it or
    a folder on the way is a symbolic link or not a directory, so nothing is ever written to,
    or deleted from, a folder outside the run. A missing folder passes when not ``create``.
    """
    what = f"folder {Path(relative).as_posix()}"
    path = _inside(Path(root), relative, what)
    if create and _lstat_mode(path, what) is None:
        path.mkdir(parents=True, exist_ok=True)
        path = _inside(Path(root), relative, what)  # re-checked: made by another process meanwhile
    mode = _lstat_mode(path, what)
    if mode is not None and not stat.S_ISDIR(mode):
        _refuse(path, what, mode, "folder")
    return _contained(Path(root), path, what)


def _inside(root: Path, relative: str | os.PathLike[str], what: str) -> Path:
    """Return ``root / relative`` once ``relative`` is known to be relative, without ``..``, and
    every existing folder above its last part a real directory (not a link); else raise."""
    rel = Path(relative)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise RunDirError(
            f"{root}: {what} has the path {str(relative)!r}, which points outside the run (or at the "
            "run folder itself); a run only names files inside itself, so this one was edited: "
            "restore the run directory from a backup"
        )
    path = root
    for part in rel.parts[:-1]:
        path = path / part
        mode = _lstat_mode(path, what)
        if mode is None:
            break
        if not stat.S_ISDIR(mode):
            _refuse(path, what, mode, "folder")
    return root / rel


def _contained(root: Path, path: Path, what: str) -> Path:
    """Return ``path`` after a last check that, resolved, it lies inside ``root`` resolved."""
    if not path.resolve().is_relative_to(root.resolve()):
        raise RunDirError(
            f"{path} ({what}) resolves outside the run {root}; restore the run directory from a backup"
        )
    return path


def _lstat_mode(path: Path, what: str) -> int | None:
    """The ``st_mode`` of ``path`` itself (a link is not followed); None when it is missing."""
    try:
        return os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    except ValueError as exc:  # e.g. a NUL byte in a path read from a manifest
        raise RunDirError(f"{path!s:.200} ({what}) is not a valid path ({exc})") from exc


def _refuse(path: Path, what: str, mode: int, thing: str) -> None:
    """Raise RunDirError: ``path`` should be a real ``thing`` (file or folder) of the run."""
    where = f", pointing to {os.readlink(path)}" if stat.S_ISLNK(mode) else ""
    raise RunDirError(
        f"{path} ({what}) is {file_kind(mode)}{where}, not a {thing} of the run; the commands "
        f"never follow links or read special files inside a run: {_FIX.format(thing=thing)}"
    )


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Flush a directory entry to disk so that a rename inside it survives a crash."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success rename it over ``target``.

    The caller writes the whole file to the yielded path. If the block raises, the
    temporary file is removed and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except OSError as exc:
        if exc.filename is None:  # e.g. a full disk met inside a library's writer: say which file
            raise OSError(exc.errno, exc.strerror or str(exc), str(target)) from exc
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def save_tensors(
    tensors: dict[str, Any], path: str | os.PathLike[str], metadata: dict[str, str] | None = None
) -> None:
    """Write ``tensors`` (name -> torch tensor) to the safetensors file ``path``.

    safetensors reports a failed write (a full disk, a read-only directory) as its own
    error type without the file name; it is raised here as an OSError naming ``path``,
    with the operating system's error number when the message carries one.
    """
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}  # stored from any device
    try:
        save_file(tensors, str(path), metadata=metadata)
    except SafetensorError as exc:
        found = re.search(r"os error (\d+)", str(exc))
        code = int(found.group(1)) if found else errno.EIO
        raise OSError(code, os.strerror(code), str(path)) from exc


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``target`` atomically (temp file, fsync, rename)."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(target: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON to ``target`` atomically."""
    atomic_write_bytes(target, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def cached(
    path: str | os.PathLike[str],
    load: Callable[[Path], T],
    compute: Callable[[], T],
    save: Callable[[T, Path], None],
    damaged: tuple[type[BaseException], ...],
    foreign: tuple[type[BaseException], ...] = (),
) -> tuple[T, bool]:
    """Return (value, True) read from the cache file ``path``, or (computed value, False).

    Every entry is written with a sidecar ``<name>.sha256`` holding its hash; an entry
    whose sidecar is missing or disagrees (a flipped byte, a file replaced by hand, a
    crash between the two writes), or whose ``load`` raises one of ``damaged``, is
    removed and recomputed, never trusted. ``load`` raises one of ``foreign`` for an
    intact entry written for something else (another run, another request: the sidecar
    only proves a file is whole, not whose it is); such an entry is not used either: it
    is left in place until the recomputed value is saved atomically over it. The sidecar
    is no defence against whoever can write the directory; ``load`` checks the binding.
    The computed value is saved atomically; a directory that cannot be written (OSError)
    only loses the cache.
    """
    path = Path(path)
    sidecar = path.with_name(path.name + ".sha256")
    if path.exists():
        try:
            if not sidecar.exists() or sidecar.read_text().strip() != sha256_file(path):
                raise _StaleCacheEntry
            return load(path), True
        except foreign:
            pass  # replaced below by the atomic save
        except (_StaleCacheEntry, OSError, *damaged):
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
                sidecar.unlink(missing_ok=True)
    value = compute()
    with contextlib.suppress(OSError):
        with atomic_path(path) as tmp:
            save(value, tmp)
        atomic_write_bytes(sidecar, (sha256_file(path) + "\n").encode())
    return value, False


class _StaleCacheEntry(Exception):
    """A cache entry that does not match its recorded sha256."""
