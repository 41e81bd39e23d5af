"""A done deletion is never silently undone: backups restored mid-request, a deleted lock,
re-sent requests of every kind, no-op methods and an altered current model.

Each test reproduces a sequence that, before the run session owned the deletion state,
ended with exit 0 and forgotten ids back in the current model (or a bricked run); each
must now end in a correct recovery or a refusal that says how to recover.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from miniunlearn.cli import main
from miniunlearn.deletion import CRASH_ENV, CURRENT_FILE, current_version, forget, open_session, retrain_all
from miniunlearn.errors import CurrentModelLost, ForgetRequestError, HistoryError, LedgerError, RunDirError
from miniunlearn.fileio import sha256_file
from miniunlearn.ledger import Ledger
from miniunlearn.training import TrainConfig, open_run, train_run
from miniunlearn.versions import rebuild_ledger

CONFIG = TrainConfig(
    dataset="digits", epochs=60, lr=1.0, lam=0.02, history="mini", checkpoints=4, dtype="float64", seed=0
)
A, B, C, D = list(range(10)), list(range(10, 30)), list(range(30, 60)), list(range(100, 105))
FAST = {"method": "finetune", "options": {"steps": 2}}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_run(CONFIG, tmp_path_factory.mktemp("pristine") / "run", progress=False).path


@pytest.fixture
def run_dir(pristine: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "run"))


def _cli(run_dir: Path, *args: str, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop(CRASH_ENV, None)
    if crash_at:
        env[CRASH_ENV] = crash_at
    command = [sys.executable, "-m", "miniunlearn.cli", "-q", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def _ids_file(tmp_path: Path, ids: list[int]) -> str:
    path = tmp_path / f"ids-{ids[0]}-{len(ids)}.txt"
    path.write_text("\n".join(map(str, ids)) + "\n")
    return str(path)


def _state(run_dir: Path) -> dict[str, str]:
    with Ledger.open(run_dir, create=False) as ledger:
        return {e.request_id: e.state for e in ledger.entries()}


def _forgotten(run_dir: Path) -> set[int]:
    with Ledger.open(run_dir, create=False) as ledger:
        return set(ledger.forgotten_ids().tolist())


def _verified(run_dir: Path) -> list[str]:
    with open_session(run_dir, write=False) as session:
        return session.verify()


def _backup(run_dir: Path, where: Path) -> None:
    where.mkdir()
    for name in ("ledger.sqlite", CURRENT_FILE):
        if (run_dir / name).exists():
            shutil.copy2(run_dir / name, where / name)


def _restore(run_dir: Path, where: Path) -> None:
    for name in ("ledger.sqlite", CURRENT_FILE):
        if (where / name).exists():
            shutil.copy2(where / name, run_dir / name)


def _two_done_then_r3_killed(run_dir: Path, tmp_path: Path, point: str) -> None:
    """Serve r1 (ids A) and r2 (ids B), then kill r3 (ids C, from the command line) at ``point``."""
    forget(run_dir, A, request_id="r1", **FAST)
    forget(run_dir, B, request_id="r2", **FAST)
    _kill_r3(run_dir, tmp_path, point)


def _kill_r3(run_dir: Path, tmp_path: Path, point: str) -> None:
    """Send r3 (ids C) from the command line and kill it at ``point``."""
    command = ["forget", str(run_dir), "--ids", _ids_file(tmp_path, C), "--request-id", "r3"]
    killed = _cli(run_dir, *command, "--method", "finetune", "-o", "steps=2", crash_at=point)
    assert killed.returncode == -signal.SIGKILL


# -- 1: backups restored mid-request -----------------------------------------------


def test_a_ledger_backed_up_mid_request_rolls_the_done_request_forward(run_dir: Path, tmp_path: Path) -> None:
    _two_done_then_r3_killed(run_dir, tmp_path, "after-receive")
    _backup(run_dir, tmp_path / "backup")
    done = forget(run_dir, C, request_id="r3", **FAST)
    assert done.version.version == 3
    v3 = sha256_file(run_dir / "versions" / "v3.safetensors")
    _restore(run_dir, tmp_path / "backup")  # r3 received again, current.json on v2

    outcome = forget(run_dir, D, request_id="r4", **FAST)
    assert outcome.status == "done" and outcome.version.version == 4
    assert any("r3: completed" in m for m in outcome.messages)
    assert _state(run_dir) == {"r1": "done", "r2": "done", "r3": "done", "r4": "done"}
    assert set(C) <= _forgotten(run_dir)
    assert sha256_file(run_dir / "versions" / "v3.safetensors") == v3  # never deleted nor rebuilt
    with Ledger.open(run_dir, create=False) as ledger:
        assert ledger.get("r4").model_sha256_before == v3  # r4 was built on r3's model
    assert _verified(run_dir) == []


def test_a_ledger_backed_up_with_the_request_failed_is_refused_then_rebuilt(
    run_dir: Path, tmp_path: Path, capsys
) -> None:
    _two_done_then_r3_killed(run_dir, tmp_path, "after-receive")
    with open_session(run_dir, write=True):
        pass  # settles: r3 failed
    assert _state(run_dir)["r3"] == "failed"
    _backup(run_dir, tmp_path / "backup")
    assert forget(run_dir, C, request_id="r3", **FAST).version.version == 3
    _restore(run_dir, tmp_path / "backup")

    with pytest.raises(RunDirError, match="newer than the ledger") as info:
        forget(run_dir, D, request_id="r4", **FAST)
    assert "--rebuild-from-versions" in str(info.value)
    assert main(["-q", "ledger", str(run_dir), "--restore-current"]) == 2
    assert "newer than the ledger" in capsys.readouterr().err
    assert (run_dir / "versions" / "v3.safetensors").exists()
    assert main(["-q", "ledger", str(run_dir), "--verify"]) == 2

    (run_dir / "ledger.sqlite").rename(tmp_path / "ledger.old")  # the documented recovery
    current = {
        "version": 3,
        "path": "versions/v3.safetensors",
        "sha256": sha256_file(run_dir / "versions" / "v3.safetensors"),
        "request_id": "r3",
    }
    (run_dir / CURRENT_FILE).write_text(json.dumps(current))  # the newest current.json
    assert main(["-q", "ledger", str(run_dir), "--rebuild-from-versions"]) == 0
    assert set(A + B + C) <= _forgotten(run_dir)
    assert forget(run_dir, D, request_id="r4", **FAST).version.version == 4


# -- 2: a deleted lock ---------------------------------------------------------------


def test_a_lock_deleted_mid_request_lets_no_second_command_in(run_dir: Path) -> None:
    forget(run_dir, A, request_id="r1", **FAST)
    with open_session(run_dir, write=True) as session:
        entry = session.ledger.receive(B, "finetune", {}, session.current.sha256, request_id="A")
        params = session.current_params() + 1e-3
        (run_dir / ".lock").unlink()  # looks stale: a 0-byte file
        with pytest.raises(LedgerError, match="another forget is running"):
            forget(run_dir, C, request_id="B", **FAST)  # the run directory itself is locked
        done, version = session.commit(entry, params, {}, 0.0)
    assert (done.state, version.version) == ("done", 2)
    assert _state(run_dir) == {"r1": "done", "A": "done"}
    assert _verified(run_dir) == []


def test_a_commit_refuses_when_the_pointer_changed_under_it(run_dir: Path) -> None:
    forget(run_dir, A, request_id="r1", **FAST)
    pointer = (run_dir / CURRENT_FILE).read_bytes()
    forget(run_dir, B, request_id="r2", **FAST)
    with open_session(run_dir, write=True) as session:
        entry = session.ledger.receive(C, "finetune", {}, session.current.sha256, request_id="A")
        params = session.current_params() + 1e-3
        (run_dir / CURRENT_FILE).write_bytes(pointer)  # an older current.json restored meanwhile
        with pytest.raises(LedgerError, match="current model changed while request A"):
            session.commit(entry, params, {}, 0.0)
    assert not (run_dir / "versions" / "v3.safetensors").exists()


def test_a_broken_chain_of_done_requests_is_refused_by_every_command(run_dir: Path) -> None:
    forget(run_dir, A, request_id="r1", **FAST)
    forget(run_dir, B, request_id="r2", **FAST)
    import sqlite3

    conn = sqlite3.connect(run_dir / "ledger.sqlite")
    conn.execute("UPDATE requests SET model_sha256_before = ? WHERE request_id = 'r2'", ("0" * 64,))
    conn.commit()
    conn.close()
    with pytest.raises(RunDirError, match="two commands changed the run at once"):
        forget(run_dir, D, **FAST)
    with pytest.raises(RunDirError, match="two commands changed the run at once"):
        current_version(open_run(run_dir))
    assert main(["-q", "ledger", str(run_dir), "--verify"]) == 2


# -- 3: re-sent retrainings --------------------------------------------------------


def test_a_resent_retraining_reports_what_it_produced(run_dir: Path) -> None:
    forget(run_dir, A, request_id="r1", **FAST)
    first = retrain_all(run_dir, request_id="X")
    again = retrain_all(run_dir, request_id="X")
    assert (first.status, again.status) == ("done", "already-done")
    assert again.version == first.version and again.version.version == 2
    assert forget(run_dir, B, request_id="r2", **FAST).version.version == 3
    assert _verified(run_dir) == []


@pytest.mark.parametrize("point", ["after-receive", "writing-version", "after-version", "after-current"])
def test_a_retraining_killed_at_each_step_and_sent_again_leaves_a_sound_run(
    run_dir: Path, point: str
) -> None:
    forget(run_dir, A, request_id="r1", **FAST)
    killed = _cli(run_dir, "forget", str(run_dir), "--retrain-now", "--request-id", "X", crash_at=point)
    assert killed.returncode == -signal.SIGKILL
    resent = _cli(run_dir, "forget", str(run_dir), "--retrain-now", "--request-id", "X")
    assert resent.returncode == 0, resent.stderr
    assert _state(run_dir) == {"r1": "done", "X": "done"}
    assert current_version(open_run(run_dir)).request_id == "X"
    assert forget(run_dir, B, request_id="r2", **FAST).version.version > 2
    assert _verified(run_dir) == []


# -- 4: refused requests may be re-sent, and exit 2 --------------------------------


def test_a_refused_request_id_is_served_when_sent_again_with_a_method_the_run_has(
    run_dir: Path, tmp_path: Path, capsys
) -> None:
    ids = _ids_file(tmp_path, A)
    assert (
        main(["-q", "forget", str(run_dir), "--ids", ids, "--method", "deltagrad", "--request-id", "gdpr-1"])
        == 2
    )
    assert "full" in capsys.readouterr().err
    assert _state(run_dir) == {"gdpr-1": "refused"}
    assert (
        main(["-q", "forget", str(run_dir), "--ids", ids, "--method", "finetune", "--request-id", "gdpr-1"])
        == 0
    )
    assert _state(run_dir) == {"gdpr-1": "done"} and set(A) <= _forgotten(run_dir)
    with Ledger.open(run_dir, create=False) as ledger:
        (event,) = ledger.events("gdpr-1")
    assert event["event"] == "refused" and event["detail"]["method"] == "deltagrad"


def test_a_request_refused_for_bad_ids_is_served_with_corrected_ids_under_its_id(run_dir: Path) -> None:
    n = open_run(run_dir).n_train
    with pytest.raises(ForgetRequestError, match="not in the training set"):
        forget(run_dir, [1, n + 5], request_id="fix-me", **FAST)
    assert _state(run_dir) == {"fix-me": "refused"}
    with pytest.raises(ForgetRequestError):
        forget(run_dir, [n + 6], request_id="fix-me", **FAST)  # refused again: recorded again
    outcome = forget(run_dir, [1, 2], request_id="fix-me", **FAST)
    assert outcome.status == "done" and _forgotten(run_dir) == {1, 2}
    with Ledger.open(run_dir, create=False) as ledger:
        assert [e["event"] for e in ledger.events("fix-me")] == ["refused", "refused"]


def test_a_resent_done_request_reports_the_version_it_produced(run_dir: Path) -> None:
    forget(run_dir, A, request_id="r1", **FAST)
    forget(run_dir, B, request_id="r2", **FAST)
    again = forget(run_dir, A, request_id="r1", **FAST)
    assert again.status == "already-done" and again.version.version == 1
    with pytest.raises(ForgetRequestError, match="already done with a different set of ids"):
        forget(run_dir, C, request_id="r1", **FAST)


def test_a_method_the_run_cannot_serve_is_refused_with_exit_2(run_dir: Path) -> None:
    with pytest.raises(HistoryError):
        forget(run_dir, A, request_id="g", method="deltagrad")
    assert _state(run_dir) == {"g": "refused"} and not (run_dir / "versions").exists()


# -- 5: a result that changes nothing is not a deletion ----------------------------


def test_a_method_that_changes_no_parameter_does_not_complete_a_deletion(run_dir: Path) -> None:
    forget(run_dir, A, request_id="r1", **FAST)
    before = sha256_file(run_dir / CURRENT_FILE)
    with pytest.raises(ForgetRequestError, match="changed no parameter"):
        forget(run_dir, B, request_id="noop", method="none")
    assert _state(run_dir)["noop"] == "failed"
    assert sha256_file(run_dir / CURRENT_FILE) == before
    assert sorted(p.name for p in (run_dir / "versions").iterdir()) == ["v1.safetensors"]
    assert not set(B) & _forgotten(run_dir)
    assert forget(run_dir, B, request_id="noop", **FAST).status == "done"  # retried with a real method


# -- 8: an altered current model is rebuilt the documented way ---------------------


def test_an_altered_current_model_is_refused_and_rebuilt_by_retraining(run_dir: Path, capsys) -> None:
    forget(run_dir, A, request_id="r1", **FAST)
    forget(run_dir, B, request_id="r2", **FAST)
    v2 = run_dir / "versions" / "v2.safetensors"
    data = bytearray(v2.read_bytes())
    data[-1] ^= 1
    v2.write_bytes(bytes(data))
    with pytest.raises(CurrentModelLost, match="altered") as info:
        forget(run_dir, C, **FAST)
    assert "--retrain-now" in str(info.value)
    assert main(["-q", "forget", str(run_dir), "--retrain-now"]) == 0
    version = current_version(open_run(run_dir))
    assert version.version == 3 and set(A + B) <= _forgotten(run_dir)
    problems = _verified(run_dir)
    assert len(problems) == 1 and "v2" in problems[0] and "altered" in problems[0]


# -- ledger --verify -----------------------------------------------------------------


def test_ledger_verify_passes_a_sound_run_and_names_an_altered_version(run_dir: Path, capsys) -> None:
    forget(run_dir, A, request_id="r1", **FAST)
    forget(run_dir, B, request_id="r2", **FAST)
    assert main(["ledger", str(run_dir), "--verify"]) == 0
    assert "2 request(s) checked; sound" in capsys.readouterr().out
    v1 = run_dir / "versions" / "v1.safetensors"
    v1.write_bytes(v1.read_bytes()[:-1] + b"\0")
    assert main(["ledger", str(run_dir), "--verify"]) == 2
    out = capsys.readouterr().out
    assert "v1" in out and "altered" in out and "1 problem(s)" in out


def test_ledger_listing_warns_and_exits_2_when_the_records_disagree(
    run_dir: Path, tmp_path: Path, capsys
) -> None:
    _backup(run_dir, tmp_path / "empty")
    forget(run_dir, A, request_id="r1", **FAST)
    _restore(run_dir, tmp_path / "empty")  # an older (empty) ledger
    assert main(["ledger", str(run_dir)]) == 2
    assert "warning" in capsys.readouterr().err


def test_no_forgotten_id_is_back_after_any_sequence_above(run_dir: Path) -> None:
    """The invariant every test above protects, checked directly on a plain sequence."""
    forget(run_dir, A, request_id="r1", **FAST)
    retrain_all(run_dir, request_id="rt")
    forget(run_dir, B, request_id="r2", **FAST)
    with Ledger.open(run_dir, create=False) as ledger:
        done = ledger.entries("done")
        assert np.array_equal(ledger.forgotten_ids(), np.union1d(A, B))
    assert [e.request_id for e in sorted(done, key=lambda e: e.done_seq)] == ["r1", "rt", "r2"]


# -- found by a hostile probe of the run session -------------------------------------


def _sql(run_dir: Path, statement: str, *args: object) -> None:
    import sqlite3

    conn = sqlite3.connect(run_dir / "ledger.sqlite")
    conn.execute(statement, args)
    conn.commit()
    conn.close()


def test_a_pending_request_whose_current_version_holds_other_ids_is_refused(
    run_dir: Path, tmp_path: Path
) -> None:
    forget(run_dir, A, request_id="r1", **FAST)
    forget(run_dir, B, request_id="r2", **FAST)
    shutil.copy2(run_dir / "ledger.sqlite", tmp_path / "L0")
    _kill_r3(run_dir, tmp_path, "after-receive")
    shutil.copy2(run_dir / "ledger.sqlite", tmp_path / "L1")  # r3 received with ids C
    shutil.copy2(tmp_path / "L0", run_dir / "ledger.sqlite")
    assert forget(run_dir, D, request_id="r3", **FAST).version.version == 3  # r3 done with ids D
    shutil.copy2(tmp_path / "L1", run_dir / "ledger.sqlite")
    with pytest.raises(RunDirError, match="made with other ids than the ledger's"):
        forget(run_dir, A, request_id="r4", **FAST)
    # --verify and --restore-current refuse too (restoring would undo the done r3)
    assert main(["-q", "ledger", str(run_dir), "--verify"]) == 2
    assert main(["-q", "ledger", str(run_dir), "--restore-current"]) == 2
    assert _state(run_dir)["r3"] == "received"  # nothing was changed by any of them
    assert json.loads((run_dir / CURRENT_FILE).read_text())["version"] == 3  # r3's model stays current


def test_a_ledger_from_a_clone_of_the_run_is_refused_and_retraining_is_not_offered(
    run_dir: Path, tmp_path: Path
) -> None:
    clone = Path(shutil.copytree(run_dir, tmp_path / "clone"))
    forget(run_dir, B, request_id="r1", **FAST)
    forget(clone, list(range(300, 320)), request_id="r1", **FAST)
    for name in ("ledger.sqlite", CURRENT_FILE):
        shutil.copy2(clone / name, run_dir / name)
    with pytest.raises(RunDirError, match="another copy of this run") as info:
        forget(run_dir, C, request_id="r2", **FAST)
    assert "do not retrain" in str(info.value)
    with pytest.raises(RunDirError, match="another copy of this run"):
        retrain_all(run_dir)  # would retrain without the clone's ids and bring B back


def test_a_done_row_whose_ids_were_edited_consistently_is_refused(run_dir: Path) -> None:
    import hashlib

    forget(run_dir, A, request_id="r1", **FAST)
    forget(run_dir, B, request_id="r2", **FAST)
    blob = np.array([10], dtype="<i8").tobytes()
    _sql(
        run_dir,
        "UPDATE requests SET ids = ?, ids_sha256 = ?, n_ids = 1 WHERE request_id = 'r2'",
        blob,
        hashlib.sha256(blob).hexdigest(),
    )
    with pytest.raises(RunDirError, match="ledger was edited"):
        forget(run_dir, D, **FAST)
    with pytest.raises(RunDirError, match="ledger was edited"):
        current_version(open_run(run_dir))


def test_a_done_row_without_its_starting_model_breaks_the_chain(run_dir: Path) -> None:
    forget(run_dir, A, request_id="r1", **FAST)
    forget(run_dir, B, request_id="r2", **FAST)
    _sql(run_dir, "UPDATE requests SET model_sha256_before = NULL WHERE request_id = 'r2'")
    with pytest.raises(RunDirError, match="none recorded"):
        forget(run_dir, D, **FAST)


def test_a_refused_command_changes_nothing_and_the_documented_recovery_still_works(
    run_dir: Path, tmp_path: Path
) -> None:
    forget(run_dir, A, request_id="r1", **FAST)
    older = (run_dir / CURRENT_FILE).read_bytes()
    forget(run_dir, B, request_id="r2", **FAST)
    _kill_r3(run_dir, tmp_path, "after-version")
    (run_dir / CURRENT_FILE).write_bytes(older)  # an older current.json restored
    with pytest.raises(RunDirError, match="disagree"):
        forget(run_dir, D, request_id="r4", **FAST)
    assert _state(run_dir)["r3"] == "received"  # the refusal settled nothing
    assert main(["-q", "ledger", str(run_dir), "--restore-current"]) == 0
    assert forget(run_dir, D, request_id="r4", **FAST).status == "done"
    assert _state(run_dir)["r3"] == "done" and set(C + D) <= _forgotten(run_dir)  # r3 rolled forward


def test_a_symlinked_retrain_cache_folder_is_refused(run_dir: Path, tmp_path: Path) -> None:
    forget(run_dir, A, request_id="r1", **FAST)
    outside = tmp_path / "outside"
    outside.mkdir()
    (run_dir / "retrain").symlink_to(outside)
    with pytest.raises(RunDirError, match="symbolic link"):
        forget(run_dir, B, request_id="r2", retrain_now=True)  # retrains through the cache
    assert not list(outside.iterdir()) and _state(run_dir)["r2"] == "failed"


def test_a_resent_request_whose_superseded_version_file_is_gone_still_reports_done(run_dir: Path) -> None:
    forget(run_dir, A, request_id="r1", **FAST)
    forget(run_dir, B, request_id="r2", **FAST)
    (run_dir / "versions" / "v1.safetensors").unlink()
    again = forget(run_dir, A, request_id="r1", **FAST)
    assert again.status == "already-done" and again.version.version == 1
    assert any("superseded" in m for m in again.messages)


# -- found by a second hostile probe ---------------------------------------------------


def test_a_request_that_changed_nothing_with_edited_ids_is_refused(run_dir: Path) -> None:
    import hashlib

    forget(run_dir, A, request_id="r1", **FAST)
    assert forget(run_dir, A, request_id="r5", **FAST).status == "nothing-new"
    blob = np.arange(200, 205, dtype="<i8").tobytes()
    _sql(
        run_dir,
        "UPDATE requests SET ids = ?, ids_sha256 = ?, n_ids = 5 WHERE request_id = 'r5'",
        blob,
        hashlib.sha256(blob).hexdigest(),
    )
    with pytest.raises(RunDirError, match="left the model unchanged"):
        forget(run_dir, list(range(200, 205)), request_id="r6", **FAST)


@pytest.mark.timeout(30)
def test_a_fifo_in_place_of_the_lock_owner_file_does_not_hang_the_waiting_command(run_dir: Path) -> None:
    with open_session(run_dir, write=True):
        (run_dir / ".lock.owner").unlink()
        os.mkfifo(run_dir / ".lock.owner")
        with pytest.raises(LedgerError, match="another forget is running"):
            forget(run_dir, A, **FAST)


def test_a_command_whose_run_directory_changed_deletes_nothing(run_dir: Path, monkeypatch) -> None:
    from miniunlearn.runlock import HeldLock

    calls = {"n": 0}
    real_check = HeldLock.check

    def check_then_lose(self: HeldLock) -> None:
        calls["n"] += 1
        if calls["n"] >= 3:  # lost after the version file is written, before the switch
            raise LedgerError("the run directory was moved or replaced while this command held its lock")
        real_check(self)

    monkeypatch.setattr(HeldLock, "check", check_then_lose)
    with open_session(run_dir, write=True) as session:
        entry = session.ledger.receive(A, "finetune", {}, session.current.sha256, request_id="A")
        with pytest.raises(LedgerError, match="moved or replaced"):
            session.commit(entry, session.current_params() + 1e-3, {}, 0.0)
        note = session.fail(entry, "lost")
    assert note is not None and "left in place" in note
    assert (run_dir / "versions" / "v1.safetensors").exists()  # not deleted by path


# -- found by a third hostile probe -----------------------------------------------------


def test_restoring_the_pointer_is_refused_when_the_ledger_is_the_older_copy(
    run_dir: Path, tmp_path: Path
) -> None:
    forget(run_dir, A, request_id="r1", **FAST)
    forget(run_dir, B, request_id="r2", **FAST)
    shutil.copy2(run_dir / "ledger.sqlite", tmp_path / "ledger.old")
    shutil.copytree(run_dir / "versions", tmp_path / "versions.old")
    forget(run_dir, C, request_id="r3", **FAST)
    shutil.copy2(tmp_path / "ledger.old", run_dir / "ledger.sqlite")  # the older ledger and versions,
    shutil.rmtree(run_dir / "versions")  # current.json stays the newest (it names v3)
    shutil.copytree(tmp_path / "versions.old", run_dir / "versions")
    assert main(["-q", "ledger", str(run_dir), "--restore-current"]) == 2  # it would undo r3
    with pytest.raises(RunDirError, match="the ledger is the older copy"):
        forget(run_dir, D, request_id="r4", **FAST)
    assert json.loads((run_dir / CURRENT_FILE).read_text())["version"] == 3
    (run_dir / "ledger.sqlite").rename(tmp_path / "moved-aside")
    with pytest.raises(LedgerError, match="would drop that request"):  # never suggests pointing back
        rebuild_ledger(open_run(run_dir))


def test_a_version_file_replaced_by_a_copy_of_another_is_rebuilt_by_retraining(run_dir: Path) -> None:
    forget(run_dir, A, request_id="r1", **FAST)
    forget(run_dir, B, request_id="r2", **FAST)
    forget(run_dir, C, request_id="r3", **FAST)
    shutil.copy2(run_dir / "versions" / "v2.safetensors", run_dir / "versions" / "v3.safetensors")
    with pytest.raises(CurrentModelLost, match="altered"):
        forget(run_dir, D, request_id="r4", **FAST)
    outcome = retrain_all(run_dir, request_id="rebuild")
    assert outcome.status == "done" and set(A + B + C) <= _forgotten(run_dir)


def test_an_older_pointer_and_versions_restored_are_rebuilt_by_retraining(
    run_dir: Path, tmp_path: Path
) -> None:
    """current.json and versions/ from a backup taken before r3, the ledger the newest: the
    ledger's current model (v3) is gone, so --retrain-now must be able to rebuild it."""
    forget(run_dir, A, request_id="r1", **FAST)
    forget(run_dir, B, request_id="r2", **FAST)
    shutil.copy2(run_dir / CURRENT_FILE, tmp_path / "current.old")
    shutil.copytree(run_dir / "versions", tmp_path / "versions.old")
    forget(run_dir, C, request_id="r3", **FAST)
    shutil.copy2(tmp_path / "current.old", run_dir / CURRENT_FILE)
    shutil.rmtree(run_dir / "versions")
    shutil.copytree(tmp_path / "versions.old", run_dir / "versions")
    with pytest.raises(CurrentModelLost, match="--retrain-now"):
        forget(run_dir, D, request_id="r4", **FAST)
    assert main(["-q", "ledger", str(run_dir), "--restore-current"]) == 2
    assert main(["-q", "forget", str(run_dir), "--retrain-now", "--request-id", "rt"]) == 0
    assert set(A + B + C) <= _forgotten(run_dir)
    assert forget(run_dir, D, request_id="r4", **FAST).status == "done"
