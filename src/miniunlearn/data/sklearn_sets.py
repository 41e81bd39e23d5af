"""The small datasets bundled with scikit-learn: ``digits`` and ``breast-cancer``.

Both use a fixed stratified 80/20 split (``random_state=0``); the rows of each side stay in
scikit-learn's order, so training ids are stable.
"""

from __future__ import annotations

import numpy as np

from miniunlearn.data.base import Dataset
from miniunlearn.data.splits import fixed_split, standardize


def load_digits_dataset() -> Dataset:
    """Return ``digits``: 1,437 train / 360 test 8x8 images, pixels scaled by 1/16, 10 classes.

    Features are flat (64,), float32 in [0, 1]; ``image_shape`` is ``(1, 8, 8)``.
    """
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    y = y.astype(np.int64)
    tr, te = fixed_split(y)
    return Dataset("digits", x[tr], y[tr], x[te], y[te], n_classes=10, image_shape=(1, 8, 8))


def load_breast_cancer_dataset() -> Dataset:
    """Return ``breast-cancer``: 455 train / 114 test rows of 30 features, 2 classes.

    Features are standardised with the training split's mean and std. Labels are
    scikit-learn's (0 = malignant, 1 = benign).
    """
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    y = y.astype(np.int64)
    tr, te = fixed_split(y)
    x_train, x_test = standardize(x[tr], x[te])
    return Dataset("breast-cancer", x_train, y[tr], x_test, y[te], n_classes=2)
