"""Tests of the deletion-request ledger: states, idempotency, migration, corruption."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sqlite3
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from miniunlearn import ledger as ledger_mod
from miniunlearn.errors import ForgetRequestError, LedgerError
from miniunlearn.ledger import (
    LEDGER_FILENAME,
    RETRAIN_METHOD,
    SCHEMA_VERSION,
    BatchMember,
    Ledger,
    LedgerEntry,
    ids_digest,
    normalize_ids,
)

H0 = "0" * 64
H1 = "1" * 64
H2 = "2" * 64
H3 = "3" * 64


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    d = tmp_path / "run"
    d.mkdir()
    return d


@pytest.fixture
def led(run_dir: Path):
    with Ledger.open(run_dir) as ledger:
        yield ledger


# ----------------------------------------------------------------------- ids


@given(st.lists(st.integers(min_value=0, max_value=2**40), max_size=60), st.booleans())
def test_normalize_ids_is_the_sorted_unique_set_whatever_the_order(ids: list[int], presort: bool) -> None:
    arr = np.array(sorted(set(ids)) if presort else ids, dtype=np.int64)  # the fast path and the other
    out = normalize_ids(arr)
    assert out.dtype == np.dtype("<i8") and np.array_equal(out, np.unique(arr))
    assert out is not arr  # a copy: the caller's array is never handed back to be changed


def test_ids_digest_is_sha256_of_sorted_unique_le_int64() -> None:
    expected = hashlib.sha256(np.array([1, 5, 9], dtype="<i8").tobytes()).hexdigest()
    assert ids_digest([9, 1, 5, 5, 1]) == expected
    assert ids_digest(np.array([5, 9, 1], dtype=np.int32)) == expected
    assert ids_digest({1, 5, 9}) == expected
    assert ids_digest([]) == hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize(
    "bad",
    [[1.5, 2.0], ["a", "b"], [True, False], np.zeros((2, 2), dtype=int), [2**70]],
)
def test_normalize_ids_rejects_non_integers(bad: object) -> None:
    with pytest.raises(ForgetRequestError):
        normalize_ids(bad)  # type: ignore[arg-type]


@given(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=50), st.randoms())
def test_ids_digest_order_and_duplicate_insensitive(ids: list[int], rnd) -> None:
    shuffled = ids + ids[: len(ids) // 2]
    rnd.shuffle(shuffled)
    assert ids_digest(shuffled) == ids_digest(ids)
    assert ids_digest(ids) == ids_digest(sorted(set(ids)))


# --------------------------------------------------------------- basic states


def test_new_ledger_file_and_settings(led: Ledger, run_dir: Path) -> None:
    assert led.path == run_dir / LEDGER_FILENAME
    assert led.schema_version == SCHEMA_VERSION
    conn = led._db()
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0
    # nothing but the ledger itself is left in the run directory
    assert sorted(p.name for p in run_dir.iterdir()) == [LEDGER_FILENAME]
    assert led.entries() == []
    assert led.forgotten_ids().dtype == np.int64 and led.forgotten_ids().size == 0


def test_receive_round_trip(led: Ledger) -> None:
    e = led.receive([7, 3, 3, 11], "gradient_ascent", {"lr": 0.01, "epochs": 2}, H0)
    assert len(e.request_id) == 32 and int(e.request_id, 16) >= 0  # uuid4 hex
    assert e.state == "received"
    assert e.ids.dtype == np.int64 and e.ids.tolist() == [3, 7, 11]
    assert not e.ids.flags.writeable
    assert e.n_ids == 3
    assert e.ids_sha256 == ids_digest([3, 7, 11])
    assert e.method == "gradient_ascent" and e.options == {"lr": 0.01, "epochs": 2}
    assert e.model_sha256_before == H0 and e.model_sha256_after is None
    assert e.completed_at is None and e.duration_s is None
    assert e.received_at.endswith("+00:00")
    assert led.get(e.request_id) == e
    assert led.get("nope") is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.state = "done"  # type: ignore[misc]


def test_complete_fail_refuse_states(led: Ledger) -> None:
    a = led.receive([1, 2], "ga", None, H0, request_id="a")
    done = led.complete("a", H1, 1, {"test_acc": np.float32(0.5), "n": np.int64(3)}, error_budget_used=0.25)
    assert done.state == "done" and done.model_sha256_after == H1
    assert done.model_version == 1 and done.metrics == {"test_acc": 0.5, "n": 3}
    assert done.error_budget_used == 0.25 and done.done_seq == 1
    assert done.duration_s is not None and done.duration_s >= 0
    assert done.received_at == a.received_at

    led.receive([3], "ga", {}, H1, request_id="b")
    failed = led.fail("b", "out of memory")
    assert failed.state == "failed" and failed.reason == "out of memory"
    assert failed.completed_at is not None

    refused = led.refuse([10**9], "ga", "id 1000000000 is out of range (n_train=100)")
    assert refused.state == "refused" and refused.n_ids == 1
    assert refused.model_sha256_before is None
    empty = led.refuse([], "ga", "empty forget set", request_id="empty")
    assert empty.n_ids == 0 and empty.ids.size == 0

    led.receive([4], "ga", {}, H1, request_id="c")
    assert led.refuse([4], "ga", "whole training set", request_id="c").state == "refused"

    assert [e.request_id for e in led.entries()] == ["a", "b", refused.request_id, "empty", "c"]
    assert [e.request_id for e in led.entries("refused")] == [refused.request_id, "empty", "c"]
    assert [e.request_id for e in led.entries("done")] == ["a"]
    assert led.forgotten_ids().tolist() == [1, 2]  # failed/refused ids are not forgotten
    with pytest.raises(LedgerError, match="unknown state"):
        led.entries("bogus")


def test_model_version_str_round_trip(led: Ledger) -> None:
    led.receive([1], "ga", {}, H0, request_id="a")
    assert led.complete("a", H1, "v2-ga", None, None).model_version == "v2-ga"
    assert led.get("a").metrics is None  # type: ignore[union-attr]


def test_invalid_transitions(led: Ledger) -> None:
    led.receive([1], "ga", {}, H0, request_id="a")
    led.complete("a", H1, 1, {}, 0.1)
    # completing again with the same result is a no-op ...
    assert led.complete("a", H1, 1, {}, 0.1).done_seq == 1
    # ... but with another result, or failing a done request, is an error
    with pytest.raises(LedgerError, match="is done"):
        led.complete("a", H2, 2, {}, 0.1)
    with pytest.raises(LedgerError, match="is done"):
        led.fail("a", "x")
    with pytest.raises(LedgerError, match="is done"):
        led.retry("a", H1)
    with pytest.raises(LedgerError, match="no request"):
        led.complete("zzz", H1, 1, {}, 0.0)
    with pytest.raises(LedgerError, match="no request"):
        led.fail("zzz", "x")
    led.receive([2], "ga", {}, H1, request_id="b")
    with pytest.raises(LedgerError, match="error_budget_used"):
        led.complete("b", H2, 2, {}, float("nan"))
    with pytest.raises(LedgerError, match="sha256"):
        led.complete("b", "not-a-hash", 2, {}, 0.0)
    assert led.get("b").state == "received"  # type: ignore[union-attr]


def test_bad_receive_input(led: Ledger) -> None:
    with pytest.raises(ForgetRequestError, match="empty"):
        led.receive([], "ga", {}, H0)
    with pytest.raises(ForgetRequestError, match=">= 0"):
        led.receive([-1, 3], "ga", {}, H0)
    with pytest.raises(ForgetRequestError, match="integers"):
        led.receive([1.5], "ga", {}, H0)
    with pytest.raises(ForgetRequestError, match="request id"):
        led.receive([1], "ga", {}, H0, request_id="../escape")
    with pytest.raises(ForgetRequestError, match="request id"):
        led.receive([1], "ga", {}, H0, request_id="ticket-1\n")  # a regex "$" accepts this
    with pytest.raises(ForgetRequestError, match=r"100000 characters") as long_id:
        led.receive([1], "ga", {}, H0, request_id="a" * 100_000)
    assert len(str(long_id.value)) < 300
    with pytest.raises(ForgetRequestError, match="JSON"):
        led.receive([1], "ga", {"f": object()}, H0)
    with pytest.raises(LedgerError, match="sha256"):
        led.receive([1], "ga", {}, "abc")
    assert led.entries() == []


def test_receive_is_idempotent_on_request_id(led: Ledger) -> None:
    first = led.receive([5, 1, 3], "ga", {"lr": 1}, H0, request_id="req-1")
    again = led.receive([3, 3, 1, 5], "other", {"lr": 2}, H2, request_id="req-1")
    assert again == first  # unchanged, even though method/options differ
    done = led.complete("req-1", H1, 1, {}, 0.1)
    assert led.receive([1, 3, 5], "ga", {"lr": 1}, H1, request_id="req-1") == done
    assert len(led.entries()) == 1


def test_receive_refuses_conflicting_request_id(led: Ledger) -> None:
    led.receive([1, 2, 3], "ga", {}, H0, request_id="req-1")
    with pytest.raises(ForgetRequestError, match="different set of ids"):
        led.receive([1, 2, 4], "ga", {}, H0, request_id="req-1")
    with pytest.raises(ForgetRequestError, match="different set of ids"):
        led.refuse([9], "ga", "x", request_id="req-1")
    assert led.get("req-1").ids.tolist() == [1, 2, 3]  # type: ignore[union-attr]


def test_retry_failed_request(led: Ledger) -> None:
    led.receive([1], "ga", {}, H0, request_id="a")
    led.fail("a", "crashed")
    e = led.retry("a", H1)
    assert e.state == "received" and e.reason is None and e.completed_at is None
    assert e.model_sha256_before == H1
    assert led.complete("a", H2, 2, {}, None).state == "done"


def test_pending_after_simulated_crash(run_dir: Path) -> None:
    with Ledger.open(run_dir) as led:
        led.receive([1, 2], "ga", {}, H0, request_id="done-one")
        led.complete("done-one", H1, 1, {}, 0.1)
        led.receive([3], "ga", {}, H1, request_id="interrupted")
        # the process "dies" here: no complete()/fail()
    with Ledger.open(run_dir) as led:
        pending = led.pending()
        assert [e.request_id for e in pending] == ["interrupted"]
        assert pending[0].state == "received" and pending[0].ids.tolist() == [3]
        assert led.forgotten_ids().tolist() == [1, 2]
        led.fail("interrupted", "process died before completing; model unchanged")
        assert led.pending() == []


def test_error_budget_and_retrain(led: Ledger) -> None:
    assert led.error_budget_since_last_retrain() == 0.0
    led.receive([1], "ga", {}, H0, request_id="a")
    led.complete("a", H1, 1, {}, 0.3)
    led.receive([2], "ga", {}, H1, request_id="b")
    led.complete("b", H2, 2, {}, 0.4)
    led.receive([9], "ga", {}, H2, request_id="c")
    led.fail("c", "boom")  # failed requests spend no budget
    assert led.error_budget_since_last_retrain() == pytest.approx(0.7)
    assert led.last_retrain() is None

    with pytest.raises(ForgetRequestError, match="every forgotten id"):
        led.receive_retrain(H2, "requested", ids=[1])
    r = led.receive_retrain(H2, "error budget exceeded: 0.7 > 0.5")
    assert r.method == RETRAIN_METHOD and r.is_retrain and r.state == "received"
    assert r.ids.tolist() == [1, 2] and r.reason.startswith("error budget")  # type: ignore[union-attr]
    assert led.error_budget_since_last_retrain() == pytest.approx(0.7)  # not done yet
    led.complete(r.request_id, H3, 3, {"test_acc": 0.9}, None)
    assert led.error_budget_since_last_retrain() == 0.0
    assert led.last_retrain() == led.get(r.request_id)

    led.receive([5], "ga", {}, H3, request_id="d")
    led.complete("d", "4" * 64, 4, {}, 0.2)
    assert led.error_budget_since_last_retrain() == pytest.approx(0.2)
    assert led.forgotten_ids().tolist() == [1, 2, 5]
    # a retrain given extra ids (e.g. the request that triggered it) excludes them too
    r2 = led.receive_retrain("4" * 64, "requested", ids=[1, 2, 5, 8], request_id="rt2")
    assert r2.ids.tolist() == [1, 2, 5, 8]
    assert led.receive_retrain("4" * 64, "requested", request_id="rt2") == r2  # idempotent
    led.complete("rt2", "5" * 64, 5, None, 0.0)
    assert led.forgotten_ids().tolist() == [1, 2, 5, 8]
    assert led.verify() == []


def test_budget_follows_completion_order(led: Ledger) -> None:
    # "a" is received before the retrain but completed after it: its budget counts.
    led.receive([1], "ga", {}, H0, request_id="a")
    led.receive_retrain(H0, "requested", request_id="rt")
    led.complete("rt", H1, 1, None, None)
    led.complete("a", H2, 2, None, 0.5)
    assert led.error_budget_since_last_retrain() == pytest.approx(0.5)


def test_to_json_records(led: Ledger) -> None:
    led.receive([2, 1], "ga", {"lr": 0.1}, H0, request_id="a")
    led.complete("a", H1, 1, {"test_acc": 0.9}, 0.1)
    led.refuse([7], "ga", "bad ids", request_id="b")
    records = led.to_json_records()
    json.dumps(records)  # serialisable
    required = {
        "request_id",
        "state",
        "n_ids",
        "ids_sha256",
        "method",
        "model_sha256_before",
        "model_sha256_after",
        "reason",
        "received_at",
        "completed_at",
    }
    assert all(required <= set(r) for r in records)
    assert "ids" not in records[0]
    assert records[0]["n_ids"] == 2 and records[0]["ids_sha256"] == ids_digest([1, 2])
    assert records[1]["state"] == "refused" and records[1]["reason"] == "bad ids"
    assert led.to_json_records(include_ids=True)[0]["ids"] == [1, 2]


def test_verify_reports_broken_chain(led: Ledger) -> None:
    led.receive([1], "ga", {}, H0, request_id="a")
    led.complete("a", H1, 1, {}, 0.1)
    led.receive([2], "ga", {}, H3, request_id="b")  # should have started from H1
    led.complete("b", H2, 2, {}, 0.1)
    problems = led.verify()
    assert len(problems) == 1 and "b" in problems[0]


def test_closed_and_missing(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="no ledger"):
        Ledger.open(run_dir, create=False)
    assert not (run_dir / LEDGER_FILENAME).exists()
    with pytest.raises(LedgerError, match="does not exist"):
        Ledger.open(tmp_path / "missing-dir")
    led = Ledger.open(run_dir)
    led.close()
    led.close()
    with pytest.raises(LedgerError, match="closed"):
        led.entries()


def test_two_handles_see_each_others_commits(run_dir: Path) -> None:
    with Ledger.open(run_dir) as a, Ledger.open(run_dir) as b:
        a.receive([1], "ga", {}, H0, request_id="x")
        assert b.get("x") is not None
        b.complete("x", H1, 1, {}, 0.0)
        assert a.get("x").state == "done"  # type: ignore[union-attr]


# --------------------------------------------------------- property: union


_OUTCOMES = st.sampled_from(["done", "failed", "refused", "pending"])


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.lists(st.integers(0, 200), min_size=1, max_size=15), _OUTCOMES),
        max_size=6,
    )
)
def test_forgotten_ids_is_union_of_done(requests: list[tuple[list[int], str]]) -> None:
    with tempfile.TemporaryDirectory() as tmp, Ledger.open(tmp) as led:
        expected: set[int] = set()
        for ids, outcome in requests:
            if outcome == "refused":
                led.refuse(ids, "ga", "refused")
                continue
            e = led.receive(ids, "ga", {}, H0)
            if outcome == "done":
                led.complete(e.request_id, H1, None, None, 0.1)
                expected |= set(ids)
            elif outcome == "failed":
                led.fail(e.request_id, "failed")
        got = led.forgotten_ids()
        assert got.dtype == np.int64
        assert got.tolist() == sorted(expected)
        done = led.entries("done")
        union = np.unique(np.concatenate([e.ids for e in done])) if done else np.zeros(0)
        assert np.array_equal(got, union)


# ----------------------------------------------------------------- migration


def _make_v1_ledger(path: Path) -> None:
    conn = sqlite3.connect(str(path), isolation_level=None)
    ledger_mod._create_schema(conn, 1)
    insert = (
        "INSERT INTO requests (request_id, state, method, options, ids, n_ids, ids_sha256, "
        "received_at, completed_at, model_sha256_before, model_sha256_after, model_version, "
        "metrics, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    rows = [
        # received first but completed second
        ("old-a", "done", "ga", "{}", [1, 2], "2024-01-01T00:00:00+00:00",
         "2024-01-03T00:00:00+00:00", H1, H2, 2, '{"test_acc": 0.8}', None),
        ("old-b", "done", "ga", "{}", [5], "2024-01-02T00:00:00+00:00",
         "2024-01-02T12:00:00+00:00", H0, H1, 1, None, None),
        ("old-c", "received", "ga", "{}", [9], "2024-01-04T00:00:00+00:00",
         None, H2, None, None, None, None),
    ]  # fmt: skip
    for rid, state, method, opts, ids, rec, comp, before, after, ver, metrics, reason in rows:
        blob = np.array(ids, dtype="<i8").tobytes()
        conn.execute(
            insert,
            (rid, state, method, opts, blob, len(ids), hashlib.sha256(blob).hexdigest(),
             rec, comp, before, after, ver, metrics, reason),
        )  # fmt: skip
    conn.close()


def _user_version(path: Path) -> int:
    conn = sqlite3.connect(str(path))
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


def test_migrate_v1_to_the_current_schema_in_place(run_dir: Path) -> None:
    path = run_dir / LEDGER_FILENAME
    _make_v1_ledger(path)
    original = path.read_bytes()
    assert _user_version(path) == 1
    with Ledger.open(run_dir) as led:
        assert led.schema_version == SCHEMA_VERSION
        entries = {e.request_id: e for e in led.entries()}
        assert set(entries) == {"old-a", "old-b", "old-c"}
        assert entries["old-a"].ids.tolist() == [1, 2]
        assert entries["old-a"].metrics == {"test_acc": 0.8}
        assert entries["old-a"].error_budget_used is None
        # done_seq backfilled in completion order
        assert entries["old-b"].done_seq == 1 and entries["old-a"].done_seq == 2
        assert entries["old-c"].done_seq is None
        assert [e.request_id for e in led.pending()] == ["old-c"]
        assert led.forgotten_ids().tolist() == [1, 2, 5]
        assert led.verify() == []
        # the upgraded ledger works normally
        led.complete("old-c", H3, 3, {}, 0.25)
        assert led.get("old-c").done_seq == 3  # type: ignore[union-attr]
        assert led.error_budget_since_last_retrain() == pytest.approx(0.25)
    assert _user_version(path) == SCHEMA_VERSION
    backup = run_dir / f"{LEDGER_FILENAME}.v1.bak"
    assert backup.read_bytes() == original
    # reopening does not migrate again or make another backup
    with Ledger.open(run_dir) as led:
        assert len(led.entries()) == 3
    assert sorted(p.name for p in run_dir.iterdir()) == [LEDGER_FILENAME, backup.name]


def test_failed_migration_leaves_v1_intact(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = run_dir / LEDGER_FILENAME
    _make_v1_ledger(path)

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE requests ADD COLUMN error_budget_used REAL")
        raise RuntimeError("disk on fire")

    monkeypatch.setitem(ledger_mod._MIGRATIONS, 1, broken)
    with pytest.raises(LedgerError, match="still a valid v1 ledger"):
        Ledger.open(run_dir)
    assert _user_version(path) == 1
    conn = sqlite3.connect(str(path))
    cols = [r[1] for r in conn.execute("PRAGMA table_info(requests)")]
    n = conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
    conn.close()
    assert "error_budget_used" not in cols and n == 3
    monkeypatch.undo()
    with Ledger.open(run_dir) as led:
        assert led.schema_version == SCHEMA_VERSION and len(led.entries()) == 3


# ------------------------------------------------------------ corrupt files


def _assert_corrupt_untouched(run_dir: Path, match: str = "corrupt") -> None:
    path = run_dir / LEDGER_FILENAME
    before = path.read_bytes()
    with pytest.raises(LedgerError, match=match) as info:
        Ledger.open(run_dir)
    assert path.read_bytes() == before  # never deleted or overwritten
    assert "move it aside" in str(info.value)
    assert sorted(p.name for p in run_dir.iterdir()) == [LEDGER_FILENAME]


def test_random_bytes_file(run_dir: Path) -> None:
    (run_dir / LEDGER_FILENAME).write_bytes(np.random.default_rng(0).bytes(8192))
    _assert_corrupt_untouched(run_dir, "not a database")


def test_empty_file(run_dir: Path) -> None:
    (run_dir / LEDGER_FILENAME).write_bytes(b"")
    _assert_corrupt_untouched(run_dir, "empty file")


@pytest.mark.parametrize("keep", [0.5, 0.1, 100])
def test_truncated_ledger(run_dir: Path, keep: float) -> None:
    with Ledger.open(run_dir) as led:
        for i in range(20):
            led.receive(np.arange(i * 1000, i * 1000 + 500), "ga", {}, H0, request_id=f"r{i}")
    path = run_dir / LEDGER_FILENAME
    data = path.read_bytes()
    cut = int(len(data) * keep) if keep < 1 else int(keep)
    path.write_bytes(data[:cut])
    _assert_corrupt_untouched(run_dir)


def test_foreign_sqlite_database(run_dir: Path) -> None:
    conn = sqlite3.connect(str(run_dir / LEDGER_FILENAME))
    conn.execute("CREATE TABLE customers (name TEXT)")
    conn.commit()
    conn.close()
    _assert_corrupt_untouched(run_dir, "not a miniunlearn ledger.*customers")


def test_wrong_schema(run_dir: Path) -> None:
    path = run_dir / LEDGER_FILENAME
    Ledger.open(run_dir).close()
    conn = sqlite3.connect(str(path))
    conn.execute("ALTER TABLE requests DROP COLUMN reason")
    conn.commit()
    conn.close()
    _assert_corrupt_untouched(run_dir, "wrong schema.*reason")


def test_newer_schema_version(run_dir: Path) -> None:
    path = run_dir / LEDGER_FILENAME
    Ledger.open(run_dir).close()
    conn = sqlite3.connect(str(path))
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(LedgerError, match="newer miniunlearn"):
        Ledger.open(run_dir)
    assert path.read_bytes() == before


def test_tampered_ids_detected(run_dir: Path) -> None:
    with Ledger.open(run_dir) as led:
        led.receive([1, 2, 3], "ga", {}, H0, request_id="a")
    conn = sqlite3.connect(str(run_dir / LEDGER_FILENAME))
    conn.execute("UPDATE requests SET ids = ?", (np.array([1, 2, 4], "<i8").tobytes(),))
    conn.commit()
    conn.close()
    with Ledger.open(run_dir) as led:
        with pytest.raises(LedgerError, match="do not match their recorded sha256"):
            led.get("a")
        assert any("sha256" in p for p in led.verify())


def test_no_temp_files_left_on_create(tmp_path: Path) -> None:
    for i in range(3):
        d = tmp_path / f"r{i}"
        d.mkdir()
        Ledger.open(d).close()
        assert os.listdir(d) == [LEDGER_FILENAME]


def test_entry_equality_and_record(led: Ledger) -> None:
    e = led.receive([1, 2], "ga", {}, H0, request_id="a")
    assert isinstance(e, LedgerEntry)
    assert e != dataclasses.replace(e, ids=np.array([1, 3], dtype=np.int64))
    assert e == dataclasses.replace(e)
    assert e.to_record()["request_id"] == "a"


def test_the_recorded_ids_digest_is_the_sha256_of_the_sorted_unique_int64_ids(led: Ledger) -> None:
    import hashlib

    for i, ids in enumerate(([3, 1, 2, 2], [0], list(range(1000, 0, -7)), np.array([5, 5, 9], np.int32))):
        entry = led.receive(ids, "ga", {}, H0, request_id=f"d{i}")
        expected = hashlib.sha256(np.unique(np.asarray(ids)).astype("<i8").tobytes()).hexdigest()
        assert entry.ids_sha256 == expected == ids_digest(ids)


# --------------------------------------------------------------------- batches


def test_a_batch_records_each_member_with_its_own_ids(led: Ledger) -> None:
    members = [BatchMember("a", [3, 1]), BatchMember("b", [7], "2026-01-01T00:00:00.000000+00:00")]
    batch = led.receive([1, 3, 7], "mini", {}, H0, request_id="batch-1", members=members)
    assert batch.members == ("a", "b") and led.get("a").state == "received"
    led.complete("batch-1", H1, 1, {"passes": 4}, 0.1)
    a, b = led.get("a"), led.get("b")
    assert a.ids.tolist() == [1, 3] and b.ids.tolist() == [7] and b.received_at.startswith("2026-01-01")
    assert a.state == b.state == "done" and a.batch == b.batch == "batch-1"
    assert a.model_sha256_after == H1 and a.metrics == {"passes": 4}
    assert led.forgotten_ids().tolist() == [1, 3, 7] and led.verify() == []
    assert [r["request_id"] for r in led.to_json_records()] == ["batch-1", "a", "b"]
    with pytest.raises(ForgetRequestError, match="member of batch batch-1"):
        led.receive([9], "mini", {}, H1, request_id="a")


@pytest.mark.parametrize(
    "members, why",
    [
        ([BatchMember("a", [1]), BatchMember("b", [2])], "not the union"),  # 3 is nobody's
        ([BatchMember("a", [1, 3]), BatchMember("a", [2])], "named twice"),
        ([BatchMember("batch-1", [1, 2, 3])], "named twice"),
        ([BatchMember("a", [1, 2, 3]), BatchMember("b", [])], "names no sample id"),
    ],
)
def test_a_bad_batch_records_nothing(led: Ledger, members: list[BatchMember], why: str) -> None:
    with pytest.raises(ForgetRequestError, match=why):
        led.receive([1, 2, 3], "mini", {}, H0, request_id="batch-1", members=members)
    assert led.entries() == [] and led.get("a") is None


def test_a_recorded_request_cannot_join_a_batch(led: Ledger) -> None:
    led.receive([5], "mini", {}, H0, request_id="old")
    with pytest.raises(ForgetRequestError, match="recorded already"):
        led.receive(
            [5, 6],
            "mini",
            {},
            H0,
            request_id="batch-1",
            members=[BatchMember("old", [5]), BatchMember("n", [6])],
        )
    assert led.get("batch-1") is None and led.get("n") is None


@pytest.mark.parametrize("end", ["fail", "refuse"])
def test_a_batch_that_does_not_finish_releases_its_members(led: Ledger, end: str) -> None:
    members = [BatchMember("a", [1]), BatchMember("b", [2])]
    led.receive([1, 2], "mini", {}, H0, request_id="batch-1", members=members)
    if end == "fail":
        led.fail("batch-1", "the method crashed")
    else:
        led.refuse([1, 2], "mini", "bad", request_id="batch-1")
    assert led.get("a") is None and led.members("batch-1") == []
    (event,) = led.events("batch-1")
    assert event["event"] == "members-released" and event["detail"]["members"] == ["a", "b"]
    assert led.receive([1], "mini", {}, H0, request_id="a").batch is None  # free to be sent again
