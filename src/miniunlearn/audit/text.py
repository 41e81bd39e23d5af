"""Text formatting shared by the audit's HTML and Markdown reports.

Plain numbers (:func:`_number`), readable cells (:func:`_fmt`, :func:`_fmt_ci`,
:func:`_fmt_duration`), id ranges (``"0-3, 10, 12-14"``) and the rows describing
the request, in the order both reports show them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

IDS_SHOWN = 12
"""Id ranges listed in the HTML and Markdown reports (the JSON lists every id)."""


def _number(value: Any) -> float | None:
    """Return ``value`` as a finite float, or None when it is not a finite scalar number."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        return None
    out = float(value)
    return out if math.isfinite(out) else None


def _id_ranges(ids: np.ndarray) -> list[tuple[int, int]]:
    """Runs of consecutive ids of a sorted array as ``(first, last)`` pairs."""
    if ids.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(ids) != 1)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [ids.size - 1]])
    return [(int(ids[s]), int(ids[e])) for s, e in zip(starts, ends, strict=True)]


def _ranges_text(ids: Sequence[int], limit: int = IDS_SHOWN) -> str:
    """``"0-3, 10, 12-14"`` for the first ``limit`` runs, then how many ids are left out."""
    arr = np.asarray(ids, dtype=np.int64)
    if arr.size == 0:
        return "none"
    runs = _id_ranges(arr)
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs[:limit])
    shown = sum(b - a + 1 for a, b in runs[:limit])
    return text + (f", ... (+{arr.size - shown} more)" if arr.size > shown else "")


def _ids_cell(part: Mapping[str, Any]) -> str:
    """``"5: 0-3, 9"``, or the count alone when the ids are not known."""
    if part["ids"] is None:
        return f"{part['n']} (which ones is not known to this report; see the note below)"
    return f"{part['n']}: {_ranges_text(part['ids'])}"


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``(dotted key, value)`` pairs of a nested mapping; other values are leaves."""
    if isinstance(value, Mapping) and value:
        out: list[tuple[str, Any]] = []
        for key, inner in value.items():
            out += _flatten(inner, f"{prefix}.{key}" if prefix else str(key))
        return out
    return [(prefix, value)]


def _fmt(value: Any) -> str:
    """A readable cell: numbers to 4 significant digits, lists summarised, no raw dicts."""
    if value is None:
        return "--"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return f"{float(value):.4g}"
    if isinstance(value, list | tuple):
        if not value:
            return "none"
        if len(value) <= 6:
            return ", ".join(_fmt(v) for v in value)
        nums = [float(v) for v in value if _number(v) is not None]
        text = f"{len(value)} values: {_fmt(value[0])}, {_fmt(value[1])}, ..., {_fmt(value[-1])}"
        return text + (f" (min {min(nums):.4g}, max {max(nums):.4g})" if len(nums) == len(value) else "")
    if isinstance(value, Mapping):
        return "; ".join(f"{k} = {_fmt(v)}" for k, v in _flatten(value)) or "none"
    return str(value)


def _fmt_ci(value: float, ci: Sequence[float] | None, signed: bool = False) -> str:
    """``0.942 [0.93, 0.95]`` (signed: ``+0.012 [-0.01, +0.04]``); the value alone without interval."""
    f = "{:+.3f}" if signed else "{:.3f}"
    text = f.format(value)
    return text if not ci else f"{text} [{f.format(ci[0])}, {f.format(ci[1])}]"


def _fmt_duration(seconds: float | None) -> str:
    """``1.23 s``, ``4.5 min`` or ``2.00 h``; "not completed" for None."""
    if seconds is None:
        return "not completed"
    if seconds < 120:
        return f"{seconds:.2f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _title(content: Mapping[str, Any]) -> str:
    """``Deletion request r1`` or ``Full retraining r1``."""
    req = content["request"]
    return f"{req['kind'].capitalize()} {req['request_id']}"


def _request_rows(content: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(field, value) rows describing the request and its model, in reading order."""
    req, hashes, ids = content["request"], content["hashes"], content["ids"]
    rows = [("request id", req["request_id"]), ("state", req["state"])]
    if req["reason"]:
        rows.append(("reason", req["reason"]))
    rows += [
        ("method", req["method"]),
        ("options requested", _fmt(req["options"]) if req["options"] else "none (the method's defaults)"),
        ("received (UTC)", req["received_at"]),
        ("completed (UTC)", req["completed_at"] or "not completed"),
        ("duration", _fmt_duration(req["duration_s"])),
        ("ids requested", _ids_cell(ids["requested"])),
        ("ids removed", _ids_cell(ids["removed"])),
        ("ids skipped (already forgotten)", _ids_cell(ids["skipped_already_forgotten"])),
        ("ids sha256 (sorted unique, int64 LE)", hashes["ids_sha256"]),
        ("model sha256 before", hashes["model_sha256_before"] or "not recorded"),
        ("model sha256 after", hashes["model_sha256_after"] or "not recorded"),
        ("model version", _fmt(req["model_version"])),
        ("error budget used", _fmt(req["error_budget_used"])),
    ]
    return rows
