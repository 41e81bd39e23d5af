"""The ``miniunlearn`` command line: fetch, train, forget, ids, evaluate, bench, ledger, audit, methods.

The package only parses, calls the library and prints: ``parser`` builds the argument parser,
``commands`` holds one ``cmd_*`` function per subcommand, and :func:`main` runs one with the
error handling below.

Only the standard library is imported before main() runs: the console script imports this
package outside main's error handling, so a Ctrl-C there would print a traceback. Everything
else (numpy, torch, the library) is imported inside the commands, under main.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from ..errors import MiniUnlearnError
from .commands import (
    cmd_audit,
    cmd_bench,
    cmd_evaluate,
    cmd_fetch,
    cmd_forget,
    cmd_ids,
    cmd_ledger,
    cmd_methods,
    cmd_train,
)
from .common import DEBUG_ENV, EXIT_INTERNAL_ERROR, EXIT_INTERRUPTED, EXIT_USER_ERROR
from .parser import build_parser, check_seed

__all__ = [
    "DEBUG_ENV",
    "EXIT_INTERNAL_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_USER_ERROR",
    "build_parser",
    "cmd_audit",
    "cmd_bench",
    "cmd_evaluate",
    "cmd_fetch",
    "cmd_forget",
    "cmd_ids",
    "cmd_ledger",
    "cmd_methods",
    "cmd_train",
    "main",
]


def _run(argv: Sequence[str] | None) -> int:
    """Build the parser (its imports included), parse ``argv`` and run the command."""
    # build_parser is looked up here, in this package, so that it can be replaced in tests
    args = build_parser().parse_args(argv)
    check_seed(args)
    from ..device import device_scope, resolve_device

    with device_scope(resolve_device(getattr(args, "device", "cpu"))):
        return int(args.func(args) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse ``argv``, run the command, print errors plainly; return the exit code.

    Everything but this package's standard-library imports runs inside the error handling, the
    parser's imports included: a Ctrl-C at any point from there on exits 130 without a traceback.
    """
    try:
        return _run(argv)
    except MiniUnlearnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        for note in getattr(exc, "__notes__", ()):
            print(f"  {note}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:  # permissions, a full disk, a path that is a directory ...
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        for note in getattr(exc, "__notes__", ()):
            print(f"  {note}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted: nothing was left half-written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: say so in one line; the traceback only on request
        if os.environ.get(DEBUG_ENV):
            raise
        print(
            f"internal error: {type(exc).__name__}: {exc}. This is a bug in miniunlearn; nothing was left "
            f"half-written. Set {DEBUG_ENV}=1 to see the traceback, and please report it",
            file=sys.stderr,
        )
        return EXIT_INTERNAL_ERROR
