"""The ledger, current.json and the model versions are cross-checked, never trusted alone."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from miniunlearn.cli import main
from miniunlearn.deletion import CRASH_ENV, CURRENT_FILE, current_version, forget, retrain_all
from miniunlearn.errors import CurrentModelLost, LedgerError, RunDirError
from miniunlearn.ledger import Ledger
from miniunlearn.training import TrainConfig, open_run, retrain, train_run
from miniunlearn.versions import rebuild_ledger

CONFIG = TrainConfig(
    dataset="digits", epochs=60, lr=1.0, lam=0.02, history="mini", checkpoints=4, dtype="float64", seed=0
)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_run(CONFIG, tmp_path_factory.mktemp("pristine") / "run", progress=False).path


@pytest.fixture
def run_dir(pristine: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "run"))


def served(run_dir: Path, *chunks: list[int]) -> None:
    for i, chunk in enumerate(chunks):
        forget(run_dir, chunk, request_id=f"r{i}", method="finetune", options={"steps": 2})


def records(run_dir: Path) -> list[dict]:
    with Ledger.open(run_dir, create=False) as ledger:
        return ledger.to_json_records(include_ids=True)


def test_a_trained_run_comes_with_an_empty_ledger(run_dir: Path) -> None:
    assert records(run_dir) == []


def test_a_deleted_ledger_is_refused_not_recreated(run_dir: Path) -> None:
    served(run_dir, [1, 2, 3])
    (run_dir / "ledger.sqlite").unlink()
    with pytest.raises(LedgerError, match="missing") as info:
        forget(run_dir, [4], method="finetune", options={"steps": 2})
    assert "--rebuild-from-versions" in str(info.value)
    assert not (run_dir / "ledger.sqlite").exists()
    with pytest.raises(LedgerError, match="missing"):
        retrain_all(run_dir)  # would otherwise put the forgotten samples back
    assert not (run_dir / "ledger.sqlite").exists()
    assert main(["-q", "evaluate", str(run_dir)]) == 2


def test_the_ledger_is_rebuilt_exactly_from_the_versions(run_dir: Path, capsys) -> None:
    served(run_dir, [1, 2, 3], [3, 4, 5], [1, 2])  # the third changes nothing: no version
    retrain_all(run_dir, request_id="rt")
    kept = [r for r in records(run_dir) if r["request_id"] != "r2"]  # r2 left no version file
    (run_dir / "ledger.sqlite").unlink()
    assert main(["-q", "ledger", str(run_dir), "--rebuild-from-versions"]) == 0
    assert "could not be restored" in capsys.readouterr().out
    rebuilt = records(run_dir)
    assert len(kept) == len(rebuilt) == 3
    for old, new in zip(kept, rebuilt, strict=True):
        drop = ("completed_at", "duration_s", "seq", "done_seq")
        assert {k: v for k, v in old.items() if k not in drop} == {
            k: v for k, v in new.items() if k not in drop
        }
    with Ledger.open(run_dir, create=False) as ledger:
        assert ledger.forgotten_ids().tolist() == [1, 2, 3, 4, 5]
        assert ledger.error_budget_since_last_retrain() == 0.0
        assert current_version(open_run(run_dir), ledger).version == 3
    outcome = forget(run_dir, [9], method="finetune", options={"steps": 2})
    assert outcome.version.version == 4


def test_rebuilding_refuses_an_existing_ledger_and_versions_without_records(run_dir: Path) -> None:
    served(run_dir, [1, 2])
    with pytest.raises(LedgerError, match="exists"):
        rebuild_ledger(open_run(run_dir))
    (run_dir / "ledger.sqlite").unlink()
    (run_dir / CURRENT_FILE).unlink()
    with pytest.raises(LedgerError, match="current.json is missing too"):
        rebuild_ledger(open_run(run_dir))
    assert not (run_dir / "ledger.sqlite").exists()


def test_a_stale_current_pointer_is_refused_and_restored_from_the_ledger(run_dir: Path) -> None:
    served(run_dir, [1, 2])
    backup = (run_dir / CURRENT_FILE).read_bytes()  # what a backup taken now holds
    served(run_dir, [1, 2], [7, 8])
    (run_dir / CURRENT_FILE).write_bytes(backup)
    with pytest.raises(RunDirError, match="disagree") as info:
        forget(run_dir, [9], method="finetune", options={"steps": 2})
    assert "--restore-current" in str(info.value)
    assert main(["-q", "ledger", str(run_dir), "--restore-current"]) == 0
    assert current_version(open_run(run_dir)).version == 2
    assert forget(run_dir, [9], method="finetune", options={"steps": 2}).version.version == 3


def test_lost_pointer_and_versions_never_restart_from_the_original_model(run_dir: Path) -> None:
    served(run_dir, [1, 2], [3, 4])
    (run_dir / CURRENT_FILE).unlink()
    shutil.rmtree(run_dir / "versions")
    with pytest.raises(CurrentModelLost, match="current model is unknown"):
        forget(run_dir, [9], method="finetune", options={"steps": 2})
    assert main(["-q", "ledger", str(run_dir), "--restore-current"]) == 2  # the file is gone too
    outcome = retrain_all(run_dir, request_id="rebuild")  # the way back: retrain without every id
    assert outcome.version.version == 3  # numbers 1 and 2 are never reused
    assert any("retraining rebuilds it" in m for m in outcome.messages)
    run = open_run(run_dir)
    from miniunlearn.deletion import load_version_params

    expected = retrain(run, np.array([1, 2, 3, 4]))
    assert np.allclose(load_version_params(run, current_version(run)).numpy(), expected.numpy())


def _cli(run_dir: Path, ids_file: Path, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop(CRASH_ENV, None)
    if crash_at:
        env[CRASH_ENV] = crash_at
    command = [sys.executable, "-m", "miniunlearn.cli", "-q", "forget", str(run_dir), "--ids", str(ids_file)]
    command += ["--request-id", "first", "--method", "finetune", "-o", "steps=2"]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("point", ["writing-version", "after-version"])
def test_a_first_request_killed_before_its_pointer_leaves_a_usable_run(
    run_dir: Path, tmp_path: Path, point: str
) -> None:
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("1\n2\n3\n")
    killed = _cli(run_dir, ids_file, crash_at=point)
    assert killed.returncode == -signal.SIGKILL
    assert not (run_dir / CURRENT_FILE).exists()
    assert current_version(open_run(run_dir)).version == 0  # the original model, checked
    resumed = _cli(run_dir, ids_file)
    assert resumed.returncode == 0, resumed.stderr
    assert current_version(open_run(run_dir)).version == 1
    assert records(run_dir)[0]["state"] == "done"


def test_audit_refuses_a_request_whose_model_was_altered_or_deleted(
    run_dir: Path, tmp_path: Path, capsys
) -> None:
    served(run_dir, [1, 2], [3, 4])
    v1 = run_dir / "versions" / "v1.safetensors"
    data = bytearray(v1.read_bytes())
    data[-1] ^= 1
    v1.write_bytes(bytes(data))
    out = tmp_path / "audit"
    assert main(["-q", "audit", str(run_dir), "--request", "r0", "--out", str(out)]) == 2
    assert "altered" in capsys.readouterr().err and not out.exists()
    v1.unlink()
    assert main(["-q", "audit", str(run_dir), "--request", "r0", "--out", str(out)]) == 2
    assert "missing" in capsys.readouterr().err and not out.exists()
    assert main(["-q", "audit", str(run_dir), "--request", "r1", "--out", str(out)]) == 0


# -- failures of the machine: read-only files, a full disk, bugs ------------------------------


def _ids(tmp_path: Path, ids) -> str:
    path = tmp_path / "ids.txt"
    path.write_text("".join(f"{i}\n" for i in ids))
    return str(path)


def _forget_cli(run_dir: Path, ids_file: str, request: str = "req") -> int:
    return main(
        ["-q", "forget", str(run_dir), "--ids", ids_file, "--request-id", request, "--method", "finetune"]
        + ["-o", "steps=2"]
    )


def _no_space(*args, **kwargs):
    from safetensors import SafetensorError

    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


def test_a_read_only_ledger_is_refused_with_a_message_and_still_listed(
    run_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    def read_only(self, path):
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)

    monkeypatch.setattr(Ledger, "_connect", read_only)
    assert _forget_cli(run_dir, _ids(tmp_path, [1, 2])) == 2
    err = capsys.readouterr().err
    assert "read-only" in err and "chmod" in err and "Traceback" not in err
    assert not (run_dir / "versions").exists() and not (run_dir / CURRENT_FILE).exists()
    assert main(["-q", "ledger", str(run_dir)]) == 0  # reading needs no write access


def test_a_full_disk_under_the_ledger_is_refused_and_changes_nothing(
    run_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    connect = Ledger._connect

    def no_room(self, path):
        conn = connect(self, path)
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own "database or disk is full"
        return conn

    monkeypatch.setattr(Ledger, "_connect", no_room)
    assert _forget_cli(run_dir, _ids(tmp_path, range(0, 1500))) == 2
    err = capsys.readouterr().err
    assert "is full" in err and "Traceback" not in err
    monkeypatch.undo()
    assert records(run_dir) == [] and not (run_dir / "versions").exists()


def test_a_full_disk_while_writing_the_model_names_the_file_and_fails_the_request(
    run_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setattr("safetensors.torch.save_file", _no_space)
    assert _forget_cli(run_dir, _ids(tmp_path, [1, 2])) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "v1.safetensors" in err
    assert (records(run_dir)[0]["state"], records(run_dir)[0]["reason"].split(":")[0]) == (
        "failed",
        "OSError",
    )
    assert not list((run_dir / "versions").iterdir()) and not (run_dir / CURRENT_FILE).exists()


def test_when_the_ledger_cannot_record_a_failure_the_next_forget_settles_it(
    run_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setattr("safetensors.torch.save_file", _no_space)

    def cannot(self, request_id, reason):
        raise LedgerError("the disk holding the ledger is full")

    monkeypatch.setattr(Ledger, "fail", cannot)
    assert _forget_cli(run_dir, _ids(tmp_path, [1, 2]), "first") == 2
    err = capsys.readouterr().err
    assert "No space left" in err and "stays 'received'" in err
    assert records(run_dir)[0]["state"] == "received"
    monkeypatch.undo()
    assert _forget_cli(run_dir, _ids(tmp_path, [5]), "second") == 0
    assert [(r["request_id"], r["state"]) for r in records(run_dir)] == [
        ("first", "failed"),
        ("second", "done"),
    ]


def test_a_cache_that_cannot_be_written_only_loses_the_cache(run_dir: Path, monkeypatch) -> None:
    from miniunlearn.training import cached_retrain

    run = open_run(run_dir)
    monkeypatch.setattr("safetensors.torch.save_file", _no_space)
    params = cached_retrain(run, np.array([3, 4]))
    assert np.array_equal(params.numpy(), retrain(run, np.array([3, 4])).numpy())
    assert not list((run_dir / "retrain").glob("*.safetensors"))


def test_a_bug_exits_1_with_one_line_and_the_traceback_only_on_request(
    run_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    from miniunlearn.methods.finetune import FineTune

    def bug(self, request):
        raise ZeroDivisionError("simulated bug")

    monkeypatch.setattr(FineTune, "_unlearn", bug)
    assert _forget_cli(run_dir, _ids(tmp_path, [1, 2])) == 1
    err = capsys.readouterr().err
    assert err.startswith("internal error: ZeroDivisionError: simulated bug") and "Traceback" not in err
    assert records(run_dir)[0]["reason"] == "ZeroDivisionError: simulated bug"
    monkeypatch.setenv("MINIUNLEARN_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        _forget_cli(run_dir, _ids(tmp_path, [1, 2]))


# -- evaluate and audit with the per-example attack -------------------------------------------


def test_evaluate_and_audit_run_the_per_example_attack(run_dir: Path, tmp_path: Path, capsys) -> None:
    import json

    served(run_dir, list(range(0, 300, 3)))
    ulira = ["--attacks", "population,ulira", "--ulira-pool", "40", "--ulira-shadows", "2"]
    assert main(["-q", "evaluate", str(run_dir), *ulira, "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    for key in ("ulira_auc", "retrain_ulira_auc", "mia_auc"):
        assert 0.0 <= metrics[key] <= 1.0
    out = tmp_path / "audit"
    assert (
        main(["-q", "audit", str(run_dir), "--request", "r0", "--with-metrics", *ulira, "--out", str(out)])
        == 0
    )
    assert "ulira_auc" in (out / "audit_r0.md").read_text()
    assert main(["-q", "evaluate", str(run_dir), "--attacks", "lira"]) == 2
    assert "choose from population, ulira" in capsys.readouterr().err


def test_when_the_ledger_cannot_mark_a_served_request_done_the_next_command_does(
    run_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    def cannot(self, *args, **kwargs):
        raise LedgerError("the disk holding the ledger is full")

    monkeypatch.setattr(Ledger, "complete", cannot)
    assert _forget_cli(run_dir, _ids(tmp_path, [1, 2]), "first") == 2
    assert "version 1 is already current" in capsys.readouterr().err
    monkeypatch.undo()
    assert records(run_dir)[0]["state"] == "received"
    assert main(["-q", "evaluate", str(run_dir), "--json"]) == 0  # settles it, then evaluates v1
    assert "request first: completed" in capsys.readouterr().err
    assert records(run_dir)[0]["state"] == "done" and current_version(open_run(run_dir)).version == 1


# -- backups restored out of step: forgotten samples must never come back ---------------------


@pytest.fixture
def three_requests(run_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The run after requests r0 and r1, and a backup of its ledger and pointer taken after r0."""
    served(run_dir, [1, 2])
    backup = tmp_path / "backup"
    backup.mkdir()
    for name in ("ledger.sqlite", CURRENT_FILE):
        shutil.copy(run_dir / name, backup / name)
    forget(run_dir, [3, 4], request_id="r1", method="finetune", options={"steps": 2})
    forget(run_dir, [5, 6], request_id="r2", method="finetune", options={"steps": 2})
    return run_dir, backup


@pytest.mark.parametrize("restored", [["ledger.sqlite"], ["ledger.sqlite", CURRENT_FILE]])
def test_an_older_ledger_is_refused_while_the_versions_hold_its_missing_requests(
    three_requests, restored
) -> None:
    run_dir, backup = three_requests
    versions = sorted(p.name for p in (run_dir / "versions").iterdir())
    for name in restored:
        shutil.copy(backup / name, run_dir / name)
    with pytest.raises(RunDirError, match="ledger is older than the model versions") as info:
        forget(run_dir, [9], method="finetune", options={"steps": 2})
    assert "v2 (request r1), v3 (request r2)" in str(info.value)
    with pytest.raises(RunDirError, match="ledger is older"):
        retrain_all(run_dir)
    assert main(["-q", "ledger", str(run_dir), "--restore-current"]) == 2
    assert sorted(p.name for p in (run_dir / "versions").iterdir()) == versions  # nothing deleted
    (run_dir / "ledger.sqlite").unlink()  # the way out the message gives
    if CURRENT_FILE in restored:
        with pytest.raises(LedgerError, match="newer than v1"):
            rebuild_ledger(open_run(run_dir))  # an old pointer would silently drop v2 and v3
        assert main(["-q", "ledger", str(run_dir), "--rebuild-from-versions"]) == 2
    else:
        rebuild_ledger(open_run(run_dir))
        with Ledger.open(run_dir, create=False) as ledger:
            assert ledger.forgotten_ids().tolist() == [1, 2, 3, 4, 5, 6]


def test_an_emptied_ledger_cannot_point_the_run_back_at_the_original_model(three_requests) -> None:
    run_dir, _ = three_requests
    (run_dir / "ledger.sqlite").unlink()
    Ledger.open(run_dir).close()  # an empty ledger, as a fresh run has
    assert main(["-q", "ledger", str(run_dir), "--restore-current"]) == 2
    assert '"version": 3' in (run_dir / CURRENT_FILE).read_text()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("path", "../elsewhere.safetensors"),
        ("path", "versions/v1.safetensors"),
        ("version", 2.7),
        ("request_id", None),
    ],
)
def test_a_hand_edited_pointer_is_refused_as_corrupt(three_requests, field, value) -> None:
    import json

    run_dir, _ = three_requests
    pointer = json.loads((run_dir / CURRENT_FILE).read_text())
    pointer[field] = value
    (run_dir / CURRENT_FILE).write_text(json.dumps(pointer))
    with pytest.raises(RunDirError, match="corrupt") as info:
        current_version(open_run(run_dir))
    assert "--restore-current" in str(info.value)
    assert main(["-q", "ledger", str(run_dir), "--restore-current"]) == 0
    assert current_version(open_run(run_dir)).version == 3


def test_a_first_request_killed_and_a_lost_ledger_are_rebuilt_with_a_concrete_hint(
    run_dir: Path, tmp_path
) -> None:
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("1\n2\n")
    assert _cli(run_dir, ids_file, crash_at="after-version").returncode == -signal.SIGKILL
    (run_dir / "ledger.sqlite").unlink()
    with pytest.raises(LedgerError, match="ever became current") as info:
        rebuild_ledger(open_run(run_dir))
    assert "delete" in str(info.value) and '"version": 1' in str(info.value)
    (run_dir / "versions" / "v1.safetensors").unlink()
    rebuild_ledger(open_run(run_dir))
    assert records(run_dir) == [] and current_version(open_run(run_dir)).version == 0
