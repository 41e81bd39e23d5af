"""Encode class labels that arrive a block at a time, exactly as :func:`encode_labels` would.

Each block's raw labels are replaced by small integer codes into a vocabulary of the distinct
raw values seen so far; at the end the vocabulary itself goes through
:func:`miniunlearn.data.splits.encode_labels`, which gives the final class of every code. The
classes are therefore the same as encoding all labels at once (sorted order, strings that
all parse as numbers compared as numbers), but only the distinct values are ever held twice.
"""

from __future__ import annotations

import numpy as np

from miniunlearn.data.splits import encode_labels
from miniunlearn.errors import DataCorruptError

MAX_DISTINCT = 100_000  # more distinct labels than this is not a classification file


class LabelVocab:
    """Streamed label encoder: :meth:`add` each block, then :meth:`classes` once.

    ``source`` names the file(s) in error messages.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self._ids: dict[object, int] = {}
        self._values: list[object] = []

    def add(self, raw: np.ndarray) -> np.ndarray:
        """Return the int64 vocabulary codes of one block of raw labels (numbers or strings).

        Raises DataCorruptError once more than ``MAX_DISTINCT`` distinct labels were seen.
        """
        raw = np.asarray(raw).ravel()
        if raw.size == 0:
            return np.zeros(0, dtype=np.int64)
        uniq, inverse = np.unique(raw, return_inverse=True)
        ids = np.empty(uniq.size, dtype=np.int64)
        for i, value in enumerate(uniq.tolist()):  # distinct values only, not rows
            code = self._ids.get(value)
            if code is None:
                code = len(self._values)
                self._ids[value] = code
                self._values.append(value)
            ids[i] = code
        if len(self._values) > MAX_DISTINCT:
            raise DataCorruptError(
                f"{self.source}: more than {MAX_DISTINCT} distinct labels; the label column must "
                f"hold class labels (is label_column set to the right column?)"
            )
        return ids[inverse.ravel()]

    def classes(self) -> tuple[np.ndarray, int]:
        """Return ``(class of each code as int64, number of classes K)``.

        Raises DataCorruptError as :func:`encode_labels` does (non-integer numeric labels,
        fewer than 2 classes).
        """
        values = np.array(self._values)
        codes, _, k = encode_labels(values, values[:0], self.source)
        return codes, k
