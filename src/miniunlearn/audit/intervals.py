"""Intervals and verdicts of the audit's comparison with retraining.

Wilson score intervals of a share, Newcombe's interval of the gap between two
shares, and the verdict of each compared metric and of the request against a
stated tolerance (the rule is :data:`RULE`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .text import _fmt_ci

TOLERANCE = 0.05
"""Default tolerance of the verdict: the largest |unlearned - retrained| (on a 0..1 scale)
still counted as matching retraining."""

MIN_FORGET_SAMPLES = 30
"""Below this many forgotten samples the forget-set metrics are not judged."""

Z95 = 1.959963984540054
"""The two-sided 95 % quantile of the normal distribution."""

VERDICTS = ("matches", "inconclusive", "differs")
"""Verdicts of a compared metric and of the request, from best to worst."""

VERDICT_COLORS = {"matches": "#1a7f37", "inconclusive": "#9a6700", "differs": "#cf222e"}

RULE = (
    "A metric matches retraining when |unlearned - retrained| is within the tolerance (on a 0..1 "
    "scale); it differs when the gap is beyond the tolerance and its 95 % interval excludes 0 (or no "
    "interval is known); a gap beyond the tolerance whose interval includes 0 may be noise: "
    f"inconclusive. Metrics measured on fewer than {MIN_FORGET_SAMPLES} forgotten samples are not judged "
    "(inconclusive). The request's verdict is the worst of its metrics'."
)
"""How the verdicts are decided (stated in every report)."""


def wilson_interval(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``p`` observed on ``n`` samples (95 % by default).

    Returns ``(low, high)`` within [0, 1]; ``(0, 1)`` when ``n`` is 0.
    """
    if n <= 0:
        return 0.0, 1.0
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_interval(
    p1: float, ci1: tuple[float, float], p2: float, ci2: tuple[float, float]
) -> tuple[float, float]:
    """Newcombe's hybrid score interval of ``p1 - p2`` from each proportion's Wilson interval.

    It treats the two proportions as independent; for two models judged on the same
    samples (whose answers mostly agree) it is conservative, i.e. wider than needed.
    """
    d = p1 - p2
    low = d - math.sqrt((p1 - ci1[0]) ** 2 + (ci2[1] - p2) ** 2)
    high = d + math.sqrt((ci1[1] - p1) ** 2 + (p2 - ci2[0]) ** 2)
    return max(-1.0, low), min(1.0, high)


def _on_forget_set(key: str) -> bool:
    """True for metrics measured on the forgotten samples (accuracy and attacks)."""
    return key.startswith(("forget_", "mia_", "ulira_"))


def _judge(
    key: str, gap: float, gap_ci: tuple[float, float] | None, n_forget: int | None, tolerance: float
) -> tuple[str, str]:
    """Verdict of one compared metric (see :data:`RULE`) and the reason for it."""
    if _on_forget_set(key) and n_forget is not None and n_forget < MIN_FORGET_SAMPLES:
        return "inconclusive", f"forget set of {n_forget} samples (fewer than {MIN_FORGET_SAMPLES})"
    if abs(gap) <= tolerance + 1e-12:
        return "matches", f"gap within ±{tolerance:g}"
    if gap_ci is None:
        return "differs", f"gap beyond ±{tolerance:g} (no interval: sample count not known)"
    lo, hi = gap_ci
    if lo <= 0 <= hi:
        return "inconclusive", f"gap beyond ±{tolerance:g}, but its 95 % interval includes 0: may be noise"
    return "differs", f"gap beyond ±{tolerance:g}, and its 95 % interval excludes 0"


def _overall(rows: Sequence[dict[str, Any]], tolerance: float, n_forget: int | None) -> dict[str, Any]:
    """The request's verdict: the worst verdict of its judged metrics, and a sentence saying why."""
    judged = [r for r in rows if r["verdict"]]
    if not judged:
        return {"verdict": "not judged", "summary": "no 0..1 score was measured on both models"}
    worst = max((r["verdict"] for r in judged), key=VERDICTS.index)
    if worst == "matches":
        summary = f"matches retraining within ±{tolerance:g} on every judged metric ({len(judged)})"
        return {"verdict": worst, "summary": summary, "tolerance": tolerance}
    which = [r for r in judged if r["verdict"] == worst]
    small = [r for r in which if r["basis"].startswith("forget set of")]
    gaps = "; ".join(
        f"{r['label']} (gap {_fmt_ci(r['gap'], r['gap_interval'], signed=True)})"
        for r in which
        if r not in small
    )
    parts = (
        [f"the forget set has only {n_forget} samples, too few to judge {len(small)} forget-set metrics"]
        if small
        else []
    )
    if gaps:
        noise = " that may be noise" if worst == "inconclusive" else ""
        parts.append(f"a gap beyond ±{tolerance:g}{noise} on: {gaps}")
    summary = f"{worst}: " + "; ".join(parts)
    return {"verdict": worst, "summary": summary, "tolerance": tolerance}


def _small_forget_warning(n: int, rows: Sequence[dict[str, Any]]) -> str:
    """The warning of a forget set too small to judge, with the interval widths it implies."""
    lo, hi = wilson_interval(0.5, n)
    text = (
        f"The forget set has only {n} samples (fewer than {MIN_FORGET_SAMPLES}): too few to judge "
        f"forgetting. A share measured on it (accuracy, MIA efficacy) has a 95 % interval up to "
        f"{hi - lo:.2f} wide (±{(hi - lo) / 2:.2f} at 50 %)."
    )
    for r in rows:
        if r["gap_interval"] and _on_forget_set(r["key"]):
            g_lo, g_hi = r["gap_interval"]
            text += f" The {r['label']} gap {r['gap']:+.2f} has the interval [{g_lo:+.2f}, {g_hi:+.2f}]."
    return text + " Forget-set metrics are shown but not judged."
