"""``miniunlearn methods``: list the unlearning methods and their options."""

from __future__ import annotations

import argparse


def cmd_methods(args: argparse.Namespace) -> int:
    """List unlearning methods, each with one line per option (type, default, range, help)."""
    from ...methods import format_method_help, registry

    for _, cls in sorted(registry().items()):
        print(format_method_help(cls))
    return 0
