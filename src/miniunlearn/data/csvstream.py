"""Streamed CSV loading: parse a large (possibly compressed) CSV file once, into the cache.

:func:`miniunlearn.data.tabular.load_csv` uses this path for ``.gz``/``.bz2``/``.xz`` files and
for plain files of at least ``STREAM_MIN_BYTES`` (64 MiB) together; smaller plain files are
parsed in memory. Both paths give identical arrays. The file is read in blocks of about 8 MB
of text, each parsed with ``np.loadtxt`` using the options of the in-memory path (one record
per line, ``"`` quotes, no comments); features go straight to a float32 file on disk and labels
to a vocabulary (:class:`LabelVocab`), so the working memory is a few blocks plus 8 bytes a
row. The finished float32/int64 arrays land in ``<cache>/userfiles/csv-<key>/`` and are
memory-mapped; a second load only hashes the source file (to find the entry) and the entry's
files (once per process), it does not parse again. A malformed line raises DataCorruptError
naming its line number.

HIGGS (UCI, ``HIGGS.csv.gz``: 11,000,000 rows, label first, no header) from Python::

    load_dataset("csv", path="HIGGS.csv.gz", label_column=0, header=False)
    # or TrainConfig(dataset="csv", data_path="HIGGS.csv.gz", data_options={"label_column": 0})

It has no test file, so the fixed stratified 80/20 split applies (8,800,000 / 2,200,000 rows),
not UCI's "last 500,000 rows are the test set". The first load parses about 8 GB of text (some
minutes); peak memory stays near the 1.2 GB of float32 features.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from miniunlearn.data.base import Dataset
from miniunlearn.data.blocks import line_blocks, open_text
from miniunlearn.data.chunked import chunk_rows, file_blocks
from miniunlearn.data.labelvocab import LabelVocab
from miniunlearn.data.npyfile import NpyWriter
from miniunlearn.data.streamed import ParsedPart, finish_arrays, load_userfile
from miniunlearn.data.tabular import CsvLayout, check_fields, check_unique_keys, csv_layout
from miniunlearn.errors import DataCorruptError


class _TextLabels(Exception):
    """A label did not parse as a number: parse again keeping labels as strings."""


def _loadtxt(lines: list[str], dtype: type, usecols: list[int], delimiter: str) -> np.ndarray:
    """``np.loadtxt`` with the options of the in-memory CSV path, on a list of lines."""
    with warnings.catch_warnings(), np.errstate(over="ignore"):
        warnings.filterwarnings("ignore", message="loadtxt: input contained no data")
        warnings.filterwarnings("ignore", message="Input line", category=UserWarning)
        return np.loadtxt(
            lines, dtype=dtype, usecols=usecols, delimiter=delimiter, ndmin=2, quotechar='"', comments=None
        )


def _bad_line(
    lines: list[str], first: int, path: Path, features: list[int], label: int, delimiter: str, exc: Exception
) -> DataCorruptError:
    """Find the first line of a block that does not parse (error path only) and describe it."""
    for i, line in enumerate(lines):
        try:
            _loadtxt([line], np.float32, features, delimiter)
            _loadtxt([line], str, [label], delimiter)
        except ValueError as why:
            return DataCorruptError(
                f"{path}: line {first + i}: cannot parse as CSV of numeric features ({why})"
            )
    last = first + len(lines) - 1
    return DataCorruptError(f"{path}: lines {first}..{last}: cannot parse as CSV of numeric features ({exc})")


def _parse_lines(
    lines: list[str], first: int, path: Path, features: list[int], label: int, delimiter: str, numeric: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Parse a block of lines; return ``(float32 features, raw labels)``.

    With ``numeric`` the whole block is parsed once as float64 (float32 features are the same
    numbers: numpy parses float32 through float64), and a label that is not a number raises
    _TextLabels; otherwise labels are kept as strings, exactly as the in-memory path reads them.
    """
    if numeric:
        try:
            both = _loadtxt(lines, np.float64, [*features, label], delimiter)
        except ValueError:
            pass
        else:
            with np.errstate(over="ignore"):
                return both[:, :-1].astype(np.float32), both[:, -1].copy()
    try:
        x = _loadtxt(lines, np.float32, features, delimiter)
        y = _loadtxt(lines, str, [label], delimiter)[:, 0]
    except ValueError as exc:
        raise _bad_line(lines, first, path, features, label, delimiter, exc) from exc
    if numeric:
        raise _TextLabels
    return x, y


def parse_csv_file(
    path: Path,
    out: Path,
    layout: CsvLayout,
    delimiter: str,
    vocab: LabelVocab,
    numeric: bool,
) -> ParsedPart:
    """Parse one CSV file into the float32 ``.npy`` file ``out``; return its :class:`ParsedPart`.

    Takes the source file, the output path, the :class:`CsvLayout` of :func:`csv_layout`, the
    delimiter, the label vocabulary shared by train and test, and whether to parse labels as
    numbers first (see :func:`_parse_lines`). The part's keys are the key column's stripped
    strings (None without one). Raises DataCorruptError naming the line of a malformed line (or
    of one whose number of fields differs from the first line's) or the data row of a
    non-finite value.
    """
    label, has_header, n_fields = layout.label, layout.has_header, layout.n_fields
    features = layout.features
    codes, keys = [], []
    rows = 0
    with open_text(path) as handle, NpyWriter(out, np.float32, (len(features),)) as writer:
        for first, lines in line_blocks(handle, source=path):
            if has_header and first == 1:
                lines, first = lines[1:], 2
            check_fields(lines, first, n_fields, delimiter, path)
            x, raw = _parse_lines(lines, first, path, features, label, delimiter, numeric)
            finite = np.isfinite(x).all(axis=1)
            if not finite.all():
                bad = rows + int(np.argmin(finite)) + 1
                raise DataCorruptError(f"{path}: non-finite feature value in data row {bad}")
            codes.append(vocab.add(raw))
            if layout.key is not None:
                keys.append(np.char.strip(_loadtxt(lines, str, [layout.key], delimiter)[:, 0]))
            writer.append(x)
            rows += x.shape[0]
    if rows == 0:
        raise DataCorruptError(f"{path}: no data rows")
    width = len(features)
    return ParsedPart(
        path,
        np.concatenate(codes),
        width,
        lambda: file_blocks(out, chunk_rows(width)),
        npy=out,
        keys=np.concatenate(keys) if layout.key is not None else None,
    )


def load_csv_streamed(
    train: Path,
    test: Path | None,
    *,
    label_column: int | str = -1,
    id_column: int | str | None = None,
    header: bool | None = None,
    delimiter: str = ",",
    standardize: bool = False,
    key_source: str = "",
) -> Dataset:
    """Load CSV files through the user-file cache, parsing them in blocks on a cache miss.

    Takes the train file, an optional test file, the options of
    :func:`miniunlearn.data.tabular.load_csv` (same meaning) and the words for the rows' keys.
    Returns a Dataset named ``"csv"`` with memory-mapped arrays, identical to the in-memory
    result. Raises DataCorruptError for a malformed file (naming the line) or a repeated key
    (naming its lines), ConfigError for a bad option.
    """
    layout = csv_layout(train, label_column, header, delimiter, None, id_column)
    test_layout = (
        csv_layout(test, label_column, header, delimiter, layout.n_fields, id_column) if test else None
    )
    options = {
        "label_column": label_column,
        "header": header,
        "delimiter": delimiter,
        "standardize": bool(standardize),
        **({"id_column": id_column} if id_column is not None else {}),
    }
    source = " / ".join(str(f) for f in (train, test) if f is not None)

    def build(build_dir: Path) -> dict:
        for numeric in (True, False):
            vocab = LabelVocab(source)
            try:
                parsed_train = parse_csv_file(
                    train, build_dir / "raw-train.npy", layout, delimiter, vocab, numeric
                )
                parsed_test = None
                if test is not None and test_layout is not None:
                    out = build_dir / "raw-test.npy"
                    parsed_test = parse_csv_file(test, out, test_layout, delimiter, vocab, numeric)
            except _TextLabels:
                continue  # string labels somewhere: parse again keeping every label as a string
            if id_column is not None:
                parts = [(train, layout, parsed_train.keys)]
                if parsed_test is not None and test is not None and test_layout is not None:
                    parts.append((test, test_layout, parsed_test.keys))
                check_unique_keys(parts, delimiter, id_column)  # type: ignore[arg-type]
            return finish_arrays(build_dir, parsed_train, parsed_test, vocab, bool(standardize))
        raise AssertionError("unreachable: the string-label pass never raises _TextLabels")

    files = [train] + ([test] if test is not None else [])
    return load_userfile("csv", files, options, build, key_source)
