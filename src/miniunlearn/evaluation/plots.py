"""Plots of benchmark records (PNG files, drawn with matplotlib's object-oriented Figure API,
so importing this module never changes the caller's global matplotlib backend).

Every function takes the list of per-run records (see
:mod:`miniunlearn.evaluation.report`) and an output path, writes one PNG and
returns its path. Curves show the mean over seeds with the std as error bars;
one panel per (dataset, model) pair, one line per method.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import (
    FixedLocator,
    FuncFormatter,
    LogLocator,
    NullFormatter,
    NullLocator,
)

from .report import summarise

__all__ = [
    "plot_all",
    "plot_dist_to_retrain",
    "plot_metric_vs_ratio",
    "plot_mia_auc",
    "plot_roc",
    "plot_test_accuracy",
    "plot_time",
    "plot_ulira_auc",
]

REFERENCE_METHOD = "retrain"
"""The method drawn as the dashed reference line (the gold standard)."""


def _panels(records: Sequence[dict[str, Any]]) -> list[tuple[Any, Any]]:
    """Distinct (dataset, model) pairs in first-seen order."""
    seen: dict[tuple[Any, Any], None] = {}
    for rec in records:
        seen[(rec.get("dataset"), rec.get("model"))] = None
    return list(seen)


def _has_values(records: Iterable[dict[str, Any]], metric: str) -> bool:
    """True if some record holds a finite number for ``metric``."""
    for rec in records:
        v = rec.get(metric)
        if isinstance(v, int | float | np.number) and math.isfinite(float(v)):
            return True
    return False


def _style(method: str, index: int) -> dict[str, Any]:
    """Line style of a method; the reference method is black and dashed."""
    if method == REFERENCE_METHOD:
        return {"color": "black", "linestyle": "--", "marker": "s", "zorder": 3}
    color = matplotlib.colormaps["tab10"](index % 10)
    return {"color": color, "linestyle": "-", "marker": "o"}


def _save(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` as a PNG to ``path`` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def plot_metric_vs_ratio(
    records: Sequence[dict[str, Any]],
    path: str | Path,
    metric: str,
    ylabel: str,
    title: str,
    log_y: bool = False,
    hlines: Sequence[tuple[float, str]] = (),
) -> Path:
    """Plot ``metric`` (mean ± std over seeds) against the forget ratio, per method.

    Takes the records, the output path, the metric field, axis label and title,
    whether to use a log y axis, and horizontal reference lines as
    ``(y, label)`` (drawn dotted). The x axis shows the ratio in percent.
    Returns the PNG path. Raises ValueError if no record holds the metric.
    """
    records = [r for r in records if r.get("ratio") is not None]
    if not _has_values(records, metric):
        raise ValueError(f"no record has a value for '{metric}'; nothing to plot")
    # Only panels (dataset, model) that hold a value for this metric.
    panels = [
        p
        for p in _panels(records)
        if _has_values((r for r in records if (r.get("dataset"), r.get("model")) == p), metric)
    ]
    summary = summarise(records, metrics=[metric])
    methods = sorted({str(r.get("method")) for r in records}, key=lambda m: (m != REFERENCE_METHOD, m))
    fig = Figure(figsize=(5.2 * len(panels), 4.0))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (dataset, model) in zip(axes[0], panels, strict=True):
        ratios: set[float] = set()
        for i, method in enumerate(methods):
            rows = [
                r
                for r in summary
                if r["dataset"] == dataset
                and r["model"] == model
                and str(r["method"]) == method
                and r[f"{metric}_n"] > 0
            ]
            if not rows:
                continue
            x = np.array([float(r["ratio"]) for r in rows])
            y = np.array([r[f"{metric}_mean"] for r in rows])
            err = np.nan_to_num(np.array([r[f"{metric}_std"] for r in rows]))
            if log_y:  # Keep error bars above zero on a log axis.
                y = np.where(y > 0, y, np.nan)
                if np.all(np.isnan(y)):
                    continue
                err = np.vstack([np.minimum(err, 0.9 * y), err])
            ratios.update(x.tolist())
            ax.errorbar(
                x, y, yerr=err, label=method, capsize=3, linewidth=1.6, markersize=5, **_style(method, i)
            )
        for value, label in hlines:
            ax.axhline(value, color="gray", linestyle=":", linewidth=1.2, label=label)
        if log_y:
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
        xs = sorted(ratios)
        if len(xs) > 1 and xs[0] > 0 and xs[-1] / xs[0] >= 10:
            ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(xs))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([f"{100 * v:g}%" for v in xs])
        ax.set_xlabel("forget ratio (% of training set)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{dataset} / {model}", fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
    handles: dict[str, Any] = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    fig.legend(
        list(handles.values()),
        list(handles),
        fontsize=9,
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        frameon=False,
        title="method",
    )
    return _save(fig, path)


def plot_test_accuracy(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Test accuracy vs forget ratio, one line per method (error bars = std over seeds)."""
    return plot_metric_vs_ratio(records, path, "test_acc", "test accuracy", "Test accuracy after unlearning")


def plot_dist_to_retrain(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """L2 parameter distance to the retrained model vs forget ratio (log y axis).

    The retrain method itself (distance 0 or to a retrain with another seed) is
    drawn where its values are positive.
    """
    return plot_metric_vs_ratio(
        records,
        path,
        "dist_to_retrain",
        "L2 distance to retrained model (log)",
        "Parameter distance to retraining (lower is better)",
        log_y=True,
    )


def plot_mia_auc(records: Sequence[dict[str, Any]], path: str | Path, metric: str = "mia_auc") -> Path:
    """Membership-inference AUC on the forget set vs forget ratio.

    Retrain is the dashed reference line; 0.5 (chance) is dotted. ``metric``
    picks the record field (default ``mia_auc``).
    """
    return plot_metric_vs_ratio(
        records,
        path,
        metric,
        "attack AUC on forget set",
        "Membership inference on the forget set (retrain = target)",
        hlines=[(0.5, "chance (0.5)")],
    )


def plot_ulira_auc(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """U-LiRA (per-example attack) AUC vs forget ratio; 0.5 (chance) dotted."""
    return plot_metric_vs_ratio(
        records,
        path,
        "ulira_auc",
        "U-LiRA AUC",
        "Per-example attack (U-LiRA) on forgotten samples",
        hlines=[(0.5, "chance (0.5)")],
    )


def plot_time(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Wall-clock time of unlearning vs forget ratio (log y axis)."""
    return plot_metric_vs_ratio(records, path, "time_s", "time (s, log)", "Unlearning time", log_y=True)


def plot_roc(
    curves: Mapping[str, tuple[Any, Any]],
    path: str | Path,
    title: str = "Membership-inference ROC",
) -> Path:
    """ROC curves of attacks on log-log axes (the low-FPR region matters most).

    Takes ``{name: (fpr, tpr)}`` arrays (e.g. from ``AttackResult.fpr/.tpr``),
    the output path and a title; the diagonal is chance. Returns the PNG path.
    """
    if not curves:
        raise ValueError("no ROC curve to plot")
    fig = Figure(figsize=(10, 4.3))
    axes = fig.subplots(1, 2)
    for i, (name, (fpr, tpr)) in enumerate(curves.items()):
        fpr, tpr = np.asarray(fpr, dtype=float), np.asarray(tpr, dtype=float)
        auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)) if fpr.size > 1 else math.nan
        style = {"color": matplotlib.colormaps["tab10"](i % 10), "linewidth": 1.6}
        axes[0].plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})", **style)
        axes[1].plot(fpr, tpr, **style)
    for ax, log in zip(axes, (False, True), strict=True):
        lo = 1e-3 if log else 0.0
        ax.plot([lo, 1], [lo, 1], color="gray", linestyle=":", label="chance" if not log else None)
        if log:
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(1e-3, 1)
            ax.set_ylim(1e-3, 1.02)
            ax.set_title("log-log (low false-positive region)", fontsize=10)
        else:
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.02)
            ax.set_title("linear", fontsize=10)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    return _save(fig, path)


def plot_all(records: Sequence[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    """Write every ratio plot whose metric has values into ``out_dir``.

    Produces ``test_acc.png``, ``dist_to_retrain.png``, ``mia_auc.png``,
    ``ulira_auc.png`` and ``time.png`` (each skipped when no record holds its
    metric). Returns the written paths.
    """
    out_dir = Path(out_dir)
    jobs = [
        ("test_acc", "test_acc.png", plot_test_accuracy),
        ("dist_to_retrain", "dist_to_retrain.png", plot_dist_to_retrain),
        ("mia_auc", "mia_auc.png", plot_mia_auc),
        ("ulira_auc", "ulira_auc.png", plot_ulira_auc),
        ("time_s", "time.png", plot_time),
    ]
    written = []
    for metric, filename, fn in jobs:
        if _has_values(records, metric):
            written.append(fn(records, out_dir / filename))
    return written
