"""Label encoding, fixed train/test splits and standardisation shared by the loaders."""

from __future__ import annotations

import numpy as np

from miniunlearn.errors import DataCorruptError

SPLIT_SEED = 0
TEST_FRACTION = 0.2


def encode_labels(y_train: np.ndarray, y_test: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Map raw class labels of both splits to ``0 .. K-1`` in sorted order.

    Takes the raw train and test labels (numbers, or strings; strings that all parse as numbers
    are treated as numbers, so ``"10"`` sorts after ``"9"``) and a name for error messages.
    Returns ``(y_train, y_test, K)`` with int64 labels; the classes are the sorted union of both
    splits, so covtype's 1..7 become 0..6 and HIGGS's 0/1 or -1/+1 become 0/1. Raises
    DataCorruptError on non-integer numeric labels (regression targets) or fewer than 2 classes.
    """
    both = np.concatenate([np.asarray(y_train).ravel(), np.asarray(y_test).ravel()])
    if both.dtype.kind in "US":
        stripped = np.char.strip(both.astype(str))
        try:
            both = stripped.astype(np.float64)
        except ValueError:
            both = stripped
    integral = both.dtype.kind != "f" or (np.all(np.isfinite(both)) and np.all(both == np.round(both)))
    if not integral:
        raise DataCorruptError(
            f"{source}: labels must be integer class labels; found non-integer values "
            f"(regression targets are not supported)"
        )
    classes, codes = np.unique(both, return_inverse=True)
    if classes.size < 2:
        raise DataCorruptError(f"{source}: needs at least 2 classes, found {classes.size}")
    codes = codes.astype(np.int64).ravel()
    n_train = np.asarray(y_train).size
    return codes[:n_train], codes[n_train:], int(classes.size)


def fixed_split(
    y: np.ndarray, seed: int = SPLIT_SEED, test_fraction: float = TEST_FRACTION
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(train_idx, test_idx)`` of a fixed seeded split, each sorted ascending.

    Takes integer labels ``y``. The split is stratified by class (scikit-learn's
    ``train_test_split(..., stratify=y, random_state=seed)``) when every class has at least two
    samples and the test side can hold one of each; otherwise a plain seeded shuffle split.
    Sorting keeps the rows of each side in their source order.
    """
    from sklearn.model_selection import train_test_split

    n = y.shape[0]
    if n < 2:
        raise DataCorruptError(f"cannot split {n} sample(s) into train and test")
    counts = np.bincount(y)
    counts = counts[counts > 0]
    n_test = int(np.ceil(test_fraction * n))
    stratify = y if counts.min() >= 2 and counts.size <= min(n_test, n - n_test) else None
    train_idx, test_idx = train_test_split(
        np.arange(n), test_size=test_fraction, stratify=stratify, random_state=seed
    )
    return np.sort(train_idx).astype(np.int64), np.sort(test_idx).astype(np.int64)


def standardize(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Standardise both splits with the TRAIN mean and std (std 0 treated as 1).

    Takes two float arrays ``(n, d)``; returns float32 arrays of the same shapes.
    """
    mean = x_train.mean(axis=0, dtype=np.float64)
    std = x_train.std(axis=0, dtype=np.float64)
    std[std == 0] = 1.0
    return (
        ((x_train - mean) / std).astype(np.float32),
        ((x_test - mean) / std).astype(np.float32),
    )


def check_finite(x: np.ndarray, source: str) -> None:
    """Raise DataCorruptError naming ``source`` if ``x`` holds NaN or infinite values."""
    if not np.all(np.isfinite(x)):
        bad = int(np.argwhere(~np.isfinite(x))[0][0])
        raise DataCorruptError(f"{source}: non-finite feature value in data row {bad + 1}")
