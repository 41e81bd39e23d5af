"""Split and standardise datasets stored in ``.npy`` files, a block of rows at a time.

The results are bit-for-bit those of the in-memory functions in
:mod:`miniunlearn.data.splits`: rows keep their file order on both sides of a split, and the
train mean and standard deviation are accumulated in float64 in row order, the order numpy's
own ``x.mean(axis=0, dtype=np.float64)`` uses for a C-ordered array of two or more columns (a
single column, which numpy sums pairwise, is standardised in memory: it is small).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from miniunlearn.data.npyfile import NpyWriter, npy_layout, read_rows, write_rows
from miniunlearn.data.splits import standardize

CHUNK_BYTES = 32 << 20  # float64 working memory per block of rows


def chunk_rows(n_cols: int, chunk_bytes: int | None = None) -> int:
    """Return how many rows of ``n_cols`` float64 values fit in ``chunk_bytes`` (default
    ``CHUNK_BYTES``), at least 1."""
    return max(1, int(chunk_bytes or CHUNK_BYTES) // (8 * max(1, int(n_cols))))


def file_blocks(path: str | os.PathLike[str], rows: int) -> Iterator[np.ndarray]:
    """Yield the rows of a C-ordered ``.npy`` file in blocks of ``rows``, read without a memory map."""
    _, shape, _ = npy_layout(path)
    for start in range(0, shape[0], max(1, int(rows))):
        yield read_rows(path, start, start + rows)


def write_split(
    blocks: Iterable[np.ndarray], is_test: np.ndarray, train_out: Path, test_out: Path, n_cols: int
) -> None:
    """Write the rows of ``blocks`` (in order) into two new ``.npy`` files by a test mask.

    Takes the float32 row blocks, a boolean mask over all rows (True: test), the two output
    paths and the number of columns. Rows keep their order on both sides, as
    ``x[train_idx], x[test_idx]`` with sorted indices would give.
    """
    start = 0
    with (
        NpyWriter(train_out, np.float32, (n_cols,)) as train,
        NpyWriter(test_out, np.float32, (n_cols,)) as test,
    ):
        for block in blocks:
            mask = is_test[start : start + block.shape[0]]
            train.append(block[~mask])
            test.append(block[mask])
            start += block.shape[0]
    if start != is_test.shape[0]:
        raise ValueError(f"split mask has {is_test.shape[0]} rows but the blocks had {start}")


def _ordered_sum(blocks: Iterable[np.ndarray], n_cols: int) -> np.ndarray:
    """Column sums of float64 blocks, added row after row (numpy's order for axis 0)."""
    total: np.ndarray | None = None
    for block in blocks:
        if block.shape[0] == 0:
            continue
        if total is None:
            total = np.add.reduce(block, axis=0)
        else:
            total = np.add.reduce(np.concatenate([total[None, :], block]), axis=0)
    return np.zeros(n_cols) if total is None else total


def train_stats(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Return the float64 column ``(mean, std)`` of a float32 ``.npy`` file, std 0 replaced by 1.

    Takes the path of a 2-D file with at least two columns and one row; the values equal those
    :func:`miniunlearn.data.splits.standardize` computes for the same array in memory.
    """
    _, (n, d), _ = npy_layout(path)
    rows = chunk_rows(2 * d)
    mean = _ordered_sum((b.astype(np.float64) for b in file_blocks(path, rows)), d) / n

    def squares() -> Iterator[np.ndarray]:
        for block in file_blocks(path, rows):
            centred = block - mean
            centred *= centred
            yield centred

    std = np.sqrt(_ordered_sum(squares(), d) / n)
    std[std == 0] = 1.0
    return mean, std


def standardize_files(train: str | os.PathLike[str], test: str | os.PathLike[str]) -> None:
    """Standardise two float32 ``.npy`` files in place with the TRAIN mean and std.

    Takes the train and test paths (same number of columns); the result equals
    :func:`miniunlearn.data.splits.standardize` applied in memory.
    """
    _, (n, d), _ = npy_layout(train)
    if d < 2:  # numpy sums one column pairwise: do exactly that, in memory (one column is small)
        x_train, x_test = standardize(read_rows(train, 0, n), read_rows(test, 0, npy_layout(test)[1][0]))
        write_rows(train, 0, x_train)
        write_rows(test, 0, x_test)
        return
    mean, std = train_stats(train)
    rows = chunk_rows(2 * d)
    for path in (train, test):
        for start, block in zip(range(0, npy_layout(path)[1][0], rows), file_blocks(path, rows), strict=True):
            write_rows(path, start, ((block - mean) / std).astype(np.float32))
