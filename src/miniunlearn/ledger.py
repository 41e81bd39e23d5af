"""The deletion-request ledger: a durable, crash-safe record of every forget request.

The ledger is one SQLite file, ``ledger.sqlite``, inside a run directory. It records
each deletion request from the moment it is received until it is done, failed or
refused, together with the exact ids removed, so that every later model version --
and every full retraining -- can exclude them.

Storage
    * stdlib :mod:`sqlite3`, rollback journal (``journal_mode=DELETE``) with
      ``synchronous=FULL``: after a commit returns, the record is on disk, and the
      database file on its own is always complete (no side file to copy along).
    * Every state change runs in one ``BEGIN IMMEDIATE`` transaction. A process
      killed mid-transaction leaves a hot journal that SQLite rolls back on the next
      open, so the ledger shows the state before that transaction.
    * A new ledger is built in a temporary file and linked into place only once
      its schema is complete, so a half-created ledger never exists under the real
      name. An existing file is never deleted or overwritten by this module; a
      corrupt one raises :class:`~miniunlearn.errors.LedgerError` that says how to
      move it aside. Every open runs SQLite's ``quick_check``; every entry read
      re-hashes its ids against the recorded ``ids_sha256``.
    * The schema is versioned with ``PRAGMA user_version`` and tagged with
      ``PRAGMA application_id``. Older versions are migrated in place inside one
      transaction after a byte copy of the old file is saved next to it
      (``ledger.sqlite.v1.bak``); a file from a newer version is refused.

Schema versions
    * v1: requests without an error budget.
    * v2: adds ``error_budget_used`` (the approximation error a method spent on a
      request) and ``done_seq`` (the order in which requests completed, used to sum
      the budget since the last retraining).
    * v3: adds the ``events`` table: what a request went through before its current
      state (a refusal before it was re-sent with a corrected body).
    * v4 (current): adds the ``members`` table: the requests a batch was served for.

Batches
    Several queued requests may be served by one solve (one model version): the batch
    is one entry of ``requests`` (its ids the union of its members', its own request id),
    so the chain of done requests and the forgotten ids are those of single requests.
    Each member keeps its own request id and ids in ``members``; :meth:`Ledger.get` on a
    member's id returns its view: the batch's state, model and record with the member's
    own ids (``batch`` names the batch). A batch that fails or is refused releases its
    members (their ids may be sent again); the release is kept as an event.

Retraining
    A full retraining is recorded as a request whose ``method`` is ``"retrain"``
    (see :meth:`Ledger.receive_retrain`). Its ids are every id the retrained model
    excludes, which must include everything already forgotten. A ``done`` retrain
    entry resets :meth:`Ledger.error_budget_since_last_retrain`. A forget request
    that itself uses the ``"retrain"`` method is treated the same way, so the
    caller must retrain without ``forgotten_ids()`` plus the request's ids.

States
    ``received`` -> ``done`` | ``failed`` | ``refused``; ``failed`` -> ``received``
    again through :meth:`Ledger.retry`; ``refused`` -> ``received`` through
    :meth:`Ledger.resend`, which may change the ids and keeps the refusal as an event.
    A request is ``refused`` when it was not acted on at all (e.g. invalid ids);
    ``failed`` when it was accepted but the unlearning did not finish. ``received``
    entries seen by a later process were left by a crash: see :meth:`Ledger.pending`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from miniunlearn.errors import ForgetRequestError, LedgerError
from miniunlearn.fileio import atomic_path, fsync_dir
from miniunlearn.ids import ids_digest, normalize_ids
from miniunlearn.runlock import LOCK_FILENAME, run_lock

__all__ = [
    "APPLICATION_ID",
    "BatchMember",
    "LEDGER_FILENAME",
    "LOCK_FILENAME",
    "RETRAIN_METHOD",
    "SCHEMA_VERSION",
    "STATES",
    "Ledger",
    "LedgerEntry",
    "ids_digest",
    "json_default",
    "normalize_ids",
    "run_lock",
]

LEDGER_FILENAME = "ledger.sqlite"
"""File name of the ledger inside a run directory."""

SCHEMA_VERSION = 4
"""Schema version this code writes; older files are migrated on open."""

APPLICATION_ID = 0x4D554C47  # "MULG": marks a SQLite file as a miniunlearn ledger.

RETRAIN_METHOD = "retrain"
"""Method name of full-retraining entries; a done one resets the error budget."""

STATES = ("received", "done", "failed", "refused")
"""Every state a request can be in."""

DEFAULT_BUSY_TIMEOUT = 30.0

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

_SCHEMA_V1 = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE requests (
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id          TEXT NOT NULL UNIQUE,
    state               TEXT NOT NULL
                        CHECK (state IN ('received', 'done', 'failed', 'refused')),
    method              TEXT NOT NULL,
    options             TEXT NOT NULL DEFAULT '{}',
    ids                 BLOB NOT NULL,
    n_ids               INTEGER NOT NULL CHECK (n_ids >= 0),
    ids_sha256          TEXT NOT NULL,
    received_at         TEXT NOT NULL,
    completed_at        TEXT,
    model_sha256_before TEXT,
    model_sha256_after  TEXT,
    model_version,
    metrics             TEXT,
    reason              TEXT
);
CREATE INDEX requests_state ON requests (state);
"""

_SCHEMA_V2 = (
    _SCHEMA_V1.replace(
        "    reason              TEXT\n);",
        "    reason              TEXT,\n    error_budget_used   REAL,\n    done_seq            INTEGER\n);",
    )
    + "CREATE UNIQUE INDEX requests_done_seq ON requests (done_seq);\n"
)

_EVENTS_TABLE = """
CREATE TABLE events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id  TEXT NOT NULL,
    at          TEXT NOT NULL,
    event       TEXT NOT NULL,
    detail      TEXT
);
CREATE INDEX events_request ON events (request_id);
"""

_SCHEMA_V3 = _SCHEMA_V2 + _EVENTS_TABLE

_MEMBERS_TABLE = """
CREATE TABLE members (
    request_id  TEXT PRIMARY KEY,
    batch_id    TEXT NOT NULL,
    position    INTEGER NOT NULL,
    ids         BLOB NOT NULL,
    n_ids       INTEGER NOT NULL CHECK (n_ids >= 0),
    ids_sha256  TEXT NOT NULL,
    received_at TEXT NOT NULL
);
CREATE INDEX members_batch ON members (batch_id);
"""

_SCHEMA_V4 = _SCHEMA_V3 + _MEMBERS_TABLE
_INSERT_MEMBER = (
    "INSERT INTO members (request_id, batch_id, position, ids, n_ids, ids_sha256, received_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)

_COLUMNS_V1 = (
    "seq",
    "request_id",
    "state",
    "method",
    "options",
    "ids",
    "n_ids",
    "ids_sha256",
    "received_at",
    "completed_at",
    "model_sha256_before",
    "model_sha256_after",
    "model_version",
    "metrics",
    "reason",
)
_COLUMNS = {1: _COLUMNS_V1, 2: (*_COLUMNS_V1, "error_budget_used", "done_seq")}
_COLUMNS[3] = _COLUMNS[4] = _COLUMNS[2]
_SCHEMAS = {1: _SCHEMA_V1, 2: _SCHEMA_V2, 3: _SCHEMA_V3, 4: _SCHEMA_V4}


# --------------------------------------------------------------------------- ids


def _ids_bytes(normalized: np.ndarray) -> bytes:
    return normalized.astype("<i8", copy=False).tobytes()


def _ids_from_blob(blob: bytes) -> np.ndarray:
    arr = np.frombuffer(blob, dtype="<i8").astype(np.int64)
    arr.setflags(write=False)
    return arr


# ------------------------------------------------------------------------- entry


@dataclass(frozen=True, eq=False)
class LedgerEntry:
    """One deletion request as recorded in the ledger (a read-only snapshot).

    ``ids`` is the sorted unique int64 array of sample ids (read-only);
    ``options`` and ``metrics`` are decoded JSON; times are UTC ISO 8601 strings.
    ``seq`` is the order in which requests were received; ``done_seq`` the order in
    which they completed (``None`` unless done). ``batch``: for a request served as a
    member of a batch, the batch's request id (every other field but its own id, ids and
    received time is the batch's); ``members``: for a batch, its members' request ids.
    """

    request_id: str
    state: str
    method: str
    options: dict[str, Any]
    ids: np.ndarray = field(repr=False)
    n_ids: int
    ids_sha256: str
    received_at: str
    completed_at: str | None
    model_sha256_before: str | None
    model_sha256_after: str | None
    model_version: str | int | None
    metrics: dict[str, Any] | None
    error_budget_used: float | None
    reason: str | None
    seq: int
    done_seq: int | None
    batch: str | None = None
    members: tuple[str, ...] = ()

    @property
    def is_retrain(self) -> bool:
        """Return True when this entry records a full retraining."""
        return self.method == RETRAIN_METHOD

    @property
    def duration_s(self) -> float | None:
        """Return seconds from received to completed, or None when not completed."""
        if self.completed_at is None:
            return None
        start = datetime.fromisoformat(self.received_at)
        end = datetime.fromisoformat(self.completed_at)
        return (end - start).total_seconds()

    def __eq__(self, other: object) -> bool:
        """Return True when every field matches (``ids`` compared element-wise)."""
        if not isinstance(other, LedgerEntry):
            return NotImplemented
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.name == "ids":
                if not np.array_equal(a, b):
                    return False
            elif a != b:
                return False
        return True

    __hash__ = None  # type: ignore[assignment]

    def to_record(self, *, include_ids: bool = False) -> dict[str, Any]:
        """Return a JSON-serialisable dict of this entry.

        Keys: request_id, state, method, options, n_ids, ids_sha256, received_at,
        completed_at, duration_s, model_sha256_before, model_sha256_after,
        model_version, metrics, error_budget_used, reason, seq, done_seq; ``batch``
        for a member of a batch, ``members`` for a batch; plus ``ids`` (a list of ints)
        when ``include_ids`` is true.
        """
        record: dict[str, Any] = {
            "request_id": self.request_id,
            "state": self.state,
            "method": self.method,
            "options": self.options,
            "n_ids": self.n_ids,
            "ids_sha256": self.ids_sha256,
            "received_at": self.received_at,
            "completed_at": self.completed_at,
            "duration_s": self.duration_s,
            "model_sha256_before": self.model_sha256_before,
            "model_sha256_after": self.model_sha256_after,
            "model_version": self.model_version,
            "metrics": self.metrics,
            "error_budget_used": self.error_budget_used,
            "reason": self.reason,
            "seq": self.seq,
            "done_seq": self.done_seq,
        }
        if self.batch is not None:
            record["batch"] = self.batch
        if self.members:
            record["members"] = list(self.members)
        if include_ids:
            record["ids"] = self.ids.tolist()
        return record


@dataclass(frozen=True)
class BatchMember:
    """A request a batch serves: its request id, its ids and when it was received (UTC ISO
    8601; the time the batch is received when None)."""

    request_id: str
    ids: Any
    received_at: str | None = None


# ----------------------------------------------------------------------- helpers


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def json_default(obj: Any) -> Any:
    """``json.dumps`` fallback for numpy scalars and arrays and paths (TypeError otherwise)."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serializable")


def _to_json(obj: Mapping[str, Any] | None, what: str) -> str | None:
    if obj is None:
        return None
    if not isinstance(obj, Mapping):
        raise ForgetRequestError(f"{what} must be a dict, got {type(obj).__name__}")
    try:
        return json.dumps(dict(obj), sort_keys=True, default=json_default)
    except (TypeError, ValueError) as exc:
        raise ForgetRequestError(f"{what} must be JSON-serializable: {exc}") from exc


def check_request_id(request_id: str | None) -> str:
    """Return ``request_id`` (a fresh uuid4 hex when None) after checking it is 1-128
    characters from letters, digits, '.', '_' and '-'; ForgetRequestError otherwise."""
    if request_id is None:
        return uuid.uuid4().hex
    # fullmatch: a regex "$" would also accept a trailing newline
    if not isinstance(request_id, str) or not _REQUEST_ID_RE.fullmatch(request_id):
        shown = repr(request_id)
        shown = shown if len(shown) <= 80 else f"{shown[:60]}... ({len(str(request_id))} characters)"
        raise ForgetRequestError(
            f"invalid request id {shown}: use 1-128 characters from letters, digits, "
            "'.', '_' and '-', starting with a letter or digit"
        )
    return request_id


def _check_sha256(value: str | None, what: str, *, required: bool) -> str | None:
    if value is None:
        if required:
            raise LedgerError(f"{what} is required (the hex sha256 of the model file)")
        return None
    if not isinstance(value, str) or not _SHA256_RE.fullmatch(value):
        raise LedgerError(f"{what} must be a lowercase hex sha256 (64 characters), got {value!r}")
    return value


def _check_method(method: str) -> str:
    if not isinstance(method, str) or not method.strip():
        raise ForgetRequestError(f"method must be a non-empty string, got {method!r}")
    return method


def _check_budget(value: float | None) -> float | None:
    if value is None:
        return None
    try:
        budget = float(value)
    except (TypeError, ValueError) as exc:
        raise LedgerError(f"error_budget_used must be a number, got {value!r}") from exc
    if not math.isfinite(budget) or budget < 0:
        raise LedgerError(f"error_budget_used must be a finite number >= 0, got {value!r}")
    return budget


def _recovery_hint(path: Path) -> str:
    return (
        f"The ledger is kept untouched. To recover, move it aside "
        f"(e.g. `mv {path} {path}.corrupt`), restore it from a backup if you have one, "
        f"or start a new ledger; the requests recorded in the old file must then be "
        f"re-applied or excluded by hand."
    )


# ------------------------------------------------------------------------ ledger


class Ledger:
    """The deletion-request ledger of one run directory (a SQLite file).

    Use :meth:`Ledger.open` with a run directory, or construct with the ledger
    file path. The object is a context manager that closes the connection on
    exit. One ``Ledger`` is not meant to be shared between threads; several
    processes may open the same file (SQLite serialises writers, waiting up to
    ``busy_timeout`` seconds). To serialise whole forget operations across
    processes, hold :func:`run_lock` as well.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    ) -> None:
        """Open (and with ``create``, create if missing) the ledger file at ``path``.

        Raises :class:`LedgerError` when the file is corrupt, is not a ledger, was
        written by a newer schema version, or is missing while ``create`` is false.
        Migrates an older schema in place.
        """
        self.path = Path(path)
        self.busy_timeout = float(busy_timeout)
        self._conn: sqlite3.Connection | None = None
        if not self.path.parent.is_dir():
            raise LedgerError(f"cannot open ledger {self.path}: directory {self.path.parent} does not exist")
        if not self.path.exists():
            if not create:
                raise LedgerError(
                    f"no ledger at {self.path}: no deletion request has been recorded for this run yet"
                )
            self._create_file()
        if self.path.is_dir():
            raise LedgerError(f"cannot open ledger {self.path}: it is a directory, not a file")
        if self.path.stat().st_size == 0 and not self._journal_path().exists():
            raise LedgerError(
                f"ledger {self.path} is an empty file (0 bytes), so it holds no valid ledger. "
                + _recovery_hint(self.path)
            )
        try:
            self._conn = self._connect(self.path)
            self._check_and_migrate()
        except BaseException:
            self.close()
            raise

    # -- opening ---------------------------------------------------------------

    @classmethod
    def open(
        cls,
        run_dir: str | os.PathLike[str],
        *,
        create: bool = True,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    ) -> Ledger:
        """Open the ledger ``ledger.sqlite`` of the run directory ``run_dir``.

        Creates it when missing and ``create`` is true. Returns the open ledger;
        raises :class:`LedgerError` as described for the constructor.
        """
        return cls(Path(run_dir) / LEDGER_FILENAME, create=create, busy_timeout=busy_timeout)

    def _journal_path(self) -> Path:
        return self.path.with_name(self.path.name + "-journal")

    def _connect(self, path: Path) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                str(path), timeout=self.busy_timeout, isolation_level=None, check_same_thread=True
            )
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open ledger {path}: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise self._corrupt(exc) from exc
        return conn

    def _create_file(self) -> None:
        """Build an empty current-version ledger in a temp file and link it into place."""
        _link_new_ledger(self.path, [])

    @classmethod
    def build(cls, path: str | os.PathLike[str], records: Iterable[Mapping[str, Any]]) -> None:
        """Create a ledger at ``path`` holding ``records`` as done requests, in that order.

        Each record has the keys of :meth:`LedgerEntry.to_record` plus ``ids`` (an int
        array whose sha256 must equal ``ids_sha256``). The file is complete before it
        appears under ``path``; raises LedgerError when ``path`` exists or a record is bad.
        """
        path = Path(path)
        if path.exists():
            raise LedgerError(f"{path} exists; a ledger is only built where none is")
        _link_new_ledger(path, list(records))
        if not path.exists():
            raise LedgerError(f"could not create {path}")

    def _corrupt(self, exc: BaseException, detail: str = "") -> LedgerError:
        what = detail or f"SQLite reports: {exc}"
        return LedgerError(
            f"ledger {self.path} is corrupt or not a miniunlearn ledger ({what}). "
            + _recovery_hint(self.path)
        )

    def _check_and_migrate(self) -> None:
        conn = self._db()
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            check = conn.execute("PRAGMA quick_check").fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(exc) from exc
        if check != [("ok",)]:
            problems = "; ".join(str(row[0]) for row in check[:5])
            raise self._corrupt(RuntimeError(problems), f"integrity check failed: {problems}")
        if app_id != APPLICATION_ID:
            raise self._corrupt(
                RuntimeError("wrong application id"),
                f"it is a SQLite database with application_id {app_id}, not a miniunlearn "
                f"ledger; tables: {sorted(tables) or 'none'}",
            )
        if version > SCHEMA_VERSION:
            raise LedgerError(
                f"ledger {self.path} has schema version {version}, but this miniunlearn "
                f"only knows versions up to {SCHEMA_VERSION}: it was written by a newer "
                f"miniunlearn. Upgrade miniunlearn to read it; the file is left untouched."
            )
        if version not in _COLUMNS:
            raise self._corrupt(RuntimeError("bad version"), f"unknown schema version {version}")
        self._check_columns(version)
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "delete":
                conn.execute("PRAGMA journal_mode = DELETE")
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(exc) from exc
        if version < SCHEMA_VERSION:
            self._migrate()

    def _check_columns(self, version: int) -> None:
        conn = self._db()
        try:
            columns = [row[1] for row in conn.execute("PRAGMA table_info(requests)")]
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(exc) from exc
        missing = [c for c in _COLUMNS[version] if c not in columns]
        if missing:
            raise self._corrupt(
                RuntimeError("wrong schema"),
                f"wrong schema for version {version}: "
                + (
                    f"table 'requests' lacks columns {', '.join(missing)}"
                    if columns
                    else "there is no table 'requests'"
                ),
            )

    def _migrate(self) -> None:
        """Upgrade an older schema in place, one version at a time, in one transaction."""
        conn = self._db()
        backup: Path | None = None
        start = 0
        try:
            with self._write():
                version = start = conn.execute("PRAGMA user_version").fetchone()[0]
                if version >= SCHEMA_VERSION:
                    return  # another process migrated it while we waited for the lock
                backup = self._backup(version)
                while version < SCHEMA_VERSION:
                    _MIGRATIONS[version](conn)
                    version += 1
                    conn.execute(f"PRAGMA user_version = {version}")
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                    (f"migrated_v{start}_to_v{SCHEMA_VERSION}_at", _now()),
                )
        except LedgerError:
            raise
        except Exception as exc:
            copy = f"; a copy of the original is at {backup}" if backup else ""
            raise LedgerError(
                f"could not upgrade ledger {self.path} from schema v{start} to "
                f"v{SCHEMA_VERSION} ({type(exc).__name__}: {exc}); the transaction was rolled "
                f"back, so the file is still a valid v{start} ledger{copy}"
            ) from exc
        self._check_columns(SCHEMA_VERSION)

    def _backup(self, version: int) -> Path:
        """Copy the (unmodified, write-locked) ledger file to ``<name>.v<version>.bak``."""
        target = self.path.with_name(f"{self.path.name}.v{version}.bak")
        n = 1
        while target.exists():
            n += 1
            target = self.path.with_name(f"{self.path.name}.v{version}.{n}.bak")
        with atomic_path(target) as tmp:
            shutil.copyfile(self.path, tmp)
        return target

    # -- connection and transactions -------------------------------------------

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise LedgerError(f"ledger {self.path} is closed")
        return self._conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """Run the block in one IMMEDIATE transaction: commit on success, else roll back."""
        conn = self._db()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as exc:
            raise self._write_error(exc) from exc
        try:
            yield conn
        except sqlite3.DatabaseError as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise self._write_error(exc) from exc
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise self._write_error(exc) from exc

    def _write_error(self, exc: sqlite3.Error) -> LedgerError:
        """Say in plain words why a write to the ledger failed; the transaction was rolled back."""
        text = str(exc).lower()
        unchanged = "the ledger is unchanged"
        if "locked" in text or "busy" in text:
            return LedgerError(
                f"ledger {self.path} stayed locked by another process for "
                f"{self.busy_timeout:g} s; try again when it has finished"
            )
        if "readonly" in text or "read-only" in text:
            return LedgerError(
                f"ledger {self.path} cannot be written: it or its directory is read-only ({exc}). Make "
                f"both writable (e.g. `chmod u+w {self.path} {self.path.parent}`) and retry; {unchanged}"
            )
        if "full" in text:
            return LedgerError(
                f"the disk holding ledger {self.path} is full ({exc}); free some space and retry; {unchanged}"
            )
        if isinstance(exc, sqlite3.OperationalError) and ("disk i/o" in text or "unable to open" in text):
            return LedgerError(f"could not write ledger {self.path} ({exc}); {unchanged}")
        return self._corrupt(exc)

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        conn = self._db()
        try:
            cur = conn.execute(sql, params)
            cur.row_factory = sqlite3.Row
            return cur.fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(exc) from exc

    def close(self) -> None:
        """Close the connection; further calls raise :class:`LedgerError`. Idempotent."""
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    def __enter__(self) -> Ledger:
        """Return the ledger itself."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the ledger."""
        self.close()

    def __repr__(self) -> str:
        """Return ``Ledger('<path>')``."""
        return f"Ledger({str(self.path)!r})"

    @property
    def schema_version(self) -> int:
        """Return the schema version of the open file (``SCHEMA_VERSION`` after open)."""
        return int(self._db().execute("PRAGMA user_version").fetchone()[0])

    # -- rows ----------------------------------------------------------------------

    def _checked_ids(self, row: sqlite3.Row) -> np.ndarray:
        """The ids of a requests or members row, checked against its length and sha256."""
        blob = bytes(row["ids"])
        rid = row["request_id"]
        if len(blob) != 8 * row["n_ids"]:
            raise self._corrupt(
                RuntimeError("ids length"),
                f"request {rid}: ids blob holds {len(blob)} bytes, expected 8 * {row['n_ids']}",
            )
        if hashlib.sha256(blob).hexdigest() != row["ids_sha256"]:
            raise self._corrupt(
                RuntimeError("ids digest"),
                f"request {rid}: stored ids do not match their recorded sha256",
            )
        return _ids_from_blob(blob)

    def _member_ids_of(self, batch_id: str | None = None) -> dict[str, list[str]]:
        """{batch request id: its members' request ids in order} (of one batch, or all)."""
        where, params = ("WHERE batch_id = ?", (batch_id,)) if batch_id is not None else ("", ())
        rows = self._query(
            f"SELECT batch_id, request_id FROM members {where} ORDER BY batch_id, position", params
        )
        found: dict[str, list[str]] = {}
        for row in rows:
            found.setdefault(row[0], []).append(row[1])
        return found

    def _entry(self, row: sqlite3.Row, members: dict[str, list[str]] | None = None) -> LedgerEntry:
        rid = row["request_id"]
        ids = self._checked_ids(row)
        if members is None:
            members = self._member_ids_of(rid)
        try:
            options = json.loads(row["options"]) if row["options"] else {}
            metrics = json.loads(row["metrics"]) if row["metrics"] is not None else None
        except json.JSONDecodeError as exc:
            raise self._corrupt(exc, f"request {rid}: bad JSON in options/metrics") from exc
        keys = row.keys()
        return LedgerEntry(
            request_id=rid,
            state=row["state"],
            method=row["method"],
            options=options,
            ids=ids,
            n_ids=int(row["n_ids"]),
            ids_sha256=row["ids_sha256"],
            received_at=row["received_at"],
            completed_at=row["completed_at"],
            model_sha256_before=row["model_sha256_before"],
            model_sha256_after=row["model_sha256_after"],
            model_version=row["model_version"],
            metrics=metrics,
            error_budget_used=row["error_budget_used"] if "error_budget_used" in keys else None,
            reason=row["reason"],
            seq=int(row["seq"]),
            done_seq=row["done_seq"] if "done_seq" in keys else None,
            members=tuple(members.get(rid, ())),
        )

    def _member_view(self, row: sqlite3.Row, batch: LedgerEntry | None = None) -> LedgerEntry:
        """The entry of a batch member: its batch's entry (read when None) with the member's
        own id and ids."""
        batch = batch if batch is not None else self.get(row["batch_id"])
        if batch is None:
            raise self._corrupt(
                RuntimeError("orphan member"),
                f"request {row['request_id']} is a member of batch {row['batch_id']}, which is not recorded",
            )
        return replace(
            batch,
            request_id=row["request_id"],
            ids=self._checked_ids(row),
            n_ids=int(row["n_ids"]),
            ids_sha256=row["ids_sha256"],
            received_at=row["received_at"],
            batch=batch.request_id,
            members=(),
        )

    def _require_unused(self, conn: sqlite3.Connection, request_id: str) -> None:
        """Raise ForgetRequestError when ``request_id`` is a member of a batch."""
        row = conn.execute("SELECT batch_id FROM members WHERE request_id = ?", (request_id,)).fetchone()
        if row is not None:
            raise ForgetRequestError(
                f"request id {request_id!r} is recorded as a member of batch {row[0]}; use a new request id"
            )

    def _insert_members(
        self,
        conn: sqlite3.Connection,
        batch_id: str,
        members: Sequence[BatchMember],
        ids: np.ndarray,
    ) -> None:
        """Record ``members`` of the batch ``batch_id`` whose ids are
        ``ids``. Raises ForgetRequestError when a member id is recorded already, is the batch's
        own, is given twice, or when the members' ids do not make up ``ids`` exactly."""
        seen: set[str] = set()
        union = np.zeros(0, np.int64)
        now = _now()
        for position, member in enumerate(members):
            rid = check_request_id(member.request_id)
            if rid in seen or rid == batch_id or self._get_row(conn, rid) is not None:
                raise ForgetRequestError(
                    f"request id {rid!r} cannot join batch {batch_id}: it is recorded already or named twice"
                )
            self._require_unused(conn, rid)
            seen.add(rid)
            norm = normalize_ids(member.ids)
            if norm.size == 0:
                raise ForgetRequestError(f"request {rid!r} names no sample id")
            union = np.union1d(union, norm)
            blob = _ids_bytes(norm)
            conn.execute(
                _INSERT_MEMBER,
                (
                    rid,
                    batch_id,
                    position,
                    blob,
                    int(norm.size),
                    hashlib.sha256(blob).hexdigest(),
                    member.received_at or now,
                ),
            )
        if not np.array_equal(union, ids):
            raise ForgetRequestError(
                f"batch {batch_id}'s ids ({ids.size}) are not the union of its members' ids ({union.size})"
            )

    def _release_members(self, conn: sqlite3.Connection, batch_id: str, state: str) -> None:
        """Delete the members of a batch that ended ``state`` (failed or refused), keeping
        their request ids as an event of the batch, so each may be sent again."""
        released = [
            r[0] for r in conn.execute("SELECT request_id FROM members WHERE batch_id = ?", (batch_id,))
        ]
        if not released:
            return
        conn.execute(
            "INSERT INTO events (request_id, at, event, detail) VALUES (?, ?, 'members-released', ?)",
            (batch_id, _now(), json.dumps({"state": state, "members": released})),
        )
        conn.execute("DELETE FROM members WHERE batch_id = ?", (batch_id,))

    def _get_row(self, conn: sqlite3.Connection, request_id: str) -> sqlite3.Row | None:
        cur = conn.execute("SELECT * FROM requests WHERE request_id = ?", (request_id,))
        cur.row_factory = sqlite3.Row
        return cur.fetchone()

    def _insert(
        self,
        conn: sqlite3.Connection,
        *,
        request_id: str,
        state: str,
        method: str,
        options_json: str,
        ids: np.ndarray,
        model_sha256_before: str | None,
        reason: str | None,
    ) -> None:
        self._require_unused(conn, request_id)
        blob = _ids_bytes(ids)
        now = _now()
        conn.execute(
            "INSERT INTO requests (request_id, state, method, options, ids, n_ids, ids_sha256, "
            "received_at, completed_at, model_sha256_before, reason) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                request_id,
                state,
                method,
                options_json,
                blob,
                int(ids.size),
                hashlib.sha256(blob).hexdigest(),
                now,
                now if state != "received" else None,
                model_sha256_before,
                reason,
            ),
        )

    def _require_existing(self, conn: sqlite3.Connection, request_id: str) -> sqlite3.Row:
        row = self._get_row(conn, request_id)
        if row is None:
            raise LedgerError(f"no request {request_id!r} in ledger {self.path}")
        return row

    # -- public API: writing -------------------------------------------------------

    def receive(
        self,
        ids: Iterable[int] | np.ndarray,
        method: str,
        options: Mapping[str, Any] | None,
        model_sha256_before: str,
        request_id: str | None = None,
        *,
        members: Sequence[BatchMember] = (),
    ) -> LedgerEntry:
        """Record a new deletion request in state ``received`` and return its entry.

        ``ids`` are the sample ids to forget (non-empty, >= 0; stored sorted and
        unique), ``method`` the unlearning method name, ``options`` its JSON-able
        options, ``model_sha256_before`` the hex sha256 of the model it starts from.
        ``request_id`` defaults to a fresh uuid4 hex.

        Idempotent: if ``request_id`` already exists with the same set of ids, the
        existing entry is returned unchanged (whatever its state -- a ``done`` one
        means there is nothing left to do). If it exists with different ids,
        raises :class:`ForgetRequestError`. Invalid ids or options also raise
        :class:`ForgetRequestError`. ``members``: for a batch, every request it serves
        (:class:`BatchMember`), recorded in the same transaction; their ids must make up
        ``ids`` exactly (see the module docstring).
        """
        norm = normalize_ids(ids)
        if norm.size == 0:
            raise ForgetRequestError("the forget set is empty: give at least one sample id")
        if norm[0] < 0:
            raise ForgetRequestError(
                f"sample ids must be >= 0, got {int(norm[0])} (ids are training-set indices)"
            )
        method = _check_method(method)
        options_json = _to_json(options or {}, "options")
        assert options_json is not None
        _check_sha256(model_sha256_before, "model_sha256_before", required=True)
        rid = check_request_id(request_id)
        with self._write() as conn:
            existing = self._get_row(conn, rid)
            if existing is None:
                self._insert(
                    conn,
                    request_id=rid,
                    state="received",
                    method=method,
                    options_json=options_json,
                    ids=norm,
                    model_sha256_before=model_sha256_before,
                    reason=None,
                )
                if members:
                    self._insert_members(conn, rid, members, norm)
            else:
                self._check_same_ids(existing, norm)
        entry = self.get(rid)
        assert entry is not None
        return entry

    def _check_same_ids(self, existing: sqlite3.Row, norm: np.ndarray) -> None:
        digest = hashlib.sha256(_ids_bytes(norm)).hexdigest()
        if existing["ids_sha256"] != digest:
            raise ForgetRequestError(
                f"request id {existing['request_id']!r} is already recorded with a different "
                f"set of ids ({existing['n_ids']} ids, sha256 {existing['ids_sha256'][:12]}...; "
                f"this one has {norm.size} ids, sha256 {digest[:12]}...). Use a new request id."
            )

    def receive_retrain(
        self,
        model_sha256_before: str,
        reason: str,
        *,
        ids: Iterable[int] | np.ndarray | None = None,
        options: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        members: Sequence[BatchMember] = (),
    ) -> LedgerEntry:
        """Record the start of a full retraining (method ``"retrain"``) and return it.

        ``reason`` says why (e.g. ``"error budget exceeded: 1.2 > 1.0"`` or
        ``"requested"``). ``ids`` are the ids the retrained model excludes; they
        default to :meth:`forgotten_ids` and must include all of them
        (:class:`ForgetRequestError` otherwise). Complete it with :meth:`complete`
        (``error_budget_used`` 0 or None); once done it resets
        :meth:`error_budget_since_last_retrain`. Idempotent on ``request_id`` as
        :meth:`receive`. ``members``: as for :meth:`receive` (a batch served by
        retraining; their ids must be the retraining's new ids).
        """
        if not isinstance(reason, str) or not reason.strip():
            raise ForgetRequestError("a retraining needs a reason (e.g. 'requested')")
        options_json = _to_json(options or {}, "options")
        assert options_json is not None
        _check_sha256(model_sha256_before, "model_sha256_before", required=True)
        rid = check_request_id(request_id)
        with self._write() as conn:
            forgotten = self._forgotten(conn)
            norm = forgotten if ids is None else normalize_ids(ids)
            existing = self._get_row(conn, rid)
            if existing is not None:
                if ids is not None:
                    self._check_same_ids(existing, norm)
            else:
                missing = np.setdiff1d(forgotten, norm, assume_unique=True)
                if missing.size:
                    raise ForgetRequestError(
                        f"a retraining must exclude every forgotten id; {missing.size} are "
                        f"missing (first: {missing[:5].tolist()})"
                    )
                if norm.size and norm[0] < 0:
                    raise ForgetRequestError(f"sample ids must be >= 0, got {int(norm[0])}")
                self._insert(
                    conn,
                    request_id=rid,
                    state="received",
                    method=RETRAIN_METHOD,
                    options_json=options_json,
                    ids=norm,
                    model_sha256_before=model_sha256_before,
                    reason=reason,
                )
                if members:
                    self._insert_members(conn, rid, members, norm)
        entry = self.get(rid)
        assert entry is not None
        return entry

    def complete(
        self,
        request_id: str,
        model_sha256_after: str,
        model_version: str | int | None,
        metrics: Mapping[str, Any] | None,
        error_budget_used: float | None,
    ) -> LedgerEntry:
        """Mark a ``received`` request ``done`` and return the updated entry.

        Records the hex sha256 and version of the new model, the metrics dict
        (JSON-able; numpy scalars are converted) and the error budget the method
        spent (a finite number >= 0, or None when the method is exact).
        Completing an already-done request with the same ``model_sha256_after``
        returns it unchanged; any other state raises :class:`LedgerError`.
        """
        _check_sha256(model_sha256_after, "model_sha256_after", required=True)
        metrics_json = _to_json(metrics, "metrics")
        budget = _check_budget(error_budget_used)
        if model_version is not None and not isinstance(model_version, str | int):
            raise LedgerError(f"model_version must be a str, int or None, got {model_version!r}")
        with self._write() as conn:
            row = self._require_existing(conn, request_id)
            if row["state"] == "done" and row["model_sha256_after"] == model_sha256_after:
                pass
            elif row["state"] != "received":
                raise LedgerError(
                    f"request {request_id!r} is {row['state']}, only a received request can be completed"
                )
            else:
                done_seq = conn.execute("SELECT COALESCE(MAX(done_seq), 0) + 1 FROM requests").fetchone()[0]
                conn.execute(
                    "UPDATE requests SET state = 'done', completed_at = ?, "
                    "model_sha256_after = ?, model_version = ?, metrics = ?, "
                    "error_budget_used = ?, done_seq = ? WHERE request_id = ?",
                    (
                        _now(),
                        model_sha256_after,
                        model_version,
                        metrics_json,
                        budget,
                        done_seq,
                        request_id,
                    ),
                )
        entry = self.get(request_id)
        assert entry is not None
        return entry

    def fail(self, request_id: str, reason: str) -> LedgerEntry:
        """Mark a ``received`` request ``failed`` with ``reason``; return the entry.

        Raises :class:`LedgerError` for an unknown request or one not in state
        ``received``. A failed request can be started again with :meth:`retry`.
        """
        if not isinstance(reason, str) or not reason.strip():
            raise LedgerError("fail() needs a non-empty reason")
        with self._write() as conn:
            row = self._require_existing(conn, request_id)
            if row["state"] != "received":
                raise LedgerError(
                    f"request {request_id!r} is {row['state']}, only a received request can be marked failed"
                )
            conn.execute(
                "UPDATE requests SET state = 'failed', completed_at = ?, reason = ? WHERE request_id = ?",
                (_now(), reason, request_id),
            )
            self._release_members(conn, request_id, "failed")
        entry = self.get(request_id)
        assert entry is not None
        return entry

    def refuse(
        self,
        ids: Iterable[int] | np.ndarray,
        method: str,
        reason: str,
        request_id: str | None = None,
        model_sha256_before: str | None = None,
    ) -> LedgerEntry:
        """Record a request that was refused (not acted on) and return its entry.

        ``ids`` may be empty or out of range (that is often why it is refused) but
        must be integers; ``reason`` says why. If ``request_id`` exists with the
        same ids: a ``received`` entry becomes ``refused``, any other is returned
        unchanged. With different ids, raises :class:`ForgetRequestError`.
        """
        norm = normalize_ids(ids)
        if not isinstance(reason, str) or not reason.strip():
            raise LedgerError("refuse() needs a non-empty reason")
        method = _check_method(method)
        _check_sha256(model_sha256_before, "model_sha256_before", required=False)
        rid = check_request_id(request_id)
        with self._write() as conn:
            existing = self._get_row(conn, rid)
            if existing is None:
                self._insert(
                    conn,
                    request_id=rid,
                    state="refused",
                    method=method,
                    options_json="{}",
                    ids=norm,
                    model_sha256_before=model_sha256_before,
                    reason=reason,
                )
            else:
                self._check_same_ids(existing, norm)
                if existing["state"] == "received":
                    conn.execute(
                        "UPDATE requests SET state = 'refused', completed_at = ?, reason = ? "
                        "WHERE request_id = ?",
                        (_now(), reason, rid),
                    )
                    self._release_members(conn, rid, "refused")
        entry = self.get(rid)
        assert entry is not None
        return entry

    def retry(
        self,
        request_id: str,
        model_sha256_before: str,
        *,
        method: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> LedgerEntry:
        """Put a ``failed`` (or crash-left ``received``) request back to ``received``.

        Records the model it now starts from and, when given, the method and options
        the retry will use; keeps a failed attempt's method, reason and time as a
        ``failed`` event, clears the failure reason and completion time (received_at
        is kept), and returns the entry. Raises :class:`LedgerError` for a done or
        refused request.
        """
        _check_sha256(model_sha256_before, "model_sha256_before", required=True)
        with self._write() as conn:
            row = self._require_existing(conn, request_id)
            if row["state"] not in ("failed", "received"):
                raise LedgerError(
                    f"request {request_id!r} is {row['state']}; only a failed or pending "
                    f"request can be retried"
                )
            new_method = _check_method(method) if method is not None else row["method"]
            if row["state"] == "failed":  # the failure is kept as an event of the request
                earlier = {"method": row["method"], "reason": row["reason"], "failed_at": row["completed_at"]}
                conn.execute(
                    "INSERT INTO events (request_id, at, event, detail) VALUES (?, ?, 'failed', ?)",
                    (request_id, _now(), json.dumps(earlier, sort_keys=True)),
                )
            conn.execute(
                "UPDATE requests SET state = 'received', completed_at = NULL, "
                "reason = CASE WHEN method = ? THEN reason ELSE NULL END, "
                "model_sha256_before = ?, method = ? WHERE request_id = ?",
                (RETRAIN_METHOD, model_sha256_before, new_method, request_id),
            )
            if options is not None:
                conn.execute(
                    "UPDATE requests SET options = ? WHERE request_id = ?",
                    (_to_json(options, "options"), request_id),
                )
        entry = self.get(request_id)
        assert entry is not None
        return entry

    def resend(
        self,
        request_id: str,
        ids: Iterable[int] | np.ndarray,
        method: str,
        options: Mapping[str, Any] | None,
        model_sha256_before: str,
        *,
        retrain_reason: str | None = None,
    ) -> LedgerEntry:
        """Serve a ``refused`` request again with a corrected body; return it ``received``.

        A refused request was never acted on, so its id may be re-sent with other ids,
        method or options. The refusal (its method, ids digest, reason and time) is kept
        as an event of the request (see :meth:`events`). ``retrain_reason``: set for a
        full retraining (method ``"retrain"``). Raises LedgerError unless it is refused.
        """
        norm = normalize_ids(ids)
        method = _check_method(method)
        options_json = _to_json(options or {}, "options")
        _check_sha256(model_sha256_before, "model_sha256_before", required=True)
        blob = _ids_bytes(norm)
        with self._write() as conn:
            row = self._require_existing(conn, request_id)
            if row["state"] != "refused":
                raise LedgerError(
                    f"request {request_id!r} is {row['state']}; only a refused request can be re-sent "
                    "with another body"
                )
            earlier = {
                "method": row["method"],
                "n_ids": row["n_ids"],
                "ids_sha256": row["ids_sha256"],
                "reason": row["reason"],
                "refused_at": row["completed_at"],
            }
            conn.execute(
                "INSERT INTO events (request_id, at, event, detail) VALUES (?, ?, 'refused', ?)",
                (request_id, _now(), json.dumps(earlier, sort_keys=True)),
            )
            conn.execute(
                "UPDATE requests SET state = 'received', method = ?, options = ?, ids = ?, n_ids = ?, "
                "ids_sha256 = ?, completed_at = NULL, model_sha256_before = ?, reason = ? "
                "WHERE request_id = ?",
                (
                    method,
                    options_json,
                    blob,
                    int(norm.size),
                    hashlib.sha256(blob).hexdigest(),
                    model_sha256_before,
                    retrain_reason,
                    request_id,
                ),
            )
        entry = self.get(request_id)
        assert entry is not None
        return entry

    def events(self, request_id: str | None = None) -> list[dict[str, Any]]:
        """Return the recorded events (all, or of ``request_id``) in order, each as a dict
        with request_id, at, event and detail (parsed JSON)."""
        if request_id is None:
            rows = self._query("SELECT request_id, at, event, detail FROM events ORDER BY seq")
        else:
            rows = self._query(
                "SELECT request_id, at, event, detail FROM events WHERE request_id = ? ORDER BY seq",
                (request_id,),
            )
        return [
            {"request_id": r[0], "at": r[1], "event": r[2], "detail": json.loads(r[3]) if r[3] else None}
            for r in rows
        ]

    # -- public API: reading -------------------------------------------------------

    def get(self, request_id: str) -> LedgerEntry | None:
        """Return the entry of ``request_id`` (a member of a batch: its view, see the module
        docstring), or None when it is not recorded."""
        rows = self._query("SELECT * FROM requests WHERE request_id = ?", (request_id,))
        if rows:
            return self._entry(rows[0])
        rows = self._query("SELECT * FROM members WHERE request_id = ?", (request_id,))
        return self._member_view(rows[0]) if rows else None

    def members(self, batch_id: str) -> list[LedgerEntry]:
        """Return the entries of the members of batch ``batch_id`` in their order (empty for
        a request that is no batch, or a batch that released its members)."""
        rows = self._query("SELECT * FROM members WHERE batch_id = ? ORDER BY position", (batch_id,))
        if not rows:
            return []
        batch = self.get(batch_id)
        return [self._member_view(row, batch) for row in rows]

    def entries(self, state: str | None = None) -> list[LedgerEntry]:
        """Return all entries in the order received, or only those in ``state``.

        Raises :class:`LedgerError` for a state not in :data:`STATES`.
        """
        if state is None:
            rows = self._query("SELECT * FROM requests ORDER BY seq")
        else:
            if state not in STATES:
                raise LedgerError(f"unknown state {state!r}; choose from {', '.join(STATES)}")
            rows = self._query("SELECT * FROM requests WHERE state = ? ORDER BY seq", (state,))
        members = self._member_ids_of()
        return [self._entry(row, members) for row in rows]

    def pending(self) -> list[LedgerEntry]:
        """Return entries still ``received``: started but never finished (a crash).

        The caller should resume each (run it and :meth:`complete`) or mark it with
        :meth:`fail`, after checking whether the model already changed.
        """
        return self.entries("received")

    def _forgotten(self, conn: sqlite3.Connection) -> np.ndarray:
        try:
            blobs = [bytes(row[0]) for row in conn.execute("SELECT ids FROM requests WHERE state = 'done'")]
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(exc) from exc
        if not blobs:
            return np.zeros(0, dtype=np.int64)
        return np.unique(np.concatenate([np.frombuffer(b, dtype="<i8") for b in blobs])).astype(np.int64)

    def forgotten_ids(self) -> np.ndarray:
        """Return the sorted union (int64) of the ids of every ``done`` entry.

        These are the samples every later model -- including a full retraining --
        must exclude.
        """
        return self._forgotten(self._db())

    def error_budget_since_last_retrain(self) -> float:
        """Return the summed ``error_budget_used`` of requests done after the last retrain.

        Counts done entries in completion order after the last done ``"retrain"``
        entry (all done entries if there is none); None budgets count as 0.
        """
        rows = self._query(
            "SELECT COALESCE(SUM(error_budget_used), 0.0) FROM requests "
            "WHERE state = 'done' AND method != ? AND done_seq > COALESCE("
            "(SELECT MAX(done_seq) FROM requests WHERE state = 'done' AND method = ?), 0)",
            (RETRAIN_METHOD, RETRAIN_METHOD),
        )
        return float(rows[0][0])

    def last_retrain(self) -> LedgerEntry | None:
        """Return the most recently completed ``"retrain"`` entry, or None."""
        rows = self._query(
            "SELECT * FROM requests WHERE state = 'done' AND method = ? ORDER BY done_seq DESC LIMIT 1",
            (RETRAIN_METHOD,),
        )
        return self._entry(rows[0]) if rows else None

    def to_json_records(self, *, include_ids: bool = False) -> list[dict[str, Any]]:
        """Return every entry as a JSON-serialisable dict, in the order received.

        Keys are those of :meth:`LedgerEntry.to_record` (request_id, state, n_ids,
        ids_sha256, method, options, times, model hashes, model_version, metrics,
        error_budget_used, reason, ...). The ids themselves are left out unless
        ``include_ids`` is true. The members of a batch follow it, each with ``batch``.
        """
        records = []
        for entry in self.entries():
            records.append(entry.to_record(include_ids=include_ids))
            if entry.members:
                records += [m.to_record(include_ids=include_ids) for m in self.members(entry.request_id)]
        return records

    def verify(self) -> list[str]:
        """Check the whole ledger and return a list of problems (empty when sound).

        Runs SQLite's full integrity check, re-hashes every entry's ids, checks
        that done entries chain (each one's ``model_sha256_before`` equals the
        previous done entry's ``model_sha256_after``) and that each batch's ids are
        its members' ids.
        """
        problems: list[str] = []
        try:
            check = [row[0] for row in self._db().execute("PRAGMA integrity_check")]
        except sqlite3.DatabaseError as exc:
            return [f"integrity check failed: {exc}"]
        if check != ["ok"]:
            problems.extend(f"integrity: {msg}" for msg in check)
        try:
            entries = self.entries()
        except LedgerError as exc:
            return [*problems, str(exc)]
        done = sorted((e for e in entries if e.state == "done"), key=lambda e: e.done_seq or 0)
        for prev, cur in zip(done, done[1:], strict=False):
            if (
                prev.model_sha256_after
                and cur.model_sha256_before
                and prev.model_sha256_after != cur.model_sha256_before
            ):
                problems.append(
                    f"request {cur.request_id} started from model {cur.model_sha256_before[:12]} "
                    f"but the previous done request {prev.request_id} produced "
                    f"{prev.model_sha256_after[:12]}"
                )
        for entry in entries:
            if not entry.members:
                continue
            try:
                union = np.unique(np.concatenate([m.ids for m in self.members(entry.request_id)]))
            except LedgerError as exc:
                problems.append(str(exc))
                continue
            if not np.array_equal(union, entry.ids):
                problems.append(
                    f"batch {entry.request_id} holds {entry.n_ids} ids, but its members name {union.size}"
                )
        return problems


def _link_new_ledger(path: Path, records: list[Mapping[str, Any]]) -> None:
    """Write a current-schema ledger holding ``records`` (done) to a temp file, then link it
    to ``path`` unless another process created one meanwhile (theirs wins)."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".new", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        conn = sqlite3.connect(str(tmp), isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = DELETE")
            conn.execute("PRAGMA synchronous = FULL")
            _create_schema(conn, SCHEMA_VERSION)
            if records:
                _insert_done(conn, records)
        finally:
            conn.close()
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        try:
            # link() fails when another process created the ledger meanwhile:
            # theirs wins and nothing is overwritten.
            os.link(tmp, path)
        except FileExistsError:
            pass
        except OSError:
            if not path.exists():
                os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _insert_done(conn: sqlite3.Connection, records: list[Mapping[str, Any]]) -> None:
    """Insert ``records`` as done requests (done_seq in list order) in one transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for done_seq, r in enumerate(records, start=1):
            blob = _ids_bytes(normalize_ids(r["ids"]))
            if hashlib.sha256(blob).hexdigest() != r["ids_sha256"]:
                raise LedgerError(f"request {r['request_id']}: its ids do not match their recorded sha256")
            conn.execute(
                "INSERT INTO requests (request_id, state, method, options, ids, n_ids, ids_sha256, "
                "received_at, completed_at, model_sha256_before, model_sha256_after, model_version, "
                "metrics, reason, error_budget_used, done_seq) "
                "VALUES (?, 'done', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    check_request_id(r["request_id"]),
                    _check_method(r["method"]),
                    _to_json(r.get("options") or {}, "options"),
                    blob,
                    len(blob) // 8,
                    r["ids_sha256"],
                    r["received_at"],
                    r["completed_at"],
                    _check_sha256(r["model_sha256_before"], "model_sha256_before", required=True),
                    _check_sha256(r["model_sha256_after"], "model_sha256_after", required=True),
                    r["model_version"],
                    _to_json(r.get("metrics"), "metrics"),
                    r.get("reason"),
                    _check_budget(r.get("error_budget_used")),
                    done_seq,
                ),
            )
            for position, m in enumerate(r.get("members") or ()):
                member_blob = _ids_bytes(normalize_ids(m["ids"]))
                if hashlib.sha256(member_blob).hexdigest() != m["ids_sha256"]:
                    raise LedgerError(
                        f"request {m['request_id']}: its ids do not match their recorded sha256"
                    )
                conn.execute(
                    _INSERT_MEMBER,
                    (
                        check_request_id(m["request_id"]),
                        r["request_id"],
                        position,
                        member_blob,
                        len(member_blob) // 8,
                        m["ids_sha256"],
                        m["received_at"],
                    ),
                )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


# -------------------------------------------------------------------- migrations


def _create_schema(conn: sqlite3.Connection, version: int) -> None:
    """Create the tables of schema ``version`` in an empty database (one transaction)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in _SCHEMAS[version].split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('created_at', ?), ('created_schema', ?)",
            (_now(), str(version)),
        )
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {version}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _migrate_v1_to_v2(conn: sqlite3.Connection) -> None:
    """v1 -> v2: add ``error_budget_used`` (NULL: unknown) and ``done_seq``.

    ``done_seq`` of existing done rows is backfilled in completion order
    (completed_at, then seq). Runs inside the caller's transaction.
    """
    conn.execute("ALTER TABLE requests ADD COLUMN error_budget_used REAL")
    conn.execute("ALTER TABLE requests ADD COLUMN done_seq INTEGER")
    done = conn.execute("SELECT seq FROM requests WHERE state = 'done' ORDER BY completed_at, seq").fetchall()
    for n, (seq,) in enumerate(done, start=1):
        conn.execute("UPDATE requests SET done_seq = ? WHERE seq = ?", (n, seq))
    conn.execute("CREATE UNIQUE INDEX requests_done_seq ON requests (done_seq)")


def _migrate_v2_to_v3(conn: sqlite3.Connection) -> None:
    """v2 -> v3: add the ``events`` table (earlier refusals of re-sent requests)."""
    for statement in _EVENTS_TABLE.split(";"):
        if statement.strip():
            conn.execute(statement)


def _migrate_v3_to_v4(conn: sqlite3.Connection) -> None:
    """v3 -> v4: add the ``members`` table (the requests each batch served)."""
    for statement in _MEMBERS_TABLE.split(";"):
        if statement.strip():
            conn.execute(statement)


_MIGRATIONS = {1: _migrate_v1_to_v2, 2: _migrate_v2_to_v3, 3: _migrate_v3_to_v4}
