"""A queue of deletion requests: submit never waits for the run, serve works through the
queue (new requests as one batch, or one by one, each its own model version), and nothing
queued is ever lost. The batches themselves: tests/test_queue_batch.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from miniunlearn.cli import main
from miniunlearn.deletion import current_version, forget, load_version_params
from miniunlearn.deletion.queue import queued, serve, submit
from miniunlearn.errors import ForgetRequestError, RunDirError
from miniunlearn.ledger import Ledger, run_lock
from miniunlearn.methods import UnlearnRequest, get_method
from miniunlearn.training import open_run


@pytest.fixture
def run_dir(convex_run, tmp_path: Path) -> Path:
    return Path(shutil.copytree(convex_run.path, tmp_path / "run"))


def test_submit_returns_while_the_run_is_locked_and_serve_drains_the_queue(run_dir: Path) -> None:
    with run_lock(run_dir):  # another command holds the run
        first = submit(run_dir, [5, 3], request_id="a")
        second = submit(run_dir, np.array([8]), request_id="b")
    assert first.status == second.status == "queued"
    assert [q.request_id for q in queued(run_dir)] == ["a", "b"]
    served = serve(run_dir, batch=False)
    assert [s.outcome.status for s in served] == ["done", "done"] and queued(run_dir) == []
    with Ledger.open(run_dir) as ledger:
        a, b = ledger.get("a"), ledger.get("b")
    assert a.state == b.state == "done"
    assert a.ids.tolist() == [3, 5] and b.ids.tolist() == [8]  # each with exactly its own ids
    assert a.model_version == 1 and b.model_version == 2  # one by one: each its own link of the chain
    assert a.batch is None and served[1].outcome.certificate is not None


def test_one_by_one_the_queue_gives_the_model_of_the_same_requests_sent_by_hand(
    run_dir: Path, tmp_path: Path
) -> None:
    by_hand = Path(shutil.copytree(run_dir, tmp_path / "by-hand"))
    requests = {"r1": [1, 2, 3], "r2": [40], "r3": [7, 70, 700]}
    for rid, ids in requests.items():
        submit(run_dir, ids, request_id=rid)
        forget(by_hand, ids, request_id=rid)
    serve(run_dir, batch=False)
    run, other = open_run(run_dir), open_run(by_hand)
    queued_model = load_version_params(run, current_version(run))
    assert torch.equal(queued_model, load_version_params(other, current_version(other)))
    # and, like any sequence, lands where the union does (to the solver's tolerance)
    union = get_method("mini").unlearn(UnlearnRequest(run, np.array([1, 2, 3, 7, 40, 70, 700]))).params
    moved = float((union - run.load_model_params()).norm())
    assert float((queued_model - union).norm()) < 1e-3 * moved


def test_bad_submissions_are_refused_and_write_nothing(run_dir: Path) -> None:
    n = open_run(run_dir).n_train
    with pytest.raises(ForgetRequestError, match="valid ids"):
        submit(run_dir, [1, n + 5], request_id="x")
    with pytest.raises(ForgetRequestError, match="more than once"):
        submit(run_dir, [4, 4], request_id="x")
    with pytest.raises(ForgetRequestError, match="invalid request id"):
        submit(run_dir, [4], request_id="bad id!")
    assert queued(run_dir) == []
    submit(run_dir, [4, 6], request_id="x")
    assert submit(run_dir, [6, 4], request_id="x").status == "already-queued"
    with pytest.raises(ForgetRequestError, match="already queued with a different set"):
        submit(run_dir, [4], request_id="x")
    serve(run_dir)
    assert submit(run_dir, [4, 6], request_id="x").status == "already-done"
    with pytest.raises(ForgetRequestError, match="recorded as done with a different set"):
        submit(run_dir, [9], request_id="x")


def test_a_damaged_queue_serves_nothing_and_names_the_file(run_dir: Path) -> None:
    submit(run_dir, [2], request_id="fine")
    (run_dir / "queue" / "00000000000000000000-broken.json").write_text("{not json")
    with pytest.raises(RunDirError, match="broken.json is damaged"):
        serve(run_dir)
    with Ledger.open(run_dir) as ledger:
        assert ledger.get("fine") is None  # nothing was served
    assert main(["-q", "serve", str(run_dir)]) == 2  # the command says so and exits 2
    assert len(list((run_dir / "queue").glob("*.json"))) == 2  # nothing lost


def test_a_serve_killed_after_the_ledger_loses_nothing(run_dir: Path) -> None:
    submit(run_dir, [11, 12], request_id="k")
    # what a serve killed between the ledger's "done" and removing the queue file leaves
    done = forget(run_dir, [11, 12], request_id="k")
    served = serve(run_dir)
    assert served[0].outcome.status == "already-done"
    assert served[0].outcome.version.version == done.version.version
    assert queued(run_dir) == []


def test_the_commands_exit_2_on_bad_input(run_dir: Path, tmp_path: Path, capsys) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("3\n9\n")
    assert main(["submit", str(run_dir), "--ids", str(ids), "--request-id", "c1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "queued"
    ids.write_text("3\n")
    assert main(["submit", str(run_dir), "--ids", str(ids), "--request-id", "c1"]) == 2
    assert "different set of ids" in capsys.readouterr().err
    assert main(["-q", "serve", str(run_dir)]) == 0
    assert "done: request c1" in capsys.readouterr().out
    assert main(["serve", str(run_dir)]) == 0
    assert "the queue is empty" in capsys.readouterr().out


def test_a_refused_request_may_be_submitted_again_corrected(run_dir: Path) -> None:
    """As with forget: a request refused for a bad id did nothing, so its id may carry a
    corrected set of ids through the queue too."""
    n = open_run(run_dir).n_train
    with pytest.raises(ForgetRequestError):
        forget(run_dir, [2, n + 3], request_id="fixme")
    assert submit(run_dir, [2, 3], request_id="fixme").status == "queued"
    (served,) = serve(run_dir)
    assert served.outcome.status == "done" and served.outcome.entry.ids.tolist() == [2, 3]
