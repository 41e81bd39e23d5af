"""Unlearning methods behind one interface; every module here registers one method.

Use :func:`get_method` to build one by name, :func:`available_methods` to list them.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import UnlearningMethod, UnlearnRecord, UnlearnRequest, UnlearnResult, get_method, registry

for _module in pkgutil.iter_modules(__path__):  # each method module registers itself on import
    importlib.import_module(f"{__name__}.{_module.name}")


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
