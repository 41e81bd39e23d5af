"""Human-readable audit report of one deletion request: a Markdown file and a PNG chart.

:func:`write_audit` describes what was removed (count, ids hash, first ids), the
method and its options, times, the model hashes before and after, and -- when
metrics are known -- a table and a bar chart comparing the unlearned model with a
model retrained from scratch without the removed samples. Both files are written
atomically (temporary file, fsync, rename).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from miniunlearn import __version__
from miniunlearn.fileio import atomic_path, atomic_write_bytes
from miniunlearn.ledger import LedgerEntry

__all__ = ["METRIC_LABELS", "audit_paths", "write_audit"]

METRIC_LABELS: dict[str, str] = {
    "test_acc": "test accuracy",
    "retain_acc": "retain-set accuracy",
    "forget_acc": "forget-set accuracy",
    "mia_auc": "membership-inference AUC",
    "ulira_auc": "per-example (U-LiRA) attack AUC on the method",
}
"""Known metric keys, in the order shown, with their display names."""

FIRST_IDS_SHOWN = 10


def audit_paths(entry: LedgerEntry, out_dir: str | Path) -> tuple[Path, Path]:
    """Return the (Markdown, PNG) paths :func:`write_audit` uses for ``entry`` in ``out_dir``."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", entry.request_id).lstrip(".") or "request"
    out = Path(out_dir)
    return out / f"audit_{safe}.md", out / f"audit_{safe}.png"


def _number(value: Any) -> float | None:
    """Return ``value`` as a finite float, or None when it is not a finite scalar number."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        return None
    out = float(value)
    return out if math.isfinite(out) else None


def _metric_keys(*dicts: Mapping[str, Any] | None) -> list[str]:
    present = {k for d in dicts if d for k in d}
    known = [k for k in METRIC_LABELS if k in present]
    return known + sorted(present - set(known))


def _chart_keys(*dicts: Mapping[str, Any] | None) -> list[str]:
    """Return the metric keys to chart: those with a value, all values within [0, 1]."""
    keys = []
    for key in _metric_keys(*dicts):
        values = [d.get(key) for d in dicts if d and key in d]
        nums = [_number(v) for v in values]
        if nums and all(n is not None and 0.0 <= n <= 1.0 for n in nums):
            keys.append(key)
    return keys


def _fmt(value: Any) -> str:
    if value is None:
        return "--"
    num = _number(value)
    if num is not None:
        return str(int(value)) if isinstance(value, int | np.integer) else f"{num:.4f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "not completed"
    if seconds < 120:
        return f"{seconds:.2f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _markdown(
    entry: LedgerEntry,
    metrics: Mapping[str, Any] | None,
    retrain_metrics: Mapping[str, Any] | None,
    png_name: str,
) -> str:
    ids = entry.ids
    first = ", ".join(str(int(i)) for i in ids[:FIRST_IDS_SHOWN])
    more = f" ... (+{ids.size - FIRST_IDS_SHOWN} more)" if ids.size > FIRST_IDS_SHOWN else ""
    kind = "Full retraining" if entry.is_retrain else "Deletion request"
    lines = [
        f"# {kind} `{entry.request_id}`",
        "",
        f"- **State:** {entry.state}",
    ]
    if entry.reason:
        lines.append(f"- **Reason:** {entry.reason}")
    lines += [
        "",
        "## What was removed"
        if entry.state == "done"
        else f"## What was requested (nothing removed: the request is {entry.state})",
        "",
        f"- **Number of samples:** {entry.n_ids}",
        f"- **Ids sha256** (sorted unique ids as little-endian int64): `{entry.ids_sha256}`",
    ]
    if ids.size:
        lines += [
            f"- **Id range:** {int(ids[0])} .. {int(ids[-1])}",
            f"- **First ids:** {first}{more}",
        ]
    else:
        lines.append("- **First ids:** none (empty set)")
    options = json.dumps(entry.options, indent=2, sort_keys=True, default=str)
    lines += [
        "",
        "## Method",
        "",
        f"- **Method:** `{entry.method}`",
        "- **Options:**",
        "",
        "```json",
        options,
        "```",
        "",
        "## Times (UTC)",
        "",
        f"- **Received:** {entry.received_at}",
        f"- **Completed:** {entry.completed_at or 'not completed'}",
        f"- **Duration:** {_fmt_duration(entry.duration_s)}",
        "",
        "## Model",
        "",
        f"- **sha256 before:** `{entry.model_sha256_before or 'not recorded'}`",
        f"- **sha256 after:** `{entry.model_sha256_after or 'not recorded'}`",
        f"- **Model version:** {entry.model_version if entry.model_version is not None else '--'}",
        "- **Error budget used:** "
        + ("--" if entry.error_budget_used is None else f"{entry.error_budget_used:.6g}"),
        "",
        "## Metrics",
        "",
    ]
    if not metrics and not retrain_metrics:
        lines += [
            "No metrics were recorded for this request, so there is no comparison of the "
            "unlearned model with a retrained one.",
            "",
        ]
    else:
        if not retrain_metrics:
            lines += ["No metrics of a retrained model were given; only the unlearned model's.", ""]
        elif not metrics:
            lines += ["No metrics of the unlearned model were given; only the retrained model's.", ""]
        lines += [
            "| metric | unlearned | retrained | unlearned - retrained |",
            "|---|---:|---:|---:|",
        ]
        for key in _metric_keys(metrics, retrain_metrics):
            a = metrics.get(key) if metrics else None
            b = retrain_metrics.get(key) if retrain_metrics else None
            na, nb = _number(a), _number(b)
            diff = f"{na - nb:+.4f}" if na is not None and nb is not None else "--"
            label = METRIC_LABELS.get(key, key)
            lines.append(f"| {label} (`{key}`) | {_fmt(a)} | {_fmt(b)} | {diff} |")
        lines.append("")
        lines += [
            "A good unlearning method brings every metric close to the retrained model's: "
            "forget-set accuracy and membership-inference AUC near the retrained values "
            "(AUC near 0.5 means the removed samples look like unseen ones).",
            "",
        ]
    lines += [
        f"![{'metrics and removed ids' if (metrics or retrain_metrics) else 'removed ids'}]({png_name})",
        "",
        "---",
        f"Generated by miniunlearn {__version__} at {datetime.now(UTC).isoformat(timespec='seconds')}.",
        "",
    ]
    return "\n".join(lines)


def _figure(
    entry: LedgerEntry,
    metrics: Mapping[str, Any] | None,
    retrain_metrics: Mapping[str, Any] | None,
) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    keys = _chart_keys(metrics, retrain_metrics)
    has_chart = bool(keys)
    fig = Figure(figsize=(11, 4.2) if has_chart else (7, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    if has_chart:
        ax_bar, ax_ids = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.6, 1]})
    else:
        ax_ids = fig.subplots(1, 1)
        ax_bar = None

    if ax_bar is not None:
        x = np.arange(len(keys))
        width = 0.38
        series = [
            ("unlearned", metrics, "#1f77b4", -width / 2),
            ("retrained", retrain_metrics, "#ff7f0e", width / 2),
        ]
        for label, values, color, offset in series:
            if not values:
                continue
            vals = [_number(values.get(k)) for k in keys]
            heights = [v if v is not None else 0.0 for v in vals]
            bars = ax_bar.bar(x + offset, heights, width, label=label, color=color)
            for bar, v in zip(bars, vals, strict=True):
                if v is None:
                    continue
                ax_bar.annotate(
                    f"{v:.3f}",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    xytext=(0, 2),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    fontsize=8,
                )
        ax_bar.set_xticks(x, [METRIC_LABELS.get(k, k) for k in keys], rotation=15, ha="right")
        ax_bar.set_ylim(0, 1.25)
        ax_bar.set_ylabel("value (0 to 1)")
        ax_bar.axhline(0, color="black", linewidth=0.6)
        if "mia_auc" in keys:
            ax_bar.axhline(0.5, color="gray", linestyle=":", linewidth=0.8)
        ax_bar.set_title("Unlearned vs retrained")
        ax_bar.legend(loc="upper center", fontsize=8, ncols=2)
        ax_bar.grid(axis="y", alpha=0.3)

    ids = entry.ids
    removed = entry.state == "done"
    if ids.size:
        lo, hi = int(ids[0]), int(ids[-1])
        if hi - lo < 50:  # one bar per id value
            ax_ids.hist(ids, bins=np.arange(lo - 0.5, hi + 1.5), rwidth=0.8, color="#6a6a6a")
        else:
            ax_ids.hist(ids, bins=50, color="#6a6a6a")
        ax_ids.set_xlabel("sample id")
        ax_ids.set_ylabel("removed samples" if removed else "requested samples")
        ax_ids.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
        ax_ids.yaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        ax_ids.text(0.5, 0.5, "no ids", ha="center", va="center", transform=ax_ids.transAxes)
        ax_ids.set_xticks([])
        ax_ids.set_yticks([])
    ax_ids.set_title(
        f"{'Removed' if removed else 'Requested (not removed)'} ids: {entry.n_ids} "
        f"(sha256 {entry.ids_sha256[:12]}...)",
        fontsize=10,
    )
    if not has_chart:
        ax_ids.text(
            0.5,
            -0.22,
            "No metrics recorded for this request.",
            ha="center",
            va="top",
            transform=ax_ids.transAxes,
            fontsize=9,
            color="#aa3333",
        )
    fig.suptitle(
        f"{'Retraining' if entry.is_retrain else 'Request'} {entry.request_id} -- "
        f"method {entry.method}, state {entry.state}",
        fontsize=11,
    )
    fig.tight_layout()
    return fig


def write_audit(
    entry: LedgerEntry,
    out_dir: Path,
    *,
    metrics: dict[str, Any] | None = None,
    retrain_metrics: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write the Markdown report and PNG chart of one request; return their paths.

    ``entry`` is the ledger entry; files go to ``out_dir`` (created if missing) as
    ``audit_<request_id>.md`` and ``audit_<request_id>.png``, each written
    atomically. ``metrics`` are the unlearned model's metrics (default: the
    entry's recorded metrics) and ``retrain_metrics`` those of a model retrained
    without the removed ids, with keys such as ``test_acc``, ``retain_acc``,
    ``forget_acc``, ``mia_auc``. Without any metrics the report says so and the
    PNG shows only the distribution of removed ids.
    """
    if metrics is None and entry.metrics:
        metrics = dict(entry.metrics)
    md_path, png_path = audit_paths(entry, out_dir)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    fig = _figure(entry, metrics, retrain_metrics)
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png")
    text = _markdown(entry, metrics, retrain_metrics, png_path.name)
    atomic_write_bytes(md_path, text.encode("utf-8"))
    return md_path, png_path
