"""Progress bars: one style for every long phase, readable in a terminal and in a log.

In a terminal a bar redraws twice a second; when standard error is a file or a pipe (a
CI log, ``make demo > log 2>&1``) each redraw is a new line, so there it prints at most
one line a minute per bar instead of hundreds.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

TERMINAL_INTERVAL_S = 0.5
LOG_INTERVAL_S = 60.0


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | None = None,
    desc: str,
    enabled: bool = True,
    leave: bool = False,
    unit: str = "it",
) -> Any:
    """Return a tqdm bar over ``iterable`` (or of ``total`` steps) labelled ``desc``;
    ``enabled=False`` (``-q``) shows nothing. Redraws at most once a minute when standard
    error is not a terminal."""
    from tqdm.auto import tqdm

    interactive = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        disable=not enabled,
        leave=leave,
        unit=unit,
        mininterval=TERMINAL_INTERVAL_S if interactive else LOG_INTERVAL_S,
        maxinterval=max(LOG_INTERVAL_S, 10.0),
    )
