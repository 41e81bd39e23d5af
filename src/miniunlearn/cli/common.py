"""Exit codes, ``key=value`` option parsing and JSON output shared by the ``miniunlearn`` commands.

Only the standard library is imported here: the entry point imports this module before its
error handling starts (see ``miniunlearn.cli``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..errors import MiniUnlearnError

EXIT_INTERNAL_ERROR = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
DEBUG_ENV = "MINIUNLEARN_DEBUG"


def parse_value(text: str) -> Any:
    """Turn an option value from the command line into int, float, bool, None or str."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_options(pairs: Sequence[str] | None) -> dict[str, Any]:
    """Parse ``key=value`` method or dataset options (dashes in keys become underscores)."""
    options = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise MiniUnlearnError(f"option {pair!r} must look like key=value (e.g. max_steps=30)")
        options[key.replace("-", "_")] = parse_value(value)
    return options


def print_json(obj: Any) -> None:
    """Print ``obj`` as indented, key-sorted JSON (arrays through ``tolist``, anything else as str)."""
    print(
        json.dumps(
            obj, indent=2, sort_keys=True, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)
        )
    )
