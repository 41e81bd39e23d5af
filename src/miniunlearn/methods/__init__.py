"""Unlearning methods behind one interface; every module here registers one method.

Use :func:`get_method` to build one by name, :func:`available_methods` to list them.
Other packages add methods through the entry-point group ``miniunlearn.methods``: each
entry names an :class:`UnlearningMethod` subclass (or a module that registers one on
import), e.g. in the plugin's ``pyproject.toml``::

    [project.entry-points."miniunlearn.methods"]
    mymethod = "my_package.my_module:MyMethod"
"""

from __future__ import annotations

import importlib
import pkgutil
import warnings
from importlib.metadata import entry_points

from .base import (
    UnlearningMethod,
    UnlearnRecord,
    UnlearnRequest,
    UnlearnResult,
    get_method,
    register,
    registry,
)

PLUGIN_GROUP = "miniunlearn.methods"

for _module in pkgutil.iter_modules(__path__):  # each method module registers itself on import
    importlib.import_module(f"{__name__}.{_module.name}")


def _load_plugins() -> None:
    """Register the methods of installed plugins; a plugin that fails is skipped with a warning."""
    for entry in entry_points(group=PLUGIN_GROUP):
        try:
            target = entry.load()
            if isinstance(target, type) and issubclass(target, UnlearningMethod):
                register(target)
        except Exception as exc:  # a broken or clashing plugin must not break the library
            warnings.warn(
                f"unlearning-method plugin {entry.name!r} ({entry.value}) was not loaded: {exc}", stacklevel=2
            )


_load_plugins()


def available_methods() -> list[str]:
    """Return the names of all registered methods, sorted."""
    return sorted(registry())


__all__ = [
    "UnlearnRecord",
    "UnlearnRequest",
    "UnlearnResult",
    "UnlearningMethod",
    "available_methods",
    "get_method",
    "registry",
]
