"""Plots of benchmark records (PNG files, drawn with matplotlib's object-oriented Figure API,
so importing this module never changes the caller's global matplotlib backend).

Every metric function takes the list of per-run records (see
:mod:`miniunlearn.evaluation.report`) and an output path, writes one PNG and
returns its path. One panel per (dataset, model) pair:

* a sweep over several forget ratios draws one line per method against the ratio
  (mean over seeds, std as error bars);
* a sweep over a single ratio draws one bar per method side by side (std over
  seeds as error bars when there are several seeds), with the value written on
  each bar.

Retraining (the gold standard) is always the black dashed reference line, with
its spread over seeds (mean ± std) as a grey band when there are several seeds.
Axes never zoom into noise: AUC-like metrics (chance 0.5) always span at least
0.4..0.6 and show the chance level; accuracies and other fractions span at least
10 points on line plots and 0..1 on bar charts.

The drawing lives in sibling modules: ``plots_common`` (limits, colours, the
reference line), ``plots_bars``, ``plots_lines`` and ``plots_roc``; this module
assembles the figures and holds the public functions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter

from .plots_bars import _draw_bars
from .plots_common import (
    AUC_MIN_RANGE,
    FRACTION_MIN_SPAN,
    REFERENCE_METHOD,
    _chance,
    _save,
    _Stat,
    value_limits,
)
from .plots_common import CHANCE as CHANCE
from .plots_common import CHANCE_COLOR as CHANCE_COLOR
from .plots_lines import DODGE as DODGE
from .plots_lines import _draw_lines
from .plots_roc import MAX_ROC_CURVES as MAX_ROC_CURVES
from .plots_roc import roc_figure
from .report import metric_kind, summarise

__all__ = [
    "AUC_MIN_RANGE",
    "FRACTION_MIN_SPAN",
    "metric_figure",
    "metric_kind",
    "plot_all",
    "plot_dist_to_retrain",
    "plot_metric_vs_ratio",
    "plot_mia_auc",
    "plot_roc",
    "plot_test_accuracy",
    "plot_time",
    "plot_ulira_auc",
    "roc_figure",
    "value_limits",
]


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


def _stats(
    summary: Sequence[dict[str, Any]], panel: tuple[Any, Any], metric: str
) -> dict[tuple[str, float], _Stat]:
    """``{(method, ratio): stat}`` of one (dataset, model) panel, groups with a value only."""
    out = {}
    for r in summary:
        if (r["dataset"], r["model"]) == panel and r[f"{metric}_n"] > 0:
            out[str(r["method"]), float(r["ratio"])] = _Stat(
                r[f"{metric}_mean"], r[f"{metric}_std"], r[f"{metric}_n"]
            )
    return out


def _bounded_ticks(ax: Axes, kind: str) -> None:
    """Hide value ticks outside [0, 1] (the headroom above bars) on bounded metrics."""
    if kind in ("auc", "fraction"):
        ticks = [t for t in ax.get_yticks() if -1e-9 <= t <= 1 + 1e-9]
        ax.yaxis.set_major_locator(FixedLocator(ticks))


def _log_axis(ax: Axes) -> None:
    """Readable ticks on a log value axis: 1, 2, 5 per decade over up to 3 decades, else 1."""
    lo, hi = ax.get_ylim()
    subs = (1.0, 2.0, 5.0) if lo > 0 and math.log10(hi / lo) <= 3 else (1.0,)
    ax.yaxis.set_major_locator(LogLocator(subs=subs, numticks=12))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _figure_legend(fig: Figure, axes: Sequence[Axes]) -> None:
    """One legend for the figure, right of the panels (labels deduplicated)."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(
            list(handles.values()),
            list(handles),
            fontsize=9,
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
            frameon=False,
        )


def metric_figure(
    records: Sequence[dict[str, Any]],
    metric: str,
    ylabel: str,
    title: str,
    log_y: bool = False,
    hlines: Sequence[tuple[float, str]] = (),
) -> Figure:
    """Draw ``metric`` (mean ± std over seeds) per method and return the Figure (not saved).

    Takes the records, the metric field, axis label and title, whether to use a
    log y axis, and extra horizontal lines as ``(y, label)`` (drawn dotted). One
    panel per (dataset, model): with several forget ratios one line per method
    against the ratio (in percent); with one ratio one bar per method, retraining
    excepted. Retraining is the dashed reference with its seed spread as a band;
    AUC metrics show chance (0.5). Raises ValueError if no record holds the metric.
    """
    records = [r for r in records if r.get("ratio") is not None]
    if not _has_values(records, metric):
        raise ValueError(f"no record has a value for '{metric}'; nothing to plot")
    panels = [
        p
        for p in _panels(records)
        if _has_values((r for r in records if (r.get("dataset"), r.get("model")) == p), metric)
    ]
    summary = summarise(records, metrics=[metric])
    methods = sorted({str(r.get("method")) for r in records}, key=lambda m: (m != REFERENCE_METHOD, m))
    kind = metric_kind(metric)
    stats = [_stats(summary, p, metric) for p in panels]
    single = all(len({r for _, r in s}) == 1 for s in stats)
    width = max(5.2, 1.5 + 0.75 * len(methods)) if single else 5.2
    fig = Figure(figsize=(width * len(panels), 4.2))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (dataset, model), panel_stats in zip(axes, panels, stats, strict=True):
        one_ratio = len({r for _, r in panel_stats}) == 1
        (_draw_bars if one_ratio else _draw_lines)(ax, panel_stats, methods, kind, log_y)
        _chance(ax, kind)
        for value, label in hlines:
            ax.axhline(value, color="gray", linestyle=":", linewidth=1.2, label=label)
        if log_y:
            _log_axis(ax)
        else:
            _bounded_ticks(ax, kind)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{dataset} / {model}", fontsize=10)
    seeds = max((s.n for p in stats for s in p.values()), default=1)
    spread = f"mean ± std over {seeds} seeds" if seeds > 1 else "1 seed"
    fig.suptitle(f"{title}\n({spread})", fontsize=12)
    fig.tight_layout()
    _figure_legend(fig, axes)
    return fig


def plot_metric_vs_ratio(
    records: Sequence[dict[str, Any]],
    path: str | Path,
    metric: str,
    ylabel: str,
    title: str,
    log_y: bool = False,
    hlines: Sequence[tuple[float, str]] = (),
) -> Path:
    """Plot ``metric`` per method (lines against the ratio, or bars for a single ratio) to a PNG.

    Takes the records, the output path, and :func:`metric_figure`'s arguments.
    Returns the PNG path. Raises ValueError if no record holds the metric.
    """
    return _save(metric_figure(records, metric, ylabel, title, log_y, hlines), path)


def plot_test_accuracy(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Test accuracy per method (lines against the ratio, or bars for one ratio)."""
    return plot_metric_vs_ratio(records, path, "test_acc", "test accuracy", "Test accuracy after unlearning")


def plot_dist_to_retrain(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """L2 parameter distance to the retrained model (log y axis).

    The retrain method itself (distance 0, or to a retrain with another seed) is
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
    """Membership-inference AUC on the forget set per method.

    Retrain is the dashed reference line (its seed spread a band); 0.5 (chance)
    is dotted and the axis spans at least 0.4..0.6. ``metric`` picks the record
    field (default ``mia_auc``).
    """
    return plot_metric_vs_ratio(
        records,
        path,
        metric,
        "attack AUC on forget set",
        "Membership inference on the forget set (retrain = target)",
    )


def plot_ulira_auc(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """U-LiRA (per-example attack) AUC per method; 0.5 (chance) dotted."""
    return plot_metric_vs_ratio(
        records,
        path,
        "ulira_auc",
        "U-LiRA AUC",
        "Per-example attack (U-LiRA) on forgotten samples",
    )


def plot_time(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Wall-clock time of unlearning per method (log y axis); retraining is the reference."""
    return plot_metric_vs_ratio(records, path, "time_s", "time (s, log)", "Unlearning time", log_y=True)


def plot_roc(
    curves: Mapping[str, tuple[Any, Any]],
    path: str | Path,
    title: str = "Membership-inference ROC",
    log: bool = True,
) -> Path:
    """Write ROC curves (see :func:`roc_figure`: a panel per ratio, legends below) to a PNG.

    Returns the PNG path. Raises ValueError without curves.
    """
    return _save(roc_figure(curves, title, log), path)


def plot_all(records: Sequence[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    """Write every metric plot whose metric has values into ``out_dir``.

    Produces ``test_acc.png``, ``dist_to_retrain.png``, ``mia_auc.png``,
    ``ulira_auc.png`` and ``time.png`` (each skipped when no record holds its
    metric): bar charts for a single-ratio sweep, lines against the ratio
    otherwise. Returns the written paths.
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
