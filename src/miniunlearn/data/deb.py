"""Read files out of a Debian ``.deb`` package without installing it (no root needed).

Uses ``dpkg -x`` into a temporary directory when dpkg is on PATH, and otherwise parses the
``ar`` container and its ``data.tar.*`` member in Python.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from miniunlearn.errors import DataCorruptError

_AR_MAGIC = b"!<arch>\n"
_AR_HEADER = 60


def ar_members(data: bytes, source: str) -> dict[str, bytes]:
    """Split an ``ar`` archive (the container of a .deb) into ``{member name: bytes}``.

    Takes the archive bytes and a name for errors; raises DataCorruptError if malformed.
    """
    if not data.startswith(_AR_MAGIC):
        raise DataCorruptError(f"{source}: not an ar archive / .deb file")
    members: dict[str, bytes] = {}
    pos = len(_AR_MAGIC)
    while pos + _AR_HEADER <= len(data):
        header = data[pos : pos + _AR_HEADER]
        if header[58:60] != b"`\n":
            raise DataCorruptError(f"{source}: bad ar member header at byte {pos}")
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError as exc:
            raise DataCorruptError(f"{source}: bad ar member size at byte {pos}") from exc
        start = pos + _AR_HEADER
        if start + size > len(data):
            raise DataCorruptError(f"{source}: truncated ar member {name!r}")
        members[name] = data[start : start + size]
        pos = start + size + (size % 2)
    return members


def _read_with_python(deb: Path, basenames: set[str]) -> dict[str, bytes]:
    members = ar_members(deb.read_bytes(), str(deb))
    data_name = next((n for n in members if n.startswith("data.tar")), None)
    if data_name is None:
        raise DataCorruptError(f"{deb}: no data.tar member")
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(members[data_name]), mode="r:*") as tar:
            for info in tar:
                base = PurePosixPath(info.name).name
                if info.isfile() and base in basenames:
                    extracted = tar.extractfile(info)
                    if extracted is not None:
                        found[base] = extracted.read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataCorruptError(f"{deb}: cannot read {data_name} ({exc}); install dpkg to extract it") from exc
    return found


def _read_with_dpkg(deb: Path, basenames: set[str]) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory(prefix="miniunlearn-deb-") as tmp:
        proc = subprocess.run(["dpkg", "-x", str(deb), tmp], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise DataCorruptError(f"{deb}: dpkg -x failed: {proc.stderr.strip()[-500:]}")
        return {p.name: p.read_bytes() for p in Path(tmp).rglob("*") if p.name in basenames and p.is_file()}


def read_deb_files(deb: Path, basenames: set[str], use_dpkg: bool | None = None) -> dict[str, bytes]:
    """Return ``{basename: bytes}`` for every wanted file anywhere inside a .deb's data.

    Takes the .deb path, the file basenames wanted, and whether to use ``dpkg -x`` (None:
    when dpkg is on PATH). Raises DataCorruptError if the package cannot be read or a wanted
    file is absent.
    """
    if use_dpkg is None:
        use_dpkg = shutil.which("dpkg") is not None
    found = _read_with_dpkg(deb, basenames) if use_dpkg else _read_with_python(deb, basenames)
    missing = sorted(basenames - found.keys())
    if missing:
        raise DataCorruptError(f"{deb}: package lacks {missing}")
    return found
