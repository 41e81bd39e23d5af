"""Checks of the options of the user-file loaders (CSV and LIBSVM) and of their dense size.

Options arrive from Python, from a saved run config, or from ``--data-option key=value`` on the
command line (where ``true``/``false`` become booleans, digits become numbers and anything
else stays a string), so every check accepts the forms a clear value takes there and refuses
the rest with a ConfigError that lists what is accepted.

Both loaders store the features dense, as float32: ``n_features x rows x 4`` bytes. A feature
count above ``MAX_FEATURES`` is refused before anything of that size is allocated, and so is
an in-memory load larger than the machine's physical memory.
"""

from __future__ import annotations

import operator
import os
from typing import Any

from miniunlearn.errors import ConfigError, DataCorruptError

#: Largest number of dense feature columns a user file may have. One row of that many float32
#: features is 4 MB, so 1,000 rows already take 4 GB; a wider file is almost always a stray
#: index or a wrong delimiter, and the dense models of this library could not use it anyway.
MAX_FEATURES = 1_000_000
TRUE_SPELLINGS = ("true", "1", "yes")
FALSE_SPELLINGS = ("false", "0", "no")
_BOOL_HELP = "true/false, 1/0 or yes/no"
#: Characters a delimiter may not be: they occur in numbers, quote fields or end lines.
_BAD_DELIMITERS = "0123456789+-.eE\"'\n\r"


def _shown(value: Any, limit: int = 40) -> str:
    """``repr(value)`` cut to about ``limit`` characters, for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def as_flag(value: Any, option: str) -> bool:
    """Return a yes/no option as a bool, accepting only clear spellings.

    Takes the value and the option's name for errors (e.g. ``"csv: standardize"``). Accepts
    True/False, the integers 1/0 and the strings true/false, 1/0, yes/no (any case). Raises
    ConfigError for anything else (``"maybe"``, 2, 0.5, ...), listing the accepted values.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE_SPELLINGS + FALSE_SPELLINGS:
        return value.strip().lower() in TRUE_SPELLINGS
    raise ConfigError(f"{option}={_shown(value)} is not a yes/no value; use {_BOOL_HELP}")


def as_header(value: Any, option: str = "csv: header") -> bool | None:
    """Return the CSV ``header`` option: True, False, or None to detect a header line.

    Takes the value and the option's name for errors. Accepts None, ``"auto"`` or ``"none"``
    (detect) and the spellings of :func:`as_flag`. Raises ConfigError otherwise.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in ("auto", "none")):
        return None
    try:
        return as_flag(value, option)
    except ConfigError:
        raise ConfigError(
            f"{option}={_shown(value)} is not a yes/no value; use {_BOOL_HELP} "
            "(or leave it out, or give none, to detect a header line)"
        ) from None


def as_delimiter(value: Any, option: str = "csv: delimiter") -> str:
    """Return the CSV ``delimiter`` option: exactly one character that cannot occur in a number.

    Takes the value and the option's name for errors. The two-character spelling ``\\t``
    stands for a tab. Raises ConfigError for a non-string, an empty or longer string, a digit,
    ``+ - . e E``, a quote or a line break.
    """
    fix = "give exactly one character such as , or ; or a tab (written \\t)"
    if not isinstance(value, str):
        raise ConfigError(f"{option}={_shown(value)} is not a character; {fix}")
    if value == "\\t":
        return "\t"
    if len(value) != 1:
        raise ConfigError(f"{option}={_shown(value)} has {len(value)} characters, not 1; {fix}")
    if value in _BAD_DELIMITERS:
        raise ConfigError(
            f"{option}={value!r} cannot separate fields: digits, + - . e E, quotes and line breaks "
            f"occur inside numbers, quoted fields or line ends; {fix}"
        )
    return value


def as_label_column(value: Any, option: str = "csv: label_column") -> int | str:
    """Return the CSV ``label_column`` option: an integer index or a header name.

    Takes the value and the option's name for errors. An index is 0-based, negative counting
    from the end (-1: the last column); a non-empty string names a column of the header line.
    Raises ConfigError for anything else (a fraction such as 1.5, a boolean, an empty name).
    """
    if isinstance(value, str):
        if not value.strip():
            raise ConfigError(f"{option} is empty; give a column index (0, -1, ...) or a header name")
        return value
    if not isinstance(value, bool):
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise ConfigError(
        f"{option}={_shown(value)} is not a column; give an integer index (0 is the first column, "
        "-1 the last) or the column's name in the header line"
    )


def as_id_column(value: Any, option: str = "csv: id_column") -> int | str | None:
    """Return the CSV ``id_column`` option: None (keys are row numbers), an index or a header name.

    Takes the value and the option's name for errors; accepts what :func:`as_label_column`
    accepts, plus None. Raises ConfigError otherwise.
    """
    return None if value is None else as_label_column(value, option)


def as_n_features(value: Any, option: str = "libsvm: n_features") -> int | None:
    """Return the LIBSVM ``n_features`` option: None (from the file) or 1 .. ``MAX_FEATURES``.

    Takes the value and the option's name for errors. Raises ConfigError for a non-integer,
    a count below 1, or one above ``MAX_FEATURES`` (stating the size of one dense row).
    """
    if value is None:
        return None
    try:
        if isinstance(value, bool):
            raise TypeError
        count = operator.index(value)
    except TypeError:
        raise ConfigError(
            f"{option}={_shown(value)} is not a whole number of features; give an integer such as 54, "
            "or leave it out to use the largest index in the file"
        ) from None
    if count < 1:
        raise ConfigError(f"{option}={count} must be at least 1 (or left out to use the largest index)")
    if count > MAX_FEATURES:
        raise ConfigError(
            f"{option}={count:,} is above the limit of {MAX_FEATURES:,} features: the features are "
            f"stored dense as float32, so every row would take {format_bytes(4 * count)} "
            f"(n_features x rows x 4 bytes in all); give the real feature count"
        )
    return count


def format_bytes(n: int) -> str:
    """Return a byte count in binary units, e.g. ``"7.5 GiB"``."""
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:,.0f} {unit}" if unit == "bytes" else f"{size:,.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def physical_memory() -> int | None:
    """Return this machine's physical memory in bytes, or None where it cannot be read."""
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    return pages * page_size if pages > 0 and page_size > 0 else None


def check_dense_size(source: str, rows: int, width: int, in_memory: bool) -> None:
    """Refuse, before allocating, dense float32 features that are too wide or too large.

    Takes the file name(s) for errors, the number of rows (all files together), the number of
    feature columns, and whether the array is built in memory (then it must also fit in the
    machine's physical memory; a streamed load writes it to the cache on disk). Raises
    DataCorruptError naming the estimated size (``width x rows x 4`` bytes) and the limit.
    """
    total = 4 * rows * width
    size = f"{rows:,} rows x {width:,} features x 4 bytes = {format_bytes(total)}"
    if width > MAX_FEATURES:
        raise DataCorruptError(
            f"{source}: {width:,} feature columns is above the limit of {MAX_FEATURES:,}: the "
            f"features are stored dense as float32 ({size}); check the file for a stray large "
            "feature index, or renumber the features that are used"
        )
    memory = physical_memory() if in_memory else None
    if memory is not None and total > memory:
        raise DataCorruptError(
            f"{source}: the dense float32 features would take {size}, more than this machine's "
            f"{format_bytes(memory)} of memory; use fewer rows or features"
        )
