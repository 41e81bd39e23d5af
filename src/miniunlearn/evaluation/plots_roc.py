"""ROC curves of the membership-inference attack: one panel per forget ratio, one curve per
method with its AUC in the legend below the panel, the diagonal as chance."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .plots_common import CHANCE_COLOR, REFERENCE_METHOD, _color

MAX_ROC_CURVES = 8
"""Curves drawn at most in one ROC panel (the reference and the first methods given)."""


def _roc_groups(curves: Mapping[str, tuple[Any, Any]]) -> dict[str, dict[str, tuple[Any, Any]]]:
    """Group ``{"method @ 10%": curve}`` by the part after `` @ `` (one panel each).

    Names without `` @ `` go to one panel named ``""``. Within a panel the
    reference method comes first, then the others in the order given.
    """
    groups: dict[str, dict[str, tuple[Any, Any]]] = {}
    for name, curve in curves.items():
        label, sep, panel = name.rpartition(" @ ")
        if not sep:
            label, panel = name, ""
        groups.setdefault(panel.strip(), {}).setdefault(label.strip(), curve)
    for panel, members in groups.items():
        order = sorted(members, key=lambda m: m != REFERENCE_METHOD)
        groups[panel] = {m: members[m] for m in order}
    return groups


def _roc_auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Trapezoidal area under a ROC curve (NaN for fewer than two points)."""
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)) if fpr.size > 1 else math.nan


def _roc_panel(ax: Axes, curves: Mapping[str, tuple[Any, Any]], methods: Sequence[str], log: bool) -> None:
    """Draw one panel's first :data:`MAX_ROC_CURVES` curves, the chance diagonal, and the legend
    below the axes (its title counts the curves left out)."""
    shown = list(curves)[:MAX_ROC_CURVES]
    for name in shown:
        fpr, tpr = curves[name]
        fpr, tpr = np.asarray(fpr, dtype=float), np.asarray(tpr, dtype=float)
        ref = name == REFERENCE_METHOD
        ax.plot(
            fpr,
            tpr,
            label=f"{name} (AUC {_roc_auc(fpr, tpr):.3f})",
            color=_color(methods, name),
            linestyle="--" if ref else "-",
            linewidth=1.8 if ref else 1.4,
            zorder=3 if ref else 2,
        )
    lo = 1e-3 if log else 0.0
    ax.plot([lo, 1], [lo, 1], color=CHANCE_COLOR, linestyle=":", linewidth=1.4, label="chance")
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlim(lo, 1)
    ax.set_ylim(lo, 1.02)
    ax.set_xlabel("false positive rate" + (" (log)" if log else ""))
    ax.set_ylabel("true positive rate" + (" (log)" if log else ""))
    ax.grid(True, alpha=0.3)
    left_out = len(curves) - len(shown)
    ax.legend(
        fontsize=8,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.2),
        frameon=False,
        ncols=1,
        title=f"not shown: {', '.join(list(curves)[MAX_ROC_CURVES:])}" if left_out else None,
        title_fontsize=8,
    )


def roc_figure(
    curves: Mapping[str, tuple[Any, Any]],
    title: str = "Membership-inference ROC",
    log: bool = True,
) -> Figure:
    """Draw ROC curves, one panel per forget ratio, and return the Figure (not saved).

    Takes ``{name: (fpr, tpr)}`` arrays (e.g. from ``AttackResult.fpr/.tpr``);
    names like ``"mini @ 10%"`` (as ``bench`` makes them) put each ratio in its own
    panel with one curve per method (at most :data:`MAX_ROC_CURVES`; the legend
    names those left out), other names share one panel. ``log``: log-log axes (the
    low false-positive region matters most) or linear ones. The diagonal is chance;
    each legend entry, below its panel, gives the AUC. Raises ValueError without curves.
    """
    if not curves:
        raise ValueError("no ROC curve to plot")
    groups = _roc_groups(curves)
    methods = sorted({m for g in groups.values() for m in g}, key=lambda m: (m != REFERENCE_METHOD, m))
    ncols = min(len(groups), 3)
    nrows = math.ceil(len(groups) / ncols)
    legend_rows = min(max(len(g) for g in groups.values()), MAX_ROC_CURVES) + 1
    fig = Figure(figsize=(4.4 * ncols, (4.6 + 0.2 * legend_rows) * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (panel, members) in zip(axes, groups.items(), strict=False):
        _roc_panel(ax, members, methods, log)
        ax.set_title(f"forget ratio {panel}" if panel else "", fontsize=10)
    for ax in axes[len(groups) :]:
        ax.set_visible(False)
    fig.suptitle(title + ("\n(log-log axes: the low false-positive region)" if log else ""), fontsize=12)
    return fig
