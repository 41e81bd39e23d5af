"""Write and read ``.npy`` files a block of rows at a time, never holding the whole array.

Large datasets are written row block by row block with plain file writes (not through a
memory map, whose touched pages would count towards the process's resident memory) and read
back the same way. The header of a file being written is rewritten with the final row count
when it is closed; its size does not depend on that count, so the data offset never moves.
Files written here are ordinary ``.npy`` files: ``np.load(path, mmap_mode="r")`` maps them.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

import numpy as np

from miniunlearn.errors import DataCorruptError

HEADER_BYTES = 128  # magic, version 1.0, length field and a space-padded dict; 64-byte aligned
_MAGIC = b"\x93NUMPY\x01\x00"


def npy_header(dtype: np.dtype | type, shape: tuple[int, ...]) -> bytes:
    """Return the ``HEADER_BYTES``-long header of a C-ordered ``.npy`` file.

    Takes the dtype and shape; returns the header bytes (format version 1.0). Raises
    ValueError if the shape is too long to fit (more than about 20 digits per dimension).
    """
    fields = {
        "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
        "fortran_order": False,
        "shape": tuple(int(n) for n in shape),
    }
    text = repr(fields).encode("latin1")
    room = HEADER_BYTES - len(_MAGIC) - 2 - 1  # the length field and the final newline
    if len(text) > room:
        raise ValueError(f"shape {shape} is too large for a {HEADER_BYTES}-byte npy header")
    body = text + b" " * (room - len(text)) + b"\n"
    return _MAGIC + len(body).to_bytes(2, "little") + body


class NpyWriter:
    """Append rows to a new ``.npy`` file; the row count is written into the header on close.

    Use as a context manager: ``with NpyWriter(path, np.float32, (28,)) as w: w.append(block)``.
    ``row_shape`` is the shape of one row (``()`` for a 1-D array). If the block raises, the
    file is left with a zero row count (callers build inside a directory they discard).
    """

    def __init__(self, path: str | os.PathLike[str], dtype: np.dtype | type, row_shape: tuple[int, ...]):
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.row_shape = tuple(int(n) for n in row_shape)
        self.rows = 0
        self._handle = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self._handle.write(npy_header(self.dtype, (0, *self.row_shape)))

    def append(self, block: np.ndarray) -> None:
        """Write ``block`` (shape ``(n, *row_shape)``, cast to the file's dtype) after the rows so far."""
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.row_shape:
            raise ValueError(f"{self.path}: rows of shape {block.shape[1:]}, expected {self.row_shape}")
        self._handle.write(block.data)
        self.rows += block.shape[0]

    def close(self) -> None:
        """Write the final row count into the header, flush, fsync and close the file."""
        if self._handle.closed:
            return
        self._handle.seek(0)
        self._handle.write(npy_header(self.dtype, (self.rows, *self.row_shape)))
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()

    def __enter__(self) -> NpyWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:
            self._handle.close()


def npy_layout(path: str | os.PathLike[str]) -> tuple[np.dtype, tuple[int, ...], int]:
    """Return ``(dtype, shape, data offset)`` of a C-ordered ``.npy`` file.

    Takes the file path; raises DataCorruptError if the header is unreadable or Fortran-ordered.
    """
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
            offset = handle.tell()
    except (OSError, ValueError, EOFError) as exc:
        raise DataCorruptError(f"{path}: unreadable .npy header ({exc})") from exc
    if fortran:
        raise DataCorruptError(f"{path}: Fortran-ordered arrays are not supported here")
    return dtype, tuple(shape), offset


def read_rows(path: str | os.PathLike[str], start: int, stop: int) -> np.ndarray:
    """Read rows ``start:stop`` of a C-ordered ``.npy`` file with a plain file read (no memory map).

    Takes the path and the row range; returns a new writable array of those rows.
    """
    dtype, shape, offset = npy_layout(path)
    row_items = int(np.prod(shape[1:], dtype=np.int64))
    start, stop = max(0, start), min(shape[0], stop)
    count = max(0, stop - start) * row_items
    with open(path, "rb") as handle:
        handle.seek(offset + start * row_items * dtype.itemsize)
        flat = np.fromfile(handle, dtype=dtype, count=count)
    if flat.size != count:
        raise DataCorruptError(f"{path}: truncated (rows {start}..{stop} not all present)")
    return flat.reshape((max(0, stop - start), *shape[1:]))


def write_rows(path: str | os.PathLike[str], start: int, block: np.ndarray) -> None:
    """Overwrite rows ``start : start + len(block)`` of an existing C-ordered ``.npy`` file in place.

    Takes the path, the first row and the rows (cast to the file's dtype); uses a plain file write.
    """
    dtype, shape, offset = npy_layout(path)
    block = np.ascontiguousarray(block, dtype=dtype)
    if block.shape[1:] != shape[1:] or start < 0 or start + block.shape[0] > shape[0]:
        raise ValueError(f"{path}: cannot write rows of shape {block.shape} at row {start} of {shape}")
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    with open(path, "r+b") as handle:
        handle.seek(offset + start * row_bytes)
        handle.write(block.data)
