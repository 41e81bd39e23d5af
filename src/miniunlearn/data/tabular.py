"""Loader for user-supplied CSV files: numeric feature columns plus one label column.

The label column is the last one unless ``label_column=`` names another (by 0-based index,
negative counting from the end, or by header name). Labels may be numbers or strings and are
mapped to ``0 .. K-1`` in sorted order. Every other column must be numeric, and every line
must have as many fields as the first one (a longer or shorter row is refused, naming its line).
A header line is detected when a feature field of the first line is not a number, or set with
``header=``. Option values are checked by :mod:`miniunlearn.data.useroptions`.

Compressed files (``.gz``, ``.bz2``, ``.xz``) and plain files of at least 64 MiB together are
parsed in blocks into a cache of memory-mapped arrays (:mod:`miniunlearn.data.csvstream`, which
also shows how to load HIGGS); smaller plain files are parsed in memory. Both give identical
arrays.
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from pathlib import Path

import numpy as np

from miniunlearn.data.base import Dataset
from miniunlearn.data.blocks import READ_ERRORS, line_blocks, open_text
from miniunlearn.data.streamed import should_stream
from miniunlearn.data.userfiles import assemble, existing_file
from miniunlearn.data.useroptions import MAX_FEATURES, as_delimiter, as_flag, as_header, as_label_column
from miniunlearn.errors import ConfigError, DataCorruptError


def _first_line(path: Path, delimiter: str) -> list[str]:
    """Return the fields of the first non-blank line of ``path`` (decompressed by suffix)."""
    try:
        with open_text(path) as handle:
            for line in handle:
                if line.strip():
                    return next(csv.reader(io.StringIO(line), delimiter=delimiter))
    except UnicodeDecodeError as exc:
        raise DataCorruptError(f"{path}: not a UTF-8 text file ({exc})") from exc
    except READ_ERRORS as exc:
        raise DataCorruptError(f"{path}: cannot read or decompress the file ({exc})") from exc
    raise DataCorruptError(f"{path}: empty file")


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def _resolve_label(label_column: int | str, fields: list[str], has_header: bool, path: Path) -> int:
    """Return the non-negative index of the label column."""
    n = len(fields)
    if isinstance(label_column, str):
        if not has_header:
            raise ConfigError(f"{path}: label_column={label_column!r} needs a header line")
        names = [f.strip() for f in fields]
        if label_column not in names:
            raise ConfigError(f"{path}: no column named {label_column!r}; columns: {names}")
        return names.index(label_column)
    if not -n <= label_column < n:
        raise ConfigError(f"{path}: label_column={label_column} but the file has {n} columns")
    return label_column % n


def csv_layout(
    path: Path, label_column: int | str, header: bool | None, delimiter: str, n_cols: int | None
) -> tuple[int, bool, int]:
    """Read the first line of a CSV file and return ``(label index, has header, n columns)``.

    Takes the file, the ``label_column``, ``header`` and ``delimiter`` options of
    :func:`load_csv`, and the column count the file must have (None: any, at least 2). Raises
    DataCorruptError for an empty file or a wrong column count, ConfigError for a bad label column.
    """
    fields = _first_line(path, delimiter)
    if n_cols is not None and len(fields) != n_cols:
        raise DataCorruptError(f"{path}: has {len(fields)} columns, the train file has {n_cols}")
    if len(fields) < 2:
        raise DataCorruptError(f"{path}: needs at least one feature column and a label column")
    if len(fields) - 1 > MAX_FEATURES:
        raise DataCorruptError(
            f"{path}: the first line has {len(fields):,} fields, more than the limit of {MAX_FEATURES:,} "
            f"feature columns (features are stored dense as float32, 4 bytes each per row); check the "
            f"delimiter ({delimiter!r}) and the first line"
        )
    if header is None:
        if isinstance(label_column, str):
            has_header = True
        else:
            label = _resolve_label(label_column, fields, False, path)
            has_header = not all(_is_number(f) for i, f in enumerate(fields) if i != label)
    else:
        has_header = header
    return _resolve_label(label_column, fields, has_header, path), has_header, len(fields)


def _count_fields(line: str, delimiter: str) -> int:
    """Number of fields of one line, with ``"`` quotes as ``np.loadtxt`` reads them."""
    if '"' not in line:
        return line.count(delimiter) + 1
    try:
        return len(next(csv.reader([line], delimiter=delimiter, quotechar='"', strict=True)))
    except (csv.Error, StopIteration):
        return line.count(delimiter) + 1


def check_fields(lines: list[str], first: int, n_fields: int, delimiter: str, path: Path) -> None:
    """Refuse a line whose number of fields differs from the first line's.

    Takes a block of lines (each may keep its newline), the 1-based number of its first line,
    the field count of the file's first line (header or first row), the delimiter and the file
    for errors. Empty lines are skipped, as ``np.loadtxt`` skips them. Raises DataCorruptError
    naming the line, both counts and the start of the line.
    """
    want = n_fields - 1
    for offset, line in enumerate(lines):
        if line.count(delimiter) == want and '"' not in line:
            continue
        text = line.rstrip("\r\n")
        if not text:
            continue
        found = _count_fields(text, delimiter)
        if found != n_fields:
            start = text if len(text) <= 60 else text[:57] + "..."
            raise DataCorruptError(
                f"{path}: line {first + offset}: has {found:,} fields, expected {n_fields:,} like the "
                f"first line (every row needs the same fields, separated by {delimiter!r}); fix or "
                f"delete this line, which starts {start!r}"
            )


def _check_all_fields(path: Path, n_fields: int, delimiter: str) -> None:
    """Run :func:`check_fields` over every line of ``path``."""
    with open_text(path) as handle:
        for first, lines in line_blocks(handle, source=path):
            check_fields(lines, first, n_fields, delimiter, path)


def _read(
    path: Path, label_column: int | str, header: bool | None, delimiter: str, n_cols: int | None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Parse one CSV file in memory; return ``(features float32, raw labels str, n_columns)``."""
    label, has_header, n_fields = csv_layout(path, label_column, header, delimiter, n_cols)
    _check_all_fields(path, n_fields, delimiter)
    feature_cols = [i for i in range(n_fields) if i != label]
    common = dict(
        delimiter=delimiter, skiprows=int(has_header), ndmin=2, quotechar='"', encoding="utf-8", comments=None
    )
    try:
        with warnings.catch_warnings():
            # an empty body is reported below; blank lines are fine
            warnings.filterwarnings("ignore", message="loadtxt: input contained no data")
            warnings.filterwarnings("ignore", message="Input line", category=UserWarning)
            x = np.loadtxt(path, usecols=feature_cols, dtype=np.float32, **common)
            y = np.loadtxt(path, usecols=[label], dtype=str, **common)[:, 0]
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataCorruptError(f"{path}: cannot parse as CSV of numeric features ({exc})") from exc
    if x.shape[0] == 0:
        raise DataCorruptError(f"{path}: no data rows")
    return x, y, n_fields


def load_csv(
    path: str | os.PathLike[str] | None,
    *,
    test_path: str | os.PathLike[str] | None = None,
    label_column: int | str = -1,
    header: bool | None = None,
    delimiter: str = ",",
    standardize: bool = False,
) -> Dataset:
    """Load a CSV training file and optional test file into a Dataset.

    Takes the train file ``path``; an optional ``test_path`` with the same columns (without
    one: a fixed stratified 80/20 split of the train file, seed 0, rows kept in file order);
    ``label_column`` (index or header name, default last); ``header`` (None = autodetect, or
    True/False, applied to both files); the ``delimiter``; and whether to standardise the
    features with train statistics. Returns a Dataset named ``"csv"``. Raises DataMissingError
    for a missing file, DataCorruptError for an unparsable one (e.g. a row whose number of
    fields differs from the first line's), ConfigError for a bad option (see
    :mod:`miniunlearn.data.useroptions` for the accepted values).
    """
    label_column = as_label_column(label_column)
    header = as_header(header)
    delimiter = as_delimiter(delimiter)
    standardize = as_flag(standardize, "csv: standardize")
    train = existing_file(path, "csv")
    test = existing_file(test_path, "csv test_path") if test_path else None
    if should_stream(train, test):
        from miniunlearn.data.csvstream import load_csv_streamed

        return load_csv_streamed(
            train,
            test,
            label_column=label_column,
            header=header,
            delimiter=delimiter,
            standardize=standardize,
        )
    x_train, y_train, n_cols = _read(train, label_column, header, delimiter, None)
    x_test = y_test = None
    if test is not None:
        x_test, y_test, _ = _read(test, label_column, header, delimiter, n_cols)
    return assemble("csv", str(train), x_train, y_train, x_test, y_test, standardize)
