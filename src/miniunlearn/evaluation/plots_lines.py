"""Line plots of a sweep over forget ratios: one line per method against the ratio (mean
± std over seeds, methods dodged a little sideways), retraining dashed with its seed band."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.ticker import FixedLocator, NullLocator

from .plots_common import REFERENCE_METHOD, _color, _finite_range, _Stat, value_limits

DODGE = 0.012
"""Sideways shift between methods on line plots, as a share of the ratio axis' span."""


def _dodge(x: np.ndarray, index: int, count: int, log_x: bool, span: float) -> np.ndarray:
    """``x`` shifted a little per method (``index`` of ``count``) so equal values stay visible."""
    step = (index - (count - 1) / 2) * DODGE
    return x * 10 ** (step * max(span, 1.0)) if log_x else x + step * span


def _method_line(
    ax: Axes, x: np.ndarray, s: Sequence[_Stat], method: str, methods: Sequence[str], log_y: bool
) -> None:
    """One method's mean ± std against the ratio; retraining dashed, with its std as a band."""
    y = np.array([v.mean for v in s])
    err = np.array([v.err for v in s])
    if log_y:  # keep error bars above zero on a log axis
        y = np.where(y > 0, y, np.nan)
        if np.all(np.isnan(y)):
            return
    ref = method == REFERENCE_METHOD
    if ref and any(v.n >= 2 and v.err > 0 for v in s):
        lo = np.maximum(y - err, y / 10) if log_y else y - err
        seeds = max(v.n for v in s)
        ax.fill_between(
            x,
            lo,
            y + err,
            color="0.6",
            alpha=0.3,
            linewidth=0,
            zorder=0.5,
            label=f"retrain ± std over {seeds} seeds",
        )
    yerr = None if ref else (np.vstack([np.minimum(err, 0.9 * y), err]) if log_y else err)
    ax.errorbar(
        x,
        y,
        yerr=yerr,
        label="retrain (reference)" if ref else method,
        capsize=3,
        linewidth=1.6,
        markersize=5,
        color=_color(methods, method),
        linestyle="--" if ref else "-",
        marker="s" if ref else "o",
        zorder=3 if ref else 2,
    )


def _draw_lines(
    ax: Axes, stats: dict[tuple[str, float], _Stat], methods: Sequence[str], kind: str, log_y: bool
) -> None:
    """One line per method against the forget ratio (methods dodged a little sideways so that
    equal values stay visible); retraining dashed with its std band."""
    ratios = sorted({r for _, r in stats})
    log_x = len(ratios) > 1 and ratios[0] > 0 and ratios[-1] / ratios[0] >= 10
    span = math.log10(ratios[-1] / ratios[0]) if log_x else ratios[-1] - ratios[0]
    others = [m for m in methods if m != REFERENCE_METHOD]
    for method in methods:
        xs = [r for r in ratios if (method, r) in stats]
        if not xs:
            continue
        x = np.array(xs)
        if method != REFERENCE_METHOD:
            x = _dodge(x, others.index(method), len(others), log_x, span)
        _method_line(ax, x, [stats[method, r] for r in xs], method, methods, log_y)
    if log_y:
        ax.set_yscale("log")
    else:
        limits = value_limits(kind, *_finite_range(stats.values(), log_y))
        if limits:
            ax.set_ylim(*limits)
    if log_x:
        ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(ratios))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{100 * v:g}%" for v in ratios])
    ax.set_xlabel("forget ratio (% of training set)")
    ax.grid(True, which="major", alpha=0.3)
