"""Read a user's data file a block of whole lines at a time, decompressing by file suffix.

``.gz``, ``.bz2`` and ``.xz`` files are decompressed on the fly (gzip, bz2, lzma from the
standard library); any other file is read as it is. Blocks always end at a line break, so a
parser sees whole lines, and every block carries the 1-based number of its first line so that
errors can name the line.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from miniunlearn.errors import DataCorruptError

BLOCK_BYTES = 8 << 20  # bytes of text per block: bounds the parser's working memory
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz")
#: What reading a damaged or truncated (compressed) file raises.
READ_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError, lzma.LZMAError)


def is_compressed(path: str | os.PathLike[str]) -> bool:
    """Return True if ``path`` ends in ``.gz``, ``.bz2`` or ``.xz`` (case-insensitive)."""
    return Path(path).suffix.lower() in COMPRESSED_SUFFIXES


def open_binary(path: str | os.PathLike[str]) -> IO[bytes]:
    """Open ``path`` for reading bytes, decompressing ``.gz``/``.bz2``/``.xz`` by suffix.

    Takes the file path; returns a binary file object (close it, or use it in ``with``).
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".gz":
        return gzip.open(path, "rb")
    if suffix == ".bz2":
        return bz2.open(path, "rb")
    if suffix == ".xz":
        return lzma.open(path, "rb")
    return open(path, "rb")  # noqa: SIM115 - returned to the caller


def open_text(path: str | os.PathLike[str]) -> IO[str]:
    """Open ``path`` as UTF-8 text with universal newlines (as ``np.loadtxt`` reads a file).

    Takes the file path; returns a text file object, decompressing by suffix.
    """
    return io.TextIOWrapper(open_binary(path), encoding="utf-8", newline=None)


def _read_error(source: str | os.PathLike[str], line: int, exc: BaseException) -> DataCorruptError:
    if isinstance(exc, UnicodeDecodeError):
        return DataCorruptError(f"{source}: not a UTF-8 text file (near line {line}: {exc})")
    return DataCorruptError(f"{source}: cannot read or decompress the file near line {line} ({exc})")


def byte_blocks(
    handle: IO[bytes], source: str | os.PathLike[str], block_bytes: int | None = None
) -> Iterator[tuple[int, bytes]]:
    """Yield ``(first line number, block)`` pairs of whole lines read from a binary file.

    Takes an open binary file, its name for errors and the approximate block size (default
    ``BLOCK_BYTES``). Every block ends with ``b"\\n"`` (a final line without one gets one
    appended). Line numbers are 1-based and count every line, blank ones included. A read or
    decompression error raises DataCorruptError naming ``source``.
    """
    block_bytes = block_bytes or BLOCK_BYTES
    line = 1
    carry = b""
    while True:
        try:
            chunk = handle.read(block_bytes)
        except READ_ERRORS as exc:
            raise _read_error(source, line, exc) from exc
        if not chunk:
            break
        data = carry + chunk if carry else chunk
        cut = data.rfind(b"\n") + 1
        if cut == 0:  # no line end yet: keep reading
            carry = data
            continue
        block, carry = data[:cut], data[cut:]
        yield line, block
        line += block.count(b"\n")
    if carry:
        yield line, carry + b"\n"


def line_blocks(
    handle: IO[str], source: str | os.PathLike[str], block_bytes: int | None = None
) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(first line number, lines)`` pairs of whole text lines (each keeps its newline).

    Takes an open text file, its name for errors and the approximate size of a block in
    characters (default ``BLOCK_BYTES``); line numbers are 1-based and count every line, blank
    ones included. A read, decompression or UTF-8 decoding error raises DataCorruptError naming
    ``source``.
    """
    block_bytes = block_bytes or BLOCK_BYTES
    line = 1
    while True:
        try:
            lines = handle.readlines(block_bytes)
        except (UnicodeDecodeError, *READ_ERRORS) as exc:
            raise _read_error(source, line, exc) from exc
        if not lines:
            return
        yield line, lines
        line += len(lines)
