"""Loader for user-supplied files in LIBSVM / svmlight format (e.g. covtype, HIGGS).

Rows are ``<label> <index>:<value> ...``; indices are read as 1-based (the LIBSVM convention)
unless index 0 occurs in the train or test file, then as 0-based. Features are densified to
float32 and are NOT scaled unless ``standardize=True``. Labels are mapped to ``0 .. K-1`` in
sorted order over both files. A row's key (:mod:`miniunlearn.data.keys`) is its 0-based data
row number, or line ``i`` of ``key_file=PATH`` for data row ``i`` (one unique key per line).

Compressed files (``.gz``, ``.bz2``, ``.xz``) and plain files of at least 64 MiB together are
parsed in blocks into a cache of memory-mapped arrays (:mod:`miniunlearn.data.svmstream`,
which also shows how to load covtype); smaller plain files are parsed in memory. Both give
identical arrays.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from miniunlearn.data.base import Dataset
from miniunlearn.data.blocks import READ_ERRORS, open_text
from miniunlearn.data.keys import duplicates
from miniunlearn.data.streamed import should_stream
from miniunlearn.data.userfiles import assemble, existing_file
from miniunlearn.data.useroptions import as_flag, as_n_features, check_dense_size
from miniunlearn.errors import DataCorruptError


def load_libsvm(
    path: str | os.PathLike[str] | None,
    *,
    test_path: str | os.PathLike[str] | None = None,
    n_features: int | None = None,
    standardize: bool = False,
    key_file: str | os.PathLike[str] | None = None,
) -> Dataset:
    """Load a LIBSVM-format training file and optional test file into a dense Dataset.

    Takes the train file ``path``, an optional ``test_path`` (without one: a fixed stratified
    80/20 split of the train file, seed 0, rows kept in file order), an optional total
    ``n_features`` (default: the largest index seen in either file; columns past the
    last index are zeros), whether to standardise with train statistics, and an optional
    ``key_file`` (one unique key per line for each data row of the train file, in order;
    without it a row's key is its 0-based data row number). Returns a Dataset named
    ``"libsvm"`` whose training ids are the row indices of its train split, with its
    :attr:`~Dataset.keys` (rows of a test file have none). Raises DataMissingError if a file does not exist,
    DataCorruptError if one cannot be parsed or its dense features would be too large (more
    than ``MAX_FEATURES`` columns, or more than the machine's memory), and ConfigError for a bad
    option (see :mod:`miniunlearn.data.useroptions`), all before the dense array is allocated;
    DataCorruptError also for a key file whose line count differs from the data rows', or that
    repeats a key or has an empty line (naming them).
    """
    n_features = as_n_features(n_features)
    standardize = as_flag(standardize, "libsvm: standardize")
    train = existing_file(path, "libsvm")
    files = [train] + ([existing_file(test_path, "libsvm test_path")] if test_path else [])
    keys = existing_file(key_file, "libsvm key_file") if key_file is not None else None
    if should_stream(*files):
        from miniunlearn.data.svmstream import load_libsvm_streamed

        test = files[1] if test_path else None
        dataset = load_libsvm_streamed(train, test, n_features=n_features, standardize=standardize)
    else:
        dataset = _load_in_memory(files, n_features, standardize)
    return with_key_file(dataset, keys, train) if keys is not None else dataset


def with_key_file(dataset: Dataset, key_file: Path, data: Path) -> Dataset:
    """Return ``dataset`` keyed by the lines of ``key_file`` (line ``i``: data row ``i`` of ``data``).

    Raises DataCorruptError when the file cannot be read, has another number of lines than
    ``data`` has rows, or repeats a key or holds an empty one (naming up to 5 and their lines).
    """
    from dataclasses import replace

    assert dataset.keys is not None  # the loaders give row-number keys
    n_rows = dataset.keys.train.shape[0] + dataset.keys.test.shape[0]
    try:
        with open_text(key_file) as handle:
            lines = handle.read().split("\n")
    except UnicodeDecodeError as exc:
        raise DataCorruptError(f"key_file {key_file}: not a UTF-8 text file ({exc})") from exc
    except READ_ERRORS as exc:
        raise DataCorruptError(f"key_file {key_file}: cannot read the file ({exc})") from exc
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    if len(lines) != n_rows:
        raise DataCorruptError(
            f"key_file {key_file} has {len(lines):,} lines but {data} has {n_rows:,} data rows; give "
            "exactly one key per data row, on line i the key of data row i (in the data file's order)"
        )
    keys = np.char.strip(np.asarray(lines, dtype=str)) if lines else np.zeros(0, dtype=str)
    bad = duplicates(keys)
    if bad:
        shown = "; ".join(
            f"{repr(k) if k else 'an empty key'} on line(s) "
            + ", ".join(str(n + 1) for n in np.flatnonzero(keys == k)[:5])
            for k in bad
        )
        raise DataCorruptError(
            f"key_file {key_file} must give every data row its own non-empty key, but: {shown}"
        )
    words = f"line i of {key_file} for data row i of {data}"
    return replace(dataset, keys=dataset.keys.relabel(keys, words))


def _load_in_memory(files: list[Path], n_features: int | None, standardize: bool) -> Dataset:
    """Parse small plain LIBSVM files with scikit-learn, all at once (train file first)."""
    from sklearn.datasets import load_svmlight_files

    train, test_path = files[0], (files[1] if len(files) > 1 else None)
    names = " / ".join(str(f) for f in files)
    try:
        # Read the indices as written; decide 0- or 1-based over all files afterwards.
        loaded = load_svmlight_files([str(f) for f in files], dtype=np.float32, zero_based=True)
    except (ValueError, UnicodeDecodeError, IndexError) as exc:
        raise DataCorruptError(f"{names}: not a valid LIBSVM file ({exc})") from exc
    mats, labels = list(loaded[0::2]), list(loaded[1::2])
    for f, y in zip(files, labels, strict=True):
        if y.shape[0] == 0:
            raise DataCorruptError(f"{f}: no data rows")
    used = [m.indices.min() for m in mats if m.nnz]
    offset = 1 if used and min(used) >= 1 else 0  # no index 0 anywhere: one-based
    width = max(m.shape[1] for m in mats) - offset
    if n_features is not None:
        if n_features < width:
            raise DataCorruptError(f"{names}: n_features={n_features} but indices reach {width}")
        width = n_features
    check_dense_size(names, sum(m.shape[0] for m in mats), width, in_memory=True)
    dense = []
    for m in mats:
        x = np.zeros((m.shape[0], width), dtype=np.float32)
        x[:, : m.shape[1] - offset] = m[:, offset:].toarray()
        dense.append(x)
    x_test, y_test = (dense[1], labels[1]) if test_path else (None, None)
    return assemble("libsvm", str(train), dense[0], labels[0], x_test, y_test, standardize)
