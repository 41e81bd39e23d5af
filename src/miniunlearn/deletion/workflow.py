"""Deletion requests as a workflow: admit a request, plan how to serve it, execute it.

A request goes through these steps, each durable before the next begins:

1. open the run's session for writing (:mod:`.session`): take the lock, settle what
   an interrupted command left, check that ledger, ``current.json`` and versions agree;
2. admit it by the state of its request id: a done id reports the version it produced;
   a failed one is retried with the same ids; a refused one may be re-sent with a
   corrected body; a new one is validated, and recorded ``refused`` when it is invalid;
3. plan it: the method asked for, or retraining when asked, when the error budget
   (:mod:`.budget`) would be exceeded, or when the method says retraining costs no more;
4. unlearn from the current model version (starting from the retain state the previous
   request's certificate measured, :mod:`.retain_state`); a result that changes no
   parameter is not a deletion and fails the request; on convex runs, certify it
   (:mod:`miniunlearn.certificate`), and with ``max_certified_distance`` fail a result
   certified farther, as on a certified-removal run one whose gradient residual exceeds
   the (epsilon, delta) budget (:mod:`miniunlearn.training.certified`; the solver is asked
   to reach half of it), and serve the request by retraining under the same id;
5. commit (:meth:`.session.RunSession.commit`): re-check lock and base model, write
   ``versions/vN.safetensors``, switch ``current.json``, mark the request ``done``.

Killing the process anywhere leaves the previous model current and the ledger
consistent, or the new model current and the request done on the next command.

A request may name the users' own keys instead of sample ids (:func:`forget_keys`): they
are mapped through the run's ``keys.npz`` first; unknown keys refuse the request (recorded
``refused``), keys of rows that were never trained on (the test split, rows a subset left
out) are reported and skipped, and a request with no training key at all records nothing.
"""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..certificate import certify_state, no_certificate_reason
from ..device import device_scope
from ..errors import ConfigError, ForgetRequestError, HistoryError, RunDirError
from ..ids import ids_digest, normalize_ids, retained_ids, validate_forget_ids
from ..ledger import BatchMember, LedgerEntry, check_request_id
from ..methods import UnlearningMethod, UnlearnRequest, get_method, method_class
from ..training.certified import SOLVE_FRACTION, removal_budget
from ..training.retrain import retrain
from ..training.rundir import NO_KEYS, Run, open_run
from ..versions import ModelVersion, crash_point, version_number, version_path
from .budget import DEFAULT_MAX_APPROX_RATIO, ErrorBudget
from .retain_state import load_retain_state, save_retain_state
from .session import RunSession, open_session

RETRAIN = "retrain"


@dataclass
class ForgetOutcome:
    """What a forget call did.

    ``status``: ``done`` (a new model version), ``already-done`` (the request id was
    done before: ``version`` is the one it produced, nothing changed), ``nothing-new``
    (every id was already forgotten).
    """

    status: str
    entry: LedgerEntry
    version: ModelVersion
    skipped_ids: np.ndarray
    record: dict[str, Any] | None
    messages: list[str] = field(default_factory=list)

    @property
    def certificate(self) -> dict[str, Any] | None:
        """The served model's certificate (see :mod:`miniunlearn.certificate`): the bound on
        its distance to the retain optimum and what it implies for logits; None for a run
        that gets none (networks) or a request served before certificates were recorded."""
        record = self.record if self.record is not None else self.entry.metrics
        return (record or {}).get("certificate")


def _recordable(ids: Any) -> np.ndarray:
    """The ids of a refused request as far as they are integers (empty when they are not)."""
    try:
        return normalize_ids(ids)
    except ForgetRequestError:
        return np.zeros(0, np.int64)


def conflicting_ids(previous: LedgerEntry, ids: np.ndarray) -> bool:
    """Whether sending ``ids`` (sorted) under ``previous``'s request id is refused: ids other
    than those the ledger holds for it, unless it was refused (a refused request did nothing,
    so it may be re-sent with a corrected body)."""
    return previous.state != "refused" and ids_digest(ids) != previous.ids_sha256


def _already_done(session: RunSession, previous: LedgerEntry, asked: np.ndarray | None) -> ForgetOutcome:
    """The outcome of re-sending a done request: the version it produced; different ids refused."""
    if asked is not None and conflicting_ids(previous, asked):
        raise ForgetRequestError(
            f"request id {previous.request_id!r} is already done with a different set of ids "
            f"({previous.n_ids} ids); nothing changed. Use a new request id for these ids"
        )
    notes = [*session.messages, f"request {previous.request_id} was already done; nothing changed"]
    try:
        version = session.version_of(previous)
    except RunDirError as exc:  # a superseded version's file; the current model was checked on opening
        number = version_number(previous) or 0
        version = ModelVersion(
            number, version_path(number), str(previous.model_sha256_after), previous.request_id
        )
        notes.append(f"{exc} (a later version superseded it: its ids stay forgotten in the current model)")
    return ForgetOutcome("already-done", previous, version, np.zeros(0, np.int64), previous.metrics, notes)


def _refuse(
    session: RunSession, previous: LedgerEntry | None, ids: Any, method: str, request_id: str | None, why: str
) -> None:
    """Record a request refused before any work (re-sending a refused id records it again)."""
    ledger, before = session.ledger, session.current.sha256
    if previous is not None and previous.state == "refused":
        ledger.resend(previous.request_id, _recordable(ids), method, {}, before)
    elif previous is not None:
        return  # a failed request keeps its record; the refusal is only reported
    ledger.refuse(
        _recordable(ids),
        method,
        f"{why}. Nothing was changed",
        request_id=request_id,
        model_sha256_before=before,
    )


def _admit(
    session: RunSession, ids: Any, method: str, request_id: str | None, previous: LedgerEntry | None
) -> np.ndarray:
    """Validate the ids of a request that is new, failed or refused; return them sorted.

    Raises ForgetRequestError (recorded as refused unless the request had failed) for
    bad ids, a request that would forget every sample, or a failed request re-sent with
    other ids.
    """
    run = session.run
    try:
        asked = validate_forget_ids(ids, run.n_train)
        if run.n_train - np.union1d(session.forgotten_ids(), asked).size == 0:
            raise ForgetRequestError(
                "the request would forget every remaining training sample; nothing would be left to learn"
            )
    except ForgetRequestError as exc:
        _refuse(session, previous, ids, method, request_id, str(exc))
        raise
    if previous is not None and conflicting_ids(previous, asked):
        raise ForgetRequestError(
            f"request id {request_id!r} is recorded as {previous.state} with a different set of ids "
            f"({previous.n_ids} ids); send it again with the same ids, or use a new request id"
        )
    return asked


def _start(
    session: RunSession,
    previous: LedgerEntry | None,
    asked: np.ndarray,
    method: str,
    options: dict[str, Any],
    request_id: str | None,
    retrain_reason: str | None = None,
    members: Sequence[BatchMember] = (),
) -> LedgerEntry:
    """Record the request as received: new (a batch with its ``members``), retried (failed)
    or re-sent (refused)."""
    ledger, before = session.ledger, session.current.sha256
    if previous is None:
        if method == RETRAIN and retrain_reason is not None:
            return ledger.receive_retrain(
                before, retrain_reason, ids=asked, options=options, request_id=request_id, members=members
            )
        return ledger.receive(asked, method, options, before, request_id=request_id, members=members)
    if previous.state == "refused":
        return ledger.resend(
            previous.request_id, asked, method, options, before, retrain_reason=retrain_reason
        )
    return ledger.retry(previous.request_id, before, method=method, options=options)


def _nothing_new(
    session: RunSession, entry: LedgerEntry, skipped: np.ndarray, messages: list[str]
) -> ForgetOutcome:
    """Mark a request whose ids were all forgotten already done, with the model unchanged."""
    entry = session.complete_unchanged(entry, {"skipped_already_forgotten": int(skipped.size)})
    return ForgetOutcome(
        "nothing-new",
        entry,
        session.current,
        skipped,
        None,
        [*messages, "every id was already forgotten; the model is unchanged"],
    )


def certificate_fields(
    run: Run,
    params: torch.Tensor,
    forgotten: np.ndarray,
    measured: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[dict[str, Any], tuple[torch.Tensor, torch.Tensor] | None]:
    """The record's certificate of model ``params`` once ``forgotten`` (every id forgotten,
    this request's included) is left out, and the retain state it measured (``measured``:
    the state the serving method measured at ``params``, used instead of a pass).

    Returns ``({"certificate": {...}}, (F_R, grad F_R))`` with the bound on the distance to
    the retain optimum and, beside it, the trained run's own bound from its stored final
    gradient; ``({"certificate": None, "certificate_note": why}, None)`` for runs that get
    none (networks).
    """
    why = no_certificate_reason(run)
    if why is not None:
        return {"certificate": None, "certificate_note": why}, None
    if measured is None:
        certificate, value, grad = certify_state(run, params, retained_ids(run.n_train, forgotten))
    else:  # only the retain set's size is needed
        n_retain = run.n_train - np.unique(forgotten).size
        certificate, value, grad = certify_state(run, params, None, measured, n_retain=n_retain)
    fields = certificate.to_dict()
    try:  # how far training itself stopped from its optimum, from the stored final gradient
        final_grad = run.mini_history().grads[0].double()
        fields["trained_run_distance_bound"] = float(final_grad.norm()) / run.config.lam
    except HistoryError:
        fields["trained_run_distance_bound"] = None
    return {"certificate": fields}, (value, grad)


def _execute(
    session: RunSession,
    entry: LedgerEntry,
    compute: Any,
    base: torch.Tensor | None,
    budget: float,
    extra: dict[str, Any],
    forgotten_after: np.ndarray,
) -> tuple[LedgerEntry, ModelVersion, dict[str, Any]]:
    """Run ``compute()`` -> (params, record), certify it (``forgotten_after``: every id left
    out once it is served) and commit it; on any error mark the request failed and re-raise.
    A result equal to ``base`` (no parameter changed) fails it."""
    crash_point("after-receive")
    try:
        params, record = compute()
        if not torch.isfinite(params).all():
            raise ForgetRequestError(
                f"method {entry.method} produced non-finite parameters; the model is unchanged. Try "
                "--retrain-now or another method"
            )
        if base is not None and torch.equal(params, base):
            raise ForgetRequestError(
                f"method {entry.method} changed no parameter of the model, so nothing would be forgotten: "
                "not recorded as done and the model is unchanged. Send the request again with another "
                "method or options (a step budget above 0), or with --retrain-now"
            )
        state = record.pop(RETAIN_STATE, None)
        if "certificate" not in record:
            fields, state = certificate_fields(session.run, params, forgotten_after)
            record |= fields
        record = {**record, **extra}
        done, version = session.commit(entry, params, record, budget)
    except BaseException as exc:
        note = session.fail(entry, failure_reason(exc))
        if note:
            exc.add_note(note)
        raise
    if state is not None:  # the next request from this model starts without a pass
        save_retain_state(session.run, version.sha256, forgotten_after, *state)
    return done, version, record


def _plan(
    session: RunSession,
    unlearner: UnlearningMethod,
    options: dict[str, Any],
    n_new: int,
    n_forgotten: int,
    retrain_now: bool,
    budget: ErrorBudget,
    forced: str | None = None,
) -> tuple[str, dict[str, Any], str | None]:
    """How to serve a request: (method, options, why it is retrained instead or None).

    An approximate method is replaced by retraining when ``forced`` (a reason) or asked
    (``retrain_now``), when its cost would take the run past its error budget, or when the
    method itself would rather retrain (retraining costs it no more; ``n_forgotten`` ids
    were forgotten before); an exact one is served as asked.
    """
    method = unlearner.name
    if unlearner.exact:
        return method, options, None
    spent = session.ledger.error_budget_since_last_retrain()
    cost = budget.cost(exact=False, n_new=n_new, n_train=session.run.n_train)
    why = forced or ("asked with --retrain-now" if retrain_now else budget.exceeded(spent, cost))
    if why is None and n_new:
        try:
            why = unlearner.retraining_reason(session.run, n_forgotten + n_new)
        except (HistoryError, ConfigError):  # refused with its own message by check_run
            why = None
    if why is None:
        return method, options, None
    return RETRAIN, {"use_cache": True, "instead_of": method, "reason": why}, why


RETAIN_STATE = "_retain_state"  # the record key carrying a measured retain state to _execute, never stored


def _certificate_refusal(certificate: dict[str, Any] | None, budget: ErrorBudget) -> str | None:
    """Why an approximate result's ``certificate`` does not let it be served (its certified
    distance past ``budget``, or its gradient residual past a certified-removal run's
    (epsilon, delta) budget), or None when it may be."""
    if not certificate:
        return None
    why = budget.certificate_exceeded(certificate["distance_bound"])
    removal = certificate.get("removal")
    if why is None and removal and not removal["certified"]:
        why = (
            f"its gradient residual {removal['residual']:.3g} exceeds the run's certified-removal budget "
            f"{removal['budget']:.3g} (epsilon {removal['epsilon']:g}, delta {removal['delta']:g})"
        )
    return why


def _certified_removal_options(run: Run, method: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` for ``method`` on ``run``, with, on a certified-removal run, the solver's
    stopping rules it was not given set to reach a gradient residual of half the run's budget:
    ``atol`` = that residual over the training set's size, ``rtol`` = ``xtol`` = 0 (for the
    methods that take them; ``mini``'s ``mode=auto`` serves such a run in its fixed-point
    mode); unchanged for any other run."""
    budget = removal_budget(run.config)
    if budget is None:
        return options
    names = {f.name for f in dataclasses.fields(method_class(method).Options)}
    wanted = {"atol": SOLVE_FRACTION * budget / run.n_train, "rtol": 0.0, "xtol": 0.0}
    return {**{k: v for k, v in wanted.items() if k in names and k not in options}, **options}


class CertifiedDistanceExceeded(ForgetRequestError):
    """An approximate result was certified farther from the retain optimum than the run's
    budget allows (``request_id``: the request it failed, to be served by retraining)."""

    def __init__(self, reason: str, request_id: str) -> None:
        super().__init__(reason)
        self.reason, self.request_id = reason, request_id


def forget(
    run_dir: str | os.PathLike[str],
    ids: Any,
    *,
    method: str = "mini",
    options: dict[str, Any] | None = None,
    request_id: str | None = None,
    retrain_now: bool = False,
    max_approx_ratio: float = DEFAULT_MAX_APPROX_RATIO,
    max_certified_distance: float | None = None,
    lock_timeout: float = 0.0,
    device: str | torch.device = "cpu",
) -> ForgetOutcome:
    """Serve one deletion request on the run at ``run_dir``; return what was done.

    ``ids``: training-sample ids to forget. ``method``/``options``: the unlearning
    method. ``request_id``: idempotency key (see the module docstring for how each
    state of a re-sent id is handled). ``retrain_now``: serve it by retraining from
    scratch. ``max_approx_ratio``: error budget in [0, 1], the fraction of the training
    set approximate methods may remove between exact retrainings.
    ``max_certified_distance``: on convex runs, the largest certified distance to the
    retain optimum an approximate result may have; one farther is discarded (the request
    is recorded failed with the reason) and the request is served by retraining under the
    same id. ``lock_timeout``: seconds to wait for another command. ``device``: where the
    unlearning computes. Raises ForgetRequestError (recorded as ``refused``) for ids
    outside the training set, an empty request, one that would leave no training data,
    or a method the run cannot serve; a failure while unlearning marks the request
    ``failed`` and leaves the current model in place.
    """
    budget = ErrorBudget(max_approx_ratio, max_certified_distance)
    serve = dict(method=method, options=options, lock_timeout=lock_timeout, device=device, budget=budget)
    return _serve_or_retrain(run_dir, ids, request_id, serve, retrain_now=retrain_now)


def _serve_or_retrain(
    run_dir: str | os.PathLike[str],
    ids: Any,
    request_id: str | None,
    serve: dict[str, Any],
    *,
    retrain_now: bool = False,
    members: Sequence[BatchMember] = (),
) -> ForgetOutcome:
    """:func:`_forget` with ``serve``'s method, options and budget; an approximate result its
    certificate refuses is discarded (the request recorded failed) and the request served by
    retraining: under the same id, or for a batch (``members``), a new one (the failed
    batch released its members)."""
    try:
        return _forget(run_dir, ids, request_id=request_id, retrain_now=retrain_now, members=members, **serve)
    except CertifiedDistanceExceeded as exc:
        again = new_batch_id() if members else exc.request_id
        outcome = _forget(run_dir, ids, request_id=again, forced_retrain=exc.reason, members=members, **serve)
        outcome.messages.insert(0, f"{serve['method']}'s result was discarded: {exc.reason}")
        return outcome


def new_batch_id() -> str:
    """A fresh request id for a batch (``batch-`` and 20 random hex digits)."""
    return f"batch-{uuid.uuid4().hex[:20]}"


def forget_batch(
    run_dir: str | os.PathLike[str],
    requests: Sequence[BatchMember],
    *,
    method: str = "mini",
    options: dict[str, Any] | None = None,
    max_approx_ratio: float = DEFAULT_MAX_APPROX_RATIO,
    max_certified_distance: float | None = None,
    lock_timeout: float = 0.0,
    device: str | torch.device = "cpu",
    batch_id: str | None = None,
) -> ForgetOutcome:
    """Serve several new deletion requests with one solve and one model version.

    ``requests``: the request id and ids of each (and when it was received), none of them
    recorded in the ledger yet. The union of their ids is served as one request, a batch
    recorded under ``batch_id`` (a fresh one from :func:`new_batch_id` when None; one the
    ledger holds is refused); each request is recorded as a member of it with exactly its
    own ids, and is done with it: :meth:`Ledger.get` on its id returns the batch's model
    version, record and certificate with its own ids. The other arguments are those of
    :func:`forget`, and the batch is served as :func:`forget` serves one request. Returns
    the batch's outcome (its entry's ``members`` name the requests). A batch that is
    refused or fails releases its members: nothing is recorded for them, and each may be
    sent again (ForgetRequestError, as for :func:`forget`).
    """
    if not requests:
        raise ForgetRequestError("a batch needs at least one request")
    members = [
        BatchMember(check_request_id(m.request_id), normalize_ids(m.ids), m.received_at) for m in requests
    ]
    union = np.unique(np.concatenate([m.ids for m in members]))
    budget = ErrorBudget(max_approx_ratio, max_certified_distance)
    serve = dict(method=method, options=options, lock_timeout=lock_timeout, device=device, budget=budget)
    return _serve_or_retrain(run_dir, union, batch_id or new_batch_id(), serve, members=members)


def _forget(
    run_dir: str | os.PathLike[str],
    ids: Any,
    *,
    method: str,
    options: dict[str, Any] | None,
    request_id: str | None,
    budget: ErrorBudget,
    lock_timeout: float,
    device: str | torch.device,
    retrain_now: bool = False,
    forced_retrain: str | None = None,
    members: Sequence[BatchMember] = (),
) -> ForgetOutcome:
    """:func:`forget` once: ``forced_retrain`` (a reason) serves the request by retraining;
    ``members``: the requests a new batch ``request_id`` serves (see :func:`forget_batch`)."""
    request_id = check_request_id(request_id) if request_id is not None else None
    run = open_run(run_dir, device=device)
    options = _certified_removal_options(run, method, dict(options or {}))
    asked_method = get_method(method, **options)  # unknown methods and options refused before any write
    with device_scope(run.device), open_session(run, write=True, lock_timeout=lock_timeout) as session:
        ledger = session.ledger
        previous = ledger.get(request_id) if request_id else None
        if members and previous is not None:
            raise ForgetRequestError(f"batch id {request_id!r} is recorded already; use a new one")
        recorded = [m.request_id for m in members if ledger.get(m.request_id) is not None]
        if recorded:
            raise ForgetRequestError(
                f"{len(recorded)} request(s) of the batch are recorded already (first {recorded[0]!r}); "
                "serve them one by one"
            )
        if previous is not None and previous.state == "done":
            return _already_done(session, previous, _recordable(ids) if ids is not None else None)
        asked = _admit(session, ids, method, request_id, previous)
        forgotten = session.forgotten_ids()
        new = np.setdiff1d(asked, forgotten)
        skipped = np.intersect1d(asked, forgotten)
        messages = list(session.messages)
        if skipped.size:
            messages.append(f"{skipped.size} id(s) were already forgotten by earlier requests; skipped")
        run_method, run_options, why = _plan(
            session, asked_method, options, new.size, forgotten.size, retrain_now, budget, forced_retrain
        )
        if why:
            messages.append(f"served by retraining from scratch ({why})")
        else:
            try:
                asked_method.check_run(run)
            except (HistoryError, ConfigError) as exc:  # a history or mode the run lacks
                _refuse(session, previous, asked, method, request_id, str(exc))
                raise
        entry = _start(session, previous, asked, run_method, run_options, request_id, members=members)
        if new.size == 0:
            return _nothing_new(session, entry, skipped, messages)
        spent = budget.cost(exact=method_class(run_method).exact, n_new=new.size, n_train=run.n_train)
        if why:
            method_options = {k: v for k, v in run_options.items() if k not in ("instead_of", "reason")}
            unlearner = get_method(run_method, **method_options)
        else:
            unlearner = asked_method
        base = session.current_params()
        # only approximate methods predict from the last exact model; a retraining needs no anchor
        anchor_params, anchor_ids = (None, np.zeros(0, np.int64)) if unlearner.exact else session.anchor()

        def compute() -> tuple[torch.Tensor, dict[str, Any]]:
            request = UnlearnRequest(
                run,
                new,
                previously_forgotten=forgotten,
                base_params=base,
                anchor_params=anchor_params,
                anchor_ids=anchor_ids,
                base_retain_state=load_retain_state(run, session.current.sha256, forgotten),
            )
            result = unlearner.unlearn(request)
            record = result.record.to_dict()
            limited = budget.max_certified_distance is not None or bool(run.config.certify)
            checked = not unlearner.exact and limited
            measured = result.retain_state
            if checked or measured is not None:  # certify here (a measured state needs no pass)
                after = np.union1d(forgotten, new)
                fields, record[RETAIN_STATE] = certificate_fields(run, result.params, after, measured)
                record |= fields
            if checked:
                why = _certificate_refusal(record["certificate"], budget)
                if why:
                    raise CertifiedDistanceExceeded(why, entry.request_id)
            return result.params, record

        entry, version, record = _execute(
            session,
            entry,
            compute,
            base,
            spent,
            {"skipped_already_forgotten": int(skipped.size)},
            np.union1d(forgotten, new),
        )
        return ForgetOutcome("done", entry, version, skipped, record, messages)


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

    Resets the error budget; also rebuilds a lost or altered current model from the
    ledger's ids. A re-sent request id that is done reports the version it produced.
    Raises ForgetRequestError when nothing was forgotten yet.
    """
    request_id = check_request_id(request_id) if request_id is not None else None
    run = open_run(run_dir, device=device)
    with (
        device_scope(run.device),
        open_session(run, write=True, lock_timeout=lock_timeout, allow_lost_model=True) as session,
    ):
        previous = session.ledger.get(request_id) if request_id else None
        if previous is not None and previous.state == "done":
            return _already_done(session, previous, None)
        forgotten = session.forgotten_ids()
        if forgotten.size == 0:
            raise ForgetRequestError(
                "nothing has been forgotten on this run yet; retraining would reproduce the original model"
            )
        if previous is not None and previous.state != "refused" and previous.method != RETRAIN:
            raise ForgetRequestError(
                f"request id {request_id!r} is a {previous.method} request ({previous.state}); use a new "
                "request id for the retraining"
            )
        if (
            previous is not None
            and previous.state == "failed"
            and ids_digest(forgotten) != previous.ids_sha256
        ):
            raise ForgetRequestError(
                f"retraining {request_id!r} failed when other ids were forgotten; use a new request id"
            )
        entry = _start(
            session, previous, forgotten, RETRAIN, {}, request_id, retrain_reason="asked with --retrain-now"
        )

        def compute() -> tuple[torch.Tensor, dict[str, Any]]:
            started = time.perf_counter()
            params = retrain(run, forgotten)
            return params, {
                "method": RETRAIN,
                "n_forget": int(forgotten.size),
                "time_s": time.perf_counter() - started,
            }

        entry, version, record = _execute(session, entry, compute, None, 0.0, {}, forgotten)
        return ForgetOutcome("done", entry, version, np.zeros(0, np.int64), record, list(session.messages))


@dataclass
class KeysOutcome:
    """What a :func:`forget_keys` call did.

    ``outcome``: the :class:`ForgetOutcome` of the request on the keys' sample ids, or None
    when no key was a training sample (nothing was recorded). ``ids``: those sample ids.
    ``test_keys``/``unused_keys``: keys of rows never trained on (the test split; training-split
    rows the run's subset left out), skipped. ``messages``: what to tell the user about them.
    """

    outcome: ForgetOutcome | None
    ids: np.ndarray
    test_keys: list[str]
    unused_keys: list[str]
    messages: list[str] = field(default_factory=list)


def _shown_keys(keys: list[str], limit: int = 5) -> str:
    """Up to ``limit`` keys, quoted, then how many more."""
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown + (f" ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def _untrained_messages(test: list[str], unused: list[str]) -> list[str]:
    """The plain words for keys whose rows were never trained on."""
    out = []
    if test:
        out.append(
            f"{len(test)} key(s) are in the test split: those rows were never trained on, so there is "
            f"nothing to forget: {_shown_keys(test)}"
        )
    if unused:
        out.append(
            f"{len(unused)} key(s) are rows this run's training subset left out: never trained on, so "
            f"there is nothing to forget: {_shown_keys(unused)}"
        )
    return out


def _refuse_unknown_keys(
    run_dir: str | os.PathLike[str],
    unknown: list[str],
    known: np.ndarray,
    method: str,
    request_id: str | None,
    lock_timeout: float,
) -> ForgetRequestError:
    """Record a request naming unknown keys as refused (with its known sample ids), as bad ids
    are; return the error to raise."""
    why = (
        f"{len(unknown)} key(s) are not keys of this run's data (see `miniunlearn ids RUN`): "
        f"{_shown_keys(unknown)}"
    )
    run = open_run(run_dir, verify_hashes=False)
    with open_session(run, write=True, lock_timeout=lock_timeout) as session:
        previous = session.ledger.get(request_id) if request_id else None
        _refuse(session, previous, known, method, request_id, why)
    return ForgetRequestError(f"{why}; nothing was changed")


def forget_keys(
    run_dir: str | os.PathLike[str],
    keys: list[str],
    *,
    method: str = "mini",
    options: dict[str, Any] | None = None,
    request_id: str | None = None,
    lock_timeout: float = 0.0,
    **kwargs: Any,
) -> KeysOutcome:
    """Serve a deletion request that names the users' own keys (see :mod:`miniunlearn.data.keys`).

    Takes the run, the keys (text, as in a keys file), and the arguments of :func:`forget`.
    Keys of training samples are forgotten by :func:`forget` (same checks, ledger and
    versions); keys of rows never trained on are reported in the outcome's messages and
    skipped; when no key is a training sample nothing is recorded and the outcome holds no
    request. Raises RunDirError for a run trained before keys were recorded, ForgetRequestError
    for an empty request, and for unknown keys (naming up to 5; the request is recorded
    ``refused``, nothing else changes).
    """
    request_id = check_request_id(request_id) if request_id is not None else None
    get_method(method, **dict(options or {}))  # an unknown method is refused before anything is recorded
    run = open_run(run_dir, verify_hashes=False)
    if not run.files("keys"):
        raise RunDirError(f"{run.path}: {NO_KEYS}")
    if not keys:
        raise ForgetRequestError("the keys file names no key: give one key per line")
    match = run.sample_keys().lookup(keys)
    if match.unknown:
        raise _refuse_unknown_keys(run_dir, match.unknown, match.ids, method, request_id, lock_timeout)
    messages = _untrained_messages(match.test, match.unused)
    if match.ids.size == 0:
        messages.append("no key names a training sample: nothing to forget; no request was recorded")
        return KeysOutcome(None, match.ids, match.test, match.unused, messages)
    outcome = forget(
        run_dir,
        match.ids,
        method=method,
        options=options,
        request_id=request_id,
        lock_timeout=lock_timeout,
        **kwargs,
    )
    return KeysOutcome(outcome, match.ids, match.test, match.unused, messages)
