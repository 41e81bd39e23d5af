"""Model versions of a run, the ``current.json`` pointer, and their agreement with the ledger.

Every served request writes ``versions/vN.safetensors``; ``current.json`` names the
version in use. The ledger records, for every done request, the number and sha256 of
the model it left current. This module reads and writes these files; whether they
agree is checked by the run session (:mod:`miniunlearn.deletion.session`), the one
owner of a run's deletion state.

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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from .errors import LedgerError, RunDirError
from .fileio import atomic_path, atomic_write_json, run_file, run_subdir, sha256_file
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
    """Return {number: path} of the version files present (temp files excluded).

    Raises RunDirError when ``versions/`` or a file in it is a symbolic link or not a
    regular file: nothing of the run is ever read from, written to or deleted in a
    place outside it.
    """
    folder = run_subdir(run.path, VERSIONS_DIR)
    if not folder.is_dir():
        return {}
    found = {}
    for file in folder.glob("v*.safetensors"):
        stem = file.name[1 : -len(".safetensors")]
        if stem.isdigit():
            found[int(stem)] = run_file(run.path, f"{VERSIONS_DIR}/{file.name}", f"model version {file.name}")
    return found


def original_version(run: Run) -> ModelVersion:
    """Return version 0: the model the run was trained to."""
    rows = run.files("model")
    if len(rows) != 1 or rows[0].get("path") != MODEL:
        raise RunDirError(
            f"{run.path / 'manifest.json'} lists {len(rows)} 'model' rows; a run has exactly one, for "
            f"{MODEL}. The manifest was edited or damaged: restore the run directory from a backup"
        )
    return ModelVersion(0, MODEL, rows[0]["sha256"])


def read_pointer(run: Run) -> ModelVersion | None:
    """Parse current.json (None when it does not exist); RunDirError when it is corrupt."""
    pointer = run_file(run.path, CURRENT_FILE, "pointer file")
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


def open_ledger(run: Run) -> Ledger:
    """Open the run's ledger; never create one (a run gets its ledger when it is trained).

    Raises LedgerError when it is missing, saying how to recover: restore it from a
    backup or rebuild it exactly from the model versions.
    """
    path = run_file(run.path, LEDGER_FILENAME, "ledger")
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


def _pack_ids(ids: np.ndarray) -> str:
    return base64.b64encode(zlib.compress(ids.astype("<i8").tobytes())).decode()


def _unpack_ids(text: str) -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype="<i8")


def _pack_entry(
    entry: LedgerEntry, metrics: dict[str, Any] | None, budget: float | None, members: list[LedgerEntry]
) -> str:
    """The done ledger entry a version file carries (a batch's with its ``members``: request
    id, ids, ids sha256 and time received each), as compressed JSON text."""
    record = entry.to_record(include_ids=False)
    record.update(state="done", metrics=metrics, error_budget_used=budget)
    record["completed_at"] = datetime.now(UTC).isoformat(timespec="microseconds")
    record["ids"] = _pack_ids(entry.ids)
    record["members"] = [
        {
            "request_id": m.request_id,
            "ids": _pack_ids(m.ids),
            "ids_sha256": m.ids_sha256,
            "received_at": m.received_at,
        }
        for m in members
    ]
    return base64.b64encode(zlib.compress(json.dumps(record, default=json_default).encode())).decode()


def _unpack_entry(text: str) -> dict[str, Any]:
    record = json.loads(zlib.decompress(base64.b64decode(text)))
    record["ids"] = _unpack_ids(record["ids"])
    record["members"] = [m | {"ids": _unpack_ids(m["ids"])} for m in record.get("members") or ()]
    return record


def write_version(
    run: Run,
    ledger: Ledger,
    params: torch.Tensor,
    entry: LedgerEntry,
    metrics: dict[str, Any] | None,
    budget: float | None,
    *,
    before_switch: Callable[[], None] = lambda: None,
) -> ModelVersion:
    """Write ``params`` as the next model version of request ``entry`` and make it current.

    The file carries the entry as it will be once done (with ``metrics`` and
    ``budget``, and a batch's members), so the ledger can be rebuilt from the files. The number is one
    past every number ever used; the file is complete on disk before current.json
    is switched to it; ``before_switch`` runs just before the switch and may raise to
    stop it. Returns the new version.
    """
    number = next_version_number(run, ledger)
    rel = version_path(number)
    run_subdir(run.path, VERSIONS_DIR, create=True)
    meta = {
        "format": "miniunlearn-model",
        "version": str(number),
        _RECORD_KEY: _pack_entry(entry, metrics, budget, ledger.members(entry.request_id)),
    }
    with atomic_path(run.path / rel) as tmp:
        save_params(tmp, run.objective, params, meta)
        crash_point("writing-version")
    crash_point("after-version")
    before_switch()
    version = ModelVersion(number, rel, sha256_file(run.path / rel), entry.request_id)
    atomic_write_json(run.path / CURRENT_FILE, version.__dict__)
    crash_point("after-current")
    return version


def remove_temp_files(run: Run) -> None:
    """Delete the temp files a killed command left in ``versions/``."""
    folder = run_subdir(run.path, VERSIONS_DIR)
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
    if top and top not in files:
        raise LedgerError(
            f"current.json names model version {top} (request {pointer.request_id}), whose file is missing: "
            "the versions folder is older than current.json (restored from a backup?), and rebuilding "
            f"without v{top} would drop that request. Restore the newest versions/ folder and run this again"
        )
    beyond = [n for n in files if n > top]
    if beyond:
        last = max(beyond)
        named = {"version": last, "path": version_path(last), "sha256": sha256_file(files[last])}
        named["request_id"] = str(version_record(files[last])["request_id"])
        raise LedgerError(
            f"model version(s) {', '.join(f'v{n}' for n in sorted(beyond))} are newer than v{top}, the one "
            "current.json names. Most likely current.json is older than the versions (restored from a "
            f"backup): restore the newest current.json, or write it as {json.dumps(named)}, and run this "
            f"again. Only if you know the newest request was killed before its model became current (it "
            f"was never reported done), delete {files[last]} instead: deleting a version that was served "
            "would bring its forgotten ids back"
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
        last = max(files) if files else 0
        named = {"version": last, "path": version_path(last), "sha256": before}
        named["request_id"] = records[-1]["request_id"] if records else None
        raise LedgerError(
            f"current.json names a model ({pointer.sha256[:12]}) that is not the last version "
            f"v{last} ({before[:12]}): it belongs to another copy of this run, or to an older state. "
            f"Restore this run's own current.json, or write it as {json.dumps(named)} and run this again"
        )
    Ledger.build(path, records)
    lines = [
        f"restored request {r['request_id']} -> model version {r['model_version']}"
        + (f" (a batch of {len(r['members'])} requests)" if r.get("members") else "")
        for r in records
    ]
    return [
        *lines,
        f"ledger rebuilt with {len(records)} done request(s); refused, failed and no-change requests "
        "leave no model version and could not be restored",
    ]
