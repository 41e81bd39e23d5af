"""What the benchmark plots share: the reference method, chance, value-axis limits, the
per-method statistic and colour, saving a PNG, and retraining's reference line and band.

Used by :mod:`miniunlearn.evaluation.plots` and its sibling modules ``plots_bars``,
``plots_lines`` and ``plots_roc``; matplotlib only through its object-oriented API.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure

REFERENCE_METHOD = "retrain"
"""The method drawn as the dashed reference line (the gold standard)."""

CHANCE = 0.5
"""The AUC of an attack that guesses."""

CHANCE_COLOR = "0.3"
"""Colour of the chance line (dark grey, dotted; no method uses grey)."""

AUC_MIN_RANGE = (0.4, 0.6)
"""An AUC axis always covers at least this range (so noise around 0.5 looks like noise)."""

FRACTION_MIN_SPAN = 0.1
"""A line plot of an accuracy-like fraction always spans at least this much (10 points)."""


def value_limits(kind: str, lo: float, hi: float, *, bars: bool = False) -> tuple[float, float] | None:
    """Value-axis limits of a metric of ``kind`` whose data spans ``lo``..``hi``.

    AUCs cover at least :data:`AUC_MIN_RANGE`; fractions cover 0..1 on bar charts
    and at least :data:`FRACTION_MIN_SPAN` on line plots; both stay inside [0, 1]
    apart from a 3 % margin. Returns None for other metrics (matplotlib's own limits).
    """
    if kind not in ("auc", "fraction") or not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    pad = 0.05 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    if kind == "auc":
        lo, hi = min(lo, AUC_MIN_RANGE[0]), max(hi, AUC_MIN_RANGE[1])
    elif bars:
        lo, hi = 0.0, 1.0
    elif hi - lo < FRACTION_MIN_SPAN:
        mid = (lo + hi) / 2
        lo, hi = mid - FRACTION_MIN_SPAN / 2, mid + FRACTION_MIN_SPAN / 2
        lo, hi = lo - max(hi - 1.0, 0.0), hi - min(lo, 0.0)  # shift inside [0, 1]
    lo, hi = max(lo, 0.0), min(hi, 1.0)
    margin = 0.03 * (hi - lo)
    return lo - margin, hi + margin


@dataclass(frozen=True)
class _Stat:
    """Mean, sample std (NaN with fewer than two values) and count of one metric."""

    mean: float
    std: float
    n: int

    @property
    def err(self) -> float:
        """The std, or 0 when it is undefined or mere rounding noise of equal values."""
        if not math.isfinite(self.std) or self.std <= 1e-9 * max(abs(self.mean), 1.0):
            return 0.0
        return self.std


def _color(methods: Sequence[str], method: str) -> Any:
    """Colour of a method: black for the reference, tab10 without its grey by position otherwise."""
    if method == REFERENCE_METHOD:
        return "black"
    others = [m for m in methods if m != REFERENCE_METHOD]
    palette = [i for i in range(10) if i != 7]  # grey is for chance and the retrain band
    return matplotlib.colormaps["tab10"](palette[others.index(method) % len(palette)])


def _save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG to ``path`` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def _finite_range(stats: Iterable[_Stat], log_y: bool) -> tuple[float, float]:
    """Lowest and highest of mean ± std over ``stats`` (positive values only with ``log_y``)."""
    values = [v for s in stats for v in (s.mean - s.err, s.mean + s.err, s.mean)]
    values = [v for v in values if math.isfinite(v) and (v > 0 or not log_y)]
    return (min(values), max(values)) if values else (math.nan, math.nan)


def _reference(ax: Axes, stat: _Stat | None, log_y: bool) -> None:
    """Retraining's mean as a dashed line across the panel, its mean ± std as a grey band."""
    if stat is None or (log_y and stat.mean <= 0):
        return
    label = "retrain (reference)"
    if stat.n >= 2 and stat.err > 0:
        lo = stat.mean - stat.std
        if log_y and lo <= 0:
            lo = stat.mean / 10
        ax.axhspan(
            lo,
            stat.mean + stat.std,
            color="0.6",
            alpha=0.3,
            linewidth=0,
            zorder=0.5,
            label=f"retrain ± std over {stat.n} seeds",
        )
    ax.axhline(stat.mean, color="black", linestyle="--", linewidth=1.4, zorder=3, label=label)


def _chance(ax: Axes, kind: str) -> None:
    """The chance level (0.5) of an AUC metric, dotted."""
    if kind == "auc":
        ax.axhline(CHANCE, color=CHANCE_COLOR, linestyle=":", linewidth=1.4, zorder=2, label="chance (0.5)")
