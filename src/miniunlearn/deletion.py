"""Deletion requests as a workflow: ledger, model versions, error budget, crash recovery.

A request goes through these steps, each durable before the next begins:

1. take the run's lock (a second ``forget`` waits or fails clearly);
2. settle requests an interrupted run left ``received`` (complete them if their model
   version is already current, otherwise mark them ``failed``);
3. record the request as ``received`` in the ledger (or ``refused`` with the reason);
4. unlearn from the current model version;
5. write ``versions/vN.safetensors`` (temp file, fsync, rename), then switch
   ``current.json`` to it the same way -- that rename is the commit point;
6. mark the request ``done`` with the new model's hash and the method's record.

Killing the process anywhere leaves the previous model current and the ledger
consistent. Approximate methods spend an error budget (the fraction of the training
set they removed since the last exact retraining); past ``max_approx_ratio`` the
request is served by retraining from scratch instead, and recorded as such.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ForgetRequestError, RunDirError
from .fileio import atomic_path, atomic_write_json, sha256_file
from .ids import ids_digest, normalize_ids
from .ledger import Ledger, LedgerEntry, run_lock
from .methods import UnlearnRequest, get_method
from .training.retrain import retrain
from .training.rundir import MODEL, Run, load_params, open_run, save_params

CRASH_ENV = "MINIUNLEARN_CRASH_AT"
VERSIONS_DIR = "versions"
CURRENT_FILE = "current.json"
DEFAULT_MAX_APPROX_RATIO = 0.5


def _crash_point(name: str) -> None:
    """Kill this process (SIGKILL) when $MINIUNLEARN_CRASH_AT names this point.

    Used by the crash-safety tests to stop ``forget`` between its durable steps;
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


def current_version(run: Run) -> ModelVersion:
    """Return the run's current model version (the original model when none was written).

    Raises RunDirError when current.json is corrupt or names a missing or altered file.
    """
    pointer = run.path / CURRENT_FILE
    if not pointer.exists():
        (entry,) = run.files("model")
        return ModelVersion(0, MODEL, entry["sha256"])
    try:
        data = json.loads(pointer.read_text())
        version = ModelVersion(int(data["version"]), str(data["path"]), str(data["sha256"]), data.get("request_id"))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise RunDirError(f"{pointer} is corrupt ({exc}); restore it from a backup or delete it to "
                          "fall back to the original model (the ledger keeps every forgotten id)") from exc
    file = run.path / version.path
    if not file.exists():
        raise RunDirError(f"model version {version.version} ({file}) named by {pointer} is missing")
    if sha256_file(file) != version.sha256:
        raise RunDirError(f"model version {version.version} ({file}) fails its sha256 check: it was altered")
    return version


def load_version_params(run: Run, version: ModelVersion) -> torch.Tensor:
    """Return the flat parameters of a model version."""
    return load_params(run.path / version.path, run.objective)


def write_version(run: Run, params: torch.Tensor, request_id: str | None) -> ModelVersion:
    """Write ``params`` as the next model version and make it current; return it.

    The model file is complete on disk before current.json is switched to it.
    """
    number = current_version(run).version + 1
    rel = f"{VERSIONS_DIR}/v{number}.safetensors"
    with atomic_path(run.path / rel) as tmp:
        save_params(tmp, run.objective, params, {"format": "miniunlearn-model", "version": str(number)})
        _crash_point("writing-version")
    _crash_point("after-version")
    version = ModelVersion(number, rel, sha256_file(run.path / rel), request_id)
    atomic_write_json(run.path / CURRENT_FILE, version.__dict__)
    _crash_point("after-current")
    return version


def _remove_orphans(run: Run, current: ModelVersion) -> None:
    """Delete version files newer than the current one and temp files left by a killed run."""
    folder = run.path / VERSIONS_DIR
    if not folder.is_dir():
        return
    for file in folder.iterdir():
        stem = file.name.removeprefix("v").split(".")[0]
        if file.name.endswith(".tmp") or (stem.isdigit() and int(stem) > current.version):
            file.unlink(missing_ok=True)


def recover_pending(run: Run, ledger: Ledger) -> list[str]:
    """Settle requests an interrupted run left ``received``; return one message per request."""
    messages = []
    current = current_version(run)
    for entry in ledger.pending():
        if current.request_id == entry.request_id:
            ledger.complete(entry.request_id, current.sha256, current.version, {"recovered": True},
                            entry.error_budget_used or (0.0 if entry.is_retrain else entry.n_ids / run.n_train))
            messages.append(f"request {entry.request_id}: completed (its model version {current.version} "
                            "was already in place when the previous run stopped)")
        else:
            ledger.fail(entry.request_id, "interrupted before its model version was written; the previous "
                        "model is intact. Send the request again to retry it")
            messages.append(f"request {entry.request_id}: marked failed (interrupted before its model was "
                            "written; the previous model is intact)")
    _remove_orphans(run, current)
    return messages


@dataclass
class ForgetOutcome:
    """What a forget call did.

    ``status``: ``done`` (a new model version), ``already-done`` (the request id was
    done before: nothing changed), ``nothing-new`` (every id was already forgotten).
    """

    status: str
    entry: LedgerEntry
    version: ModelVersion
    skipped_ids: np.ndarray
    record: dict[str, Any] | None
    messages: list[str] = field(default_factory=list)


def _retain_left(run: Run, forgotten: np.ndarray, new: np.ndarray) -> int:
    return run.n_train - int(np.union1d(forgotten, new).size)


def forget(
    run_dir: str | os.PathLike[str],
    ids: Any,
    *,
    method: str = "mini",
    options: dict[str, Any] | None = None,
    request_id: str | None = None,
    retrain_now: bool = False,
    max_approx_ratio: float = DEFAULT_MAX_APPROX_RATIO,
    lock_timeout: float = 0.0,
) -> ForgetOutcome:
    """Serve one deletion request on the run at ``run_dir``; return what was done.

    ``ids``: training-sample ids to forget. ``method``/``options``: the unlearning
    method. ``request_id``: idempotency key (re-sending a done request is a no-op).
    ``retrain_now``: serve it by retraining from scratch. ``max_approx_ratio``: error
    budget, the fraction of the training set approximate methods may remove between
    exact retrainings. ``lock_timeout``: seconds to wait for another forget to finish.
    Raises ForgetRequestError (recorded as ``refused``) for ids outside the training
    set or a request that would leave no training data.
    """
    run = open_run(run_dir)
    options = dict(options or {})
    get_method(method, **options)  # reject unknown methods and options before anything is written
    with run_lock(run.path, timeout=lock_timeout), Ledger.open(run.path) as ledger:
        messages = recover_pending(run, ledger)
        current = current_version(run)
        try:
            asked = normalize_ids(ids)
        except ForgetRequestError as exc:
            ledger.refuse([], method, str(exc), request_id=request_id, model_sha256_before=current.sha256)
            raise
        previous = ledger.get(request_id) if request_id else None
        if previous is not None and previous.state == "done":
            if ids_digest(asked) != previous.ids_sha256:
                raise ForgetRequestError(f"request id {request_id!r} was done with a different set of ids; "
                                         "use a new request id")
            return ForgetOutcome("already-done", previous, current, np.zeros(0, np.int64), previous.metrics,
                                 messages + [f"request {request_id} was already done; nothing changed"])
        bad = asked[(asked < 0) | (asked >= run.n_train)]
        forgotten = ledger.forgotten_ids()
        reason = None
        if asked.size == 0:
            reason = "the forget set is empty: give at least one sample id"
        elif bad.size:
            shown = ", ".join(str(int(b)) for b in bad[:5]) + (" ..." if bad.size > 5 else "")
            reason = (f"{bad.size} id(s) are not in the training set (valid ids are 0..{run.n_train - 1}): "
                      f"{shown}. Nothing was changed")
        elif _retain_left(run, forgotten, asked) == 0:
            reason = "the request would forget every remaining training sample; nothing would be left to learn"
        if reason is not None:
            if previous is None or previous.state != "refused":
                ledger.refuse(asked, method, reason, request_id=request_id, model_sha256_before=current.sha256)
            raise ForgetRequestError(reason)

        new = np.setdiff1d(asked, forgotten)
        skipped = np.intersect1d(asked, forgotten)
        if skipped.size:
            messages.append(f"{skipped.size} id(s) were already forgotten by earlier requests; skipped")
        budget_spent = ledger.error_budget_since_last_retrain()
        run_method, run_options = method, options
        if method != "retrain" and (retrain_now or budget_spent + new.size / run.n_train > max_approx_ratio):
            why = ("asked with --retrain-now" if retrain_now else
                   f"error budget exceeded: {budget_spent + new.size / run.n_train:.3f} of the training set "
                   f"removed approximately since the last retraining > {max_approx_ratio}")
            run_method, run_options = "retrain", {"use_cache": True, "instead_of": method, "reason": why}
            messages.append(f"served by retraining from scratch ({why})")

        if previous is not None and previous.state in ("failed", "received"):
            ledger.retry(previous.request_id, current.sha256)
        entry = ledger.receive(asked, run_method, run_options, current.sha256, request_id=request_id)
        if new.size == 0:
            entry = ledger.complete(entry.request_id, current.sha256, current.version,
                                    {"skipped_already_forgotten": int(skipped.size)}, 0.0)
            return ForgetOutcome("nothing-new", entry, current, skipped, None,
                                 messages + ["every id was already forgotten; the model is unchanged"])

        _crash_point("after-receive")
        method_options = {k: v for k, v in run_options.items() if k not in ("instead_of", "reason")}
        unlearner = get_method(run_method, **method_options)
        request = UnlearnRequest(run, new, previously_forgotten=forgotten,
                                 base_params=load_version_params(run, current))
        result = unlearner.unlearn(request)
        if not torch.isfinite(result.params).all():
            ledger.fail(entry.request_id, f"method {run_method} produced non-finite parameters")
            raise ForgetRequestError(f"method {run_method} produced non-finite parameters; the model is "
                                     "unchanged. Try --retrain-now or another method")
        version = write_version(run, result.params, entry.request_id)
        record = {**result.record.to_dict(), "skipped_already_forgotten": int(skipped.size)}
        budget = 0.0 if run_method == "retrain" else new.size / run.n_train
        entry = ledger.complete(entry.request_id, version.sha256, version.version, record, budget)
        return ForgetOutcome("done", entry, version, skipped, record, messages)


def retrain_all(run_dir: str | os.PathLike[str], *, lock_timeout: float = 0.0) -> ForgetOutcome:
    """Retrain from scratch without every forgotten id, as a ledger event; return the outcome.

    Resets the error budget. Raises ForgetRequestError when nothing was forgotten yet.
    """
    run = open_run(run_dir)
    with run_lock(run.path, timeout=lock_timeout), Ledger.open(run.path) as ledger:
        messages = recover_pending(run, ledger)
        current = current_version(run)
        forgotten = ledger.forgotten_ids()
        if forgotten.size == 0:
            raise ForgetRequestError("nothing has been forgotten on this run yet; retraining would "
                                     "reproduce the original model")
        entry = ledger.receive_retrain(current.sha256, "asked with --retrain-now", ids=forgotten)
        started = time.perf_counter()
        params = retrain(run, forgotten)
        record = {"method": "retrain", "n_forget": int(forgotten.size), "time_s": time.perf_counter() - started}
        version = write_version(run, params, entry.request_id)
        entry = ledger.complete(entry.request_id, version.sha256, version.version, record, 0.0)
        return ForgetOutcome("done", entry, version, np.zeros(0, np.int64), record, messages)


def read_ids_file(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one integer sample id per line (blank lines and ``#`` comments ignored).

    Raises ForgetRequestError naming the first line that is not an integer.
    """
    file = Path(path)
    if not file.exists():
        raise ForgetRequestError(f"ids file {file} does not exist")
    ids = []
    for number, line in enumerate(file.read_text().splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            ids.append(int(text))
        except ValueError:
            raise ForgetRequestError(f"{file}:{number}: {line.strip()!r} is not an integer sample id; "
                                     "the file must hold one integer id per line") from None
    return np.asarray(ids, dtype=np.int64)
