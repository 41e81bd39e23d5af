"""The rules a run's deletion state keeps, as checks: do the ledger, ``current.json`` and
the model versions agree, and how requests an interrupted command left are settled.

Used by the run session (:mod:`.session`), which states the rules in its docstring.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import CurrentModelLost, LedgerError, RunDirError
from ..fileio import atomic_write_json, sha256_file
from ..ledger import Ledger, LedgerEntry
from ..training.rundir import Run
from ..versions import (
    CURRENT_FILE,
    ModelVersion,
    expected_version,
    original_version,
    read_pointer,
    recorded_numbers,
    remove_temp_files,
    version_files,
    version_number,
    version_path,
    version_record,
)


def record_request(file: Path) -> str | None:
    """The request id a version file carries (None when it carries no readable record)."""
    try:
        return str(version_record(file)["request_id"])
    except (LedgerError, KeyError):
        return None


def check_file(run: Run, version: ModelVersion) -> ModelVersion:
    """Return ``version`` after checking its file exists with its sha256.

    Raises CurrentModelLost when it is missing or altered: either way the current model is
    gone, and retraining from the ledger's ids rebuilds it.
    """
    file = run.path / version.path
    if not file.exists():
        state = "is missing"
    elif sha256_file(file) != version.sha256:
        state = "fails its sha256 check: it was altered"
    else:
        return version
    raise CurrentModelLost(
        f"model version {version.version} ({file}), the run's current model, {state}. Restore it from a "
        f"backup, or rebuild a model without every forgotten id with `miniunlearn forget {run.path} "
        "--retrain-now`"
    )


def chain_problems(run: Run, ledger: Ledger) -> list[str]:
    """Where done requests do not chain: the first must start from the run's original model
    and each later one from the model the one before it left. Returns one line each."""
    done = sorted((e for e in ledger.entries("done") if e.model_sha256_after), key=lambda e: e.done_seq or 0)
    problems = []
    previous_after, previous_id = original_version(run).sha256, "the run's original model"
    for entry in done:
        before = entry.model_sha256_before
        shown = before[:12] if before else "(none recorded)"
        if before != previous_after:
            if previous_id == "the run's original model":
                problems.append(
                    f"the ledger's first done request {entry.request_id} started from model {shown}, "
                    f"not from this run's original model {previous_after[:12]}: the ledger belongs to "
                    "another run. Restore this run's own ledger.sqlite"
                )
            else:
                problems.append(
                    f"request {entry.request_id} started from model {shown}, but the request done "
                    f"before it, {previous_id}, left {previous_after[:12]}: two commands changed the run at "
                    "once, or entries were edited. Restore the ledger and versions from a backup taken "
                    f"before {entry.request_id}, then send it again"
                )
        previous_after, previous_id = str(entry.model_sha256_after), f"request {entry.request_id}"
    return problems


def record_problems(run: Run, ledger: Ledger) -> list[str]:
    """Where a done request's version file carries another request than the ledger says
    produced it (another request id, other ids, another starting model). Reads only the
    files' headers. Returns one line each; a missing file is not reported here."""
    files = version_files(run)
    problems = []
    forgotten = np.zeros(0, np.int64)
    done = sorted(ledger.entries("done"), key=lambda e: e.done_seq or 0)
    done_bodies = {(e.request_id, e.ids_sha256, e.model_sha256_before) for e in done}
    for entry in done:
        earlier, forgotten = forgotten, np.union1d(forgotten, entry.ids)
        if entry.model_sha256_before == entry.model_sha256_after:
            new = np.setdiff1d(entry.ids, earlier)
            if new.size:  # a request that changed no model removed nothing new
                problems.append(
                    f"request {entry.request_id} left the model unchanged, but the ledger records ids no "
                    f"earlier request removed ({new.size}, first {new[:5].tolist()}): the ledger was edited. "
                    "Nothing was changed; restore the ledger from a backup, or move it aside and rebuild it "
                    f"with `miniunlearn ledger {run.path} --rebuild-from-versions`"
                )
            continue
        number = version_number(entry)
        if not number or number not in files:
            continue  # the original model, or a deleted file
        try:
            record = version_record(files[number])
        except LedgerError:
            continue  # written before versions carried their request
        ours = (entry.request_id, entry.ids_sha256, entry.model_sha256_before)
        theirs = (record.get("request_id"), record.get("ids_sha256"), record.get("model_sha256_before"))
        if theirs in done_bodies and theirs != ours:
            continue  # a copy of another version of this run: an altered file, which its sha256 check reports
        if ours != theirs:
            problems.append(
                f"model version {number} carries request {theirs[0]} (ids sha256 {str(theirs[1])[:12]}), but "
                f"the ledger says request {ours[0]} (ids sha256 {str(ours[1])[:12]}) produced it: the ledger "
                "or current.json comes from another copy of this run, or the ledger was edited. Nothing was "
                "changed; do not retrain now (that would retrain without the wrong ids). Restore the "
                "ledger.sqlite and current.json that belong with these versions, or move ledger.sqlite "
                f"aside and rebuild it with `miniunlearn ledger {run.path} --rebuild-from-versions`"
            )
    return problems


def _carries(file: Path, entry: LedgerEntry) -> bool:
    """Whether version ``file`` records request ``entry`` with the same ids."""
    try:
        record = version_record(file)
    except LedgerError:
        return False
    return record.get("request_id") == entry.request_id and record.get("ids_sha256") == entry.ids_sha256


def refuse_newer_records(run: Run, ledger: Ledger) -> list[tuple[int, Path, LedgerEntry]]:
    """Check every version file against the ledger; return the files of ``received``
    requests not yet current (what settling may roll forward).

    Raises RunDirError for a file carrying a request the ledger does not have as done
    with that version: the ledger is older than the versions. Files without a readable
    record are skipped (older versions, or junk that :func:`remove_junk` clears).
    """
    known = recorded_numbers(ledger)
    pending, newer = [], []
    for number, file in sorted(version_files(run).items()):
        if number in known:
            continue
        request_id = record_request(file)
        if request_id is None:
            continue
        entry = ledger.get(request_id)
        if entry is not None and entry.state == "received" and _carries(file, entry):
            pending.append((number, file, entry))
        elif entry is not None and entry.state == "received":
            newer.append(f"v{number} (request {request_id}, made with other ids than the ledger's)")
        else:
            state = "" if entry is None else f", which the ledger records as {entry.state}"
            newer.append(f"v{number} (request {request_id}{state})")
    if newer:
        listed = ", ".join(newer[:5])
        raise RunDirError(
            f"model version(s) {listed} hold requests newer than the ledger's record of them: the "
            "ledger is older than the model versions (restored from a backup?), and going on would let "
            "forgotten samples come back. Nothing was changed. Restore the newest ledger backup, or move "
            f"ledger.sqlite aside and rebuild it from the versions with `miniunlearn ledger {run.path} "
            "--rebuild-from-versions`"
        )
    return pending


def refuse_newer_pointer(run: Run, expected: ModelVersion) -> None:
    """Raise RunDirError when ``current.json`` names a later version than the ledger records
    (``expected``): the ledger, not the pointer, is the older copy, and pointing current.json
    back would undo the newer request. An unreadable or missing pointer passes."""
    try:
        pointer = read_pointer(run)
    except RunDirError:
        return
    if pointer is not None and pointer.version > expected.version:
        raise RunDirError(
            f"current.json names model version {pointer.version} (request {pointer.request_id}), newer than "
            f"the version {expected.version} the ledger records: the ledger is the older copy (restored "
            f"from a backup?), and pointing current.json back would undo request {pointer.request_id}. "
            "Nothing was changed. Restore the newest ledger.sqlite (and versions/), or move ledger.sqlite "
            f"aside and rebuild it with `miniunlearn ledger {run.path} --rebuild-from-versions`"
        )


def check_state(run: Run, ledger: Ledger) -> ModelVersion:
    """Return the run's current version after checking that the pointer, its file, the
    version files and the ledger agree (see the module docstring for the rules).

    Raises CurrentModelLost when the pointer or the current file is gone or altered,
    RunDirError for any other disagreement; both say how to recover.
    """
    refuse_newer_records(run, ledger)
    broken = chain_problems(run, ledger) or record_problems(run, ledger)
    if broken:
        raise RunDirError(broken[0])
    expected = expected_version(run, ledger)
    pointer = read_pointer(run)
    hint = f"`miniunlearn ledger {run.path} --restore-current`"
    if pointer is None:
        if expected.version == 0:
            return check_file(run, expected)
        raise CurrentModelLost(
            f"{run.path / CURRENT_FILE} is missing, so the run's current model is unknown; the ledger says "
            f"request {expected.request_id} left model version {expected.version} current. Point "
            f"current.json at it with {hint}"
        )
    if pointer == expected:
        return check_file(run, pointer)
    pending = {e.request_id: e for e in ledger.pending()}
    if pointer.request_id in pending and pointer.version > expected.version:
        # killed after the switch, before the ledger said done: the version must be that request's
        _require_made_by(run, pointer, pending[pointer.request_id], expected)
        return check_file(run, pointer)
    refuse_newer_pointer(run, expected)
    check_file(run, expected)  # the ledger's current model gone too: CurrentModelLost, retraining rebuilds it
    raise RunDirError(
        f"{run.path / CURRENT_FILE} names model version {pointer.version} (request {pointer.request_id}, "
        f"sha256 {pointer.sha256[:12]}), but the ledger's last done request {expected.request_id} left "
        f"version {expected.version} (sha256 {expected.sha256[:12]}) current: the two disagree. If "
        f"current.json was restored from an older backup, run {hint}; if the ledger is the older copy "
        "or comes from another run, restore the ledger that matches instead"
    )


def settle(run: Run, ledger: Ledger) -> list[str]:
    """Settle requests an interrupted command left ``received``; return one line each.

    Its model already current: marked done. Its version file written (killed before the
    switch) and made from the current model: rolled forward (the pointer moves to it) and
    marked done. Otherwise: marked failed (the previous model is intact).
    """
    messages = []
    rollable = {e.request_id: (n, f) for n, f, e in refuse_newer_records(run, ledger)}
    for entry in ledger.pending():
        pointer = read_pointer(run)
        base = pointer if pointer is not None else original_version(run)
        if pointer is not None and pointer.request_id == entry.request_id:
            _require_made_by(run, pointer, entry, expected_version(run, ledger))
            version = pointer
            how = "was already in place when the previous command stopped"
        elif entry.request_id in rollable and _rolls_forward(rollable[entry.request_id][1], entry, base):
            number, file = rollable[entry.request_id]
            version = ModelVersion(number, version_path(number), sha256_file(file), entry.request_id)
            atomic_write_json(run.path / CURRENT_FILE, version.__dict__)
            how = "was written before the previous command stopped; it is now current"
        else:
            ledger.fail(
                entry.request_id,
                "interrupted before its model version was written; the previous model is intact. "
                "Send the request again to retry it",
            )
            messages.append(
                f"request {entry.request_id}: marked failed (interrupted before its model was written; the "
                "previous model is intact)"
            )
            continue
        record = version_record(run.path / version.path)
        new = np.setdiff1d(entry.ids, ledger.forgotten_ids()).size
        budget = record.get("error_budget_used")
        ledger.complete(
            entry.request_id,
            version.sha256,
            version.version,
            record.get("metrics") or {"recovered": True},
            budget if budget is not None else new / run.n_train,
        )
        messages.append(f"request {entry.request_id}: completed (its model version {version.version} {how})")
    return messages


def _require_made_by(run: Run, pointer: ModelVersion, entry: LedgerEntry, last: ModelVersion) -> None:
    """Raise RunDirError unless the version ``pointer`` names is request ``entry``'s result
    (same ids, made from ``last``, the ledger's current version) and passes its sha256."""
    file = run.path / pointer.path
    try:
        record = version_record(file)
    except LedgerError:
        record = {}
    made = (
        record.get("ids_sha256") == entry.ids_sha256
        and record.get("model_sha256_before") == last.sha256 == entry.model_sha256_before
        and file.exists()
        and sha256_file(file) == pointer.sha256
    )
    if not made:
        raise RunDirError(
            f"current.json names model version {pointer.version} of request {entry.request_id}, but that "
            f"file was not made from the ledger's request {entry.request_id} (other ids, another starting "
            "model, or altered): the ledger is an older copy (restored from a backup?). Nothing was changed. "
            "Restore the newest ledger, or move ledger.sqlite aside and rebuild it with "
            f"`miniunlearn ledger {run.path} --rebuild-from-versions`"
        )


def _rolls_forward(file: Path, entry: LedgerEntry, base: ModelVersion) -> bool:
    """Whether a received request's version file is its finished result on the current model."""
    try:
        record = version_record(file)
    except LedgerError:
        return False
    number = int(file.name[1 : -len(".safetensors")])
    return (
        number > base.version
        and record.get("ids_sha256") == entry.ids_sha256
        and record.get("model_sha256_before") == base.sha256
        and entry.model_sha256_before == base.sha256
    )


def remove_junk(run: Run, current: ModelVersion, ledger: Ledger) -> None:
    """Delete temp files, and version files newer than the current one that carry no
    readable request record (nothing a deletion depends on). Files with a record are
    never deleted here."""
    kept = recorded_numbers(ledger)
    for number, file in version_files(run).items():
        if number > current.version and number not in kept and record_request(file) is None:
            file.unlink(missing_ok=True)
    remove_temp_files(run)
