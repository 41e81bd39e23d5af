"""The audit's chart: the unlearned model next to the retrained one, one row per 0..1 metric.

matplotlib is imported only when a chart is drawn, with its object-oriented API
(the caller's global backend is left alone).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .intervals import VERDICT_COLORS

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _draw_row(ax: Axes, y: int, row: Mapping[str, Any], tolerance: float, first: dict[str, bool]) -> None:
    """One metric of the comparison chart: tolerance band, chance mark, both values with intervals."""
    from matplotlib.transforms import blended_transform_factory

    def once(name: str) -> str | None:
        """``name`` the first time (a legend entry), None after."""
        if first.get(name):
            return None
        first[name] = True
        return name

    b = row["retrained"]
    ax.fill_betweenx(
        [y - 0.4, y + 0.4],
        max(b - tolerance, 0),
        min(b + tolerance, 1),
        color="#d8eed6",
        linewidth=0,
        zorder=0,
        label=once(f"retrained ± tolerance ({tolerance:g})"),
    )
    if row["kind"] == "auc":
        ax.plot(
            [0.5, 0.5],
            [y - 0.45, y + 0.45],
            color="0.3",
            linestyle=":",
            linewidth=1.3,
            label=once("chance (AUC 0.5)"),
        )
    series = (
        ("unlearned", row["unlearned_interval"], -0.15, "o", "#1f6feb"),
        ("retrained", row["retrained_interval"], 0.15, "s", "black"),
    )
    for name, ci, dy, marker, color in series:
        v = row[name]
        xerr = None if ci is None else [[v - ci[0]], [ci[1] - v]]
        ax.errorbar(
            [v],
            [y + dy],
            xerr=xerr,
            fmt=marker,
            color=color,
            markersize=6,
            capsize=3,
            elinewidth=1.3,
            zorder=3,
            label=once(name),
        )
    verdict = row["verdict"] or "not judged"
    ax.text(
        1.03,
        y,
        f"{row['unlearned']:.3f} vs {b:.3f}   gap {row['gap']:+.3f}   {verdict}",
        transform=blended_transform_factory(ax.transAxes, ax.transData),
        va="center",
        ha="left",
        fontsize=9,
        color=VERDICT_COLORS.get(verdict, "0.3"),
        clip_on=False,
    )


def comparison_figure(comparison: Mapping[str, Any] | None) -> Figure | None:
    """The chart of :func:`audit_content`'s ``comparison``: one row per 0..1 metric measured on
    both models (values, 95 % intervals, retrained ± tolerance, chance for AUCs; the values, gap
    and verdict written right of the axes). None when there is no such metric."""
    rows = [r for r in (comparison or {}).get("rows", []) if r["kind"] in ("auc", "fraction")]
    if not rows:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 1.6 + 0.55 * len(rows)), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    first: dict[str, bool] = {}
    for y, row in enumerate(rows):
        _draw_row(ax, y, row, comparison["tolerance"], first)
    ax.set_yticks(range(len(rows)), [r["label"] for r in rows])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("value (0 to 1); whiskers: 95 % interval where the sample count is known")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("Unlearned vs retrained, per metric", loc="left", fontsize=11)
    ax.text(
        1.03,
        -0.5,
        "unlearned vs retrained, gap, verdict",
        transform=ax.get_yaxis_transform(),
        va="bottom",
        ha="left",
        fontsize=9,
        color="0.3",
        clip_on=False,
    )
    fig.legend(loc="outside lower center", ncols=4, fontsize=9, frameon=False)
    return fig


def _figure_png(comparison: Mapping[str, Any] | None) -> bytes | None:
    """:func:`comparison_figure` as PNG bytes, or None without a chart."""
    fig = comparison_figure(comparison)
    if fig is None:
        return None
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()
