"""Unlearning methods behind one interface: each method module (and `mini/`) registers one.

Use :func:`get_method` to build one by name, :func:`available_methods` to list them.
Other packages add methods through the entry-point group ``miniunlearn.methods``: each
entry names an :class:`UnlearningMethod` subclass (or a module that registers one on
import), e.g. in the plugin's ``pyproject.toml``::

    [project.entry-points."miniunlearn.methods"]
    mymethod = "my_package.my_module:MyMethod"
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
import signal
import threading
import warnings
from collections.abc import Iterator
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from .base import (
    MethodError,
    UnlearningMethod,
    UnlearnRecord,
    UnlearnRequest,
    UnlearnResult,
    get_method,
    method_class,
    register,
    registry,
)
from .options import describe_options, format_method_help, option

PLUGIN_GROUP = "miniunlearn.methods"

for _module in pkgutil.iter_modules(__path__):  # each method module registers itself on import
    importlib.import_module(f"{__name__}.{_module.name}")


@contextlib.contextmanager
def _noting_ctrl_c() -> Iterator[list[int]]:
    """Note in the yielded list each Ctrl-C (SIGINT) the user presses inside the block; the
    interrupt still goes to the handler in place (KeyboardInterrupt by default). Outside the
    main thread no signal arrives, so nothing is noted."""
    pressed: list[int] = []
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is None:
        yield pressed
        return

    def note(signum: int, frame: Any) -> None:
        pressed.append(signum)
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, note)
    try:
        yield pressed
    finally:
        signal.signal(signal.SIGINT, previous)


def _load_plugin(entry: EntryPoint) -> None:
    """Import one plugin and register the method class it names (a module registers its own)."""
    target = entry.load()
    if isinstance(target, type):
        register(target)


def _load_plugins() -> None:
    """Register the methods of installed plugins; a plugin that fails is skipped with a warning.

    Whatever a plugin raises while it loads (SystemExit and KeyboardInterrupt included) skips
    that plugin only; a Ctrl-C the user presses meanwhile still interrupts the program.
    """
    for entry in entry_points(group=PLUGIN_GROUP):
        with _noting_ctrl_c() as pressed:
            try:
                _load_plugin(entry)
            except BaseException as exc:  # a broken or clashing plugin must not break the library
                if pressed:
                    raise
                reason = type(exc).__name__ + (f": {exc}" if str(exc) else "")
                warnings.warn(
                    f"unlearning-method plugin {entry.name!r} ({entry.value}) was not loaded: {reason}",
                    stacklevel=2,
                )


_load_plugins()


def available_methods() -> list[str]:
    """Return the names of all registered methods, sorted."""
    return sorted(registry())


__all__ = [
    "MethodError",
    "UnlearnRecord",
    "UnlearnRequest",
    "UnlearnResult",
    "UnlearningMethod",
    "available_methods",
    "describe_options",
    "format_method_help",
    "get_method",
    "method_class",
    "option",
    "registry",
]
