"""When a recorded history pays for itself: requests after which a method's one-off
recording cost is won back by its cheaper requests, against each peer.

A method that reads a history recorded at training (``recording_*`` fields of a bench
record) pays that once; a peer pays more per request. After n requests the method has
cost R_m + n c_m and the peer R_p + n c_p, so the recording is paid back after
n* = (R_m - R_p) / (c_p - c_m) requests, counted in per-sample gradient evaluations and,
separately, in seconds. n* is 0 when the method records no more than the peer, and
never (None) when the method is not cheaper per request.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["break_even", "break_even_table"]


def _mean(values: Iterable[Any]) -> float | None:
    """Mean of the numbers among ``values`` (None when there are none)."""
    numbers = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    numbers = [v for v in numbers if math.isfinite(v)]
    return sum(numbers) / len(numbers) if numbers else None


def _requests(recording: float, per_request: float) -> float | None:
    """Requests to win back ``recording`` (the extra one-off cost) when each saves
    ``per_request``: 0 when nothing extra was recorded, None when nothing is saved."""
    if recording <= 0:
        return 0.0
    if per_request <= 0:
        return None
    return recording / per_request


def break_even(records: Sequence[dict[str, Any]], method: str = "mini") -> list[dict[str, Any]]:
    """For each (dataset, model, ratio) and each other method of ``records`` (bench records),
    compare ``method`` with that peer, means over seeds.

    Returns rows with the ratio, the peer, per-request gradient evaluations and seconds of
    both, their recording evaluations and seconds, and ``requests_evals`` /
    ``requests_seconds``: the requests after which ``method``'s recording is paid back
    (see the module docstring). Records without recording fields are skipped.
    """
    groups: dict[tuple[Any, Any, Any], dict[str, list[dict[str, Any]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for record in records:
        if record.get("recording_grad_evals") is None or record.get("diverged"):
            continue
        key = (record.get("dataset"), record.get("model"), record.get("ratio"))
        groups[key][record["method"]].append(record)
    rows = []
    for (dataset, model, ratio), by_method in groups.items():
        if method not in by_method:
            continue
        ours = _costs(by_method[method])
        for peer, peer_records in by_method.items():
            if peer == method:
                continue
            theirs = _costs(peer_records)
            rows.append(
                {
                    "dataset": dataset,
                    "model": model,
                    "ratio": ratio,
                    "method": method,
                    "peer": peer,
                    **{f"{k}_method": v for k, v in ours.items()},
                    **{f"{k}_peer": v for k, v in theirs.items()},
                    "requests_evals": _requests(
                        ours["recording_evals"] - theirs["recording_evals"], theirs["evals"] - ours["evals"]
                    ),
                    "requests_seconds": _requests(
                        ours["recording_s"] - theirs["recording_s"], theirs["time_s"] - ours["time_s"]
                    ),
                }
            )
    return sorted(rows, key=lambda r: (str(r["dataset"]), str(r["model"]), float(r["ratio"]), r["peer"]))


def _costs(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Mean per-request and recording costs of one method's records over seeds."""
    return {
        "evals": _mean(r["grad_evals"] for r in records) or 0.0,
        "time_s": _mean(r["time_s"] for r in records) or 0.0,
        "passes": _mean(r.get("passes") for r in records) or 0.0,
        "recording_evals": _mean(r["recording_grad_evals"] for r in records) or 0.0,
        "recording_passes": _mean(r.get("recording_passes") for r in records) or 0.0,
        "recording_s": _mean(r.get("recording_s") for r in records) or 0.0,
    }


def _count(value: float | None) -> str:
    """A request count for a table: "never", or rounded up to whole requests."""
    return "never" if value is None else str(math.ceil(value - 1e-9))


def break_even_table(rows: Sequence[dict[str, Any]]) -> str:
    """Render :func:`break_even` rows as a markdown table (empty string for no rows)."""
    if not rows:
        return ""
    method = rows[0]["method"]
    lines = [
        f"| ratio | peer | passes per request ({method} / peer) | recording passes ({method} / peer) "
        f"| seconds per request ({method} / peer) | recording s ({method} / peer) "
        "| paid back after (passes) | paid back after (seconds) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {100 * float(r['ratio']):g}% | {r['peer']} "
            f"| {r['passes_method']:.3g} / {r['passes_peer']:.3g} "
            f"| {r['recording_passes_method']:.3g} / {r['recording_passes_peer']:.3g} "
            f"| {r['time_s_method']:.3g} / {r['time_s_peer']:.3g} "
            f"| {r['recording_s_method']:.3g} / {r['recording_s_peer']:.3g} "
            f"| {_count(r['requests_evals'])} | {_count(r['requests_seconds'])} |"
        )
    return "\n".join(lines) + "\n"
