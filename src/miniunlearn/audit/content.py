"""The content of one request's audit report: a JSON-ready dict (see :func:`audit_content`).

It holds the request's fields, the ids requested, removed and skipped as already
forgotten, the hashes, the method's record and -- with metrics -- the comparison
with a retrained model (each metric with its interval and verdict).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np

from miniunlearn import __version__
from miniunlearn.evaluation.report import metric_kind
from miniunlearn.ledger import LedgerEntry

from .intervals import (
    MIN_FORGET_SAMPLES,
    RULE,
    TOLERANCE,
    _judge,
    _overall,
    _small_forget_warning,
    newcombe_interval,
    wilson_interval,
)
from .text import _number

METRIC_LABELS: dict[str, str] = {
    "test_acc": "test accuracy",
    "retain_acc": "retain-set accuracy",
    "forget_acc": "forget-set accuracy",
    "mia_auc": "membership-inference AUC",
    "mia_efficacy": "MIA efficacy (forget samples judged unseen)",
    "mia_bacc": "membership-inference balanced accuracy",
    "mia_tpr_1pct": "membership-inference TPR at 1 % FPR",
    "mia_loss_auc": "loss-attack AUC",
    "retain_exposure_auc": "retain-set exposure AUC (control)",
    "ulira_auc": "per-example (U-LiRA) attack AUC on the method",
    "dist_to_retrain": "L2 distance to the retrained model",
    "kl_to_retrain": "mean KL(retrained || unlearned) on test",
    "avg_gap": "average gap to retraining (points: accuracy, and the per-example attack when run)",
    "avg_gap_population": "average gap with the population attack's MIA efficacy (points)",
}
"""Known metric keys, in the order shown, with their display names."""


def _jsonable(value: Any) -> Any:
    """``value`` with numpy scalars and arrays made plain, tuples made lists, NaN and inf None."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _ids_part(
    requested: np.ndarray,
    removed: np.ndarray | None,
    skipped: np.ndarray | None,
    n_skipped: int,
    note: str | None,
) -> dict[str, Any]:
    """The ids section of the content; ``None`` ids are not known (only their count)."""
    return {
        "requested": {"n": int(requested.size), "ids": requested.tolist()},
        "removed": {
            "n": int(removed.size) if removed is not None else int(requested.size) - n_skipped,
            "ids": None if removed is None else removed.tolist(),
        },
        "skipped_already_forgotten": {
            "n": int(skipped.size) if skipped is not None else n_skipped,
            "ids": None if skipped is None else skipped.tolist(),
        },
        "note": note,
    }


def _id_sets(
    entry: LedgerEntry, previously_forgotten: np.ndarray | None, record: Mapping[str, Any]
) -> dict[str, Any]:
    """The requested ids, those removed, and those skipped as already forgotten.

    The skipped ids are ``entry.ids`` that ``previously_forgotten`` (the ids of the
    requests done before this one) holds; without it only the record's count of them is
    known. A request that is not done removed nothing.
    """
    ids = np.asarray(entry.ids, dtype=np.int64)
    none = np.zeros(0, dtype=np.int64)
    if entry.state != "done":
        return _ids_part(ids, none, none, 0, f"the request is {entry.state}: nothing was removed")
    if entry.is_retrain:
        note = "a full retraining: the model was rebuilt without every id forgotten so far"
        return _ids_part(ids, ids, none, 0, note)
    if previously_forgotten is not None:
        skipped = np.intersect1d(ids, np.asarray(previously_forgotten, dtype=np.int64))
        return _ids_part(ids, np.setdiff1d(ids, skipped), skipped, 0, None)
    recorded = _number(record.get("skipped_already_forgotten"))
    if recorded is None:
        note = "the record does not say whether some ids were already forgotten; all count as removed"
        return _ids_part(ids, ids, none, 0, note)
    if recorded == 0:
        return _ids_part(ids, ids, none, 0, None)
    note = (
        f"{int(recorded)} of the requested ids had already been forgotten by earlier requests; "
        "which ones is not known to this report (it was not given the earlier requests' ids)"
    )
    return _ids_part(ids, None, None, int(recorded), note)


def _metric_keys(*dicts: Mapping[str, Any] | None) -> list[str]:
    """Keys of the dicts: the known ones in :data:`METRIC_LABELS` order, then the rest sorted."""
    present = {k for d in dicts if d for k in d}
    known = [k for k in METRIC_LABELS if k in present]
    return known + sorted(present - set(known))


def _forget_set_size(
    ids: Mapping[str, Any],
    entry: LedgerEntry,
    previously_forgotten: np.ndarray | None,
    record: Mapping[str, Any],
    counts: Mapping[str, int],
) -> tuple[int | None, str]:
    """Size of the forget set the metrics were measured on, and where that number comes from."""
    if "forget" in counts:
        return int(counts["forget"]), "given with the metrics"
    if previously_forgotten is not None:
        union = np.union1d(np.asarray(previously_forgotten, dtype=np.int64), entry.ids)
        return int(union.size), "every id forgotten up to and including this request"
    n_new, n_before = _number(record.get("n_forget")), _number(record.get("n_previously_forgotten"))
    if n_new is not None and n_before is not None:
        return int(n_new + n_before), "the method's record (n_forget + n_previously_forgotten)"
    n = ids["removed"]["n"]
    if not n:
        return None, "unknown"
    return n, (
        "this request's removed ids only: the metrics may also cover ids of earlier requests, "
        "so the intervals shown are if anything too wide"
    )


def _sample_count(key: str, n_forget: int | None, counts: Mapping[str, int]) -> int | None:
    """Samples a share-type metric was measured on: the forget set for forget accuracy and MIA
    efficacy, ``counts[split]`` for ``<split>_acc``; None when not known."""
    if key in ("forget_acc", "mia_efficacy"):
        return n_forget
    if key.endswith("_acc") and key[: -len("_acc")] in counts:
        return int(counts[key[: -len("_acc")]])
    return None


def _compare_row(
    key: str, a: float, b: float, n: int | None, n_forget: int | None, tolerance: float
) -> dict[str, Any]:
    """One compared metric: both values, intervals when ``n`` is known, the gap and the verdict."""
    row: dict[str, Any] = {
        "key": key,
        "label": METRIC_LABELS.get(key, key),
        "kind": metric_kind(key),
        "unlearned": a,
        "retrained": b,
        "gap": a - b,
        "n_samples": n,
        "unlearned_interval": None,
        "retrained_interval": None,
        "gap_interval": None,
        "interval_method": None,
    }
    if n is not None and 0.0 <= a <= 1.0 and 0.0 <= b <= 1.0:
        ci_a, ci_b = wilson_interval(a, n), wilson_interval(b, n)
        row |= {
            "unlearned_interval": list(ci_a),
            "retrained_interval": list(ci_b),
            "gap_interval": list(newcombe_interval(a, ci_a, b, ci_b)),
            "interval_method": f"Wilson 95 % on {n} samples; gap: Newcombe (conservative)",
        }
    if row["kind"] in ("auc", "fraction"):
        gap_ci = tuple(row["gap_interval"]) if row["gap_interval"] else None
        row["verdict"], row["basis"] = _judge(key, a - b, gap_ci, n_forget, tolerance)
    else:
        row["verdict"], row["basis"] = None, "not judged (not a 0..1 score)"
    return row


def _comparison(
    metrics: Mapping[str, Any] | None,
    retrain_metrics: Mapping[str, Any] | None,
    n_forget: tuple[int | None, str],
    counts: Mapping[str, int],
    tolerance: float,
) -> tuple[dict[str, Any], list[str]]:
    """The comparison section (rows, other measurements, verdict) and its warnings."""
    mine, theirs = dict(metrics or {}), dict(retrain_metrics or {})
    rows, other = [], {}
    for key in _metric_keys(mine, theirs):
        a, b = _number(mine.get(key)), _number(theirs.get(key))
        if a is not None and b is not None:
            rows.append(
                _compare_row(key, a, b, _sample_count(key, n_forget[0], counts), n_forget[0], tolerance)
            )
        else:
            other[key] = {"unlearned": mine.get(key), "retrained": theirs.get(key)}
    warnings = []
    if not theirs:
        warnings.append("No metrics of a retrained model were given: nothing is compared or judged.")
    elif not mine:
        warnings.append("No metrics of the unlearned model were given: nothing is compared or judged.")
    if n_forget[0] is not None and n_forget[0] < MIN_FORGET_SAMPLES:
        warnings.append(_small_forget_warning(n_forget[0], rows))
    section = {
        "confidence": 0.95,
        "tolerance": tolerance,
        "rule": RULE,
        "forget_set": {"n": n_forget[0], "source": n_forget[1]},
        "rows": rows,
        "other": other,
        "verdict": _overall(rows, tolerance, n_forget[0]),
    }
    return section, warnings


def audit_content(
    entry: LedgerEntry,
    *,
    metrics: Mapping[str, Any] | None = None,
    retrain_metrics: Mapping[str, Any] | None = None,
    previously_forgotten: Any = None,
    counts: Mapping[str, int] | None = None,
    tolerance: float = TOLERANCE,
) -> dict[str, Any]:
    """Return the JSON-ready content of the audit report of ``entry`` (see :func:`write_audit`).

    Keys: ``request``, ``ids``, ``hashes``, ``record`` (the method's record as stored in
    the ledger), ``certificate`` (see :func:`certificate_part`), ``comparison`` (None
    without metrics), ``warnings``, ``generated_by``, ``generated_at``.
    """
    record = dict(entry.metrics or {})
    if metrics is None and retrain_metrics:  # older callers: the recorded values of the same keys
        metrics = {k: record[k] for k in retrain_metrics if k in record}
    prev = None if previously_forgotten is None else np.asarray(previously_forgotten, dtype=np.int64)
    counts = dict(counts or {})
    ids = _id_sets(entry, prev, record)
    warnings: list[str] = []
    comparison = None
    if metrics or retrain_metrics:
        n_forget = _forget_set_size(ids, entry, prev, record, counts)
        comparison, warnings = _comparison(metrics, retrain_metrics, n_forget, counts, tolerance)
        if entry.state != "done":
            warnings.insert(0, f"The request is {entry.state}: these metrics describe no removal.")
    return _jsonable(
        {
            "request": _request_part(entry),
            "ids": ids,
            "hashes": {
                "model_sha256_before": entry.model_sha256_before,
                "model_sha256_after": entry.model_sha256_after,
                "ids_sha256": entry.ids_sha256,
            },
            "record": entry.metrics,
            "certificate": certificate_part(entry.metrics),
            "comparison": comparison,
            "warnings": warnings,
            "generated_by": f"miniunlearn {__version__}",
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )


def certificate_part(record: Mapping[str, Any] | None) -> dict[str, Any]:
    """The report's certificate section from a request's record: ``status`` (``certified``,
    ``none`` for runs that get none, ``not recorded``), a ``text`` a person can read, and
    the certificate's ``fields`` (empty unless certified)."""
    record = record or {}
    certificate = record.get("certificate")
    if certificate:
        trained = certificate.get("trained_run_distance_bound")
        text = (
            f"The served model is at most {certificate['distance_bound']:.3g} (L2, in parameters) from the "
            f"model that minimises the training objective without every forgotten sample, and no training "
            f"sample's logits differ between the two by more than {certificate['logit_bound']:.3g}. This "
            f"bound is true, not an estimate: |grad F_R(w)| = {certificate['grad_norm']:.3g} measured over "
            f"{certificate['n_retain']} retained samples, divided by lam = {certificate['lam']:g}."
        )
        if trained is not None:
            text += (
                f" Retraining stops short of that optimum too: the original training ended within "
                f"{trained:.3g} of its own optimum, so compare with that, not with zero."
            )
        removal = certificate.get("removal")
        if removal:
            holds = "within" if removal["certified"] else "NOT within"
            text += (
                f" The run is trained for certified removal (epsilon = {removal['epsilon']:g}, delta = "
                f"{removal['delta']:g}): the served model's gradient residual {removal['residual']:.3g} is "
                f"{holds} the budget {removal['budget']:.3g}, so (Guo et al. 2020) it is (epsilon, delta)-"
                "indistinguishable from the perturbed optimum trained without the forgotten samples."
            )
        return {"status": "certified", "text": text, "fields": dict(certificate)}
    if record.get("certificate_note"):
        return {"status": "none", "text": str(record["certificate_note"]) + ".", "fields": {}}
    return {
        "status": "not recorded",
        "text": "No certificate was recorded for this request (not served, or served by an older version).",
        "fields": {},
    }


def _request_part(entry: LedgerEntry) -> dict[str, Any]:
    """The request's own fields (no ids, no hashes, no record)."""
    return {
        "request_id": entry.request_id,
        "kind": "full retraining" if entry.is_retrain else "deletion request",
        "state": entry.state,
        "reason": entry.reason,
        "method": entry.method,
        "options": entry.options,
        "n_ids": entry.n_ids,
        "received_at": entry.received_at,
        "completed_at": entry.completed_at,
        "duration_s": entry.duration_s,
        "model_version": entry.model_version,
        "error_budget_used": entry.error_budget_used,
    }
