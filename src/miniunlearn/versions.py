"""Model versions of a run, the ``current.json`` pointer, and their agreement with the ledger.

Every served request writes ``versions/vN.safetensors``; ``current.json`` names the
version in use. The ledger records, for every done request, the number and sha256 of
the model it left current. None of the three is trusted on its own: before any
command uses the current model, :func:`current_version` checks that the pointer, the
file it names and the ledger's last done request agree, and refuses with a recovery
hint when they do not (a ``current.json`` restored from an old backup, a lost pointer,
a deleted version file).

Each version file also carries the ledger entry of the request that produced it
(request id, method, options, the ids, hashes, times), so that a lost ledger can be
rebuilt exactly from the files with :func:`rebuild_ledger`.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from .errors import CurrentModelLost, LedgerError, RunDirError
from .fileio import atomic_path, atomic_write_json, sha256_file
from .ledger import LEDGER_FILENAME, Ledger, LedgerEntry, json_default
from .training.history import read_metadata
from .training.rundir import MODEL, Run, load_params, save_params

CRASH_ENV = "MINIUNLEARN_CRASH_AT"
VERSIONS_DIR = "versions"
CURRENT_FILE = "current.json"
_RECORD_KEY = "request"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def crash_point(name: str) -> None:
    """Kill this process (SIGKILL) when $MINIUNLEARN_CRASH_AT names this point.

    Used by the crash-safety tests to stop a command between its durable steps;
    without the variable it does nothing.
    """
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class ModelVersion:
    """A model version of a run: its number (0 = original), relative path, sha256, request."""

    version: int
    path: str
    sha256: str
    request_id: str | None = None


def version_path(number: int) -> str:
    """Relative path of model version ``number`` (0 is the original model)."""
    return MODEL if number == 0 else f"{VERSIONS_DIR}/v{number}.safetensors"


def version_files(run: Run) -> dict[int, Path]:
    """Return {number: path} of the version files present (temp files excluded)."""
    folder = run.path / VERSIONS_DIR
    if not folder.is_dir():
        return {}
    found = {}
    for file in folder.glob("v*.safetensors"):
        stem = file.name[1 : -len(".safetensors")]
        if stem.isdigit():
            found[int(stem)] = file
    return found


def original_version(run: Run) -> ModelVersion:
    """Return version 0: the model the run was trained to."""
    (entry,) = run.files("model")
    return ModelVersion(0, MODEL, entry["sha256"])


def read_pointer(run: Run) -> ModelVersion | None:
    """Parse current.json (None when it does not exist); RunDirError when it is corrupt."""
    pointer = run.path / CURRENT_FILE
    if not pointer.exists():
        return None
    fix = f"point it at the version the ledger records with `miniunlearn ledger {run.path} --restore-current`"
    try:
        data = json.loads(pointer.read_text())
        version = ModelVersion(data["version"], data["path"], data["sha256"], data.get("request_id"))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        raise RunDirError(f"{pointer} is corrupt ({exc}); {fix}") from exc
    problem = _pointer_problem(version)
    if problem:
        raise RunDirError(f"{pointer} is corrupt ({problem}); {fix}")
    return version


def _pointer_problem(version: ModelVersion) -> str:
    """What is wrong with the fields of a parsed current.json ('' when nothing is)."""
    number = version.version
    if type(number) is not int or number < 0:
        return "its version is not a whole number >= 0"
    if version.path != version_path(number):
        return f"its path {version.path!r} is not {version_path(number)!r}, the file of version {number}"
    if not isinstance(version.sha256, str) or not _SHA256.fullmatch(version.sha256):
        return "its sha256 is not 64 hex digits"
    if number > 0 and not isinstance(version.request_id, str):
        return "its request_id is missing"
    return ""


def _check_file(run: Run, version: ModelVersion) -> ModelVersion:
    file = run.path / version.path
    if not file.exists():
        raise CurrentModelLost(
            f"model version {version.version} ({file}), the run's current model, is missing. Restore it "
            f"from a backup, or rebuild a model without every forgotten id with "
            f"`miniunlearn forget {run.path} --retrain-now`"
        )
    if sha256_file(file) != version.sha256:
        raise RunDirError(
            f"model version {version.version} ({file}) fails its sha256 check: it was altered. Restore it "
            f"from a backup, or rebuild a model with `miniunlearn forget {run.path} --retrain-now`"
        )
    return version


def open_ledger(run: Run) -> Ledger:
    """Open the run's ledger; never create one (a run gets its ledger when it is trained).

    Raises LedgerError when it is missing, saying how to recover: restore it from a
    backup or rebuild it exactly from the model versions.
    """
    path = run.path / LEDGER_FILENAME
    if not path.exists():
        had = (
            "holds model versions, so requests were served" if version_files(run) else "has no model version"
        )
        raise LedgerError(
            f"{path} is missing: the record of what this run forgot is gone, and it is not recreated "
            f"silently (the run {had}). Restore it from a backup, or rebuild it from the request records "
            f"inside the model versions with `miniunlearn ledger {run.path} --rebuild-from-versions` "
            "(exact for every request that produced a model version; also what to run for a run "
            "trained before runs came with a ledger)"
        )
    return Ledger.open(run.path, create=False)


def version_number(entry: LedgerEntry) -> int | None:
    """The model version number a ledger entry records (None when it records none)."""
    return int(entry.model_version) if str(entry.model_version).isdigit() else None


def recorded_numbers(ledger: Ledger) -> set[int]:
    """The version numbers the ledger's done requests record."""
    return {n for e in ledger.entries("done") if (n := version_number(e)) is not None}


def expected_version(run: Run, ledger: Ledger) -> ModelVersion:
    """Return the version the ledger says is current: the one its last done request left.

    Version 0 (the original model) when no request is done. Requests that changed
    nothing record the version that was already current, so they agree too.
    """
    done = [e for e in ledger.entries("done") if version_number(e) is not None and e.model_sha256_after]
    if not done:
        return original_version(run)
    last = max(done, key=lambda e: e.done_seq or 0)
    number = version_number(last)
    if not number:
        return original_version(run)
    after = last.model_sha256_after
    made = [e for e in done if version_number(e) == number and e.model_sha256_after == after]
    producer = min(made, key=lambda e: e.done_seq or 0)  # not a later request that changed nothing
    return ModelVersion(number, version_path(number), str(after), producer.request_id)


def unrecorded_versions(run: Run, ledger: Ledger) -> list[tuple[int, str]]:
    """Return (number, request id) of every version file whose request the ledger does not
    record as having made it: what a ledger older than the model versions misses.

    A file the ledger records (a done request with that version number) is fine, and so is
    one left by a request the ledger holds as ``received`` or ``failed`` (killed before its
    model became current). Files written before versions carried their request are skipped.
    """
    known = recorded_numbers(ledger)
    missing = []
    for number, file in sorted(version_files(run).items()):
        if number in known:
            continue
        try:
            request_id = str(version_record(file)["request_id"])
        except LedgerError:
            continue
        entry = ledger.get(request_id)
        if entry is None or entry.state not in ("received", "failed"):
            missing.append((number, request_id))
    return missing


def _refuse_unrecorded(run: Run, ledger: Ledger) -> None:
    missing = unrecorded_versions(run, ledger)
    if missing:
        listed = ", ".join(f"v{n} (request {r})" for n, r in missing[:5])
        raise RunDirError(
            f"model version(s) {listed} hold requests that the ledger does not record as done: the "
            "ledger is older than the model versions (restored from a backup?) and would let forgotten "
            "samples come back. Restore the newest ledger backup, or move ledger.sqlite aside and rebuild "
            f"it from the versions with `miniunlearn ledger {run.path} --rebuild-from-versions`"
        )


def current_version(run: Run, ledger: Ledger | None = None) -> ModelVersion:
    """Return the run's current model version after checking it against the ledger
    (``ledger``, or the run's own opened for the check).

    ``current.json`` must name the version the ledger's last done request left (or,
    right after a crash, the version of a request still ``received``), that file must
    exist with its sha256, and every version file must be a request the ledger knows.
    Raises CurrentModelLost when the pointer or the file is gone, RunDirError for any
    other disagreement; both say how to recover.
    """
    if ledger is None:
        with open_ledger(run) as own:
            return current_version(run, own)
    _refuse_unrecorded(run, ledger)
    expected = expected_version(run, ledger)
    pointer = read_pointer(run)
    hint = f"`miniunlearn ledger {run.path} --restore-current`"
    if pointer is None:
        if expected.version == 0:
            return _check_file(run, expected)
        raise CurrentModelLost(
            f"{run.path / CURRENT_FILE} is missing, so the run's current model is unknown; the ledger says "
            f"request {expected.request_id} left model version {expected.version} current. Point "
            f"current.json at it with {hint}"
        )
    if pointer == expected:
        return _check_file(run, pointer)
    pending = {e.request_id for e in ledger.pending()}
    if pointer.request_id in pending and pointer.version > expected.version:
        return _check_file(run, pointer)  # killed after the switch, before the ledger said done
    raise RunDirError(
        f"{run.path / CURRENT_FILE} names model version {pointer.version} (request {pointer.request_id}), "
        f"but the ledger's last done request {expected.request_id} left version {expected.version} "
        f"current: the two disagree. If current.json was restored from an older backup, run {hint}; "
        "if the ledger is the older copy, restore the ledger that matches instead"
    )


def version_of(run: Run, entry: LedgerEntry) -> ModelVersion:
    """Return the model version a done request left current, checked against its file.

    Raises RunDirError when the request is not done, or its version file is missing or
    fails the sha256 the ledger recorded.
    """
    number = version_number(entry)
    if entry.state != "done" or number is None or not entry.model_sha256_after:
        raise RunDirError(f"request {entry.request_id} is {entry.state}; it left no model version")
    version = ModelVersion(number, version_path(number), entry.model_sha256_after, entry.request_id)
    file = run.path / version.path
    if not file.exists():
        raise RunDirError(
            f"model version {number} ({file}) of request {entry.request_id} is missing; restore it from a "
            "backup (the ledger records its sha256, so a restored file is checked)"
        )
    if sha256_file(file) != version.sha256:
        raise RunDirError(
            f"model version {number} ({file}) of request {entry.request_id} fails the sha256 the ledger "
            "recorded: it was altered after the request was served; restore it from a backup"
        )
    return version


def restore_current(run: Run, ledger: Ledger) -> ModelVersion:
    """Rewrite current.json to name the version the ledger records as current; return it.

    Raises CurrentModelLost when that version's file is missing or RunDirError when it
    was altered (nothing is written then).
    """
    _refuse_unrecorded(run, ledger)
    version = _check_file(run, expected_version(run, ledger))
    atomic_write_json(run.path / CURRENT_FILE, version.__dict__)
    return version


def load_version_params(run: Run, version: ModelVersion) -> torch.Tensor:
    """Return the flat parameters of a model version."""
    return load_params(run.path / version.path, run.objective)


def next_version_number(run: Run, ledger: Ledger) -> int:
    """One past every version number ever used: on disk, in current.json or in the ledger."""
    used = [0, *version_files(run)]
    used += recorded_numbers(ledger)
    try:
        pointer = read_pointer(run)
    except RunDirError:
        pointer = None
    if pointer is not None:
        used.append(pointer.version)
    return max(used) + 1


def _pack_entry(entry: LedgerEntry, metrics: dict[str, Any] | None, budget: float | None) -> str:
    """The done ledger entry a version file carries, as compressed JSON text."""
    record = entry.to_record(include_ids=False)
    record.update(state="done", metrics=metrics, error_budget_used=budget)
    record["completed_at"] = datetime.now(UTC).isoformat(timespec="microseconds")
    record["ids"] = base64.b64encode(zlib.compress(entry.ids.astype("<i8").tobytes())).decode()
    return base64.b64encode(zlib.compress(json.dumps(record, default=json_default).encode())).decode()


def _unpack_entry(text: str) -> dict[str, Any]:
    record = json.loads(zlib.decompress(base64.b64decode(text)))
    record["ids"] = np.frombuffer(zlib.decompress(base64.b64decode(record["ids"])), dtype="<i8")
    return record


def write_version(
    run: Run,
    ledger: Ledger,
    params: torch.Tensor,
    entry: LedgerEntry,
    metrics: dict[str, Any] | None,
    budget: float | None,
) -> ModelVersion:
    """Write ``params`` as the next model version of request ``entry`` and make it current.

    The file carries the entry as it will be once done (with ``metrics`` and
    ``budget``), so the ledger can be rebuilt from the files. The number is one
    past every number ever used; the file is complete on disk before current.json
    is switched to it. Returns the new version.
    """
    number = next_version_number(run, ledger)
    rel = version_path(number)
    meta = {
        "format": "miniunlearn-model",
        "version": str(number),
        _RECORD_KEY: _pack_entry(entry, metrics, budget),
    }
    with atomic_path(run.path / rel) as tmp:
        save_params(tmp, run.objective, params, meta)
        crash_point("writing-version")
    crash_point("after-version")
    version = ModelVersion(number, rel, sha256_file(run.path / rel), entry.request_id)
    atomic_write_json(run.path / CURRENT_FILE, version.__dict__)
    crash_point("after-current")
    return version


def remove_orphans(run: Run, current: ModelVersion, ledger: Ledger) -> None:
    """Delete temp files and version files newer than the current one that no done request
    produced: what a killed run left before switching current.json."""
    kept = recorded_numbers(ledger)
    for number, file in version_files(run).items():
        if number > current.version and number not in kept:
            file.unlink(missing_ok=True)
    folder = run.path / VERSIONS_DIR
    if folder.is_dir():
        for tmp in folder.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


def version_record(file: Path) -> dict[str, Any]:
    try:
        with safe_open(str(file), framework="pt") as handle:
            meta = read_metadata(handle.metadata())
        return _unpack_entry(meta[_RECORD_KEY])
    except KeyError:
        raise LedgerError(
            f"{file} carries no request record (it was written by an older miniunlearn), so the "
            "ledger cannot be rebuilt exactly from the model versions; restore ledger.sqlite from a backup"
        ) from None
    except (SafetensorError, OSError, ValueError, zlib.error, json.JSONDecodeError) as exc:
        raise LedgerError(f"{file} is corrupt ({exc}); the ledger cannot be rebuilt from it") from exc


def rebuild_ledger(run: Run) -> list[str]:
    """Rebuild a lost ``ledger.sqlite`` from the request records inside the model versions.

    Exact for every done request that produced a model version: ids, method, options,
    hashes, metrics, error budget and order. Requests that were refused, failed or
    changed nothing left no version file, so they cannot be recovered (the message says
    so). Refuses (LedgerError) when a ledger exists, when a version lacks its record,
    when the versions do not chain (each starting from its predecessor's model), or when
    current.json is missing although versions exist. Returns one line per restored request.
    """
    path = run.path / LEDGER_FILENAME
    if path.exists():
        raise LedgerError(
            f"{path} exists; rebuilding would replace it. Move it aside first (`mv {path} {path}.old`)"
        )
    files = version_files(run)
    pointer = read_pointer(run)
    if files and pointer is None:
        last = max(files)
        record = version_record(files[last])
        named = {"version": last, "path": version_path(last), "sha256": sha256_file(files[last])}
        named["request_id"] = record["request_id"]
        raise LedgerError(
            f"{run.path / CURRENT_FILE} is missing too, so it cannot be told whether the last version, "
            f"v{last} (request {record['request_id']}), ever became current. If it did (current.json was "
            f"lost), write current.json as {json.dumps(named)} and run this again; if that request was "
            "killed "
            f"before its model became current (the run's first request, say), delete {files[last]} and run "
            "this again"
        )
    top = pointer.version if pointer is not None else 0
    beyond = [n for n in files if n > top]
    if beyond:
        raise LedgerError(
            f"model version(s) {', '.join(f'v{n}' for n in sorted(beyond))} are newer than v{top}, the one "
            "current.json names: current.json is older than the versions (restored from a backup?), or the "
            f"newest request was killed before its model became current. Restore the newest current.json, "
            f"or delete {files[max(beyond)]} if that request was interrupted, and run this again"
        )
    records, before = [], original_version(run).sha256
    for number in sorted(n for n in files if n <= top):
        record = version_record(files[number])
        if record["model_sha256_before"] != before:
            raise LedgerError(
                f"model version {number} was made from model {str(record['model_sha256_before'])[:12]}, "
                f"not from the version before it ({before[:12]}): a version is missing or foreign, so the "
                "ledger cannot be rebuilt exactly; restore it from a backup"
            )
        before = sha256_file(files[number])
        records.append(record | {"model_sha256_after": before, "model_version": number})
    if pointer is not None and pointer.sha256 != before:
        raise LedgerError(
            f"current.json names a model ({pointer.sha256[:12]}) that is not the last version "
            f"({before[:12]}); restore current.json or the ledger from a backup"
        )
    Ledger.build(path, records)
    lines = [f"restored request {r['request_id']} -> model version {r['model_version']}" for r in records]
    return [
        *lines,
        f"ledger rebuilt with {len(records)} done request(s); refused, failed and no-change requests "
        "leave no model version and could not be restored",
    ]
