"""Verified cache entries of large arrays: a directory of ``.npy`` files that loads memory-mapped.

Layout of one entry (``<root>`` is e.g. ``<cache>/synthetic`` or ``<cache>/userfiles``)::

    <root>/<entry>/meta.json     format, the entry's key, info (n_classes, ...) and, per file,
                                 its sha256, size in bytes, dtype and shape
    <root>/<entry>/x_train.npy   float32 (n_train, d)
    <root>/<entry>/y_train.npy   int64 (n_train,)
    <root>/<entry>/x_test.npy    float32 (n_test, d)
    <root>/<entry>/y_test.npy    int64 (n_test,)
    <root>/<entry>/<extra>.npy   any further arrays the caller names (``extra=``), e.g. the
                                 rows' keys of a user file
    <root>/.<entry>.lock         serialises checking and building the entry across processes

Building is atomic: the files are written into a fresh ``<root>/.<entry>.build-*`` directory,
fsynced, hashed and described in ``meta.json``, and only then is the directory renamed to
``<entry>``; a reader sees a complete entry or none. A crashed build leaves only a ``.build-*``
directory, removed by the next build of that entry.

Verification policy. Every load checks that ``meta.json`` reads and carries the expected key,
and that every file has the recorded size, dtype and shape (cheap: no data is read). The sha256
of every file is checked the first time a process loads it; a file that passed is remembered
by (path, device, inode, size, modification time), so later loads in the same process skip the
hash unless the file was replaced or rewritten. Hashing costs one sequential read of the data
(about 1 s per GB, through the page cache, so it does not add to the resident memory). Any
failure (a flipped byte, a truncated or missing file, a foreign ``meta.json``) deletes the
entry and builds it again; a damaged entry is never used.

If the cache root cannot be written (read-only, full), the arrays are built in a temporary
directory instead, mapped, and the directory is deleted at once (the mapping stays valid);
nothing is cached and a warning says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from miniunlearn.errors import DataCorruptError
from miniunlearn.fileio import atomic_write_json, fsync_dir, sha256_file

ENTRY_FORMAT = 1
META = "meta.json"
ARRAY_FILES: tuple[str, ...] = ("x_train", "y_train", "x_test", "y_test")
_DTYPES = {"x_train": np.float32, "y_train": np.int64, "x_test": np.float32, "y_test": np.int64}

#: Files whose sha256 matched in this process: (path, device, inode, size, mtime_ns).
_VERIFIED: set[tuple[str, int, int, int, int]] = set()

Builder = Callable[[Path], dict[str, Any]]


def forget_verified() -> None:
    """Forget which files this process has hashed, so the next load hashes them again.

    Takes and returns nothing. Meant for tests that simulate a new process.
    """
    _VERIFIED.clear()


def _identity(path: Path) -> tuple[str, int, int, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True))


class _Damaged(Exception):
    """An entry failed a check (message: what is wrong)."""


def _describe(
    build_dir: Path, key: dict[str, Any], info: dict[str, Any], names: tuple[str, ...] = ARRAY_FILES
) -> dict[str, Any]:
    """Check and hash the built arrays ``names``; return the meta record."""
    files = {}
    for name in names:
        path = build_dir / f"{name}.npy"
        if not path.is_file():
            raise RuntimeError(f"the builder did not write {path.name}")
        arr = np.load(path, mmap_mode="r", allow_pickle=False) if path.stat().st_size else None
        if arr is None or arr.dtype != _DTYPES.get(name, arr.dtype):
            raise RuntimeError(f"the builder wrote {path.name} with the wrong dtype")
        with open(path, "rb+") as handle:
            os.fsync(handle.fileno())
        files[path.name] = {
            "sha256": sha256_file(path),
            "bytes": path.stat().st_size,
            "dtype": str(arr.dtype),
            "shape": list(arr.shape),
        }
        del arr
    return {"format": ENTRY_FORMAT, "key": _jsonable(key), "info": _jsonable(info), "files": files}


def _open(
    entry: Path, key: dict[str, Any], names: tuple[str, ...] = ARRAY_FILES
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Verify the entry as the module docstring says; return its arrays ``names`` (memory-mapped)
    and meta."""
    try:
        meta = json.loads((entry / META).read_text())
    except (OSError, ValueError) as exc:
        raise _Damaged(f"unreadable {META} ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != ENTRY_FORMAT:
        raise _Damaged(f"unknown format in {META}")
    if meta.get("key") != _jsonable(key):
        raise _Damaged(f"{META} describes other data ({meta.get('key')!r:.200})")
    files = meta.get("files")
    if not isinstance(files, dict) or sorted(files) != sorted(f"{n}.npy" for n in names):
        raise _Damaged(f"{META} lists the wrong files")
    arrays = {}
    for name in names:
        path = entry / f"{name}.npy"
        record = files[path.name]
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise _Damaged(f"{path.name} is missing") from exc
        if size != record.get("bytes"):
            raise _Damaged(f"{path.name} has {size} bytes, {record.get('bytes')} recorded")
        ident = _identity(path)
        if ident not in _VERIFIED:
            if sha256_file(path) != record.get("sha256"):
                raise _Damaged(f"{path.name} does not match its recorded sha256")
            _VERIFIED.add(ident)
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise _Damaged(f"{path.name} is unreadable ({exc})") from exc
        if str(arr.dtype) != record.get("dtype") or list(arr.shape) != record.get("shape"):
            raise _Damaged(f"{path.name} has dtype {arr.dtype} shape {arr.shape}, not as recorded")
        arrays[name] = arr
    return arrays, meta


def _remove(path: Path) -> None:
    """Delete a directory: first rename it aside (atomic), then remove the renamed tree."""
    if not path.exists():
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.trash-", dir=path.parent))
    os.replace(path, aside / path.name)
    shutil.rmtree(aside, ignore_errors=True)


def _build(entry: Path, key: dict[str, Any], build: Builder, names: tuple[str, ...] = ARRAY_FILES) -> None:
    """Build the entry into a temporary directory next to it and rename it into place."""
    for stale in entry.parent.glob(f".{entry.name}.build-*"):  # crashed builds (we hold the lock)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.build-", dir=entry.parent))
    try:
        info = build(tmp)
        meta = _describe(tmp, key, info, names)
        atomic_write_json(tmp / META, meta)
        mask = _umask()
        os.chmod(tmp / META, 0o666 & ~mask)  # temporary files are created private: use the usual modes
        os.chmod(tmp, 0o777 & ~mask)
        fsync_dir(tmp)
        os.replace(tmp, entry)
        fsync_dir(entry.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    for name in names:  # just hashed while describing: no need to hash again in this process
        _VERIFIED.add(_identity(entry / f"{name}.npy"))


def _build_in_temp(
    key: dict[str, Any], build: Builder, why: OSError, names: tuple[str, ...] = ARRAY_FILES
) -> tuple[dict[str, np.ndarray], dict]:
    """Build without a cache: into a temporary directory that is deleted once mapped."""
    warnings.warn(
        f"cannot write the data cache ({why}); building the arrays in a temporary directory "
        f"(set MINIUNLEARN_CACHE to a writable directory to keep them)",
        stacklevel=4,
    )
    tmp = Path(tempfile.mkdtemp(prefix="miniunlearn-data-"))
    try:
        info = build(tmp)
        meta = _describe(tmp, key, info, names)
        arrays = {n: np.load(tmp / f"{n}.npy", mmap_mode="r", allow_pickle=False) for n in names}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return arrays, meta


def load_entry(
    entry: Path, key: dict[str, Any], build: Builder, extra: tuple[str, ...] = ()
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Return the verified arrays of a cache entry, building (or rebuilding) it when needed.

    Takes the entry directory, its key (a JSON-serialisable dict recorded in ``meta.json`` and
    compared on load) and ``build``, a function that writes ``x_train.npy``, ``y_train.npy``,
    ``x_test.npy`` and ``y_test.npy`` into the directory it is given and returns an info dict
    (JSON-serialisable, e.g. ``{"n_classes": 2}``), and the names of further arrays ``build``
    writes (``<name>.npy``, any dtype). Returns ``(arrays, meta)``: the four arrays and the
    extra ones memory-mapped read-only and the meta record (its ``"info"`` is the builder's dict). A
    damaged entry is deleted and rebuilt (see the module docstring). Errors of ``build`` pass
    through; a cache root that cannot be written falls back to a temporary build.
    """
    entry = Path(entry)
    names = ARRAY_FILES + tuple(extra)
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(entry.parent / f".{entry.name}.lock"))
        with lock:
            if entry.exists():
                try:
                    return _open(entry, key, names)
                except _Damaged as why:
                    warnings.warn(f"cache entry {entry} is damaged ({why}); rebuilding it", stacklevel=2)
                    _remove(entry)
            _build(entry, key, build, names)
            try:
                return _open(entry, key, names)
            except _Damaged as why:
                raise DataCorruptError(
                    f"cache entry {entry} failed its check right after it was built ({why}); "
                    f"the disk may be failing; delete {entry.parent} and try again"
                ) from None
    except OSError as exc:
        if _writable(entry.parent):
            raise
        return _build_in_temp(key, build, exc, names)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _writable(directory: Path) -> bool:
    """True if a file can be created in ``directory`` (created if missing)."""
    with contextlib.suppress(OSError):
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=directory, prefix=".probe-")
        os.close(fd)
        os.unlink(name)
        return True
    return False
