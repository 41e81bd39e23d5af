"""Reading the sample ids, or the users' keys, of a deletion request from a text file (or
standard input)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np

from ..errors import ForgetRequestError

_DECIMAL_ID = re.compile(r"-?[0-9]{1,19}")


def _read_text(
    path: str | os.PathLike[str], what: str = "ids file", entry: str = "integer id"
) -> tuple[str, str]:
    """(text, name to show) of an ids (or keys) file, or of standard input when ``path`` is ``-``."""
    if str(path) == "-":
        try:
            return sys.stdin.buffer.read().decode("utf-8-sig"), "<stdin>"
        except UnicodeDecodeError as exc:
            raise ForgetRequestError(
                f"standard input is not UTF-8 text ({exc}); give one {entry.split()[-1]} per line"
            ) from None
    file = Path(path)
    try:
        return file.read_text(encoding="utf-8-sig"), str(file)  # a byte-order mark is not part of an id
    except FileNotFoundError:
        raise ForgetRequestError(f"{what} {file} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ForgetRequestError(
            f"cannot read {what} {file} ({exc}); it must be a text file with one {entry} per line"
        ) from None


def read_keys_file(path: str | os.PathLike[str]) -> list[str]:
    """Read one key per line from ``path`` (``-``: standard input), UTF-8 with or without a
    byte-order mark. Surrounding spaces are not part of a key; blank lines are ignored. There
    are no comments (a key may hold ``#``).

    Returns the keys in file order. Raises ForgetRequestError when the file cannot be read.
    """
    text, _ = _read_text(path, "keys file", "key")
    keys = (line.strip(" \t\r") for line in text.split("\n"))
    return [key for key in keys if key]


def read_ids_file(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one integer sample id per line from ``path`` (``-``: standard input); blank
    lines and ``#`` comments are ignored; UTF-8, with or without a byte-order mark.

    Returns the ids as int64 in file order. Raises ForgetRequestError naming the first
    line that is not an integer, shown exactly as written (control characters escaped).
    """
    text, name = _read_text(path)
    ids = []
    # Lines end at "\n" only (str.splitlines would also split at form feeds and other
    # separators), and an id is plain ASCII decimal digits: int() would also take "1_0",
    # "+3" and non-ASCII digits. At most 19 digits: anything longer is no int64.
    for number, line in enumerate(text.split("\n"), start=1):
        entry = line.split("#", 1)[0].strip(" \t\r")
        if not entry:
            continue
        value = int(entry) if _DECIMAL_ID.fullmatch(entry) else None
        if value is None or not -(2**63) <= value < 2**63:
            shown = repr(entry)
            shown = shown if len(shown) <= 80 else f"{shown[:60]}... ({len(entry)} characters)"
            raise ForgetRequestError(
                f"{name}:{number}: {shown} is not an integer sample id; "
                "the file must hold one integer id per line"
            )
        ids.append(value)
    return np.asarray(ids, dtype=np.int64)
