"""Error types raised by Mini-Unlearning.

Every error carries a message that says what was wrong and how to fix it, so the
command line can print it as-is and exit non-zero.
"""

from __future__ import annotations


class MiniUnlearnError(Exception):
    """Base class of every error this library raises on purpose."""


class DataMissingError(MiniUnlearnError):
    """A dataset is not in the local cache; the message names the fetch command."""


class DataCorruptError(MiniUnlearnError):
    """A cached or user-supplied data file failed its checksum or could not be parsed."""


class ConfigError(MiniUnlearnError):
    """A training or method option is invalid or unsupported."""


class RunDirError(MiniUnlearnError):
    """A run directory is missing, incomplete, or fails its manifest checks."""


class HistoryError(MiniUnlearnError):
    """Recorded training history is missing, corrupt, or does not match the run."""


class ForgetRequestError(MiniUnlearnError):
    """A forget set is invalid: unknown ids, empty, or the whole training set."""


class LedgerError(MiniUnlearnError):
    """The deletion-request ledger is corrupt, locked, or inconsistent."""


class CurrentModelLost(RunDirError):
    """The run's current model version (its file or the ``current.json`` naming it) is gone."""
