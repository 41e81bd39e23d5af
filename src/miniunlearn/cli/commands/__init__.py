"""The ``cmd_*`` functions behind the subcommands: each takes the parsed arguments, calls the
library and prints; it returns the exit code.

Each module imports only the standard library at import time; the library is imported inside
the functions, under ``main``'s error handling.
"""

from __future__ import annotations

from .audit import cmd_audit
from .bench import cmd_bench
from .evaluate import cmd_evaluate
from .forget import cmd_forget
from .ids import cmd_ids
from .ledger import cmd_ledger
from .methods import cmd_methods
from .queue import cmd_serve, cmd_submit
from .train import cmd_fetch, cmd_train

__all__ = [
    "cmd_audit",
    "cmd_bench",
    "cmd_evaluate",
    "cmd_fetch",
    "cmd_forget",
    "cmd_serve",
    "cmd_submit",
    "cmd_ids",
    "cmd_ledger",
    "cmd_methods",
    "cmd_train",
]
