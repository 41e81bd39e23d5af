"""Bar charts of a single-ratio sweep: one bar per method (std over seeds as error bars),
its value written on it, retraining as the dashed reference line with its seed band."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes

from .plots_common import CHANCE, REFERENCE_METHOD, _color, _finite_range, _reference, _Stat, value_limits


def _fmt_value(v: float) -> str:
    """A bar's label: 3 significant digits."""
    return f"{v:.3g}"


def _bar_labels(ax: Axes, x: np.ndarray, stats: Sequence[_Stat], base: float, log_y: bool) -> None:
    """Write each bar's mean just past the end of its bar (or of its error bar)."""
    for xi, s in zip(x, stats, strict=True):
        up = s.mean >= base
        end = s.mean + s.err if up else s.mean - s.err
        if log_y and end <= 0:
            end = s.mean
        ax.annotate(
            _fmt_value(s.mean),
            (float(xi), end),
            xytext=(0, 3 if up else -3),
            textcoords="offset points",
            ha="center",
            va="bottom" if up else "top",
            fontsize=8,
            zorder=6,  # above the reference line, on a light box so that it stays legible
            bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.85},
        )


def _draw_bars(
    ax: Axes, stats: dict[tuple[str, float], _Stat], methods: Sequence[str], kind: str, log_y: bool
) -> None:
    """One bar per method at a single ratio; retraining as the reference line and band."""
    ratio = next(iter(stats))[1]
    ref = stats.get((REFERENCE_METHOD, ratio))
    shown = [m for m in methods if m != REFERENCE_METHOD and (m, ratio) in stats]
    if not shown:  # only retraining has a value: draw it as a bar too
        shown = [REFERENCE_METHOD]
    bar_stats = [stats[m, ratio] for m in shown]
    lo, hi = _finite_range([*bar_stats, *([ref] if ref else [])], log_y)
    if log_y:
        ax.set_yscale("log")
        base, limits = lo / 3, (lo / 3, hi * 4)
    else:
        base = CHANCE if kind == "auc" else 0.0
        limits = value_limits(kind, lo, hi, bars=True) or (min(lo, 0.0), max(hi, 0.0))
        span = limits[1] - limits[0] or 1.0
        below = any(s.mean < base for s in bar_stats)
        limits = (limits[0] - (0.1 * span if below else 0.0), limits[1] + 0.1 * span)
    x = np.arange(len(shown))
    means = np.array([s.mean for s in bar_stats])
    heights = np.where(np.isfinite(means) & (means > 0 if log_y else True), means - base, 0.0)
    errs = np.array([s.err for s in bar_stats])
    ax.bar(
        x,
        heights,
        bottom=base,
        width=0.65,
        color=[_color(methods, m) for m in shown],
        yerr=errs if np.any(errs > 0) else None,
        capsize=4,
        error_kw={"ecolor": "0.2", "elinewidth": 1.2, "zorder": 4},
        zorder=2,
    )
    _bar_labels(ax, x, bar_stats, base, log_y)
    _reference(ax, ref if shown != [REFERENCE_METHOD] else None, log_y)
    ax.set_ylim(*limits)
    ax.set_xlim(-0.6, len(shown) - 0.4)
    rotate = len(shown) * max(len(m) for m in shown) > 50
    ax.set_xticks(x, shown, rotation=25 if rotate else 0, ha="right" if rotate else "center")
    ax.set_xlabel(f"method (forget ratio {100 * ratio:g}% of the training set)")
    ax.grid(True, axis="y", which="major", alpha=0.3)
    if kind == "auc":
        ax.text(
            0.01,
            0.99,
            "bars start at chance (0.5)",
            transform=ax.transAxes,
            fontsize=7,
            va="top",
            ha="left",
            color="0.35",
        )
