"""Tests of the per-request audit report (Markdown + PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from miniunlearn.audit import audit_paths, write_audit
from miniunlearn.ledger import Ledger, LedgerEntry

H0 = "0" * 64
H1 = "1" * 64
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

UNLEARNED = {"test_acc": 0.91, "retain_acc": 0.97, "forget_acc": 0.93, "mia_auc": 0.58}
RETRAINED = {"test_acc": 0.915, "retain_acc": 0.98, "forget_acc": 0.90, "mia_auc": 0.51}


@pytest.fixture
def done_entry(tmp_path: Path) -> LedgerEntry:
    run = tmp_path / "run"
    run.mkdir()
    ids = np.arange(0, 2000, 7)
    with Ledger.open(run) as led:
        led.receive(ids, "gradient_ascent", {"lr": 0.01, "epochs": 3}, H0, request_id="req-1")
        return led.complete("req-1", H1, 2, None, 0.25)


def _only_outputs(out: Path, md: Path, png: Path) -> None:
    assert sorted(p.name for p in out.iterdir()) == sorted([md.name, png.name])  # no temp files


def test_audit_with_metrics(done_entry: LedgerEntry, tmp_path: Path) -> None:
    out = tmp_path / "audit"
    md, png = write_audit(done_entry, out, metrics=UNLEARNED, retrain_metrics=RETRAINED)
    assert (md, png) == audit_paths(done_entry, out)
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 10_000
    text = md.read_text()
    assert done_entry.ids_sha256 in text
    assert f"**Number of samples:** {done_entry.n_ids}" in text
    assert "0, 7, 14, 21" in text and f"(+{done_entry.n_ids - 10} more)" in text
    assert "gradient_ascent" in text and '"lr": 0.01' in text
    assert H0 in text and H1 in text
    assert "| metric | unlearned | retrained |" in text
    assert "| membership-inference AUC (`mia_auc`) | 0.5800 | 0.5100 | +0.0700 |" in text
    assert "No metrics" not in text
    assert f"]({png.name})" in text
    _only_outputs(out, md, png)


def test_audit_without_metrics(done_entry: LedgerEntry, tmp_path: Path) -> None:
    out = tmp_path / "audit"
    md, png = write_audit(done_entry, out)
    assert png.read_bytes()[:8] == PNG_MAGIC
    text = md.read_text()
    assert "No metrics were recorded for this request" in text
    assert "| metric |" not in text
    assert done_entry.ids_sha256 in text and str(done_entry.n_ids) in text
    _only_outputs(out, md, png)


def test_audit_uses_recorded_metrics_and_overwrites_atomically(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    with Ledger.open(run) as led:
        led.receive([3, 1], "ga", {}, H0, request_id="r")
        entry = led.complete("r", H1, 1, {"test_acc": 0.8, "steps": 12}, None)
    out = tmp_path / "audit"
    write_audit(entry, out)
    md, png = write_audit(entry, out, retrain_metrics={"test_acc": 0.85})
    text = md.read_text()
    assert "| test accuracy (`test_acc`) | 0.8000 | 0.8500 | -0.0500 |" in text
    assert "| steps (`steps`) | 12 | -- | -- |" in text
    _only_outputs(out, md, png)


def test_audit_of_refused_request(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    with Ledger.open(run) as led:
        entry = led.refuse([], "ga", "empty forget set", request_id="bad")
    md, png = write_audit(entry, tmp_path / "audit")
    text = md.read_text()
    assert "nothing removed: the request is refused" in text
    assert "empty forget set" in text and "none (empty set)" in text
    assert png.read_bytes()[:8] == PNG_MAGIC
