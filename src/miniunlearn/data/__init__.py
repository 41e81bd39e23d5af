"""Datasets for Mini-Unlearning: loading, fetching and caching.

Every dataset is a :class:`Dataset` with flat float32 features, int64 labels ``0..K-1`` and a
fixed train/test split. A training sample's id is its row index in the canonical training
split (``0 .. n_train - 1``).

* ``mnist``, ``fashion-mnist``, ``adult`` (``FETCHABLE``): run ``miniunlearn fetch NAME`` once;
  the parsed arrays are cached under :func:`cache_dir` (``$MINIUNLEARN_CACHE`` or ``./.cache``).
* ``digits``, ``breast-cancer``: bundled with scikit-learn.
* ``synthetic-higgs``, ``synthetic-covtype``: HIGGS- and Covtype-shaped sets generated on
  first load (options ``seed``, ``rows``) and cached as memory-mapped ``.npy`` files.
* ``libsvm``, ``csv``: your own files, ``load_dataset("libsvm", path="train.svm")``; large or
  compressed (``.gz``, ``.bz2``, ``.xz``) files are parsed in blocks into the cache once and
  memory-mapped afterwards.
"""

from __future__ import annotations

from miniunlearn.data.base import Dataset
from miniunlearn.data.cache import cache_dir
from miniunlearn.data.fetch import fetch_dataset
from miniunlearn.data.names import DATASET_NAMES, FETCHABLE
from miniunlearn.data.registry import load_dataset

__all__ = ["DATASET_NAMES", "FETCHABLE", "Dataset", "cache_dir", "fetch_dataset", "load_dataset"]
