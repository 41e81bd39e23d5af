"""The audit report as one self-contained HTML page, and its JSON twin's text.

The page has its style inline and its chart as a base64 PNG: no external file,
script or style sheet.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .intervals import VERDICT_COLORS
from .text import _flatten, _fmt, _fmt_ci, _request_rows, _title

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#1f2328;line-height:1.45}
h1{font-size:1.5em;margin-bottom:.3em}
h2{font-size:1.2em;border-bottom:1px solid #d0d7de;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0}
th,td{border:1px solid #d0d7de;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f6f8fa}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.9em;word-break:break-all}
.badge{display:inline-block;padding:.05em .6em;border-radius:1em;color:#fff;font-weight:600}
.matches{background:#1a7f37}.inconclusive{background:#9a6700}.differs{background:#cf222e}
.neutral{background:#57606a}
.warning{border-left:4px solid #bf8700;background:#fff8c5;padding:.6em 1em;margin:.8em 0}
.note{color:#57606a;font-size:.92em}
img{max-width:100%;height:auto}
"""


class _Raw(str):
    """A table cell that is already HTML (not escaped again)."""


def _cell(value: Any) -> str:
    """Escape a cell unless it is :class:`_Raw`."""
    return value if isinstance(value, _Raw) else html.escape(str(value))


def _html_table(
    rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None, numbers: Sequence[int] = ()
) -> str:
    """An HTML table; the columns ``numbers`` are right-aligned numbers."""
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
    num = ' class="num"'
    for row in rows:
        cells = (f"<td{num if i in numbers else ''}>{_cell(v)}</td>" for i, v in enumerate(row))
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join([*out, "</table>"])


def _badge(verdict: str | None) -> str:
    """A coloured verdict label."""
    name = verdict or "not judged"
    cls = name if name in VERDICT_COLORS else "neutral"
    return f'<span class="badge {cls}">{html.escape(name)}</span>'


def _html_comparison(content: Mapping[str, Any], png: bytes | None) -> str:
    """The comparison section: verdict, warnings, table of judged metrics, chart, other values."""
    comp = content["comparison"]
    if comp is None:
        return (
            "<h2>Comparison with retraining</h2>\n<p>No metrics were given for this request, so the "
            "unlearned model is not compared with a retrained one (the audit command does this with "
            "<code>--with-metrics</code>).</p>"
        )
    verdict = comp["verdict"]
    fs = comp["forget_set"]
    parts = [
        "<h2>Comparison with retraining</h2>",
        f"<p>{_badge(verdict['verdict'])} {html.escape(verdict['summary'])}</p>",
        f'<p class="note">Tolerance ±{comp["tolerance"]:g}. {html.escape(comp["rule"])} '
        f"Forget set: {html.escape(_fmt(fs['n']))} samples ({html.escape(fs['source'])}). "
        "Intervals: Wilson for a share of a known number of samples; the gap's interval is Newcombe's "
        "(it treats the two models as independent, so it is if anything too wide).</p>",
    ]
    parts += [f'<div class="warning">{html.escape(w)}</div>' for w in content["warnings"]]
    rows = [
        (
            _Raw(f"{html.escape(r['label'])} <code>{html.escape(r['key'])}</code>"),
            _fmt_ci(r["unlearned"], r["unlearned_interval"]),
            _fmt_ci(r["retrained"], r["retrained_interval"]),
            _fmt_ci(r["gap"], r["gap_interval"], signed=True),
            _Raw(f'{_badge(r["verdict"])}<br><span class="note">{html.escape(r["basis"])}</span>'),
        )
        for r in comp["rows"]
    ]
    header = ["metric", "unlearned [95 %]", "retrained [95 %]", "gap [95 %]", "verdict"]
    if rows:
        parts.append(_html_table(rows, header, numbers=(1, 2, 3)))
    if png:
        data = base64.b64encode(png).decode("ascii")
        parts.append(
            f'<p><img alt="unlearned vs retrained, per metric" src="data:image/png;base64,{data}"></p>'
        )
    if comp["other"]:
        other = [(k, _fmt(v["unlearned"]), _fmt(v["retrained"])) for k, v in comp["other"].items()]
        parts += [
            "<h3>Other measurements</h3>",
            _html_table(other, ["metric", "unlearned", "retrained"], (1, 2)),
        ]
    return "\n".join(parts)


def _html(content: Mapping[str, Any], png: bytes | None) -> str:
    """The whole report as one self-contained HTML page (inline style, figure as base64 PNG)."""
    req, comp = content["request"], content["comparison"]
    verdict = comp["verdict"]["verdict"] if comp else None
    head = f"{_badge(verdict)} " if comp else ""
    record = content["record"]
    record_rows = [(k, _fmt(v)) for k, v in _flatten(record)] if record else []
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Audit: {html.escape(_title(content))}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{html.escape(_title(content))}</h1>",
        f"<p>{head}state <b>{html.escape(req['state'])}</b>, "
        f"method <code>{html.escape(req['method'])}</code>, "
        f"{content['ids']['removed']['n']} ids removed, {content['ids']['skipped_already_forgotten']['n']} "
        "skipped as already forgotten.</p>",
        "<h2>Request</h2>",
        _html_table(
            [
                (k, _Raw(f'<span class="mono">{html.escape(v)}</span>') if "sha256" in k else v)
                for k, v in _request_rows(content)
            ]
        ),
    ]
    if content["ids"]["note"]:
        parts.append(f'<p class="note">{html.escape(content["ids"]["note"])}.</p>')
    certificate = content["certificate"]
    parts += ["<h2>Certificate</h2>", f"<p>{html.escape(certificate['text'])}</p>"]
    if certificate["fields"]:
        rows = [(k, _fmt(v)) for k, v in certificate["fields"].items()]
        parts.append(_html_table(rows, ["field", "value"]))
    parts.append(_html_comparison(content, png))
    if comp is None:
        parts += [f'<div class="warning">{html.escape(w)}</div>' for w in content["warnings"]]
    parts += [
        "<h2>Method record</h2>",
        (
            f"<details><summary>What the method recorded ({len(record_rows)} fields)</summary>\n"
            + _html_table(record_rows, ["field", "value"])
            + "\n</details>"
            if record_rows
            else "<p>No record was stored.</p>"
        ),
        f'<hr><p class="note">Generated by {html.escape(content["generated_by"])} at '
        f"{html.escape(content['generated_at'])}. The JSON file beside this one holds the same content, "
        "with every id.</p>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _json_text(content: Mapping[str, Any]) -> str:
    """Indented JSON whose lists of plain values (ids, numbers) stay on one line each."""
    text = json.dumps(content, indent=2, ensure_ascii=False)
    flat = re.compile(r"\[[^\[\]{}\"]*\]")
    return (
        flat.sub(
            lambda m: "[" + ", ".join(v.strip() for v in m.group(0)[1:-1].split(",") if v.strip()) + "]", text
        )
        + "\n"
    )
