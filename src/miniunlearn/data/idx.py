"""Parser for the IDX format of the MNIST family (big-endian header, then raw values)."""

from __future__ import annotations

import gzip
import zlib

import numpy as np

from miniunlearn.errors import DataCorruptError

# Third byte of the magic number -> dtype of the values (all big-endian).
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode one IDX file.

    Takes the file's bytes (gzip-compressed or not; detected by the gzip magic) and a name for
    error messages. Returns an array of the shape in the header, in native byte order. Raises
    DataCorruptError on a bad magic number, a bad gzip stream or a size that does not match.
    """
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataCorruptError(f"{source}: bad gzip stream ({exc})") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataCorruptError(f"{source}: not an IDX file (magic {data[:4].hex()})")
    dtype = _IDX_DTYPES[data[2]]
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataCorruptError(f"{source}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataCorruptError(
            f"{source}: IDX body is {len(data) - header} bytes, header {shape} says {expected}"
        )
    values = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return values.astype(dtype.newbyteorder("="), copy=True)


def images_and_labels(images: np.ndarray, labels: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Check a decoded (images, labels) pair and flatten it.

    Takes an ``(n, H, W)`` uint8 image array and an ``(n,)`` label array. Returns
    ``(uint8 (n, H*W), int64 (n,))``. Raises DataCorruptError if the shapes disagree.
    """
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataCorruptError(f"{source}: expected (n, H, W) uint8 images, got {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataCorruptError(f"{source}: {images.shape[0]} images but labels of shape {labels.shape}")
    return images.reshape(images.shape[0], -1), labels.astype(np.int64)
