"""Ledger tests that need other processes: the run lock, and a writer killed mid-transaction."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from miniunlearn.errors import LedgerError
from miniunlearn.ledger import LEDGER_FILENAME, LOCK_FILENAME, Ledger, run_lock

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="uses SIGKILL and flock")

H0 = "0" * 64
H1 = "1" * 64


def _spawn(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _reap(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def _wait_for(proc: subprocess.Popen[str], word: str) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != word:
        proc.kill()
        _, err = proc.communicate(timeout=10)
        pytest.fail(f"child printed {line!r} instead of {word!r}; stderr:\n{err}")


HOLD_LOCK = """
    import sys
    from miniunlearn.ledger import run_lock
    with run_lock(sys.argv[1], timeout=5):
        print("locked", flush=True)
        sys.stdin.read()  # hold the lock until the parent closes stdin
    print("released", flush=True)
"""


def test_second_forget_times_out_with_clear_error(tmp_path: Path) -> None:
    proc = _spawn(HOLD_LOCK, str(tmp_path))
    try:
        _wait_for(proc, "locked")
        start = time.monotonic()
        with (
            pytest.raises(LedgerError, match=f"another forget is running on .*pid {proc.pid}"),
            run_lock(tmp_path, timeout=0.3),
        ):
            pytest.fail("acquired a lock held by another process")
        assert time.monotonic() - start >= 0.3
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.stdout is not None and proc.stdout.readline().strip() == "released"
        proc.wait(timeout=10)
        # once released, the lock can be taken, and the owner file is cleaned up
        with run_lock(tmp_path, timeout=1) as lock_path:
            assert lock_path == tmp_path / LOCK_FILENAME
            assert (tmp_path / ".lock.owner").exists()
        assert not (tmp_path / ".lock.owner").exists()
    finally:
        _reap(proc)


def test_lock_freed_when_holder_is_killed(tmp_path: Path) -> None:
    proc = _spawn(HOLD_LOCK, str(tmp_path))
    try:
        _wait_for(proc, "locked")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        with run_lock(tmp_path, timeout=2):
            pass
    finally:
        _reap(proc)


def test_run_lock_needs_a_directory(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="not a directory"), run_lock(tmp_path / "nope"):
        pass


KILLED_WRITER = """
    import os, sys, time
    from miniunlearn.ledger import Ledger
    led = Ledger.open(sys.argv[1])
    conn = led._conn
    conn.execute("PRAGMA cache_size = 2")  # tiny cache: changed pages spill into the file
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE requests SET state = 'failed', reason = 'never committed'")
    conn.execute("DELETE FROM requests WHERE request_id = 'done-1'")
    blob = os.urandom(8 * 4096)
    for i in range(100):
        conn.execute(
            "INSERT INTO requests (request_id, state, method, options, ids, n_ids, "
            "ids_sha256, received_at) VALUES (?, 'done', 'ga', '{}', ?, 4096, ?, 'now')",
            (f"junk{i}", blob, "0" * 64),
        )
    print("inside", flush=True)
    time.sleep(60)
"""


def test_ledger_survives_writer_killed_mid_transaction(tmp_path: Path) -> None:
    with Ledger.open(tmp_path) as led:
        led.receive([1, 2, 3], "ga", {"lr": 0.1}, H0, request_id="done-1")
        led.complete("done-1", H1, 1, {"test_acc": 0.9}, 0.2)
        led.receive([4], "ga", {}, H1, request_id="pending-1")
        before = led.to_json_records(include_ids=True)
    path = tmp_path / LEDGER_FILENAME
    size_before = path.stat().st_size

    proc = _spawn(KILLED_WRITER, str(tmp_path))
    try:
        _wait_for(proc, "inside")
        journal = tmp_path / f"{LEDGER_FILENAME}-journal"
        assert journal.exists()  # a hot journal: the transaction is open
        assert path.stat().st_size > size_before  # uncommitted pages reached the file
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        _reap(proc)

    with Ledger.open(tmp_path) as led:
        assert led.to_json_records(include_ids=True) == before
        assert led.forgotten_ids().tolist() == [1, 2, 3]
        assert [e.request_id for e in led.pending()] == ["pending-1"]
        assert led.verify() == []
        led.complete("pending-1", "2" * 64, 2, None, 0.1)  # and it is writable again
        assert led.forgotten_ids().tolist() == [1, 2, 3, 4]
    assert not (tmp_path / f"{LEDGER_FILENAME}-journal").exists()


CONCURRENT_WRITER = """
    import sys
    from miniunlearn.ledger import Ledger
    with Ledger.open(sys.argv[1]) as led:
        for i in range(15):
            e = led.receive([int(sys.argv[2]) * 100 + i], "ga", {}, "0" * 64)
            led.complete(e.request_id, "1" * 64, None, None, 0.01)
    print("ok", flush=True)
"""


def test_concurrent_writers_do_not_lose_requests(tmp_path: Path) -> None:
    Ledger.open(tmp_path).close()
    procs = [_spawn(CONCURRENT_WRITER, str(tmp_path), str(k)) for k in range(3)]
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    with Ledger.open(tmp_path) as led:
        expected = sorted(k * 100 + i for k in range(3) for i in range(15))
        assert led.forgotten_ids().tolist() == expected
        assert sorted(e.done_seq for e in led.entries()) == list(range(1, 46))  # type: ignore[type-var]
        assert np.isclose(led.error_budget_since_last_retrain(), 0.45)
