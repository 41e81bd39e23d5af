"""Deletion requests as a workflow: ledger states, model versions, budget, crashes, locking."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from miniunlearn.deletion import (
    CRASH_ENV,
    CURRENT_FILE,
    current_version,
    forget,
    load_version_params,
    read_ids_file,
    retrain_all,
)
from miniunlearn.errors import ForgetRequestError, HistoryError, LedgerError, RunDirError
from miniunlearn.ledger import Ledger, run_lock
from miniunlearn.training import TrainConfig, open_run, retrain, train_run

CONFIG = TrainConfig(
    dataset="digits", epochs=300, lr=1.0, lam=0.02, history="both", checkpoints=8, dtype="float64", seed=0
)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_run(CONFIG, tmp_path_factory.mktemp("pristine") / "run", progress=False).path


@pytest.fixture
def run_dir(pristine: Path, tmp_path: Path) -> Path:
    """A fresh copy of a trained run for each test."""
    import shutil

    return Path(shutil.copytree(pristine, tmp_path / "run"))


def snapshot(run_dir: Path) -> dict[str, bytes]:
    """Bytes of every model file and the current pointer."""
    files = [run_dir / "model.safetensors", run_dir / CURRENT_FILE, *sorted((run_dir / "versions").glob("*"))]
    return {str(f.relative_to(run_dir)): f.read_bytes() for f in files if f.exists()}


def test_sequence_of_requests_resend_and_unknown_id(run_dir: Path) -> None:
    n = open_run(run_dir).n_train
    chunks = np.array_split(np.random.default_rng(0).permutation(n)[: 4 * (n // 20)], 4)
    for i, chunk in enumerate(chunks):
        outcome = forget(run_dir, chunk, request_id=f"req-{i}")
        assert outcome.status == "done" and outcome.version.version == i + 1
    before = snapshot(run_dir)
    again = forget(run_dir, chunks[1][::-1], request_id="req-1")  # same ids, other order
    assert again.status == "already-done"
    assert snapshot(run_dir) == before
    with pytest.raises(ForgetRequestError, match="not in the training set"):
        forget(run_dir, [5, n + 7], request_id="req-bad")
    assert snapshot(run_dir) == before
    with Ledger.open(run_dir) as ledger:
        states = sorted(e.state for e in ledger.entries())
        assert states == ["done"] * 4 + ["refused"]
        assert np.array_equal(ledger.forgotten_ids(), np.sort(np.concatenate(chunks)))
    run = open_run(run_dir)
    final = load_version_params(run, current_version(run))
    target = retrain(run, np.concatenate(chunks))
    x, y = torch.from_numpy(run.dataset.x_test), torch.from_numpy(run.dataset.y_test)
    acc = lambda w: float((run.objective.logits(w, x).argmax(1) == y).double().mean())  # noqa: E731
    assert abs(acc(final) - acc(target)) <= 0.003
    assert float((final - target).norm()) < 1e-3


def test_already_forgotten_ids_are_skipped_and_reported(run_dir: Path) -> None:
    forget(run_dir, np.arange(10), request_id="a")
    outcome = forget(run_dir, np.arange(5, 15), request_id="b")
    assert outcome.skipped_ids.tolist() == list(range(5, 10))
    assert any("already forgotten" in m for m in outcome.messages)
    assert outcome.record["n_forget"] == 5
    nothing = forget(run_dir, np.arange(3), request_id="c")
    assert nothing.status == "nothing-new" and nothing.version.version == 2


def test_reusing_a_request_id_for_other_ids_is_refused(run_dir: Path) -> None:
    forget(run_dir, [1, 2, 3], request_id="same")
    with pytest.raises(ForgetRequestError, match="different"):
        forget(run_dir, [4, 5], request_id="same")


def test_forgetting_everything_left_is_refused(run_dir: Path) -> None:
    n = open_run(run_dir).n_train
    forget(run_dir, np.arange(n // 2), request_id="half", max_approx_ratio=1.0)
    with pytest.raises(ForgetRequestError, match="every remaining"):
        forget(run_dir, np.arange(n // 2, n), max_approx_ratio=1.0)


def test_error_budget_triggers_retraining_recorded_in_the_ledger(run_dir: Path) -> None:
    n = open_run(run_dir).n_train
    first = forget(run_dir, np.arange(0, n // 10), max_approx_ratio=0.15)
    assert first.entry.method == "mini"
    second = forget(run_dir, np.arange(n // 10, n // 5), max_approx_ratio=0.15)
    assert second.entry.method == "retrain"
    assert "error budget exceeded" in second.entry.options["reason"]
    run = open_run(run_dir)
    exact = retrain(run, np.arange(0, n // 5))
    assert torch.equal(load_version_params(run, current_version(run)), exact)
    with Ledger.open(run_dir) as ledger:
        assert ledger.error_budget_since_last_retrain() == 0.0
    third = forget(run_dir, np.arange(n // 5, n // 5 + 10), max_approx_ratio=0.15)
    assert third.entry.method == "mini"


def test_retrain_now_alone_retrains_on_everything_left(run_dir: Path) -> None:
    with pytest.raises(ForgetRequestError, match="nothing has been forgotten"):
        retrain_all(run_dir)
    forget(run_dir, np.arange(40))
    outcome = retrain_all(run_dir)
    run = open_run(run_dir)
    assert outcome.entry.method == "retrain"
    assert torch.equal(load_version_params(run, current_version(run)), retrain(run, np.arange(40)))


def _forget_command(run_dir: Path, ids_file: Path, request_id: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "miniunlearn.cli",
        "-q",
        "forget",
        str(run_dir),
        "--ids",
        str(ids_file),
        "--request-id",
        request_id,
        *extra,
    ]


def _cli_forget(
    run_dir: Path, ids_file: Path, request_id: str, crash_at: str | None = None, extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    env.pop(CRASH_ENV, None)
    if crash_at:
        env[CRASH_ENV] = crash_at
    return subprocess.run(
        _forget_command(run_dir, ids_file, request_id, *extra),
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.mark.parametrize("point", ["after-receive", "writing-version", "after-version", "after-current"])
def test_killing_forget_at_each_step_leaves_model_and_ledger_consistent(
    run_dir: Path, tmp_path: Path, point: str
) -> None:
    forget(run_dir, np.arange(20), request_id="first")
    before = snapshot(run_dir)
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join(str(i) for i in range(100, 130)) + "\n")
    killed = _cli_forget(run_dir, ids_file, "second", crash_at=point)
    assert killed.returncode == -signal.SIGKILL
    run = open_run(run_dir)
    version = current_version(run)  # never a half-written or dangling model
    if point == "after-current":
        assert version.version == 2 and version.request_id == "second"
    else:
        assert version.version == 1
        assert (run_dir / CURRENT_FILE).read_bytes() == before[CURRENT_FILE]
        assert (run_dir / "versions" / "v1.safetensors").read_bytes() == before["versions/v1.safetensors"]
    with Ledger.open(run_dir) as ledger:  # opens cleanly; the request is still pending
        assert [e.request_id for e in ledger.pending()] == ["second"]
    resumed = _cli_forget(run_dir, ids_file, "second")
    assert resumed.returncode == 0, resumed.stderr
    with Ledger.open(run_dir) as ledger:
        assert ledger.get("second").state == "done" and not ledger.pending()
        assert ledger.get("first").state == "done"
    assert current_version(open_run(run_dir)).version == 2
    assert not list((run_dir / "versions").glob("*.tmp"))


def test_killing_forget_at_a_random_moment_is_safe(run_dir: Path, tmp_path: Path) -> None:
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join(str(i) for i in range(0, 400, 2)) + "\n")
    for delay in (0.5, 1.5, 3.0):
        before = current_version(open_run(run_dir))
        proc = subprocess.Popen(
            _forget_command(run_dir, ids_file, "slow", "--method", "deltagrad"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        time.sleep(delay)
        proc.kill()
        proc.wait()
        after = current_version(open_run(run_dir))  # verifies the model named current is intact
        assert after.version in (before.version, before.version + 1)
        with Ledger.open(run_dir) as ledger:
            assert ledger.get("slow") is None or ledger.get("slow").state in ("received", "done", "failed")
    final = _cli_forget(run_dir, ids_file, "slow")
    assert final.returncode == 0, final.stderr


def test_a_second_forget_on_the_same_run_fails_clearly_while_one_holds_the_lock(
    run_dir: Path, tmp_path: Path
) -> None:
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("1\n2\n")
    with run_lock(run_dir):
        blocked = _cli_forget(run_dir, ids_file, "x")
    assert blocked.returncode == 2
    assert "another forget is running" in blocked.stderr
    assert not (run_dir / CURRENT_FILE).exists()
    assert _cli_forget(run_dir, ids_file, "x").returncode == 0


def test_corrupt_ledger_stops_forget_and_keeps_the_file(run_dir: Path) -> None:
    forget(run_dir, [1, 2])
    ledger_file = run_dir / "ledger.sqlite"
    ledger_file.write_bytes(b"garbage" * 100)
    before = snapshot(run_dir)
    with pytest.raises(LedgerError):
        forget(run_dir, [3, 4])
    assert ledger_file.read_bytes() == b"garbage" * 100
    assert snapshot(run_dir) == before


def test_damaged_model_versions_are_reported(run_dir: Path) -> None:
    forget(run_dir, [1, 2])
    (run_dir / "versions" / "v1.safetensors").unlink()
    with pytest.raises(RunDirError, match="missing"):
        forget(run_dir, [3])
    (run_dir / CURRENT_FILE).write_text("{broken")
    with pytest.raises(RunDirError, match="corrupt"):
        forget(run_dir, [3])


def test_ids_file_with_junk_lines_names_the_line(tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_text("# comment\n3\n\n 7 \n5  # trailing comment\n")
    assert read_ids_file(good).tolist() == [3, 7, 5]
    bad = tmp_path / "bad.txt"
    bad.write_text("1\n2\nthree\n")
    with pytest.raises(ForgetRequestError, match=r"bad.txt:3"):
        read_ids_file(bad)
    with pytest.raises(ForgetRequestError, match="does not exist"):
        read_ids_file(tmp_path / "missing.txt")
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(b"3\r\n7\r\n")
    assert read_ids_file(crlf).tolist() == [3, 7]


def test_ids_file_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbf3\n7\n")  # what some Windows editors write
    assert read_ids_file(path).tolist() == [3, 7]


def test_a_huge_junk_line_is_not_echoed_whole(tmp_path: Path) -> None:
    path = tmp_path / "ids.txt"
    path.write_text("1\n" + "x" * 100_000 + "\n")
    with pytest.raises(ForgetRequestError, match=r"ids.txt:2") as info:
        read_ids_file(path)
    assert len(str(info.value)) < 400 and "100000 characters" in str(info.value)


@pytest.mark.parametrize("junk", ["1_0", "+3", "\u0663", "1\x0c2", "0x10", "1e3"])
def test_ids_are_plain_ascii_decimals_one_per_line(tmp_path: Path, junk: str) -> None:
    path = tmp_path / "ids.txt"
    path.write_text(f"5\n{junk}\n", encoding="utf-8")
    with pytest.raises(ForgetRequestError, match=r"ids.txt:2"):
        read_ids_file(path)


def test_missing_current_pointer_with_versions_is_refused_and_versions_are_never_reused(
    run_dir: Path,
) -> None:
    forget(run_dir, [1, 2], request_id="a")
    forget(run_dir, [3, 4], request_id="b")
    v2 = (run_dir / "versions" / "v2.safetensors").read_bytes()
    pointer = (run_dir / CURRENT_FILE).read_bytes()
    (run_dir / CURRENT_FILE).unlink()
    with pytest.raises(RunDirError, match="current model is unknown"):
        forget(run_dir, [5])
    assert (run_dir / "versions" / "v2.safetensors").read_bytes() == v2  # nothing deleted
    (run_dir / CURRENT_FILE).write_bytes(pointer)
    v1 = (run_dir / "versions" / "v1.safetensors").read_bytes()
    (run_dir / "versions" / "v7.safetensors").write_bytes(b"left by a run killed before its switch")
    outcome = forget(run_dir, [5], request_id="c")
    assert outcome.version.version == 3
    assert not (run_dir / "versions" / "v7.safetensors").exists()  # an orphan no done request produced
    assert (run_dir / "versions" / "v1.safetensors").read_bytes() == v1
    assert (run_dir / "versions" / "v2.safetensors").read_bytes() == v2


def test_a_failing_method_marks_the_request_failed_and_a_retry_serves_it(run_dir: Path, monkeypatch) -> None:
    from miniunlearn.methods.mini import MiniUnlearning

    def broken(self, request):
        raise RuntimeError("simulated failure inside the method")

    monkeypatch.setattr(MiniUnlearning, "_unlearn", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        forget(run_dir, [1, 2, 3], request_id="r")
    with Ledger.open(run_dir) as ledger:
        entry = ledger.get("r")
        assert entry.state == "failed" and "simulated" in entry.reason
    assert not (run_dir / CURRENT_FILE).exists()
    monkeypatch.undo()
    with pytest.raises(ForgetRequestError, match="different set of ids"):
        forget(run_dir, [1, 2], request_id="r")
    with Ledger.open(run_dir) as ledger:
        assert ledger.get("r").state == "failed"  # the mismatched retry left it as it was
    outcome = forget(run_dir, [1, 2, 3], request_id="r", retrain_now=True)
    assert outcome.status == "done" and outcome.entry.method == "retrain"  # the retry's method is recorded


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (KeyboardInterrupt(), "interrupted (Ctrl-C / SIGINT)"),
        (RuntimeError("first line\n  Traceback-like second line\n third"), "RuntimeError: first line"),
    ],
)
def test_the_ledger_records_a_failure_in_one_line(run_dir: Path, monkeypatch, error, expected) -> None:
    from miniunlearn.methods.mini import MiniUnlearning

    def broken(self, request):
        raise error

    monkeypatch.setattr(MiniUnlearning, "_unlearn", broken)
    with pytest.raises(type(error)):
        forget(run_dir, [1, 2, 3], request_id="r")
    with Ledger.open(run_dir) as ledger:
        reason = ledger.get("r").reason
    assert reason.startswith(expected) and "\n" not in reason


def test_invalid_budget_and_option_types_are_refused_before_anything_is_written(run_dir: Path) -> None:
    from miniunlearn.errors import ConfigError

    with pytest.raises(ConfigError, match="max-approx-ratio"):
        forget(run_dir, [1], max_approx_ratio=1.5)
    with pytest.raises(ConfigError, match="must be of type float"):
        forget(run_dir, [1], options={"rtol": "small"})
    with Ledger.open(run_dir, create=False) as ledger:  # every run has its ledger: nothing was recorded
        assert ledger.entries() == []


def test_unreadable_ids_files_get_clear_errors(tmp_path: Path) -> None:
    binary = tmp_path / "ids.bin"
    binary.write_bytes(bytes(range(256)))
    with pytest.raises(ForgetRequestError, match="text file"):
        read_ids_file(binary)
    with pytest.raises(ForgetRequestError, match="text file"):
        read_ids_file(tmp_path)
    huge = tmp_path / "huge.txt"
    huge.write_text("1\n99999999999999999999999\n")
    with pytest.raises(ForgetRequestError, match="huge.txt:2"):
        read_ids_file(huge)


def test_a_method_whose_history_the_run_lacks_is_refused_not_failed(tmp_path: Path) -> None:
    import dataclasses

    run_dir = train_run(
        dataclasses.replace(CONFIG, epochs=20, history="mini"), tmp_path / "run", progress=False
    ).path
    before = snapshot(run_dir)
    with pytest.raises(HistoryError, match="--history full"):
        forget(run_dir, np.array([1, 2, 3]), method="deltagrad", request_id="needs-full")
    assert snapshot(run_dir) == before
    with Ledger.open(run_dir) as ledger:
        entry = ledger.get("needs-full")
        assert entry.state == "refused" and "history-full" in entry.reason
    # mini needs only the minimal history, which the run has
    assert forget(run_dir, np.array([1, 2, 3]), method="mini").status == "done"
