"""Deletion requests as a workflow: ledger, model versions, error budget, crash recovery.

A request goes through these steps, each durable before the next begins:

1. take the run's lock (a second ``forget`` waits or fails clearly);
2. settle requests an interrupted run left ``received`` (complete them if their model
   version is already current, otherwise mark them ``failed``), then check that the
   ledger, ``current.json`` and the model versions agree (:mod:`miniunlearn.versions`);
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

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .device import device_scope
from .errors import ConfigError, CurrentModelLost, ForgetRequestError, HistoryError, LedgerError, RunDirError
from .ids import ids_digest, normalize_ids, validate_forget_ids
from .ledger import Ledger, LedgerEntry, run_lock
from .methods import UnlearnRequest, get_method
from .training.retrain import retrain
from .training.rundir import Run, open_run
from .versions import (
    CRASH_ENV,
    CURRENT_FILE,
    ModelVersion,
    crash_point,
    current_version,
    expected_version,
    load_version_params,
    open_ledger,
    read_pointer,
    remove_orphans,
    write_version,
)

__all__ = [
    "CRASH_ENV",
    "CURRENT_FILE",
    "DEFAULT_MAX_APPROX_RATIO",
    "ForgetOutcome",
    "ModelVersion",
    "current_version",
    "failure_reason",
    "forget",
    "load_version_params",
    "open_ledger",
    "read_ids_file",
    "recover_pending",
    "retrain_all",
]

DEFAULT_MAX_APPROX_RATIO = 0.5


def _budget_of(run: Run, method: str, new_ids: int) -> float:
    """Error budget a request spends: the fraction of the data an approximate method removed."""
    return 0.0 if method == "retrain" else new_ids / run.n_train


def recover_pending(run: Run, ledger: Ledger) -> tuple[list[str], ModelVersion]:
    """Settle requests an interrupted run left ``received``, check that current.json, the
    model versions and the ledger agree (see :func:`current_version`), and remove files a
    killed run left behind; return (one message per settled request, the checked current
    version)."""
    messages = []
    pointer = read_pointer(run)
    for entry in ledger.pending():
        if pointer is not None and pointer.request_id == entry.request_id:
            new = np.setdiff1d(entry.ids, ledger.forgotten_ids()).size
            ledger.complete(
                entry.request_id,
                pointer.sha256,
                pointer.version,
                {"recovered": True},
                _budget_of(run, entry.method, new),
            )
            messages.append(
                f"request {entry.request_id}: completed (its model version {pointer.version} "
                "was already in place when the previous run stopped)"
            )
        else:
            ledger.fail(
                entry.request_id,
                "interrupted before its model version was written; the previous "
                "model is intact. Send the request again to retry it",
            )
            messages.append(
                f"request {entry.request_id}: marked failed (interrupted before its model was "
                "written; the previous model is intact)"
            )
    current = current_version(run, ledger)
    remove_orphans(run, current, ledger)
    return messages, current


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


def _recordable(ids: Any) -> np.ndarray:
    """The ids of a refused request as far as they are integers (empty when they are not)."""
    try:
        return normalize_ids(ids)
    except ForgetRequestError:
        return np.zeros(0, np.int64)


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
    device: str | torch.device = "cpu",
) -> ForgetOutcome:
    """Serve one deletion request on the run at ``run_dir``; return what was done.

    ``ids``: training-sample ids to forget. ``method``/``options``: the unlearning
    method. ``request_id``: idempotency key (re-sending a done request is a no-op).
    ``retrain_now``: serve it by retraining from scratch. ``max_approx_ratio``: error
    budget in [0, 1], the fraction of the training set approximate methods may remove
    between exact retrainings. ``lock_timeout``: seconds to wait for another forget.
    ``device``: where the unlearning computes (``cpu``, ``cuda``, ``auto``).
    Raises ForgetRequestError (recorded as ``refused``) for ids outside the training
    set, an empty request, or one that would leave no training data; a failure while
    unlearning marks the request ``failed`` and leaves the current model in place.
    """
    if not 0.0 <= max_approx_ratio <= 1.0:
        raise ConfigError(f"--max-approx-ratio must be in [0, 1], got {max_approx_ratio}")
    run = open_run(run_dir, device=device)
    options = dict(options or {})
    get_method(method, **options)  # reject unknown methods and options before anything is written
    with device_scope(run.device), run_lock(run.path, timeout=lock_timeout), open_ledger(run) as ledger:
        messages, current = recover_pending(run, ledger)
        previous = ledger.get(request_id) if request_id else None
        forgotten = ledger.forgotten_ids()
        try:
            asked = validate_forget_ids(ids, run.n_train)
            if run.n_train - np.union1d(forgotten, asked).size == 0:
                raise ForgetRequestError(
                    "the request would forget every remaining training sample; nothing would be left to learn"
                )
        except ForgetRequestError as exc:
            if previous is None:
                ledger.refuse(
                    _recordable(ids),
                    method,
                    f"{exc}. Nothing was changed",
                    request_id=request_id,
                    model_sha256_before=current.sha256,
                )
            raise
        if previous is not None and ids_digest(asked) != previous.ids_sha256:
            raise ForgetRequestError(
                f"request id {request_id!r} is already recorded with a different set of ids "
                f"({previous.state}); use a new request id"
            )
        if previous is not None and previous.state in ("done", "refused"):
            note = "was already done" if previous.state == "done" else f"was refused ({previous.reason})"
            return ForgetOutcome(
                f"already-{previous.state}",
                previous,
                current,
                np.zeros(0, np.int64),
                previous.metrics,
                messages + [f"request {request_id} {note}; nothing changed"],
            )

        new = np.setdiff1d(asked, forgotten)
        skipped = np.intersect1d(asked, forgotten)
        if skipped.size:
            messages.append(f"{skipped.size} id(s) were already forgotten by earlier requests; skipped")
        spent = ledger.error_budget_since_last_retrain() + _budget_of(run, method, new.size)
        run_method, run_options = method, options
        if method != "retrain" and (retrain_now or spent > max_approx_ratio):
            why = (
                "asked with --retrain-now"
                if retrain_now
                else f"error budget exceeded: {spent:.3f} of the training set removed approximately "
                f"since the last retraining > {max_approx_ratio}"
            )
            run_method, run_options = "retrain", {"use_cache": True, "instead_of": method, "reason": why}
            messages.append(f"served by retraining from scratch ({why})")
        elif previous is None:
            try:
                get_method(method, **options).check_run(run)
            except HistoryError as exc:
                ledger.refuse(
                    asked,
                    method,
                    f"{exc}. Nothing was changed",
                    request_id=request_id,
                    model_sha256_before=current.sha256,
                )
                raise

        if previous is not None:  # failed, or left pending by a crash: same ids, checked above
            entry = ledger.retry(previous.request_id, current.sha256, method=run_method, options=run_options)
        else:
            entry = ledger.receive(asked, run_method, run_options, current.sha256, request_id=request_id)
        if new.size == 0:
            entry = ledger.complete(
                entry.request_id,
                current.sha256,
                current.version,
                {"skipped_already_forgotten": int(skipped.size)},
                0.0,
            )
            return ForgetOutcome(
                "nothing-new",
                entry,
                current,
                skipped,
                None,
                messages + ["every id was already forgotten; the model is unchanged"],
            )

        crash_point("after-receive")
        try:
            method_options = {k: v for k, v in run_options.items() if k not in ("instead_of", "reason")}
            request = UnlearnRequest(
                run, new, previously_forgotten=forgotten, base_params=load_version_params(run, current)
            )
            result = get_method(run_method, **method_options).unlearn(request)
            if not torch.isfinite(result.params).all():
                raise ForgetRequestError(
                    f"method {run_method} produced non-finite parameters; the model "
                    "is unchanged. Try --retrain-now or another method"
                )
            record = {**result.record.to_dict(), "skipped_already_forgotten": int(skipped.size)}
            budget = _budget_of(run, run_method, new.size)
            version = write_version(run, ledger, result.params, entry, record, budget)
        except BaseException as exc:
            _mark_failed(run, ledger, entry, exc)
            raise
        entry = _complete(ledger, entry, version, record, budget)
        return ForgetOutcome("done", entry, version, skipped, record, messages)


def _complete(
    ledger: Ledger, entry: LedgerEntry, version: ModelVersion, record: dict[str, Any], budget: float
) -> LedgerEntry:
    """Mark ``entry`` done with its new model ``version``; when the ledger cannot be written,
    say that the model is already current and that the next command completes the request."""
    try:
        return ledger.complete(entry.request_id, version.sha256, version.version, record, budget)
    except LedgerError as exc:
        exc.add_note(
            f"the new model version {version.version} is already current; the request stays 'received' "
            "and the next command on this run marks it done"
        )
        raise


def _mark_failed(run: Run, ledger: Ledger, entry: LedgerEntry, exc: BaseException) -> None:
    """Record ``entry`` as failed because of ``exc`` unless its model already became current.

    When the ledger cannot be written either (a full disk, a read-only file), the entry
    stays ``received`` and the next command settles it; a note on ``exc`` says so.
    """
    try:
        pointer = read_pointer(run)
    except RunDirError:
        pointer = None
    if pointer is not None and pointer.request_id == entry.request_id:
        return
    try:
        ledger.fail(entry.request_id, failure_reason(exc))
    except (LedgerError, OSError) as again:
        exc.add_note(
            f"the ledger could not record the failure either ({again}); the request stays 'received' "
            "and the next forget on this run marks it failed"
        )


def failure_reason(exc: BaseException) -> str:
    """One line for the ledger saying why a request failed: the exception's type and the
    first line of its message (at most 500 characters); an interrupt says so plainly."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C / SIGINT) before the new model was written; the model is unchanged"
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:500]


def retrain_all(
    run_dir: str | os.PathLike[str],
    *,
    request_id: str | None = None,
    lock_timeout: float = 0.0,
    device: str | torch.device = "cpu",
) -> ForgetOutcome:
    """Retrain from scratch (on ``device``) without every forgotten id, as a ledger event;
    return the outcome.

    Resets the error budget. Raises ForgetRequestError when nothing was forgotten yet.
    """
    run = open_run(run_dir, device=device)
    with device_scope(run.device), run_lock(run.path, timeout=lock_timeout), open_ledger(run) as ledger:
        try:
            messages, current = recover_pending(run, ledger)
            before = current.sha256
        except CurrentModelLost as exc:
            # retraining needs only the ledger's ids, so it is also how a lost model is rebuilt
            messages = [f"{exc}; retraining rebuilds it from the ledger"]
            before = expected_version(run, ledger).sha256
        forgotten = ledger.forgotten_ids()
        if forgotten.size == 0:
            raise ForgetRequestError(
                "nothing has been forgotten on this run yet; retraining would reproduce the original model"
            )
        entry = ledger.receive_retrain(
            before, "asked with --retrain-now", ids=forgotten, request_id=request_id
        )
        try:
            started = time.perf_counter()
            params = retrain(run, forgotten)
            record = {
                "method": "retrain",
                "n_forget": int(forgotten.size),
                "time_s": time.perf_counter() - started,
            }
            version = write_version(run, ledger, params, entry, record, 0.0)
        except BaseException as exc:
            _mark_failed(run, ledger, entry, exc)
            raise
        entry = _complete(ledger, entry, version, record, 0.0)
        return ForgetOutcome("done", entry, version, np.zeros(0, np.int64), record, messages)


_DECIMAL_ID = re.compile(r"-?[0-9]+")


def read_ids_file(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one integer sample id per line (blank lines and ``#`` comments ignored; UTF-8,
    with or without a byte-order mark).

    Raises ForgetRequestError naming the first line that is not an integer.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8-sig")  # a leading byte-order mark is not part of an id
    except FileNotFoundError:
        raise ForgetRequestError(f"ids file {file} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ForgetRequestError(
            f"cannot read ids file {file} ({exc}); it must be a text file with one integer id per line"
        ) from None
    ids = []
    # Lines end at "\n" only (str.splitlines would also split at form feeds and other
    # separators), and an id is plain ASCII decimal digits: int() would also take "1_0",
    # "+3" and non-ASCII digits.
    for number, line in enumerate(text.split("\n"), start=1):
        entry = line.split("#", 1)[0].strip(" \t\r")
        if not entry:
            continue
        value = int(entry) if _DECIMAL_ID.fullmatch(entry) else None
        if value is None or not -(2**63) <= value < 2**63:
            shown = repr(line.strip())
            shown = shown if len(shown) <= 80 else f"{shown[:60]}... ({len(line.strip())} characters)"
            raise ForgetRequestError(
                f"{file}:{number}: {shown} is not an integer sample id; "
                "the file must hold one integer id per line"
            )
        ids.append(value)
    return np.asarray(ids, dtype=np.int64)
