"""Loader for user-supplied CSV files: numeric feature columns plus one label column.

The label column is the last one unless ``label_column=`` names another (by 0-based index,
negative counting from the end, or by header name). ``id_column=`` names a column of the users'
own keys in the same way (unique, not a feature; see :mod:`miniunlearn.data.keys`); without it
a row's key is its 0-based data row number. Labels may be numbers or strings and are
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
from typing import NamedTuple

import numpy as np

from miniunlearn.data.base import Dataset
from miniunlearn.data.blocks import READ_ERRORS, line_blocks, open_text
from miniunlearn.data.keys import duplicates
from miniunlearn.data.streamed import should_stream
from miniunlearn.data.userfiles import assemble, existing_file
from miniunlearn.data.useroptions import (
    MAX_FEATURES,
    as_delimiter,
    as_flag,
    as_header,
    as_id_column,
    as_label_column,
)
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


def _resolve_label(
    label_column: int | str, fields: list[str], has_header: bool, path: Path, option: str = "label_column"
) -> int:
    """Return the non-negative index of the label column (or of the column ``option`` names)."""
    n = len(fields)
    if isinstance(label_column, str):
        if not has_header:
            raise ConfigError(f"{path}: {option}={label_column!r} needs a header line")
        names = [f.strip() for f in fields]
        if label_column not in names:
            raise ConfigError(f"{path}: no column named {label_column!r}; columns: {names}")
        return names.index(label_column)
    if not -n <= label_column < n:
        raise ConfigError(f"{path}: {option}={label_column} but the file has {n} columns")
    return label_column % n


class CsvLayout(NamedTuple):
    """What the first line of a CSV file says: the label column, whether it is a header, the
    number of fields, and the key column (None: keys are row numbers)."""

    label: int
    has_header: bool
    n_fields: int
    key: int | None = None

    @property
    def features(self) -> list[int]:
        """The indices of the feature columns: every column but the label and the key."""
        return [i for i in range(self.n_fields) if i not in (self.label, self.key)]


def csv_layout(
    path: Path,
    label_column: int | str,
    header: bool | None,
    delimiter: str,
    n_cols: int | None,
    id_column: int | str | None = None,
) -> CsvLayout:
    """Read the first line of a CSV file and return its :class:`CsvLayout`.

    Takes the file, the ``label_column``, ``header`` and ``delimiter`` options of
    :func:`load_csv`, the column count the file must have (None: any, at least 2, or 3 with a
    key column) and the ``id_column`` option. Raises DataCorruptError for an empty file or a
    wrong column count, ConfigError for a bad label or key column.
    """
    fields = _first_line(path, delimiter)
    if n_cols is not None and len(fields) != n_cols:
        raise DataCorruptError(f"{path}: has {len(fields)} columns, the train file has {n_cols}")
    if len(fields) < 2 + (id_column is not None):
        key = " and a key column" if id_column is not None else ""
        raise DataCorruptError(f"{path}: needs at least one feature column, a label column{key}")
    if len(fields) - 1 > MAX_FEATURES:
        raise DataCorruptError(
            f"{path}: the first line has {len(fields):,} fields, more than the limit of {MAX_FEATURES:,} "
            f"feature columns (features are stored dense as float32, 4 bytes each per row); check the "
            f"delimiter ({delimiter!r}) and the first line"
        )
    has_header = header if header is not None else _detect_header(fields, label_column, id_column, path)
    label = _resolve_label(label_column, fields, has_header, path)
    key = None if id_column is None else _resolve_label(id_column, fields, has_header, path, "id_column")
    if key == label:
        raise ConfigError(
            f"{path}: id_column={id_column!r} and label_column={label_column!r} name the same column; "
            "the key column must be another column"
        )
    return CsvLayout(label, has_header, len(fields), key)


def _detect_header(
    fields: list[str], label_column: int | str, id_column: int | str | None, path: Path
) -> bool:
    """True when the first line is a header: a column is named, or a feature field is no number."""
    if isinstance(label_column, str) or isinstance(id_column, str):
        return True
    skip = {_resolve_label(label_column, fields, False, path)}
    if id_column is not None:
        skip.add(_resolve_label(id_column, fields, False, path, "id_column"))
    return not all(_is_number(f) for i, f in enumerate(fields) if i not in skip)


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


def _read(path: Path, layout: CsvLayout, delimiter: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Parse one CSV file in memory; return ``(features float32, raw labels str, keys str or None)``."""
    _check_all_fields(path, layout.n_fields, delimiter)
    common = dict(
        delimiter=delimiter,
        skiprows=int(layout.has_header),
        ndmin=2,
        quotechar='"',
        encoding="utf-8",
        comments=None,
    )
    try:
        with warnings.catch_warnings():
            # an empty body is reported below; blank lines are fine
            warnings.filterwarnings("ignore", message="loadtxt: input contained no data")
            warnings.filterwarnings("ignore", message="Input line", category=UserWarning)
            x = np.loadtxt(path, usecols=layout.features, dtype=np.float32, **common)
            y = np.loadtxt(path, usecols=[layout.label], dtype=str, **common)[:, 0]
            keys = None
            if layout.key is not None:
                keys = np.char.strip(np.loadtxt(path, usecols=[layout.key], dtype=str, **common)[:, 0])
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataCorruptError(f"{path}: cannot parse as CSV of numeric features ({exc})") from exc
    if x.shape[0] == 0:
        raise DataCorruptError(f"{path}: no data rows")
    return x, y, keys


def _key_lines(path: Path, layout: CsvLayout, delimiter: str, wanted: set[str]) -> dict[str, list[int]]:
    """The 1-based line numbers of ``path`` whose key field is one of ``wanted`` (error path)."""
    found: dict[str, list[int]] = {k: [] for k in wanted}
    header_left = layout.has_header
    with open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            if header_left:
                header_left = False
                continue
            fields = next(csv.reader([line.rstrip("\r\n")], delimiter=delimiter, quotechar='"'), [])
            key = fields[layout.key].strip() if layout.key is not None and layout.key < len(fields) else None
            if key in found:
                found[key].append(number)
    return found


def check_unique_keys(
    parts: list[tuple[Path, CsvLayout, np.ndarray]], delimiter: str, id_column: int | str
) -> None:
    """Refuse repeated or empty keys in the key column of one or two CSV files (train, test).

    Takes each file with its layout and keys (stripped strings, in row order), the delimiter
    and the ``id_column`` option for the message. Raises DataCorruptError naming up to 5 bad
    keys with the lines (and, for two files, the files) they are on.
    """
    bad = duplicates(np.concatenate([keys for _, _, keys in parts]))
    if not bad:
        return
    lines: dict[str, list[str]] = {key: [] for key in bad}
    for path, layout, _ in parts:
        where = f"{path.name} line" if len(parts) > 1 else "line"
        for key, numbers in _key_lines(path, layout, delimiter, set(bad)).items():
            lines[key] += [f"{where} {n}" for n in numbers]
    shown = "; ".join(
        f"{repr(key) if key else 'an empty key'} on {', '.join(lines[key]) or 'several lines'}" for key in bad
    )
    raise DataCorruptError(
        f"{parts[0][0]}: id_column={id_column!r} must give every row its own non-empty key, but: {shown}. "
        "Fix these rows, or leave id_column out to use row numbers as keys"
    )


def key_source(train: Path, test: Path | None, id_column: int | str | None) -> str:
    """The words for the keys of a CSV dataset (see :mod:`miniunlearn.data.keys`)."""
    from miniunlearn.data.keys import row_source

    if id_column is None:
        return row_source(str(train), test is not None)
    files = f"{train}" + (f" and {test}" if test is not None else "")
    return f"column {id_column!r} of {files}"


def load_csv(
    path: str | os.PathLike[str] | None,
    *,
    test_path: str | os.PathLike[str] | None = None,
    label_column: int | str = -1,
    id_column: int | str | None = None,
    header: bool | None = None,
    delimiter: str = ",",
    standardize: bool = False,
) -> Dataset:
    """Load a CSV training file and optional test file into a Dataset.

    Takes the train file ``path``; an optional ``test_path`` with the same columns (without
    one: a fixed stratified 80/20 split of the train file, seed 0, rows kept in file order);
    ``label_column`` (index or header name, default last); ``id_column`` (index or header name
    of a column of unique keys, not a feature; None: a row's key is its 0-based data row
    number); ``header`` (None = autodetect, or True/False, applied to both files); the
    ``delimiter``; and whether to standardise the features with train statistics. Returns a
    Dataset named ``"csv"`` with its :attr:`~Dataset.keys`. Raises DataMissingError for a
    missing file, DataCorruptError for an unparsable one (e.g. a row whose number of fields
    differs from the first line's, or a repeated key, naming its lines), ConfigError for a bad
    option (see :mod:`miniunlearn.data.useroptions` for the accepted values).
    """
    label_column = as_label_column(label_column)
    id_column = as_id_column(id_column)
    header = as_header(header)
    delimiter = as_delimiter(delimiter)
    standardize = as_flag(standardize, "csv: standardize")
    train = existing_file(path, "csv")
    test = existing_file(test_path, "csv test_path") if test_path else None
    source = key_source(train, test, id_column)
    if should_stream(train, test):
        from miniunlearn.data.csvstream import load_csv_streamed

        return load_csv_streamed(
            train,
            test,
            label_column=label_column,
            id_column=id_column,
            header=header,
            delimiter=delimiter,
            standardize=standardize,
            key_source=source,
        )
    layout = csv_layout(train, label_column, header, delimiter, None, id_column)
    x_train, y_train, k_train = _read(train, layout, delimiter)
    x_test = y_test = k_test = None
    parts = [(train, layout, k_train)]
    if test is not None:
        test_layout = csv_layout(test, label_column, header, delimiter, layout.n_fields, id_column)
        x_test, y_test, k_test = _read(test, test_layout, delimiter)
        parts.append((test, test_layout, k_test))
    if id_column is not None:
        check_unique_keys(parts, delimiter, id_column)  # type: ignore[arg-type]
    keys = (k_train, k_test, source) if id_column is not None else (None, None, source)
    return assemble("csv", str(train), x_train, y_train, x_test, y_test, standardize, keys=keys)
