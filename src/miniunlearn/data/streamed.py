"""The cache of parsed user files, and the steps every streamed parser shares.

A streamed parser (:mod:`miniunlearn.data.csvstream`, :mod:`miniunlearn.data.svmstream`) turns
each source file into a :class:`ParsedPart`: label codes in memory (8 bytes a row) and the
feature rows on disk, readable in blocks. :func:`finish_arrays` then encodes the labels, splits
(the fixed stratified 80/20 split of :func:`miniunlearn.data.splits.fixed_split` when there is
no test file), writes ``x_train.npy``/``x_test.npy`` in one pass over the rows and
standardises them in place, a block at a time, giving bit-for-bit the arrays of the in-memory
loaders. It also writes the rows' keys (:mod:`miniunlearn.data.keys`) as ``keys_train.npy`` and
``keys_test.npy``: a CSV key column's strings, or else the 0-based row numbers in the train file
(none for the rows of a test file).

Cache layout: ``<cache>/userfiles/<kind>-<key hash>/`` (see :mod:`miniunlearn.data.store` for
the files and the verification policy). The key is the sha256 of every source file, the
loader options and the parser format version, so a changed file or option makes a new entry;
old entries are never deleted automatically (delete ``<cache>/userfiles`` to reclaim space).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from miniunlearn.data.base import Dataset
from miniunlearn.data.cache import cache_dir
from miniunlearn.data.chunked import standardize_files, write_split
from miniunlearn.data.keys import SampleKeys
from miniunlearn.data.labelvocab import LabelVocab
from miniunlearn.data.npyfile import NpyWriter
from miniunlearn.data.splits import fixed_split
from miniunlearn.data.store import load_entry
from miniunlearn.errors import DataCorruptError
from miniunlearn.fileio import sha256_file

USERFILE_FORMAT = 2  # bump when a streamed parser's output changes (2: the rows' keys)
KEY_ARRAYS = ("keys_train", "keys_test")
STREAM_MIN_BYTES = 64 << 20  # plain files at least this large (all files together) are streamed

_DIGESTS: dict[tuple[str, int, int, int, int], str] = {}


@dataclass
class ParsedPart:
    """One parsed source file: its label codes and a way to read its feature rows.

    Attributes:
        path: the source file.
        codes: int64 vocabulary codes of the labels (see :class:`LabelVocab`), one per row.
        n_cols: number of feature columns.
        blocks: function returning an iterator over float32 row blocks, in file order.
        npy: the rows as one ``.npy`` file in the build directory, if the parser wrote one
            (then it may be renamed instead of copied).
        keys: the rows' keys (str, from a CSV key column), or None: keys are row numbers.
    """

    path: Path
    codes: np.ndarray
    n_cols: int
    blocks: Callable[[], Iterator[np.ndarray]]
    npy: Path | None = None
    keys: np.ndarray | None = None


def source_sha256(path: str | os.PathLike[str]) -> str:
    """Return the hex sha256 of a source file, hashed once per process unless it changes.

    Takes the path; the digest is remembered by (path, device, inode, size, mtime).
    """
    p = Path(path)
    st = p.stat()
    ident = (str(p.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if ident not in _DIGESTS:
        _DIGESTS[ident] = sha256_file(p)
    return _DIGESTS[ident]


def should_stream(*paths: str | os.PathLike[str] | None) -> bool:
    """Return True if files should be parsed by streaming into the cache.

    Takes the source files (None entries are ignored). True when any is compressed (``.gz``,
    ``.bz2``, ``.xz``) or together they are at least ``STREAM_MIN_BYTES`` long.
    """
    from miniunlearn.data.blocks import is_compressed

    files = [Path(p) for p in paths if p is not None]
    return any(is_compressed(p) for p in files) or sum(p.stat().st_size for p in files) >= STREAM_MIN_BYTES


def finish_arrays(
    build_dir: Path, train: ParsedPart, test: ParsedPart | None, vocab: LabelVocab, standardize: bool
) -> dict[str, Any]:
    """Write the arrays of a cache entry from parsed parts; return the entry's info dict.

    Takes the build directory, the parsed train file, the parsed test file or None (then the
    fixed stratified 80/20 split of the train rows), the vocabulary both were coded with and
    whether to standardise with train statistics. Writes the four arrays and the two of
    ``KEY_ARRAYS``. Returns ``{"n_classes": K, "sources": [...]}``.
    Raises DataCorruptError for bad labels (as :func:`encode_labels`).
    """
    classes, k = vocab.classes()
    y_all = classes[train.codes]
    x_train, x_test = build_dir / "x_train.npy", build_dir / "x_test.npy"
    keys = train.keys if train.keys is not None else np.arange(y_all.shape[0], dtype=np.int64)
    if test is None:
        train_idx, test_idx = fixed_split(y_all)
        is_test = np.zeros(y_all.shape[0], dtype=bool)
        is_test[test_idx] = True
        write_split(train.blocks(), is_test, x_train, x_test, train.n_cols)
        y_train, y_test = y_all[train_idx], y_all[test_idx]
        keys_train, keys_test = keys[train_idx], keys[test_idx]
        del train_idx, test_idx, is_test
    else:
        if test.n_cols != train.n_cols:
            raise DataCorruptError(
                f"{test.path}: has {test.n_cols} feature columns, the train file {train.n_cols}"
            )
        for part, out in ((train, x_train), (test, x_test)):
            if part.npy is not None:
                os.replace(part.npy, out)
            else:
                with NpyWriter(out, np.float32, (part.n_cols,)) as writer:
                    for block in part.blocks():
                        writer.append(block)
        y_train, y_test = y_all, classes[test.codes]
        keys_train = keys
        keys_test = test.keys if test.keys is not None else keys[:0]
    np.save(build_dir / "keys_train.npy", keys_train)
    np.save(build_dir / "keys_test.npy", keys_test)
    for part in (train, test):
        if part is not None and part.npy is not None and part.npy.exists():
            part.npy.unlink()
    np.save(build_dir / "y_train.npy", y_train)
    np.save(build_dir / "y_test.npy", y_test)
    if standardize:
        standardize_files(x_train, x_test)
    sources = [str(train.path)] + ([str(test.path)] if test is not None else [])
    return {"n_classes": int(k), "sources": sources}


def load_userfile(
    kind: str,
    files: list[Path],
    options: dict[str, Any],
    build: Callable[[Path], dict[str, Any]],
    key_source: str,
) -> Dataset:
    """Load parsed user files from the cache, parsing them with ``build`` on a miss.

    Takes the registry name (``"csv"``, ``"libsvm"``), the source files (train first), the
    loader options that change the result, the builder (see
    :func:`miniunlearn.data.store.load_entry`; it writes ``KEY_ARRAYS`` too, as
    :func:`finish_arrays` does) and the words for the rows' keys. Returns a Dataset whose
    arrays are memory-mapped read-only from ``<cache>/userfiles/<kind>-<key hash>/``.
    """
    key = {
        "kind": kind,
        "format": USERFILE_FORMAT,
        "sources_sha256": [source_sha256(f) for f in files],
        "options": options,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    arrays, meta = load_entry(cache_dir() / "userfiles" / f"{kind}-{digest}", key, build, KEY_ARRAYS)
    try:
        return Dataset(
            kind,
            arrays["x_train"],
            arrays["y_train"],
            arrays["x_test"],
            arrays["y_test"],
            n_classes=int(meta["info"]["n_classes"]),
            keys=SampleKeys(key_source, np.asarray(arrays["keys_train"]), np.asarray(arrays["keys_test"])),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise DataCorruptError(
            f"the cached arrays of {files[0]} are inconsistent ({exc}); delete {cache_dir() / 'userfiles'}"
        ) from exc
