"""Tests of the per-request audit report (self-contained HTML + JSON, Markdown and PNG beside)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from miniunlearn.audit import (
    MIN_FORGET_SAMPLES,
    audit_content,
    audit_paths,
    comparison_figure,
    newcombe_interval,
    wilson_interval,
    write_audit,
)
from miniunlearn.ledger import Ledger, LedgerEntry

H0 = "0" * 64
H1 = "1" * 64
H2 = "2" * 64
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

UNLEARNED = {
    "test_acc": 0.91,
    "retain_acc": 0.97,
    "forget_acc": 0.93,
    "mia_auc": 0.58,
    "dist_to_retrain": 0.3,
}
RETRAINED = {"test_acc": 0.915, "retain_acc": 0.98, "forget_acc": 0.90, "mia_auc": 0.51}


@pytest.fixture
def done_entry(tmp_path: Path) -> LedgerEntry:
    run = tmp_path / "run"
    run.mkdir()
    ids = np.arange(0, 2000, 7)
    with Ledger.open(run) as led:
        led.receive(ids, "gradient_ascent", {"lr": 0.01, "epochs": 3}, H0, request_id="req-1")
        return led.complete("req-1", H1, 2, None, 0.25)


@pytest.fixture
def overlapping(tmp_path: Path) -> LedgerEntry:
    """A second request of 7 ids, 2 of which (2 and 3) an earlier request forgot."""
    run = tmp_path / "run2"
    run.mkdir()
    with Ledger.open(run) as led:
        led.receive([1, 2, 3], "mini", {}, H0, request_id="first")
        led.complete("first", H1, 1, {"skipped_already_forgotten": 0}, 0.1)
        led.receive([2, 3, 10, 11, 12, 13, 14], "mini", {}, H1, request_id="second")
        record = {
            "skipped_already_forgotten": 2,
            "n_forget": 5,
            "n_previously_forgotten": 3,
            "diagnostics": {"steps": 0, "fallbacks": 0, "grad_norms": [1.0, 0.5, 0.25]},
            "options": {"memory": 10},
        }
        return led.complete("second", H2, 2, record, 0.2)


def _only_outputs(out: Path, *paths: Path) -> None:
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)  # no temp files


def _self_contained(text: str) -> None:
    assert "http:" not in text and "https:" not in text and "<link" not in text and "<script" not in text
    for src in re.findall(r'src="([^"]*)"', text):
        assert src.startswith("data:image/png;base64,")


def test_audit_with_metrics(done_entry: LedgerEntry, tmp_path: Path) -> None:
    out = tmp_path / "audit"
    files = write_audit(done_entry, out, metrics=UNLEARNED, retrain_metrics=RETRAINED)
    paths = audit_paths(done_entry, out)
    assert tuple(files) == (paths.html, paths.json)
    page = files.html.read_text()
    _self_contained(page)
    assert page.count("data:image/png;base64,") == 1
    for text in (done_entry.ids_sha256, H0, H1, "gradient_ascent", "lr = 0.01", "0, 7, 14, 21"):
        assert text in page
    content = json.loads(files.json.read_text())
    assert content["request"]["request_id"] == "req-1" and content["request"]["options"] == {
        "lr": 0.01,
        "epochs": 3,
    }
    assert content["hashes"] == {
        "model_sha256_before": H0,
        "model_sha256_after": H1,
        "ids_sha256": done_entry.ids_sha256,
    }
    assert content["ids"]["removed"]["ids"] == done_entry.ids.tolist()
    assert content["ids"]["skipped_already_forgotten"] == {"n": 0, "ids": []}
    rows = {r["key"]: r for r in content["comparison"]["rows"]}
    assert rows["mia_auc"]["gap"] == pytest.approx(0.07) and rows["mia_auc"]["verdict"] == "differs"
    n = done_entry.n_ids  # the forget set, derived from the request
    assert content["comparison"]["forget_set"]["n"] == n >= MIN_FORGET_SAMPLES
    assert rows["forget_acc"]["unlearned_interval"] == pytest.approx(list(wilson_interval(0.93, n)))
    assert content["comparison"]["other"]["dist_to_retrain"] == {"unlearned": 0.3, "retrained": None}
    assert content["comparison"]["verdict"]["verdict"] == "differs"
    md = paths.markdown.read_text()  # kept for older readers
    assert (
        "membership-inference AUC (`mia_auc`) | 0.580 | 0.510 | +0.070 |" in md
        and f"]({paths.png.name})" in md
    )
    assert paths.png.read_bytes()[:8] == PNG_MAGIC and paths.png.stat().st_size > 10_000
    _only_outputs(out, *paths)


def test_comparison_chart_has_one_row_per_score_and_labels_apart(done_entry: LedgerEntry) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    content = audit_content(done_entry, metrics=UNLEARNED | {"mia_efficacy": 0.5}, retrain_metrics=RETRAINED)
    fig = comparison_figure(content["comparison"])
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "test accuracy",
        "retain-set accuracy",
        "forget-set accuracy",
        "membership-inference AUC",
    ]  # dist_to_retrain is not a 0..1 score; mia_efficacy has no retrained value
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    texts = ax.texts  # the values, gap and verdict of each row, and their heading

    assert len(texts) == 5 and "0.580 vs 0.510   gap +0.070   differs" in [t.get_text() for t in texts]
    boxes = [t.get_window_extent(renderer) for t in texts]
    frame = ax.get_window_extent(renderer)
    for i, box in enumerate(boxes):
        assert not box.overlaps(frame) and not any(box.overlaps(b) for b in boxes[i + 1 :])
    assert comparison_figure(audit_content(done_entry)["comparison"]) is None


def test_audit_without_metrics_is_readable_and_has_no_chart(overlapping: LedgerEntry, tmp_path: Path) -> None:
    out = tmp_path / "audit"
    files = write_audit(overlapping, out)
    page = files.html.read_text()
    _self_contained(page)
    assert "data:image" not in page and "<img" not in page
    assert "No metrics were given" in page
    assert "{" not in page.split("<body>")[1]  # no raw dict anywhere in the page
    assert "diagnostics.steps" in page and "grad_norms" in page and "1, 0.5, 0.25" in page
    assert json.loads(files.json.read_text())["comparison"] is None
    paths = audit_paths(overlapping, out)
    assert not paths.png.exists()
    _only_outputs(out, paths.html, paths.json, paths.markdown)


def test_skipped_ids_are_reported_apart_from_removed_ones(overlapping: LedgerEntry, tmp_path: Path) -> None:
    files = write_audit(overlapping, tmp_path / "a", previously_forgotten=[1, 2, 3])
    ids = json.loads(files.json.read_text())["ids"]
    assert ids["requested"]["n"] == 7
    assert ids["removed"] == {"n": 5, "ids": [10, 11, 12, 13, 14]}
    assert ids["skipped_already_forgotten"] == {"n": 2, "ids": [2, 3]}
    page = files.html.read_text()
    assert "<td>ids removed</td><td>5: 10-14</td>" in page
    assert "<td>ids skipped (already forgotten)</td><td>2: 2-3</td>" in page
    assert "5 ids removed, 2 skipped as already forgotten" in page
    # Without the earlier ids only the recorded count is known, and said so.
    ids = audit_content(overlapping)["ids"]
    assert ids["removed"] == {"n": 5, "ids": None} and ids["skipped_already_forgotten"] == {
        "n": 2,
        "ids": None,
    }


def test_a_small_forget_set_is_warned_about_and_not_judged(overlapping: LedgerEntry, tmp_path: Path) -> None:
    mine = {"forget_acc": 4 / 7, "mia_efficacy": 4 / 7, "test_acc": 0.91}
    theirs = {"forget_acc": 6 / 7, "mia_efficacy": 1 / 7, "test_acc": 0.915}
    files = write_audit(
        overlapping, tmp_path / "a", metrics=mine, retrain_metrics=theirs, counts={"forget": 7}
    )
    content = json.loads(files.json.read_text())
    rows = {r["key"]: r for r in content["comparison"]["rows"]}
    eff = rows["mia_efficacy"]
    assert eff["gap"] == pytest.approx(3 / 7) and eff["verdict"] == "inconclusive"
    lo, hi = eff["gap_interval"]
    assert lo < 0 < 3 / 7 < hi  # the +0.43 gap is within noise of 7 samples
    assert rows["test_acc"]["verdict"] == "matches"
    assert content["comparison"]["verdict"]["verdict"] == "inconclusive"
    (warning,) = content["warnings"]
    assert "only 7 samples" in warning and "0.6" in warning  # the interval width (0.65 at 50 %)
    page = files.html.read_text()
    assert '<div class="warning">The forget set has only 7 samples' in page
    assert "+0.429 [" in page


def test_intervals() -> None:
    assert wilson_interval(0.5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0.0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(0.3, 0) == (0.0, 1.0)
    # Newcombe (1998), method 10: 56/70 vs 48/80 -> [0.0524, 0.3339]
    p1, p2 = 56 / 70, 48 / 80
    ci = newcombe_interval(p1, wilson_interval(p1, 70), p2, wilson_interval(p2, 80))
    assert ci == pytest.approx((0.0524, 0.3339), abs=1e-4)


def test_verdicts_with_large_counts(done_entry: LedgerEntry) -> None:
    counts = {"forget": 5000, "test": 10000}
    same = audit_content(
        done_entry, metrics={"forget_acc": 0.9}, retrain_metrics={"forget_acc": 0.905}, counts=counts
    )
    assert same["comparison"]["verdict"]["verdict"] == "matches" and not same["warnings"]
    far = audit_content(
        done_entry, metrics={"forget_acc": 0.99}, retrain_metrics={"forget_acc": 0.9}, counts=counts
    )
    assert far["comparison"]["verdict"]["verdict"] == "differs"
    assert "forget-set accuracy" in far["comparison"]["verdict"]["summary"]
    noisy = audit_content(
        done_entry, metrics={"forget_acc": 0.975}, retrain_metrics={"forget_acc": 0.9}, counts={"forget": 40}
    )
    (row,) = noisy["comparison"]["rows"]
    assert row["verdict"] == "inconclusive" and row["gap_interval"][0] < 0  # beyond 0.05, but may be noise
    assert "may be noise" in noisy["comparison"]["verdict"]["summary"]
    loose = audit_content(
        done_entry, metrics={"forget_acc": 0.95}, retrain_metrics={"forget_acc": 0.9}, tolerance=0.2
    )
    assert loose["comparison"]["verdict"] == {
        "verdict": "matches",
        "summary": "matches retraining within ±0.2 on every judged metric (1)",
        "tolerance": 0.2,
    }


def test_audit_uses_recorded_metrics_and_overwrites_atomically(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    with Ledger.open(run) as led:
        led.receive([3, 1], "ga", {}, H0, request_id="r")
        entry = led.complete("r", H1, 1, {"test_acc": 0.8, "steps": 12}, None)
    out = tmp_path / "audit"
    write_audit(entry, out, metrics={"test_acc": 0.8}, retrain_metrics={"test_acc": 0.85})
    paths = audit_paths(entry, out)
    assert paths.png.exists()
    files = write_audit(entry, out, retrain_metrics={"test_acc": 0.85})  # compares the recorded value
    (row,) = json.loads(files.json.read_text())["comparison"]["rows"]
    assert (row["key"], row["unlearned"], row["retrained"]) == ("test_acc", 0.8, 0.85)
    assert row["gap"] == pytest.approx(-0.05)
    write_audit(entry, out)  # no metrics: the earlier chart goes
    assert "<td>steps</td><td>12</td>" in paths.html.read_text()
    _only_outputs(out, paths.html, paths.json, paths.markdown)


def test_audit_of_refused_request(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    with Ledger.open(run) as led:
        entry = led.refuse([], "ga", "empty forget set", request_id="bad")
    files = write_audit(entry, tmp_path / "audit")
    page = files.html.read_text()
    assert "the request is refused: nothing was removed" in page
    assert "empty forget set" in page and "<td>ids requested</td><td>0: none</td>" in page
    content = json.loads(files.json.read_text())
    assert content["request"]["state"] == "refused" and content["ids"]["removed"] == {"n": 0, "ids": []}
