"""Streamed LIBSVM loading: parse a large (possibly compressed) LIBSVM file once, into the cache.

:func:`miniunlearn.data.libsvm.load_libsvm` uses this path for ``.gz``/``.bz2``/``.xz`` files
and for plain files of at least ``STREAM_MIN_BYTES`` (64 MiB) together; smaller plain files
go through scikit-learn in memory. Both paths give identical arrays.

The file is read in blocks of about 8 MB (:mod:`miniunlearn.data.svmparse`); the stored
entries are spilled to disk (int32 index and float32 value, 8 bytes each) while the label
codes and row lengths stay in memory (16 bytes a row). Only when every file has been read are
the 0-/1-based indexing (1-based unless index 0 occurs anywhere) and the width known; the
rows are then densified a block at a time straight into the train/test ``.npy`` files of the
cache entry ``<cache>/userfiles/libsvm-<key>/``, which is memory-mapped. A second load does not
parse again. A malformed line raises DataCorruptError naming its line number.

Covtype (LIBSVM site, ``covtype.libsvm.binary.bz2``: 581,012 rows, 54 features, labels 1/2)::

    miniunlearn train --dataset libsvm --data-path covtype.libsvm.binary.bz2 --model logreg --out runs/covtype

or from Python ``load_dataset("libsvm", path="covtype.libsvm.binary.bz2", standardize=True)``;
the fixed stratified 80/20 split applies (no test file). The multi-class
``covtype.bz2`` (labels 1..7 mapped to 0..6) loads the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from miniunlearn.data.base import Dataset
from miniunlearn.data.blocks import byte_blocks, open_binary
from miniunlearn.data.chunked import chunk_rows
from miniunlearn.data.keys import row_source
from miniunlearn.data.labelvocab import LabelVocab
from miniunlearn.data.streamed import ParsedPart, finish_arrays, load_userfile
from miniunlearn.data.svmparse import parse_block
from miniunlearn.data.useroptions import check_dense_size
from miniunlearn.errors import DataCorruptError


class SpilledRows:
    """The sparse rows of one file, spilled to ``<stem>.indices`` / ``<stem>.values`` on disk.

    Attributes:
        path: the source file.
        codes: int64 label vocabulary codes, one per row.
        counts: int64 number of stored entries of each row.
        min_index, max_index: smallest and largest index stored (-1 when there are none).
    """

    def __init__(self, path: Path, stem: Path):
        self.path = path
        self.stem = stem
        self.codes = np.zeros(0, dtype=np.int64)
        self.counts = np.zeros(0, dtype=np.int64)
        self.min_index = -1
        self.max_index = -1

    def blocks(self, width: int, offset: int, rows: int) -> Iterator[np.ndarray]:
        """Yield dense float32 blocks of ``rows`` rows, ``width`` columns, index minus ``offset``."""
        with open(f"{self.stem}.indices", "rb") as idx_file, open(f"{self.stem}.values", "rb") as val_file:
            for start in range(0, self.counts.size, rows):
                counts = self.counts[start : start + rows]
                nnz = int(counts.sum())
                idx = np.fromfile(idx_file, dtype=np.int32, count=nnz)
                val = np.fromfile(val_file, dtype=np.float32, count=nnz)
                if idx.size != nnz or val.size != nnz:
                    raise DataCorruptError(
                        f"spilled rows of {self.path} are truncated (the disk may be full)"
                    )
                dense = np.zeros((counts.size, width), dtype=np.float32)
                dense[np.repeat(np.arange(counts.size), counts), idx.astype(np.int64) - offset] = val
                yield dense


def spill_file(path: Path, stem: Path, vocab: LabelVocab) -> SpilledRows:
    """Parse one LIBSVM file block by block, spilling its entries next to ``stem``.

    Takes the source file, the path stem of the spill files and the label vocabulary shared by
    train and test. Returns the :class:`SpilledRows`. Raises DataCorruptError for a malformed
    line (naming it), a non-finite value (naming the data row) or a file without rows.
    """
    spilled = SpilledRows(path, stem)
    codes, counts = [], []
    rows = 0
    with (
        open_binary(path) as handle,
        open(f"{stem}.indices", "wb") as idx_file,
        open(f"{stem}.values", "wb") as val_file,
    ):
        for first, block in byte_blocks(handle, source=path):
            parsed = parse_block(block, first, str(path))
            if not np.isfinite(parsed.values).all():
                entry = int(np.argmin(np.isfinite(parsed.values)))
                row = int(np.searchsorted(np.cumsum(parsed.counts), entry, side="right"))
                raise DataCorruptError(f"{path}: non-finite feature value in data row {rows + row + 1}")
            if parsed.indices.size:
                low, high = int(parsed.indices.min()), int(parsed.indices.max())
                spilled.min_index = low if spilled.min_index < 0 else min(spilled.min_index, low)
                spilled.max_index = max(spilled.max_index, high)
            codes.append(vocab.add(parsed.labels))
            counts.append(parsed.counts)
            idx_file.write(parsed.indices.data)
            val_file.write(parsed.values.data)
            rows += parsed.counts.size
    if rows == 0:
        raise DataCorruptError(f"{path}: no data rows")
    spilled.codes = np.concatenate(codes)
    spilled.counts = np.concatenate(counts)
    return spilled


def _layout(parts: list[SpilledRows], n_features: int | None, names: str) -> tuple[int, int]:
    """Return ``(width, offset)`` exactly as the in-memory loader decides them."""
    used = [p.min_index for p in parts if p.min_index >= 0]
    offset = 1 if used and min(used) >= 1 else 0  # no index 0 anywhere: one-based
    width = max(max(p.max_index for p in parts) + 1, 1) - offset
    if n_features is not None:
        if n_features < width:
            raise DataCorruptError(f"{names}: n_features={n_features} but indices reach {width}")
        width = n_features
    return width, offset


def load_libsvm_streamed(
    train: Path, test: Path | None, *, n_features: int | None = None, standardize: bool = False
) -> Dataset:
    """Load LIBSVM files through the user-file cache, parsing them in blocks on a cache miss.

    Takes the train file, an optional test file and the options of
    :func:`miniunlearn.data.libsvm.load_libsvm` (same meaning). Returns a Dataset named
    ``"libsvm"`` with memory-mapped arrays, identical to the in-memory result. Raises
    DataCorruptError for a malformed file (naming the line) or more than ``MAX_FEATURES``
    feature columns (before densifying).
    """
    files = [train] + ([test] if test is not None else [])
    names = " / ".join(str(f) for f in files)
    options = {"n_features": n_features, "standardize": bool(standardize)}

    def build(build_dir: Path) -> dict:
        vocab = LabelVocab(names)
        parts = [spill_file(f, build_dir / f"spill-{i}", vocab) for i, f in enumerate(files)]
        width, offset = _layout(parts, n_features, names)
        check_dense_size(names, sum(p.counts.size for p in parts), width, in_memory=False)
        rows = chunk_rows(width)

        def parsed(part: SpilledRows) -> ParsedPart:
            return ParsedPart(part.path, part.codes, width, lambda: part.blocks(width, offset, rows))

        test_part = parsed(parts[1]) if test is not None else None
        info = finish_arrays(build_dir, parsed(parts[0]), test_part, vocab, bool(standardize))
        for i in range(len(parts)):
            for suffix in ("indices", "values"):
                (build_dir / f"spill-{i}.{suffix}").unlink()
        return info

    return load_userfile("libsvm", files, options, build, row_source(str(train), test is not None))
