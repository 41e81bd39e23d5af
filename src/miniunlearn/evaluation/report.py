"""Aggregate per-run records over seeds and print them as tables.

A record is a flat dict describing one (dataset, model, method, ratio, seed) run,
e.g. ``{"dataset": "digits", "model": "mlp", "method": "retrain", "ratio": 0.01,
"seed": 0, "test_acc": 0.97, "mia_auc": 0.51, "ulira_auc": None, ...}``.
Missing, None and NaN values are skipped when averaging.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from numbers import Real
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_KEYS",
    "DEFAULT_TABLE_METRICS",
    "FRACTION_METRICS",
    "markdown_table",
    "metric_kind",
    "summarise",
]

DEFAULT_KEYS: tuple[str, ...] = ("dataset", "model", "method", "ratio")
"""Record fields that identify a group; everything numeric else is averaged over seeds."""

DEFAULT_TABLE_METRICS: tuple[str, ...] = (
    "test_acc",
    "retain_acc",
    "forget_acc",
    "dist_to_retrain",
    "mia_auc",
    "ulira_auc",
    "time_s",
    "grad_evals",
)
"""Metrics :func:`markdown_table` shows by default (those present in the summary)."""

_NOT_METRICS = frozenset({"seed"})

FRACTION_METRICS = frozenset({"mia_efficacy", "mia_bacc", "mia_tpr_1pct"})
"""Fractions in [0, 1] whose names do not end in ``_acc``."""


def metric_kind(metric: str) -> str:
    """Return ``"auc"`` (an AUC: in [0, 1], chance 0.5), ``"fraction"`` (an accuracy or
    another share in [0, 1]) or ``"other"`` for a record field named ``metric``."""
    if metric == "auc" or metric.endswith("_auc"):
        return "auc"
    if metric.endswith("_acc") or metric in FRACTION_METRICS:
        return "fraction"
    return "other"


def _is_number(value: Any) -> bool:
    """True for real numbers (incl. numpy scalars), False for bools, None and strings."""
    return isinstance(value, Real | np.number) and not isinstance(value, bool | np.bool_)


def _sort_key(value: Any) -> tuple[int, Any]:
    """Order numbers numerically, then everything else by its string form."""
    if _is_number(value):
        return (0, float(value))
    return (1, "" if value is None else str(value))


def summarise(
    records: Iterable[dict[str, Any]],
    keys: Sequence[str] = DEFAULT_KEYS,
    metrics: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Group records by ``keys`` and compute mean and std of each metric over seeds.

    Takes the records, the grouping fields (default dataset, model, method,
    ratio; a record lacking one groups under None) and optionally the metric
    names (default: every field outside ``keys`` and ``seed`` that holds a
    number or None in some record, so an all-None metric still gets a
    column). Returns one dict per group, sorted by the keys, with the key
    fields, ``n_runs`` (records in the group), and per metric
    ``<m>_mean``, ``<m>_std`` (sample std, ddof=1; NaN with fewer than two
    values) and ``<m>_n`` (number of finite values). None/NaN/non-numeric
    values are skipped; a metric without any value gets NaN mean and std.
    """
    records = list(records)
    keys = tuple(keys)
    if metrics is None:
        found: dict[str, None] = {}
        for rec in records:
            for name, value in rec.items():
                if name in keys or name in _NOT_METRICS:
                    continue
                if _is_number(value) or value is None:
                    found[name] = None
        metrics = list(found)
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault(tuple(rec.get(k) for k in keys), []).append(rec)

    out: list[dict[str, Any]] = []
    for group_key in sorted(groups, key=lambda g: tuple(_sort_key(v) for v in g)):
        members = groups[group_key]
        row: dict[str, Any] = dict(zip(keys, group_key, strict=True))
        row["n_runs"] = len(members)
        for name in metrics:
            values = np.array([float(r[name]) for r in members if _is_number(r.get(name))], dtype=np.float64)
            values = values[np.isfinite(values)]
            row[f"{name}_mean"] = float(values.mean()) if values.size else math.nan
            row[f"{name}_std"] = float(values.std(ddof=1)) if values.size >= 2 else math.nan
            row[f"{name}_n"] = int(values.size)
        out.append(row)
    return out


def _fmt(value: float, digits: int) -> str:
    """Format a number with ``digits`` significant digits (large numbers in full)."""
    if abs(value) >= 10**digits:
        return f"{value:.0f}"
    return f"{value:.{digits}g}"


def _cell(row: dict[str, Any], metric: str, digits: int) -> str:
    """``mean ± std``, just ``mean`` for one value, ``–`` for none."""
    mean, std = row.get(f"{metric}_mean", math.nan), row.get(f"{metric}_std", math.nan)
    if mean is None or not math.isfinite(mean):
        return "–"
    if std is None or not math.isfinite(std):
        return _fmt(mean, digits)
    if std < 1e-9 * max(abs(mean), 1.0):  # Rounding noise of identical values.
        std = 0.0
    return f"{_fmt(mean, digits)} ± {_fmt(std, digits)}"


def markdown_table(
    summary: Sequence[dict[str, Any]],
    metrics: Sequence[str] | None = None,
    keys: Sequence[str] = DEFAULT_KEYS,
    digits: int = 3,
) -> str:
    """Render :func:`summarise` output as a GitHub-flavoured markdown table.

    Takes the summary rows, the metrics to show (default: those of
    ``DEFAULT_TABLE_METRICS`` present in the summary, else every metric found),
    the key columns, and significant digits. Cells read ``mean ± std``, just
    ``mean`` for a single seed, ``–`` when there is no value. A ``ratio`` key is
    shown as a percentage. Returns the table as a string (header + rows).
    """
    if not summary:
        return ""
    present = [k[: -len("_mean")] for k in summary[0] if k.endswith("_mean")]
    if metrics is None:
        metrics = [m for m in DEFAULT_TABLE_METRICS if m in present] or present
    keys = [k for k in keys if k in summary[0]]
    header = [*keys, "runs", *metrics]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * len(keys) + ["---:"] * (1 + len(metrics))) + "|",
    ]
    for row in summary:
        cells = []
        for k in keys:
            v = row.get(k)
            if k == "ratio" and _is_number(v):
                cells.append(f"{100 * float(v):g}%")
            else:
                cells.append("" if v is None else str(v))
        cells.append(str(row.get("n_runs", "")))
        cells.extend(_cell(row, m, digits) for m in metrics)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
