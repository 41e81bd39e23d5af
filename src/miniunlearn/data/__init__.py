"""Datasets for Mini-Unlearning: loading, fetching and caching.

Every dataset is a :class:`Dataset` with flat float32 features, int64 labels ``0..K-1`` and a
fixed train/test split. A training sample's id is its row index in the canonical training
split (``0 .. n_train - 1``).

* ``mnist``, ``fashion-mnist``, ``adult`` (``FETCHABLE``): run ``miniunlearn fetch NAME`` once;
  the parsed arrays are cached under :func:`cache_dir` (``$MINIUNLEARN_CACHE`` or ``./.cache``).
* ``digits``, ``breast-cancer``: bundled with scikit-learn.
* ``libsvm``, ``csv``: your own files, ``load_dataset("libsvm", path="train.svm")``.
"""

from __future__ import annotations

from miniunlearn.data.base import Dataset
from miniunlearn.data.cache import cache_dir
from miniunlearn.data.fetch import fetch_dataset
from miniunlearn.data.names import DATASET_NAMES, FETCHABLE
from miniunlearn.data.registry import load_dataset

__all__ = ["DATASET_NAMES", "FETCHABLE", "Dataset", "cache_dir", "fetch_dataset", "load_dataset"]
