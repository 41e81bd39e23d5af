"""Names of the registered datasets."""

from __future__ import annotations

from miniunlearn.errors import ConfigError

#: Datasets downloaded once by ``miniunlearn fetch NAME`` into the cache.
FETCHABLE: tuple[str, ...] = ("mnist", "fashion-mnist", "adult")
#: Datasets bundled with scikit-learn (no fetch needed).
BUNDLED: tuple[str, ...] = ("digits", "breast-cancer")
#: Synthetic sets generated on first load (options ``seed``, ``rows``; no download).
SYNTHETIC: tuple[str, ...] = ("synthetic-higgs", "synthetic-covtype")
#: Loaders of user-supplied files (need ``path=``).
USER_FILES: tuple[str, ...] = ("libsvm", "csv")
#: Every name :func:`miniunlearn.data.load_dataset` accepts.
DATASET_NAMES: tuple[str, ...] = FETCHABLE + BUNDLED + SYNTHETIC + USER_FILES


def canonical_name(name: str) -> str:
    """Return the registry spelling of ``name`` (case-insensitive, ``_`` read as ``-``).

    Raises ConfigError listing the valid names if ``name`` is not registered.
    """
    key = str(name).strip().lower().replace("_", "-")
    if key not in DATASET_NAMES:
        raise ConfigError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}")
    return key
