"""The audit report of one deletion request: a self-contained HTML file and a JSON file.

:func:`write_audit` describes the request (id, state, method, options, the ids
removed and, separately, the ids skipped because earlier requests had already
forgotten them), the hashes (model before and after, ids), the method's record,
and -- when metrics are given -- the unlearned model next to a model retrained
from scratch: each metric with its 95 % interval where the counts allow one
(Wilson for a share of the forget set, Newcombe for the gap), a verdict against
a stated tolerance, and a warning when the forget set is too small to judge.

The HTML embeds its figure as a base64 PNG (no external file, script or style
sheet); the JSON holds the same content. A Markdown version and the PNG are
written beside them for older readers. Every file is written atomically
(temporary file, fsync, rename).

The package, one job per module: :mod:`.content` builds the JSON-ready content,
:mod:`.intervals` the Wilson and Newcombe intervals and the verdicts,
:mod:`.figure` the chart, :mod:`.html` the HTML page and the JSON text,
:mod:`.markdown` the Markdown, and :mod:`.text` the formatting both reports share.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from miniunlearn.fileio import atomic_write_bytes
from miniunlearn.ledger import LedgerEntry

from .content import METRIC_LABELS, audit_content
from .figure import _figure_png, comparison_figure
from .html import CSS as CSS
from .html import _html, _json_text
from .intervals import MIN_FORGET_SAMPLES, TOLERANCE, newcombe_interval, wilson_interval
from .intervals import RULE as RULE
from .intervals import VERDICT_COLORS as VERDICT_COLORS
from .intervals import VERDICTS as VERDICTS
from .intervals import Z95 as Z95
from .markdown import _markdown
from .text import IDS_SHOWN as IDS_SHOWN

__all__ = [
    "MIN_FORGET_SAMPLES",
    "METRIC_LABELS",
    "TOLERANCE",
    "AuditFiles",
    "AuditPaths",
    "audit_content",
    "audit_paths",
    "comparison_figure",
    "newcombe_interval",
    "wilson_interval",
    "write_audit",
]


class AuditPaths(NamedTuple):
    """The files of one request's report (the PNG only exists with a metrics figure)."""

    html: Path
    json: Path
    markdown: Path
    png: Path


class AuditFiles(NamedTuple):
    """What :func:`write_audit` returns: the HTML report and its JSON twin."""

    html: Path
    json: Path


def audit_paths(entry: LedgerEntry, out_dir: str | Path) -> AuditPaths:
    """Return the paths :func:`write_audit` uses for ``entry`` in ``out_dir``."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", entry.request_id).lstrip(".") or "request"
    stem = Path(out_dir) / f"audit_{safe}"
    return AuditPaths(*(stem.with_suffix(s) for s in (".html", ".json", ".md", ".png")))


def write_audit(
    entry: LedgerEntry,
    out_dir: str | Path,
    *,
    metrics: dict[str, Any] | None = None,
    retrain_metrics: dict[str, Any] | None = None,
    previously_forgotten: Any = None,
    counts: Mapping[str, int] | None = None,
    tolerance: float = TOLERANCE,
) -> AuditFiles:
    """Write the audit report of one request; return the (HTML, JSON) paths.

    ``entry`` is the ledger entry; files go to ``out_dir`` (created if missing) as
    ``audit_<request_id>.html`` (self-contained: inline style, the chart as a base64
    PNG) and ``audit_<request_id>.json`` (the same content, every id listed), plus
    ``audit_<request_id>.md`` and, with a chart, ``audit_<request_id>.png`` for older
    readers; each is written atomically. ``metrics`` are the unlearned model's metrics
    and ``retrain_metrics`` those of a model retrained without the forgotten ids (keys
    such as ``test_acc``, ``forget_acc``, ``mia_auc``, ``mia_efficacy``); without
    ``metrics`` but with ``retrain_metrics`` the entry's recorded values of the same keys
    are compared. ``previously_forgotten``: the ids forgotten by requests done before
    this one, to name the ids skipped as already forgotten (otherwise only their count
    is known). ``counts``: sizes of the sets the metrics were measured on (``forget``,
    ``retain``, ``test``), for intervals; the forget set's is otherwise derived.
    ``tolerance``: the largest gap to retraining that still matches. See
    :func:`audit_content` for the JSON's keys.
    """
    content = audit_content(
        entry,
        metrics=metrics,
        retrain_metrics=retrain_metrics,
        previously_forgotten=previously_forgotten,
        counts=counts,
        tolerance=tolerance,
    )
    paths = audit_paths(entry, out_dir)
    paths.html.parent.mkdir(parents=True, exist_ok=True)
    png = _figure_png(content["comparison"])
    if png:
        atomic_write_bytes(paths.png, png)
    else:
        paths.png.unlink(missing_ok=True)  # a chart of an earlier audit of this request
    atomic_write_bytes(paths.json, _json_text(content).encode("utf-8"))
    atomic_write_bytes(paths.markdown, _markdown(content, paths.png.name if png else None).encode("utf-8"))
    atomic_write_bytes(paths.html, _html(content, png).encode("utf-8"))
    return AuditFiles(paths.html, paths.json)
