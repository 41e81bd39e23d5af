"""A queue of deletion requests: submit returns at once, serve works through them.

``submit`` checks a request (its ids against the run, its request id against the ledger and
the queue) and writes it as one file under ``RUN_DIR/queue/`` (temp file, fsync, rename):
it never takes the run's lock, so it answers at once even while another command serves a
request. ``serve`` takes the queued requests in the order they arrived and serves each
through :func:`.workflow.forget` (ledger, model version, certificate), removing a queue file
only once the ledger holds the request's outcome. A killed ``serve`` loses nothing: the
request's file is still queued, and serving it again is idempotent (a done request id
reports the version it produced; a received one was settled by the next command).

Each request is its own link in the chain of model versions (the model after request k is
the one request k + 1 starts from), so every ledger entry keeps exactly its own ids and
model; requests are not merged into one solve. Each starts from the retain gradient its
predecessor's certificate measured, which makes a queue of small requests cheaper than the
same requests sent one by one from cold.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ForgetRequestError, LedgerError, MiniUnlearnError, RunDirError
from ..fileio import atomic_write_json, run_subdir
from ..ids import ids_digest, validate_forget_ids
from ..ledger import Ledger, check_request_id
from ..methods import get_method
from ..training.rundir import open_run
from .budget import DEFAULT_MAX_APPROX_RATIO
from .workflow import ForgetOutcome, conflicting_ids, forget

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
) -> list[ServedRequest]:
    """Serve every request queued on the run at ``run_dir``, oldest first, each through
    :func:`forget`; return what became of each (``on_served`` is called after each).

    A request's file leaves the queue only once the ledger holds its outcome: done, or
    refused or failed (the ledger says why; a failed one may be sent again with
    ``forget``). Errors that are not about one request (the run's state, its lock) stop
    the serving and leave the rest queued.
    """
    served = []
    for request in queued(run_dir):
        before = _ledger_state(run_dir, request.request_id)
        try:
            outcome = forget(
                run_dir,
                request.ids,
                method=request.method,
                options=request.options,
                request_id=request.request_id,
                lock_timeout=lock_timeout,
                device=device,
                max_approx_ratio=max_approx_ratio,
                max_certified_distance=max_certified_distance,
            )
            result = ServedRequest(request, outcome, None)
        except ForgetRequestError as exc:  # refused or failed: the ledger records it
            result = ServedRequest(request, None, str(exc))
        except MiniUnlearnError as exc:  # a failed method is recorded; the run's state or lock is not
            after = _ledger_state(run_dir, request.request_id)
            if after == before or after[0] not in ("failed", "refused"):
                raise
            result = ServedRequest(request, None, str(exc))
        request.path.unlink(missing_ok=True)
        served.append(result)
        if on_served is not None:
            on_served(result)
    return served


def _ledger_state(run_dir: str | os.PathLike[str], request_id: str) -> tuple[str | None, str | None]:
    """(state, completion time) the ledger holds for ``request_id`` ((None, None) when none)."""
    try:
        with Ledger.open(run_dir, create=False) as ledger:
            entry = ledger.get(request_id)
    except LedgerError:
        return None, None
    return (None, None) if entry is None else (entry.state, entry.completed_at)
