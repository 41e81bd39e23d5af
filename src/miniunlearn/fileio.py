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
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Return the hex sha256 of the file at ``path``, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


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
) -> tuple[T, bool]:
    """Return (value, True) read from the cache file ``path``, or (computed value, False).

    Every entry is written with a sidecar ``<name>.sha256`` holding its hash; an entry
    whose sidecar is missing or disagrees (a flipped byte, a file replaced by hand, a
    crash between the two writes), or whose ``load`` raises one of ``damaged``, is
    removed and recomputed, never trusted. The computed value is saved atomically; a
    directory that cannot be written (OSError) only loses the cache.
    """
    path = Path(path)
    sidecar = path.with_name(path.name + ".sha256")
    if path.exists():
        try:
            if not sidecar.exists() or sidecar.read_text().strip() != sha256_file(path):
                raise _StaleCacheEntry
            return load(path), True
        except (_StaleCacheEntry, OSError, *damaged):
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
