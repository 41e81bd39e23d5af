"""``load_dataset``: one entry point for every registered dataset."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from miniunlearn.data.base import Dataset
from miniunlearn.data.cache import CACHE_ENV, cache_dir, load_npz, npz_path
from miniunlearn.data.fetch import SOURCES
from miniunlearn.data.libsvm import load_libsvm
from miniunlearn.data.names import canonical_name
from miniunlearn.data.sklearn_sets import load_breast_cancer_dataset, load_digits_dataset
from miniunlearn.data.synthetic import RECIPES, load_synthetic, load_synthetic_higgs
from miniunlearn.data.tabular import load_csv
from miniunlearn.errors import ConfigError, DataCorruptError, DataMissingError

_BUNDLED_LOADERS: dict[str, Callable[[], Dataset]] = {
    "digits": load_digits_dataset,
    "breast-cancer": load_breast_cancer_dataset,
}
_FILE_LOADERS: dict[str, Callable[..., Dataset]] = {"libsvm": load_libsvm, "csv": load_csv}


def _missing_message(name: str, path: os.PathLike[str], cache: object) -> str:
    msg = (
        f"dataset {name!r} is not in the cache ({path} does not exist). "
        f"Fetch it once with: miniunlearn fetch {name}"
    )
    if cache is not None:
        msg += f" (with {CACHE_ENV}={cache_dir(cache)} so that it lands in this cache)"
    return msg


def load_cached(name: str, cache: str | os.PathLike[str] | None = None) -> Dataset:
    """Load a fetched dataset from ``<cache>/<name>.npz``.

    Takes a name from ``FETCHABLE`` (canonical spelling) and an optional cache directory.
    Returns the Dataset (image pixels scaled to float32 in [0, 1]). Raises DataMissingError
    naming ``miniunlearn fetch NAME`` if the npz does not exist, and DataCorruptError naming
    the file (and saying to delete it and re-fetch) if it is unreadable or stale.
    """
    src = SOURCES[name]
    path = npz_path(name, cache)
    if not path.is_file():
        raise DataMissingError(_missing_message(name, path, cache))
    arrays, meta = load_npz(path, fetch_name=name)
    fix = f"delete it and re-fetch with: miniunlearn fetch {name}"
    if meta.get("name") != name or meta.get("source_sha256") != src.sha256:
        raise DataCorruptError(f"cached data file {path} was not built from the pinned {name} "
                               f"download; {fix}")  # fmt: skip
    x = {}
    for split in ("train", "test"):
        raw = arrays[f"x_{split}"]
        if src.pixels:
            scaled = raw.astype(np.float32)
            scaled *= np.float32(1.0 / 255.0)
            x[split] = scaled
        else:
            x[split] = raw
    try:
        return Dataset(
            name,
            x["train"],
            arrays["y_train"],
            x["test"],
            arrays["y_test"],
            n_classes=src.n_classes,
            image_shape=src.image_shape,
        )
    except ValueError as exc:
        raise DataCorruptError(f"cached data file {path} is inconsistent ({exc}); {fix}") from exc


def _check_opts(name: str, loader: Callable[..., Any], opts: dict[str, Any]) -> None:
    allowed = [p for p in inspect.signature(loader).parameters if p != "path"]
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        accepted = ", ".join(allowed) or "none"
        raise ConfigError(f"dataset {name!r} does not take option(s) {unknown}; accepted: {accepted}")


def load_dataset(
    name: str,
    *,
    cache: str | os.PathLike[str] | None = None,
    path: str | os.PathLike[str] | None = None,
    **opts: Any,
) -> Dataset:
    """Load a registered dataset by name.

    Takes a name from ``DATASET_NAMES`` (case-insensitive; ``_`` may replace ``-``), an
    optional cache directory for the fetched and synthetic sets, ``path`` (the data file; only for
    ``libsvm`` and ``csv``) and loader options:

    * ``libsvm``: ``test_path``, ``n_features``, ``standardize``, ``key_file`` (see
      :func:`load_libsvm`);
    * ``csv``: ``test_path``, ``label_column``, ``id_column``, ``header``, ``delimiter``,
      ``standardize`` (see :func:`load_csv`);
    * ``synthetic-higgs``, ``synthetic-covtype``: ``seed``, ``rows``, ``standardize`` (see
      :mod:`miniunlearn.data.synthetic`; generated into the cache on first load);
    * the others take none.

    Returns a :class:`Dataset` whose training ids are the row indices of its training split;
    the user-file loaders also give the rows' keys (:mod:`miniunlearn.data.keys`).
    Raises ConfigError (unknown name, listing the valid ones; bad option), DataMissingError
    (a fetchable set not cached: the message gives ``miniunlearn fetch NAME``; a user file not
    found) or DataCorruptError (a corrupt cache file or unparsable user file).
    """
    key = canonical_name(name)
    if key in _FILE_LOADERS:
        loader = _FILE_LOADERS[key]
        _check_opts(key, loader, opts)
        return loader(path, **opts)
    if path is not None:
        raise ConfigError(f"--data-path is only for the libsvm and csv datasets, not {key!r}")
    if key in RECIPES:
        _check_opts(key, load_synthetic_higgs, opts)  # both synthetic loaders take seed and rows
        return load_synthetic(key, cache=cache, **opts)
    if opts:
        raise ConfigError(f"dataset {key!r} takes no options, got {sorted(opts)}")
    if key in _BUNDLED_LOADERS:
        return _BUNDLED_LOADERS[key]()
    return load_cached(key, cache)
