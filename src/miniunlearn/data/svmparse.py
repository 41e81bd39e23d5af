"""Parse blocks of LIBSVM / svmlight lines into sparse rows, as scikit-learn's reader does.

A line is ``<label> [qid:<q>] <index>:<value> ...``; ``#`` starts a comment; blank lines are
skipped; indices must be non-negative integers, strictly increasing within a line. Values
are parsed as float64 and rounded to float32, like ``load_svmlight_files(dtype=np.float32)``.

:func:`parse_block` first tries a vectorised parse of the whole block (numpy byte scans and
one ``np.fromstring`` call); a block that fails any of its checks is parsed again line by line
by :func:`parse_lines`, scikit-learn's own rules in Python, which either accepts it with the
same result or raises DataCorruptError naming the line.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

import numpy as np

from miniunlearn.errors import DataCorruptError

MAX_INDEX = 2**31 - 1  # indices are stored as int32 (scikit-learn's reader uses a C int too)
_COMMENT = re.compile(rb"#[^\n]*")
_SEP = np.zeros(256, dtype=bool)
_SEP[list(b" \t\n\r\x0b\x0c")] = True  # bytes.split() whitespace
_DIGIT = np.zeros(256, dtype=bool)
_DIGIT[list(b"0123456789")] = True
_PLAIN = _SEP.copy()  # bytes of numbers both np.fromstring and Python's float read alike
_PLAIN[list(b"0123456789+-.eE:nNaAiIfFtTyY")] = True


@dataclass
class SparseRows:
    """Rows of one block in CSR form.

    Attributes:
        labels: float64 label of each row.
        counts: int64 number of stored entries of each row.
        indices: int32 column index of each entry (as written in the file).
        values: float32 value of each entry.
    """

    labels: np.ndarray
    counts: np.ndarray
    indices: np.ndarray
    values: np.ndarray


def _bad(source: str, line: int, why: str) -> DataCorruptError:
    return DataCorruptError(f"{source}: line {line}: not a valid LIBSVM line ({why})")


def parse_lines(block: bytes, first_line: int, source: str) -> SparseRows:
    """Parse a block line by line with scikit-learn's rules (the reference, and the error path).

    Takes the block (whole lines), the 1-based number of its first line and the file name for
    errors. Returns the block's rows; raises DataCorruptError naming the first bad line.
    """
    labels: list[float] = []
    counts: list[int] = []
    indices: list[int] = []
    values: list[float] = []
    for offset, line in enumerate(block.split(b"\n")):
        number = first_line + offset
        parts = line.split(b"#", 1)[0].split()
        if not parts:
            continue
        try:
            labels.append(float(parts[0]))
        except ValueError:
            raise _bad(source, number, f"label {parts[0][:40]!r} is not a number") from None
        features = parts[1:]
        if features and features[0].startswith(b"qid"):
            if b":" not in features[0]:
                raise _bad(source, number, f"{features[0][:40]!r} is not qid:<value>")
            features = features[1:]
        previous = -1
        for token in features:
            idx_text, colon, value_text = token.partition(b":")
            try:
                if not colon:
                    raise ValueError
                idx, value = int(idx_text), float(value_text)
            except ValueError:
                raise _bad(source, number, f"{token[:40]!r} is not <index>:<value>") from None
            if idx < 0 or idx > MAX_INDEX:
                raise _bad(source, number, f"invalid index {idx}")
            if idx <= previous:
                raise _bad(source, number, "feature indices must be sorted and unique")
            previous = idx
            indices.append(idx)
            values.append(value)
        counts.append(len(features))
    with np.errstate(over="ignore"):
        return SparseRows(
            np.array(labels, dtype=np.float64),
            np.array(counts, dtype=np.int64),
            np.array(indices, dtype=np.int32),
            np.array(values, dtype=np.float64).astype(np.float32),
        )


def _fast(block: bytes) -> SparseRows | None:
    """Vectorised parse of a block; None when any check fails (then parse it line by line)."""
    if b"#" in block:
        block = _COMMENT.sub(b"", block)
    u = np.frombuffer(block, dtype=np.uint8)
    token = ~_SEP[u]
    before = np.concatenate([[False], token[:-1]])
    after = np.concatenate([token[1:], [False]])
    starts = np.flatnonzero(token & ~before)
    ends = np.flatnonzero(token & ~after) + 1
    if starts.size == 0:
        return SparseRows(np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32))
    line_of = np.searchsorted(np.flatnonzero(u == 10), starts)  # newlines before each token
    first = np.concatenate([[True], line_of[1:] != line_of[:-1]])  # the label of each line
    colons = np.flatnonzero(u == 58)
    token_of_colon = np.searchsorted(starts, colons, side="right") - 1
    n_colons = np.bincount(token_of_colon, minlength=starts.size)
    colon_at = np.full(starts.size, -1, dtype=np.int64)
    if colons.size:
        first_colon = np.concatenate([[True], token_of_colon[1:] != token_of_colon[:-1]])
        colon_at[token_of_colon[first_colon]] = colons[first_colon]
    keep = np.ones(starts.size, dtype=bool)
    text = u.copy()
    if b"qid" in block:  # a qid:<q> token right after the label is skipped
        second = np.concatenate([[False], first[:-1]]) & ~first
        head = np.stack([u[np.minimum(starts + k, u.size - 1)] for k in range(3)], axis=1)
        qid = second & np.all(head == np.frombuffer(b"qid", dtype=np.uint8), axis=1) & (ends - starts >= 3)
        if np.any(qid & (n_colons == 0)):
            return None
        keep &= ~qid
        marks = np.zeros(u.size + 1, dtype=np.int32)
        np.add.at(marks, starts[qid], 1)
        np.add.at(marks, ends[qid], -1)
        text[np.cumsum(marks[:-1]) > 0] = 32
    if not _PLAIN[text].all():  # e.g. 1_0 or nan(1): leave to Python's rules
        return None
    feature = keep & ~first
    if np.any(n_colons[first] != 0) or np.any(n_colons[feature] != 1):
        return None
    f_start, f_colon, f_end = starts[feature], colon_at[feature], ends[feature]
    if np.any(f_colon <= f_start) or np.any(f_colon >= f_end - 1):
        return None
    non_digit = np.concatenate([[0], np.cumsum(~_DIGIT[u], dtype=np.int32)])
    signed = (u[f_start] == 43) | (u[f_start] == 45)  # + or -
    if np.any(non_digit[f_colon] - non_digit[f_start] != signed) or np.any(f_colon - f_start <= signed):
        return None
    text[colons] = 32
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            numbers = np.fromstring(text.tobytes(), dtype=np.float64, sep=" ")
    except (ValueError, DeprecationWarning):
        return None
    width = np.where(first, 1, np.where(feature, 2, 0))
    if numbers.size != int(width.sum()):
        return None
    at = np.cumsum(width) - width
    idx = numbers[at[feature]]
    if idx.size and (idx.min() < 0 or idx.max() > MAX_INDEX):
        return None
    row = np.cumsum(first)[feature] - 1
    if np.any((row[1:] == row[:-1]) & (idx[1:] <= idx[:-1])):
        return None
    n_rows = int(first.sum())
    with np.errstate(over="ignore"):
        values = numbers[at[feature] + 1].astype(np.float32)
    return SparseRows(numbers[at[first]], np.bincount(row, minlength=n_rows), idx.astype(np.int32), values)


def parse_block(block: bytes, first_line: int, source: str) -> SparseRows:
    """Parse a block of whole LIBSVM lines; return its rows in CSR form.

    Takes the block, the 1-based number of its first line and the file name for errors. Uses the
    vectorised parse and falls back to :func:`parse_lines` (same result, or DataCorruptError
    naming the bad line).
    """
    rows = _fast(block)
    return rows if rows is not None else parse_lines(block, first_line, source)
