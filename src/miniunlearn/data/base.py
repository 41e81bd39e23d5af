"""The :class:`Dataset` container shared by every loader.

Sample ids
----------
A training sample's id is its row index in the canonical training split, ``0 .. n_train - 1``.
Every loader returns the training rows in a fixed, documented order (the order of the source
file, or of a fixed seeded split), so an id means the same sample across runs and machines.
:meth:`Dataset.subset_train` re-numbers ids ``0 .. n - 1`` within the subset.

Keys
----
A sample id is not the row of the user's file. :attr:`Dataset.keys` (a
:class:`~miniunlearn.data.keys.SampleKeys`) says what the user calls each training sample and
which keys fell in the test split; see :mod:`miniunlearn.data.keys`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from miniunlearn.data.keys import SampleKeys
from miniunlearn.errors import ConfigError


@dataclass(frozen=True, eq=False)
class Dataset:
    """A classification dataset with a fixed train/test split and flat float32 features.

    Attributes:
        name: registry name of the dataset (``"mnist"``, ``"adult"``, ...).
        x_train: float32 array ``(n_train, n_features)``; row ``i`` is the sample with id ``i``.
        y_train: int64 array ``(n_train,)`` of class labels in ``0 .. n_classes - 1``.
        x_test: float32 array ``(n_test, n_features)``.
        y_test: int64 array ``(n_test,)``.
        n_classes: number of classes.
        image_shape: ``(C, H, W)`` for image sets (so a CNN can reshape the flat rows), else None.
        keys: the users' keys of the rows (the user-file loaders set them; None: none known, and
            a run then records each sample's id as its key).

    Equality and hashing are by identity (the fields are arrays).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    image_shape: tuple[int, int, int] | None = None
    keys: SampleKeys | None = None

    def __post_init__(self) -> None:
        """Check dtypes, shapes and label ranges; raise ValueError on any inconsistency."""
        for split in ("train", "test"):
            x = getattr(self, f"x_{split}")
            y = getattr(self, f"y_{split}")
            if x.dtype != np.float32 or x.ndim != 2:
                raise ValueError(f"x_{split} must be a 2-D float32 array, got {x.dtype} {x.shape}")
            if y.dtype != np.int64 or y.shape != (x.shape[0],):
                raise ValueError(f"y_{split} must be int64 of shape ({x.shape[0]},), got {y.dtype} {y.shape}")
            if y.size and (y.min() < 0 or y.max() >= self.n_classes):
                raise ValueError(f"y_{split} has labels outside 0..{self.n_classes - 1}")
        if self.x_test.shape[1] != self.x_train.shape[1]:
            raise ValueError(
                f"x_train has {self.x_train.shape[1]} features but x_test has {self.x_test.shape[1]}"
            )
        if self.image_shape is not None:
            shape = tuple(int(d) for d in self.image_shape)
            if len(shape) != 3 or int(np.prod(shape)) != self.n_features:
                raise ValueError(f"image_shape {shape} does not match {self.n_features} features")
            object.__setattr__(self, "image_shape", shape)
        n_keys = None if self.keys is None else np.asarray(self.keys.train).shape[0]
        if n_keys is not None and n_keys != self.n_train:
            raise ValueError(f"keys name {n_keys} training rows, not {self.n_train}")

    @property
    def n_train(self) -> int:
        """Number of training samples (ids are ``0 .. n_train - 1``)."""
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        """Number of test samples."""
        return int(self.x_test.shape[0])

    @property
    def n_features(self) -> int:
        """Number of flat features per sample."""
        return int(self.x_train.shape[1])

    def subset_indices(self, n: int, seed: int) -> np.ndarray:
        """Return the sorted original training ids that :meth:`subset_train` keeps.

        Takes ``n`` (1 .. n_train) and ``seed``; returns an int64 array of ``n`` ids.
        The draw is stratified by class where every class has at least two samples and
        ``n`` leaves room for each class, and a plain seeded random draw otherwise.
        """
        if not isinstance(n, int | np.integer) or not 1 <= n <= self.n_train:
            raise ConfigError(f"subset size must be an integer in 1..{self.n_train}, got {n!r}")
        if n == self.n_train:
            return np.arange(self.n_train, dtype=np.int64)
        rng = np.random.default_rng(seed)
        counts = np.bincount(self.y_train, minlength=self.n_classes)
        present = counts[counts > 0]
        n_present = present.size
        if n >= n_present and self.n_train - n >= n_present and present.min() >= 2:
            from sklearn.model_selection import train_test_split

            ids, _ = train_test_split(
                np.arange(self.n_train),
                train_size=int(n),
                stratify=self.y_train,
                random_state=int(rng.integers(2**31 - 1)),
            )
        else:
            ids = rng.choice(self.n_train, size=int(n), replace=False)
        return np.sort(np.asarray(ids, dtype=np.int64))

    def subset_train(self, n: int, seed: int) -> Dataset:
        """Return a copy whose training split is a seeded random subset of ``n`` samples.

        Takes ``n`` (1 .. n_train) and ``seed``; returns a new :class:`Dataset` with the same
        name, test split and ``n_classes``. The kept rows stay in their original relative order
        and are RE-NUMBERED: the subset's sample ids are ``0 .. n - 1``, not the original ids
        (use :meth:`subset_indices` to map them back). The same ``(n, seed)`` always gives the
        same subset. Meant for quick runs.
        """
        return self.select_train(self.subset_indices(n, seed))

    def select_train(self, ids: np.ndarray) -> Dataset:
        """Return a copy whose training split holds only the rows ``ids`` (in the given order).

        The selected rows are RE-NUMBERED ``0 .. len(ids) - 1``. Raises ConfigError for ids
        outside the training split or an empty selection.
        """
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size == 0 or ids.min() < 0 or ids.max() >= self.n_train:
            raise ConfigError(f"a training subset needs ids in 0..{self.n_train - 1}, got {ids.size} ids")
        keys = self.keys.select(ids) if self.keys is not None else None
        return replace(self, x_train=self.x_train[ids], y_train=self.y_train[ids], keys=keys)
