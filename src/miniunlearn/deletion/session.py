"""The one owner of a run's deletion state: ledger, ``current.json`` and model versions.

Every command that reads or changes what a run has forgotten opens a
:class:`RunSession` with :func:`open_session`. Opening reads the ledger, the pointer
and the version files once and checks that they agree; a session opened for writing
also holds the run lock and first settles requests an interrupted command left
``received``. Every change of state goes through the session's methods, which keep
these rules (the README's recovery table states them for users):

* A version file is never deleted while it holds a request the ledger does not have as
  done. A file whose request the ledger holds as ``received`` and that was made from the
  current model is the result of a command killed before its switch: settling rolls it
  forward (the pointer moves to it, the request is marked done). A file whose request the
  ledger holds as failed, refused, unknown or done with another version means the ledger
  is older than the versions (restored from a backup): every command refuses.
* A commit re-checks, under the lock, that the lock file is still the one it locked and
  that the current model is still the one the request started from; then the version is
  written, the pointer switched and the request marked done, each durable before the next.
* Done requests chain: each starts from the model the previous one left, the first from
  the run's original model. A broken chain (two commands that interleaved, a ledger of
  another run) is refused by every command.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import CurrentModelLost, LedgerError, RunDirError
from ..fileio import atomic_write_json, sha256_file
from ..ledger import Ledger, LedgerEntry
from ..runlock import HeldLock, run_lock
from ..training.rundir import Run, open_run
from ..versions import (
    CURRENT_FILE,
    ModelVersion,
    expected_version,
    load_version_params,
    open_ledger,
    original_version,
    read_pointer,
    rebuild_ledger,
    version_files,
    version_number,
    version_path,
    version_record,
    write_version,
)
from .state import (
    chain_problems,
    check_file,
    check_state,
    record_problems,
    record_request,
    refuse_newer_pointer,
    refuse_newer_records,
    remove_junk,
    settle,
)


@dataclass
class RunSession:
    """An open run with its ledger, its checked current version and (when writing) its lock.

    ``messages``: one line per request settled on opening. Use through
    :func:`open_session`; its methods are the only way state changes.
    """

    run: Run
    ledger: Ledger
    current: ModelVersion
    pointer: ModelVersion | None
    lock: HeldLock | None = None
    messages: list[str] = field(default_factory=list)

    # -- reading -------------------------------------------------------------------

    def forgotten_ids(self) -> np.ndarray:
        """Sorted union of the ids of every done request."""
        return self.ledger.forgotten_ids()

    def current_params(self) -> torch.Tensor:
        """Flat parameters of the current model version."""
        return load_version_params(self.run, self.current)

    def anchor(self) -> tuple[torch.Tensor | None, np.ndarray]:
        """The run's last exact model and every id it excluded: (parameters, sorted ids) of
        the version the last done retraining produced, or (None, empty) when the run was never
        retrained. Raises RunDirError when that version's file is missing or altered."""
        last = self.ledger.last_retrain()
        if last is None or last.model_sha256_after == last.model_sha256_before:
            return None, np.zeros(0, np.int64)
        done = self.ledger.entries("done")
        covered = [e.ids for e in done if (e.done_seq or 0) <= (last.done_seq or 0)]
        ids = np.unique(np.concatenate(covered)).astype(np.int64)
        return load_version_params(self.run, self.version_of(last)), ids

    def version_of(self, entry: LedgerEntry) -> ModelVersion:
        """The model version a done request left current, checked against its file.

        Raises RunDirError when the request is not done, or its file is missing or fails
        the sha256 the ledger recorded.
        """
        number = version_number(entry)
        if entry.state != "done" or number is None or not entry.model_sha256_after:
            raise RunDirError(f"request {entry.request_id} is {entry.state}; it left no model version")
        version = ModelVersion(number, version_path(number), entry.model_sha256_after, entry.request_id)
        file = self.run.path / version.path
        if not file.exists():
            raise RunDirError(
                f"model version {number} ({file}) of request {entry.request_id} is missing; restore it "
                "from a backup (the ledger records its sha256, so a restored file is checked)"
            )
        if sha256_file(file) != version.sha256:
            raise RunDirError(
                f"model version {number} ({file}) of request {entry.request_id} fails the sha256 the "
                "ledger recorded: it was altered after the request was served; restore it from a backup"
            )
        return version

    def verify(self) -> list[str]:
        """Check everything, hashing every file: the ledger's integrity and chain, every
        done request's version file and the record inside it, and the pointer. Returns
        one line per problem (empty when the run is sound)."""
        problems = self.ledger.verify()
        problems += chain_problems(self.run, self.ledger)
        for entry in self.ledger.entries("done"):
            number = version_number(entry)
            if not number or entry.model_sha256_before == entry.model_sha256_after:
                continue  # the original model, or a request that changed nothing
            try:
                self.version_of(entry)
                record = version_record(self.run.path / version_path(number))
            except (RunDirError, LedgerError) as exc:
                problems.append(str(exc))
                continue
            if record.get("request_id") != entry.request_id or record.get("ids_sha256") != entry.ids_sha256:
                problems.append(
                    f"model version {number} carries request {record.get('request_id')}, but the ledger "
                    f"says request {entry.request_id} produced it"
                )
        try:
            check_state(self.run, self.ledger)
        except (RunDirError, LedgerError) as exc:
            problems.append(str(exc))
        return problems

    # -- changing ------------------------------------------------------------------

    def _require_lock(self) -> HeldLock:
        if self.lock is None:
            raise LedgerError("this session was opened read-only; open it with write=True to change the run")
        self.lock.check()
        return self.lock

    def commit(
        self,
        entry: LedgerEntry,
        params: torch.Tensor,
        record: dict[str, Any],
        budget: float | None,
    ) -> tuple[LedgerEntry, ModelVersion]:
        """Make ``params`` the new current model of the received request ``entry``.

        Re-checks first that this process still holds the run lock and that the current
        model is the one the request started from (raises LedgerError, nothing written,
        when not); then writes the version file, switches the pointer and marks the
        request done. Returns the done entry and the new version.
        """
        self._require_lock()
        self._check_unchanged(entry)
        version = write_version(
            self.run,
            self.ledger,
            params,
            entry,
            record,
            budget,
            before_switch=lambda: self._check_unchanged(entry),
        )
        self.current = self.pointer = version
        return self._complete(entry, version, record, budget), version

    def _check_unchanged(self, entry: LedgerEntry) -> None:
        """Raise LedgerError unless this process still holds the lock and the pointer is the
        one read when the session opened, naming the model ``entry`` started from."""
        assert self.lock is not None
        self.lock.check()
        now = read_pointer(self.run)
        if now != self.pointer or entry.model_sha256_before != self.current.sha256:
            held = now.sha256 if now is not None else original_version(self.run).sha256
            raise LedgerError(
                f"the run's current model changed while request {entry.request_id} was served (it started "
                f"from {str(entry.model_sha256_before)[:12]}, the run now holds {held[:12]}): another "
                "command changed the run; nothing was committed. Send the request again"
            )

    def _complete(
        self, entry: LedgerEntry, version: ModelVersion, record: dict[str, Any] | None, budget: float | None
    ) -> LedgerEntry:
        try:
            return self.ledger.complete(entry.request_id, version.sha256, version.version, record, budget)
        except LedgerError as exc:
            exc.add_note(
                f"the new model version {version.version} is already current; the request stays "
                "'received' and the next command on this run marks it done"
            )
            raise

    def complete_unchanged(self, entry: LedgerEntry, record: dict[str, Any]) -> LedgerEntry:
        """Mark ``entry`` done without a new model (every id was already forgotten)."""
        self._require_lock()
        return self.ledger.complete(entry.request_id, self.current.sha256, self.current.version, record, 0.0)

    def fail(self, entry: LedgerEntry, reason: str) -> str | None:
        """Record ``entry`` as failed with ``reason`` unless its model already became current.

        A version file it wrote that never became current is deleted first (it holds a
        record the ledger will not have as done). Returns a note to add to the error when
        the ledger could not be written (the request then stays received and the next
        command settles it), else None.
        """
        try:
            pointer = read_pointer(self.run)
        except RunDirError:
            pointer = None
        if pointer is not None and pointer.request_id == entry.request_id:
            return None
        try:
            if self.lock is not None:
                self.lock.check()  # never delete by path in a directory that is no longer the locked one
            for number, file in version_files(self.run).items():
                if number > self.current.version and record_request(file) == entry.request_id:
                    file.unlink(missing_ok=True)
        except LedgerError as lost:
            return f"{lost}; files written by this command were left in place"
        try:
            self.ledger.fail(entry.request_id, reason)
        except (LedgerError, OSError) as again:
            return (
                f"the ledger could not record the failure either ({again}); the request stays 'received' "
                "and the next forget on this run marks it failed"
            )
        return None


def restore_current(run: Run, *, lock_timeout: float = 0.0) -> ModelVersion:
    """Rewrite current.json (under the run lock) to name the version the ledger records as
    current, after checking the versions and the chain of done requests; return it.

    Raises CurrentModelLost when that version's file is missing or altered, RunDirError
    when the ledger is older than the versions or its chain is broken (nothing is written).
    """
    with run_lock(run.path, timeout=lock_timeout), open_ledger(run) as ledger:
        refuse_newer_records(run, ledger)
        broken = chain_problems(run, ledger) or record_problems(run, ledger)
        if broken:
            raise RunDirError(broken[0])
        expected = expected_version(run, ledger)
        refuse_newer_pointer(run, expected)
        version = check_file(run, expected)
        atomic_write_json(run.path / CURRENT_FILE, version.__dict__)
        return version


def _checked(run: Run, ledger: Ledger, allow_lost_model: bool, messages: list[str]) -> ModelVersion:
    """:func:`check_state`; with ``allow_lost_model``, a lost current model gives the version
    the ledger records instead (the reason appended to ``messages``)."""
    try:
        return check_state(run, ledger)
    except CurrentModelLost as exc:
        if not allow_lost_model:
            raise
        messages.append(f"{exc}; retraining rebuilds it from the ledger")
        return expected_version(run, ledger)


def rebuild_ledger_locked(run: Run, *, lock_timeout: float = 0.0) -> list[str]:
    """Rebuild a lost ledger from the request records inside the model versions, under the
    run lock (see :func:`miniunlearn.versions.rebuild_ledger`); return one line per request."""
    with run_lock(run.path, timeout=lock_timeout):
        return rebuild_ledger(run)


def ledger_records(run: Run) -> tuple[list[dict[str, Any]], str | None]:
    """Every ledger record of ``run`` (as JSON-able dicts, in the order received) and, when
    the records disagree with the run's pointer or model versions, why (else None). Unlike
    every other way in, it lists a ledger that disagrees: that is how a problem is diagnosed."""
    disagreement = None
    try:
        with open_session(run, write=False):
            pass
    except (RunDirError, CurrentModelLost) as exc:
        disagreement = str(exc)
    with open_ledger(run) as ledger:
        return ledger.to_json_records(), disagreement


@contextlib.contextmanager
def open_session(
    run: Run | str | os.PathLike[str],
    *,
    write: bool,
    lock_timeout: float = 0.0,
    device: str | torch.device = "cpu",
    allow_lost_model: bool = False,
) -> Iterator[RunSession]:
    """Open the deletion state of a run (a :class:`Run` or its directory) for one command.

    ``write``: take the run lock (waiting up to ``lock_timeout`` seconds), settle
    interrupted requests and clear junk; read-only sessions take no lock and change
    nothing. ``allow_lost_model``: when the current model is lost (CurrentModelLost),
    still open, with ``current`` the version the ledger records (for a retraining that
    rebuilds it); the reason is the first message. Yields the checked session; raises
    RunDirError, CurrentModelLost or LedgerError, saying how to recover, when the state
    does not agree.
    """
    run = run if isinstance(run, Run) else open_run(run, device=device)
    with contextlib.ExitStack() as stack:
        lock = stack.enter_context(run_lock(run.path, timeout=lock_timeout)) if write else None
        ledger = stack.enter_context(open_ledger(run))
        messages: list[str] = []
        current = _checked(run, ledger, allow_lost_model, messages)  # before settling changes anything
        if write and ledger.pending():  # settling changes the state: check it again after
            messages = settle(run, ledger)
            current = _checked(run, ledger, allow_lost_model, messages)
        if write:
            remove_junk(run, current, ledger)
        yield RunSession(run, ledger, current, read_pointer(run), lock, messages)
