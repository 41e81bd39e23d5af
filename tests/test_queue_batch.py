"""Serving a queue as one batch: one solve and one model version for the union of the new
requests' ids, equal to serving that union; every request recorded with exactly its own ids;
a batch that fails releases its requests; a killed batch loses nothing and never undoes one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from miniunlearn.cli import main
from miniunlearn.deletion import CRASH_ENV, current_version, forget, load_version_params, open_session
from miniunlearn.deletion.queue import queued, serve, submit
from miniunlearn.errors import ForgetRequestError
from miniunlearn.ledger import Ledger
from miniunlearn.training import open_run
from miniunlearn.versions import rebuild_ledger

REQUESTS = {"r1": [1, 2, 3], "r2": [40], "r3": [7, 70, 700], "r4": [3, 41]}  # r4 overlaps r1


@pytest.fixture
def run_dir(convex_run, tmp_path: Path) -> Path:
    return Path(shutil.copytree(convex_run.path, tmp_path / "run"))


def _submit_all(run_dir: Path) -> None:
    for rid, ids in REQUESTS.items():
        assert submit(run_dir, ids, request_id=rid).status == "queued"


def _union() -> list[int]:
    return sorted(set().union(*REQUESTS.values()))


def _model(run_dir: Path) -> torch.Tensor:
    run = open_run(run_dir)
    return load_version_params(run, current_version(run))


def test_a_batch_gives_the_model_of_its_union_and_records_each_request(run_dir: Path, tmp_path: Path) -> None:
    at_once = Path(shutil.copytree(run_dir, tmp_path / "at-once"))
    _submit_all(run_dir)
    served = serve(run_dir)
    assert queued(run_dir) == [] and [s.request.request_id for s in served] == list(REQUESTS)
    assert all(s.outcome is not None and s.outcome.status == "done" for s in served)
    union = forget(at_once, _union(), request_id="union")
    assert torch.equal(_model(run_dir), _model(at_once))  # one solve on the union: the same model
    with Ledger.open(run_dir) as ledger:
        (batch,) = ledger.entries()
        assert batch.members == tuple(REQUESTS) and batch.ids.tolist() == _union()
        assert batch.state == "done" and batch.model_version == 1
        for rid, ids in REQUESTS.items():
            entry = ledger.get(rid)
            assert entry.ids.tolist() == sorted(ids)  # exactly its own ids
            assert entry.state == "done" and entry.batch == batch.request_id
            assert entry.model_sha256_after == batch.model_sha256_after
            # the shared solve's certificate: the union's bound
            assert entry.metrics["certificate"]["distance_bound"] == union.certificate["distance_bound"]
        assert ledger.forgotten_ids().tolist() == _union() and ledger.verify() == []
    with open_session(run_dir, write=False) as session:
        assert session.verify() == []
    assert served[3].outcome.skipped_ids.tolist() == []  # 3 was new to the model when the batch began


def test_batched_requests_are_idempotent_and_keep_their_ids(run_dir: Path) -> None:
    _submit_all(run_dir)
    serve(run_dir)
    again = forget(run_dir, REQUESTS["r3"], request_id="r3")
    assert again.status == "already-done" and again.version.version == 1
    with pytest.raises(ForgetRequestError, match="different set of ids"):
        forget(run_dir, [7], request_id="r3")
    assert submit(run_dir, REQUESTS["r2"], request_id="r2").status == "already-done"
    with pytest.raises(ForgetRequestError, match="different set of ids"):
        submit(run_dir, [41], request_id="r2")
    # a request id of a batch member cannot be reused for a new request either
    with Ledger.open(run_dir) as ledger, pytest.raises(ForgetRequestError, match="member of batch"):
        ledger.receive([5], "mini", {}, "0" * 64, request_id="r1")


def test_a_refused_batch_releases_its_requests_and_they_are_served_one_by_one(run_dir: Path) -> None:
    n = open_run(run_dir).n_train
    submit(run_dir, list(range(0, n // 2)), request_id="half")
    submit(run_dir, list(range(n // 2, n)), request_id="rest")  # together: every sample
    served = serve(run_dir)
    assert served[0].outcome.status == "done" and "one by one" in served[0].outcome.messages[0]
    assert served[1].outcome is None and "every remaining training sample" in served[1].error
    with Ledger.open(run_dir) as ledger:
        assert ledger.get("half").batch is None and ledger.get("rest").state == "refused"
        refused_batch = [e for e in ledger.entries() if e.request_id.startswith("batch-")]
        assert [e.state for e in refused_batch] == ["refused"] and refused_batch[0].members == ()


def test_a_batch_certified_too_far_is_served_by_retraining_with_its_requests(run_dir: Path) -> None:
    _submit_all(run_dir)
    served = serve(run_dir, max_certified_distance=1e-12)
    assert all(s.outcome.status == "done" for s in served)
    with Ledger.open(run_dir) as ledger:
        failed, done = ledger.entries()
        assert failed.state == "failed" and failed.members == ()  # released when it failed
        assert ledger.events(failed.request_id)[-1]["detail"]["members"] == list(REQUESTS)
        assert done.method == "retrain" and done.members == tuple(REQUESTS)
        assert all(ledger.get(rid).batch == done.request_id for rid in REQUESTS)


def test_the_ledger_of_a_batch_is_rebuilt_from_its_version(run_dir: Path) -> None:
    _submit_all(run_dir)
    serve(run_dir)
    with Ledger.open(run_dir) as ledger:
        before = ledger.to_json_records(include_ids=True)
    (run_dir / "ledger.sqlite").rename(run_dir / "ledger.old")
    rebuild_ledger(open_run(run_dir))
    with Ledger.open(run_dir) as ledger:
        after = ledger.to_json_records(include_ids=True)
    keys = ("request_id", "state", "ids", "model_sha256_after", "batch", "members")
    assert [{k: r.get(k) for k in keys} for r in after] == [{k: r.get(k) for k in keys} for r in before]
    assert len(after) == 1 + len(REQUESTS)


def _serve_cli(run_dir: Path, crash_at: str | None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop(CRASH_ENV, None)
    if crash_at:
        env[CRASH_ENV] = crash_at
    command = [sys.executable, "-m", "miniunlearn.cli", "-q", "serve", str(run_dir)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("crash_at", ["after-receive", "after-version", "after-current"])
def test_a_killed_batch_loses_no_request_and_serving_again_finishes_it(run_dir: Path, crash_at: str) -> None:
    _submit_all(run_dir)
    killed = _serve_cli(run_dir, crash_at)
    assert killed.returncode == -9, killed.stderr
    assert len(queued(run_dir)) == len(REQUESTS)  # nothing left the queue
    assert main(["-q", "serve", str(run_dir)]) == 0
    assert queued(run_dir) == []
    with Ledger.open(run_dir) as ledger:
        assert all(ledger.get(rid).state == "done" for rid in REQUESTS)
        assert all(ledger.get(rid).ids.tolist() == sorted(ids) for rid, ids in REQUESTS.items())
        assert ledger.forgotten_ids().tolist() == _union() and ledger.verify() == []
        versions = {ledger.get(rid).model_version for rid in REQUESTS}
    assert len(versions) == 1  # all four in one version, whichever batch made it
    with open_session(run_dir, write=False) as session:
        assert session.verify() == []


def test_ledger_command_lists_batch_members(run_dir: Path, capsys) -> None:
    _submit_all(run_dir)
    assert main(["-q", "serve", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert out.count("in batch batch-") == len(REQUESTS)
    assert main(["ledger", str(run_dir)]) == 0
    listed = capsys.readouterr().out
    assert all(rid in listed for rid in REQUESTS)


def test_one_request_alone_is_not_a_batch(run_dir: Path) -> None:
    submit(run_dir, [9], request_id="alone")
    (served,) = serve(run_dir)
    assert served.outcome.entry.batch is None and served.outcome.entry.request_id == "alone"
    with Ledger.open(run_dir) as ledger:
        assert [e.request_id for e in ledger.entries()] == ["alone"]
    assert np.array_equal(served.outcome.entry.ids, [9])


def test_an_audit_of_a_batched_request_counts_its_ids_removed_not_skipped(
    run_dir: Path, tmp_path: Path
) -> None:
    _submit_all(run_dir)
    serve(run_dir)
    out = tmp_path / "audit"
    assert main(["-q", "audit", str(run_dir), "--request", "r3", "--out", str(out)]) == 0
    report = json.loads(next(out.glob("*.json")).read_text())
    ids = report["ids"]
    assert ids["removed"]["ids"] == sorted(REQUESTS["r3"]) and ids["skipped_already_forgotten"]["n"] == 0


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    requests=st.lists(
        st.lists(st.integers(0, 1200), min_size=1, max_size=6, unique=True), min_size=2, max_size=5
    )
)
def test_any_batch_records_each_request_and_equals_its_union(convex_run, tmp_path_factory, requests) -> None:
    root = tmp_path_factory.mktemp("batch")
    queue_dir = Path(shutil.copytree(convex_run.path, root / "queue"))
    at_once = Path(shutil.copytree(convex_run.path, root / "at-once"))
    for k, ids in enumerate(requests):
        submit(queue_dir, ids, request_id=f"q{k}")
    served = serve(queue_dir)
    union = sorted(set().union(*requests))
    forget(at_once, union, request_id="union")
    assert torch.equal(_model(queue_dir), _model(at_once))
    with Ledger.open(queue_dir) as ledger:
        assert ledger.forgotten_ids().tolist() == union and ledger.verify() == []
        for k, ids in enumerate(requests):
            entry = ledger.get(f"q{k}")
            assert entry.state == "done" and entry.ids.tolist() == sorted(ids) and entry.batch is not None
    assert [s.outcome.entry.request_id for s in served] == [f"q{k}" for k in range(len(requests))]
