"""Users' own keys for the rows of a dataset, and the run file that maps them to sample ids.

A sample id is a position in the canonical training split (``0 .. n_train - 1``): after a
shuffled, stratified 80/20 split it is not the row of the user's file. A *key* is what the
user calls the row:

* ``csv`` with ``id_column=NAME`` (or an index): the text of that column (unique; not a feature);
* ``libsvm`` with ``key_file=PATH``: line ``i`` of that file is the key of data row ``i``;
* ``csv``/``libsvm`` otherwise: the 0-based data row number in the file (header and blank
  lines not counted), so ``19999`` is the 20,000th data row;
* the built-in and synthetic sets: the sample's id in the full canonical training split (for
  ``mnist``/``fashion-mnist`` its row in the source training file); it differs from the sample
  id only in runs on a subset (``n_train``, ``subset_ids``).

:class:`SampleKeys` holds the key of every training sample id, the keys of the rows that fell
in the test split, and the keys of training rows a subset left out; a run stores it in
``keys.npz`` (:func:`save_keys`, :func:`load_keys`) when it is trained.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

KEYS_FORMAT = "miniunlearn-keys/1"
_ROW_KEY = re.compile(r"0|[1-9][0-9]{0,17}")  # a row key is written as `miniunlearn ids` lists it
_GROUPS = ("train", "test", "unused")


def _empty_like(a: np.ndarray) -> np.ndarray:
    return np.zeros(0, dtype=a.dtype)


@dataclass(frozen=True)
class KeyMatch:
    """Where the keys of a request fall.

    Attributes:
        ids: sorted int64 sample ids of the keys that are training samples.
        test: keys of rows in the test split (never trained on).
        unused: keys of training-split rows the run's subset left out (never trained on).
        unknown: keys the dataset does not have.
    """

    ids: np.ndarray
    test: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


@dataclass(frozen=True, eq=False)
class SampleKeys:
    """The users' keys of a dataset's rows.

    Attributes:
        source: what the keys are, in words (e.g. ``column 'customer' of /data/c.csv``).
        train: key of each training sample id (index = sample id): int64 row numbers or strings.
        test: keys of the rows in the test split (same kind).
        unused: keys of training-split rows left out of a subset (same kind).
    """

    source: str
    train: np.ndarray
    test: np.ndarray
    unused: np.ndarray | None = None

    def __post_init__(self) -> None:
        """Check that the three groups are 1-D arrays of one kind (int64 or str)."""
        if self.unused is None:
            object.__setattr__(self, "unused", _empty_like(np.asarray(self.train)))
        kinds = {np.asarray(getattr(self, g)).dtype.kind for g in _GROUPS}
        if not (kinds <= {"i"} or kinds <= {"U"}) or any(np.ndim(getattr(self, g)) != 1 for g in _GROUPS):
            raise ValueError(f"keys must be 1-D arrays of int64 or of str, got kinds {sorted(kinds)}")

    @property
    def numeric(self) -> bool:
        """True when the keys are row numbers (int64), False when they are strings."""
        return np.asarray(self.train).dtype.kind == "i"

    def select(self, ids: np.ndarray) -> SampleKeys:
        """Keys of a training subset holding the rows ``ids`` (re-numbered ``0 .. len - 1``);
        the rows left out join :attr:`unused`."""
        ids = np.asarray(ids, dtype=np.int64)
        left_out = np.ones(self.train.shape[0], dtype=bool)
        left_out[ids] = False
        unused = np.concatenate([np.asarray(self.unused), np.asarray(self.train)[left_out]])
        return SampleKeys(self.source, np.asarray(self.train)[ids], np.asarray(self.test), unused)

    def relabel(self, row_keys: np.ndarray, source: str) -> SampleKeys:
        """Replace row-number keys by ``row_keys[row]`` (e.g. the lines of a key file)."""
        if not self.numeric:
            raise ValueError("only row-number keys can be relabelled")
        pick = [np.asarray(row_keys)[np.asarray(getattr(self, g))] for g in _GROUPS]
        return SampleKeys(source, *pick)

    def lookup(self, requested: Sequence[str]) -> KeyMatch:
        """Sort the keys of a request (as text, surrounding spaces ignored) into training
        sample ids, test-split keys, keys left out of a subset, and unknown keys (each list in
        request order, duplicates dropped)."""
        wanted = list(dict.fromkeys(k.strip() for k in requested))
        probe = np.asarray(wanted, dtype=str)
        valid = np.ones(len(wanted), dtype=bool)
        if self.numeric:
            valid = np.array([bool(_ROW_KEY.fullmatch(k)) for k in wanted], dtype=bool)
            probe = np.array([int(k) if ok else -1 for k, ok in zip(wanted, valid, strict=True)], np.int64)
        where = {g: _positions(np.asarray(getattr(self, g)), probe) for g in _GROUPS}
        in_train = valid & (where["train"] >= 0)
        in_test = valid & ~in_train & (where["test"] >= 0)
        in_unused = valid & ~in_train & ~in_test & (where["unused"] >= 0)
        unknown = ~(in_train | in_test | in_unused)
        return KeyMatch(
            np.unique(where["train"][in_train]).astype(np.int64),
            [k for k, hit in zip(wanted, in_test, strict=True) if hit],
            [k for k, hit in zip(wanted, in_unused, strict=True) if hit],
            [k for k, hit in zip(wanted, unknown, strict=True) if hit],
        )

    def rows(self) -> list[tuple[str, int | None, str]]:
        """Every key as ``(key, sample id or None, split)``: training keys in sample-id order,
        then the test split's (``test``), then those a subset left out (``unused``)."""
        out: list[tuple[str, int | None, str]] = [
            (str(k), i, "train") for i, k in enumerate(np.asarray(self.train).tolist())
        ]
        out += [(str(k), None, "test") for k in np.asarray(self.test).tolist()]
        out += [(str(k), None, "unused") for k in np.asarray(self.unused).tolist()]
        return out


def _positions(haystack: np.ndarray, probe: np.ndarray) -> np.ndarray:
    """Index in ``haystack`` of each value of ``probe`` (-1 where absent); keys are unique."""
    if haystack.size == 0 or probe.size == 0 or haystack.dtype.kind != probe.dtype.kind:
        return np.full(probe.shape[0], -1, dtype=np.int64)
    order = np.argsort(haystack, kind="stable")
    ordered = haystack[order]
    at = np.minimum(np.searchsorted(ordered, probe), ordered.size - 1)
    return np.where(ordered[at] == probe, order[at], -1).astype(np.int64)


def sample_id_keys(n_train: int, dataset: str) -> SampleKeys:
    """Keys of a built-in or synthetic dataset: each sample's id in the full training split."""
    return SampleKeys(
        f"sample id in the full canonical training split of {dataset}",
        np.arange(n_train, dtype=np.int64),
        np.zeros(0, dtype=np.int64),
    )


def row_source(path: str, has_test_file: bool) -> str:
    """The words for row-number keys of a user file (``path``: the train file)."""
    note = "; rows of the test file have no keys" if has_test_file else ""
    return f"0-based data row number in {path} (header and blank lines not counted){note}"


def duplicates(keys: np.ndarray) -> list[str]:
    """The keys that occur more than once (sorted; at most 5) and empty keys, as text."""
    values, counts = np.unique(np.asarray(keys), return_counts=True)
    bad = [str(v) for v in values[counts > 1][:5]]
    if np.asarray(keys).dtype.kind == "U" and "" in values:
        bad = ["", *[b for b in bad if b]]
    return bad[:5]


def _pack(a: np.ndarray) -> np.ndarray:
    """Row numbers as differences (they are mostly ascending: the file compresses to little)."""
    a = np.asarray(a)
    return np.diff(a.astype(np.int64), prepend=np.int64(0)) if a.dtype.kind == "i" else a.astype(str)


def save_keys(path: Path, keys: SampleKeys) -> None:
    """Write ``keys`` to the npz file ``path`` (compressed; read back by :func:`load_keys`).

    The same keys give the same bytes: the archive's entries carry a fixed time stamp.
    """
    arrays = {
        "format": np.array(KEYS_FORMAT),
        "source": np.array(keys.source),
        "numeric": np.array(keys.numeric),
        **{g: _pack(np.asarray(getattr(keys, g))) for g in _GROUPS},
    }
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, array, allow_pickle=False)
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            archive.writestr(entry, buffer.getvalue(), compress_type=zipfile.ZIP_DEFLATED)


def load_keys(path: Path) -> SampleKeys:
    """Read a keys file written by :func:`save_keys`; raise ValueError if it is not one."""
    with np.load(path, allow_pickle=False) as data:
        if str(data["format"]) != KEYS_FORMAT:
            raise ValueError(f"unknown format {str(data['format'])!r}")
        numeric = bool(data["numeric"])
        groups = [np.cumsum(data[g], dtype=np.int64) if numeric else data[g] for g in _GROUPS]
        return SampleKeys(str(data["source"]), *groups)
