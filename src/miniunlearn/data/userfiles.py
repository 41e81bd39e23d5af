"""Helpers shared by the loaders of user-supplied files (LIBSVM and CSV)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from miniunlearn.data.base import Dataset
from miniunlearn.data.keys import SampleKeys, row_source
from miniunlearn.data.splits import check_finite, encode_labels, fixed_split, standardize
from miniunlearn.errors import ConfigError, DataMissingError


def existing_file(path: str | os.PathLike[str] | None, what: str) -> Path:
    """Return ``path`` as a Path; raise ConfigError if None, DataMissingError if it names no file."""
    if path is None:
        raise ConfigError(f"{what}: give the data file with --data-path (data_path= in the Python API)")
    p = Path(path)
    if p.is_dir():
        raise DataMissingError(f"{what}: {p} is a directory, not a data file; give the file itself")
    if not p.is_file():
        raise DataMissingError(f"{what}: no such file: {p}")
    return p


def assemble(
    name: str,
    source: str,
    x_train: np.ndarray,
    raw_y_train: np.ndarray,
    x_test: np.ndarray | None,
    raw_y_test: np.ndarray | None,
    standardize_features: bool,
    keys: tuple[np.ndarray | None, np.ndarray | None, str] | None = None,
) -> Dataset:
    """Build a Dataset from parsed user data.

    Takes the registry name, a source description for errors, the train features and raw
    labels, optional test features and raw labels (None: a fixed stratified 80/20 split of the
    train file, seed 0, rows kept in file order), whether to standardise with train stats, and
    the rows' keys ``(train file's keys, test file's keys, what they are)`` (None, or None
    arrays: 0-based row numbers of the train file; rows of a test file then have none).
    Returns the Dataset; raises DataCorruptError on non-finite features or bad labels.
    """
    check_finite(x_train, source)
    split = x_test is None or raw_y_test is None
    k_train, k_test, words = keys if keys is not None else (None, None, row_source(source, not split))
    if k_train is None:
        k_train, k_test = np.arange(x_train.shape[0], dtype=np.int64), np.zeros(0, dtype=np.int64)
    if split:
        y_all, _, k = encode_labels(raw_y_train, raw_y_train[:0], source)
        tr, te = fixed_split(y_all)
        x_tr, y_tr, x_te, y_te = x_train[tr], y_all[tr], x_train[te], y_all[te]
        sample_keys = SampleKeys(words, k_train[tr], k_train[te])
    else:
        check_finite(x_test, source)
        y_tr, y_te, k = encode_labels(raw_y_train, raw_y_test, source)
        x_tr, x_te = x_train, x_test
        sample_keys = SampleKeys(words, k_train, k_test if k_test is not None else k_train[:0])
    if standardize_features:
        x_tr, x_te = standardize(x_tr, x_te)
    return Dataset(
        name,
        np.ascontiguousarray(x_tr, dtype=np.float32),
        y_tr,
        np.ascontiguousarray(x_te, dtype=np.float32),
        y_te,
        n_classes=k,
        keys=sample_keys,
    )
