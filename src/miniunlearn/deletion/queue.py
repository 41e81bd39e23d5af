"""A queue of deletion requests: submit returns at once, serve works through them.

``submit`` checks a request (its ids against the run, its request id against the ledger and
the queue) and writes it as one file under ``RUN_DIR/queue/`` (temp file, fsync, rename):
it never takes the run's lock, so it answers at once even while another command serves a
request. ``serve`` takes the queued requests in the order they arrived and serves each
through :func:`.workflow.forget` (ledger, model version, certificate), removing a queue file
only once the ledger holds the request's outcome. A killed ``serve`` loses nothing: the
request's file is still queued, and serving it again is idempotent (a done request id
reports the version it produced; a received one was settled by the next command).

New requests that ask for the same method and options are served as one batch
(:func:`.workflow.forget_batch`): one solve on the union of their ids and one model
version, the cost of one request; the ledger holds an entry for each request with exactly
its own ids, done with the batch's model, record and certificate. Requests the ledger
knows already, and those of a batch that was refused or failed, are served one by one.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ForgetRequestError, LedgerError, MiniUnlearnError, RunDirError
from ..fileio import atomic_write_json, run_subdir
from ..ids import ids_digest, validate_forget_ids
from ..ledger import BatchMember, Ledger, check_request_id
from ..methods import get_method
from ..training.rundir import open_run
from .budget import DEFAULT_MAX_APPROX_RATIO
from .session import open_session
from .workflow import ForgetOutcome, conflicting_ids, forget, forget_batch, new_batch_id

QUEUE_DIR = "queue"
FORMAT = "miniunlearn-queued-request/1"


@dataclass(frozen=True)
class QueuedRequest:
    """A request waiting in a run's queue: its id, sorted ids, method and options, when it
    was submitted (UTC seconds) and the file that holds it."""

    request_id: str
    ids: np.ndarray
    method: str
    options: dict[str, Any]
    submitted_at: float
    path: Path

    def to_json(self) -> dict[str, Any]:
        """The queue file's content."""
        return {
            "format": FORMAT,
            "request_id": self.request_id,
            "ids": [int(i) for i in self.ids],
            "ids_sha256": ids_digest(self.ids),
            "method": self.method,
            "options": self.options,
            "submitted_at": self.submitted_at,
        }


@dataclass
class SubmitOutcome:
    """What ``submit`` did: ``status`` is ``queued``, ``already-queued`` (the same request id
    with the same ids waits already) or ``already-done`` (the ledger holds it done)."""

    status: str
    request: QueuedRequest | None
    request_id: str
    messages: list[str] = field(default_factory=list)


def _queue_dir(run_dir: Path, *, create: bool) -> Path:
    """The run's queue folder (a real folder inside the run; made with ``create``)."""
    return run_subdir(run_dir, QUEUE_DIR, create=create)


def _read(path: Path) -> QueuedRequest:
    """The queued request in file ``path``; RunDirError naming the file when it is damaged."""
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}")
        ids = np.asarray(data["ids"], dtype=np.int64)
        if ids_digest(ids) != data["ids_sha256"]:
            raise ValueError("its ids do not match their recorded sha256")
        return QueuedRequest(
            str(data["request_id"]),
            ids,
            str(data["method"]),
            dict(data["options"]),
            float(data["submitted_at"]),
            path,
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunDirError(
            f"queued request {path} is damaged ({exc}); nothing was served. Move it out of the queue "
            "folder and submit that request again"
        ) from exc


def queued(run_dir: str | os.PathLike[str]) -> list[QueuedRequest]:
    """The requests waiting in the queue of the run at ``run_dir``, oldest first (every file is
    read: a damaged one is refused with RunDirError before anything is served)."""
    folder = _queue_dir(Path(run_dir), create=False)
    if not folder.is_dir():
        return []
    return [_read(path) for path in sorted(folder.glob("*.json"))]


def submit(
    run_dir: str | os.PathLike[str],
    ids: Any,
    *,
    request_id: str | None = None,
    method: str = "mini",
    options: dict[str, Any] | None = None,
) -> SubmitOutcome:
    """Queue a deletion request on the run at ``run_dir`` and return at once.

    ``ids``: training-sample ids; ``request_id``: the idempotency key (a fresh one when
    None); ``method``/``options``: how it will be served. Raises ForgetRequestError (exit
    2, nothing written) for ids outside the training set or repeated, an unknown method or
    option, or a request id the ledger or the queue holds with other ids.
    """
    request_id = check_request_id(request_id)
    options = dict(options or {})
    get_method(method, **options)  # unknown methods and options refused before anything is written
    run = open_run(run_dir, verify_hashes=False)
    raw = np.asarray(ids)
    if raw.ndim == 1 and raw.size and np.unique(raw).size != raw.size:
        raise ForgetRequestError(f"request {request_id!r} names some ids more than once; send each id once")
    asked = validate_forget_ids(ids, run.n_train)
    digest = ids_digest(asked)
    try:
        with Ledger.open(run.path, create=False) as ledger:
            recorded = ledger.get(request_id)
    except LedgerError as exc:
        raise RunDirError(f"cannot check request {request_id!r} against the run's ledger: {exc}") from exc
    if recorded is not None:
        if conflicting_ids(recorded, asked):
            raise ForgetRequestError(
                f"request id {request_id!r} is recorded as {recorded.state} with a different set of ids "
                f"({recorded.n_ids} ids); use a new request id"
            )
        if recorded.state == "done":
            return SubmitOutcome("already-done", None, request_id, [f"request {request_id} is already done"])
    for waiting in queued(run.path):
        if waiting.request_id == request_id:
            if ids_digest(waiting.ids) != digest:
                raise ForgetRequestError(
                    f"request id {request_id!r} is already queued with a different set of ids "
                    f"({waiting.ids.size} ids); use a new request id"
                )
            return SubmitOutcome(
                "already-queued", waiting, request_id, [f"request {request_id} is queued already"]
            )
    folder = _queue_dir(run.path, create=True)
    now = time.time()
    path = folder / f"{time.time_ns():020d}-{request_id}.json"
    request = QueuedRequest(request_id, asked, method, options, now, path)
    atomic_write_json(path, request.to_json())
    return SubmitOutcome("queued", request, request_id)


@dataclass
class ServedRequest:
    """One queued request as ``serve`` left it: its outcome, or the error that refused or
    failed it (recorded in the ledger either way)."""

    request: QueuedRequest
    outcome: ForgetOutcome | None
    error: str | None


def serve(
    run_dir: str | os.PathLike[str],
    *,
    lock_timeout: float = 0.0,
    device: str = "cpu",
    max_approx_ratio: float = DEFAULT_MAX_APPROX_RATIO,
    max_certified_distance: float | None = None,
    on_served: Callable[[ServedRequest], None] | None = None,
    batch: bool = True,
) -> list[ServedRequest]:
    """Serve every request queued on the run at ``run_dir``; return what became of each
    (``on_served`` is called after each).

    With ``batch`` (the default), the new requests that ask for the same method and
    options are served together by :func:`.workflow.forget_batch`: one solve on the union
    of their ids, one model version, and a ledger entry for each request with its own ids.
    Requests the ledger knows already (done, failed, refused), a lone request, every
    request without ``batch``, and the requests of a batch that was refused or failed are
    served one by one through :func:`forget`, oldest first. A request's file leaves the
    queue only once the ledger holds its outcome. Errors that are not about the requests
    (the run's state, its lock) stop the serving and leave the rest queued.
    """
    settings = dict(
        lock_timeout=lock_timeout,
        device=device,
        max_approx_ratio=max_approx_ratio,
        max_certified_distance=max_certified_distance,
    )
    served: list[ServedRequest] = []

    def report(result: ServedRequest) -> None:
        result.request.path.unlink(missing_ok=True)
        served.append(result)
        if on_served is not None:
            on_served(result)

    waiting = queued(run_dir)
    if waiting:  # settle what a killed command left first: a killed batch's requests are new again
        with open_session(run_dir, write=True, lock_timeout=lock_timeout):
            pass
    recorded = _recorded(run_dir, [r.request_id for r in waiting])
    groups: dict[str, list[QueuedRequest]] = {}
    for request in waiting:
        if request.request_id in recorded:
            report(_serve_one(run_dir, request, settings))
        else:
            key = json.dumps([request.method, request.options], sort_keys=True, default=str)
            groups.setdefault(key, []).append(request)
    for group in groups.values():
        if batch and len(group) > 1:
            batch_id = new_batch_id()
            try:
                outcome = forget_batch(
                    run_dir,
                    [BatchMember(r.request_id, r.ids, _utc(r.submitted_at)) for r in group],
                    method=group[0].method,
                    options=group[0].options,
                    batch_id=batch_id,
                    **settings,
                )
            except MiniUnlearnError as exc:  # refused or failed: the members were released
                if not isinstance(exc, ForgetRequestError) and _ledger_state(run_dir, batch_id)[0] not in (
                    "failed",
                    "refused",
                ):
                    raise
                note = f"served one by one: serving the {len(group)} requests as one batch failed ({exc})"
            else:
                for result in _member_outcomes(run_dir, group, outcome):
                    report(result)
                continue
        else:
            note = None
        for request in group:
            result = _serve_one(run_dir, request, settings)
            if note and result.outcome is not None:
                result.outcome.messages.insert(0, note)
            report(result)
    return served


def _serve_one(
    run_dir: str | os.PathLike[str], request: QueuedRequest, settings: dict[str, Any]
) -> ServedRequest:
    """Serve one queued request through :func:`forget`; its outcome or the error that refused
    or failed it (which the ledger records). Errors about the run itself are raised."""
    before = _ledger_state(run_dir, request.request_id)
    try:
        outcome = forget(
            run_dir,
            request.ids,
            method=request.method,
            options=request.options,
            request_id=request.request_id,
            **settings,
        )
        return ServedRequest(request, outcome, None)
    except ForgetRequestError as exc:  # refused or failed: the ledger records it
        return ServedRequest(request, None, str(exc))
    except MiniUnlearnError as exc:  # a failed method is recorded; the run's state or lock is not
        after = _ledger_state(run_dir, request.request_id)
        if after == before or after[0] not in ("failed", "refused"):
            raise
        return ServedRequest(request, None, str(exc))


def _member_outcomes(
    run_dir: str | os.PathLike[str], group: list[QueuedRequest], batch: ForgetOutcome
) -> list[ServedRequest]:
    """What serving ``batch`` did for each request of ``group``: its own ledger entry (done
    with the batch's model version and record) and which of its ids were forgotten before."""
    with Ledger.open(run_dir, create=False) as ledger:
        entries = {e.request_id: e for e in ledger.members(batch.entry.request_id)}
    others = len(group) - 1
    results = []
    for request in group:
        entry = entries[request.request_id]
        skipped = np.intersect1d(request.ids, batch.skipped_ids)
        messages = [f"served in batch {batch.entry.request_id} with {others} other request(s)"]
        outcome = ForgetOutcome(batch.status, entry, batch.version, skipped, batch.record, messages)
        results.append(ServedRequest(request, outcome, None))
    return results


def _recorded(run_dir: str | os.PathLike[str], request_ids: list[str]) -> set[str]:
    """Which of ``request_ids`` the run's ledger records (none when it has no ledger yet)."""
    try:
        with Ledger.open(run_dir, create=False) as ledger:
            return {rid for rid in request_ids if ledger.get(rid) is not None}
    except LedgerError:
        return set()


def _utc(seconds: float) -> str:
    """UTC seconds as the ledger writes times (ISO 8601, microseconds)."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="microseconds")


def _ledger_state(run_dir: str | os.PathLike[str], request_id: str) -> tuple[str | None, str | None]:
    """(state, completion time) the ledger holds for ``request_id`` ((None, None) when none)."""
    try:
        with Ledger.open(run_dir, create=False) as ledger:
            entry = ledger.get(request_id)
    except LedgerError:
        return None, None
    return (None, None) if entry is None else (entry.state, entry.completed_at)
