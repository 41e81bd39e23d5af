"""Certified removal (Guo et al. 2020): a perturbed objective trained to its optimum, and
every served model's gradient residual measured and held to the run's (epsilon, delta)
budget, a request past it served by retraining."""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from miniunlearn.cli import main
from miniunlearn.deletion import current_version, forget, load_version_params
from miniunlearn.errors import ConfigError
from miniunlearn.ids import random_forget_ids, retained_ids
from miniunlearn.ledger import Ledger
from miniunlearn.methods import UnlearnRequest
from miniunlearn.methods.mini.cost import retraining_passes
from miniunlearn.methods.mini.identity import retain_at_checkpoints
from miniunlearn.training import Run, TrainConfig, open_run, retrain, train_run
from miniunlearn.training.certified import perturbation, removal_budget, removal_constant

CERTIFIED = TrainConfig(
    dataset="digits", epochs=200, lr=1.0, lam=0.01, dtype="float64", seed=2, certify=(1.0, 1e-5, 1.0)
)


@pytest.fixture(scope="module")
def certified_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return train_run(CERTIFIED, tmp_path_factory.mktemp("certified") / "run", progress=False)


@pytest.fixture
def run_dir(certified_run: Run, tmp_path: Path) -> Path:
    return Path(shutil.copytree(certified_run.path, tmp_path / "run"))


def residual(run: Run, w: torch.Tensor, forgotten: np.ndarray | None) -> float:
    """|S'| |grad F_S'(w)| of the perturbed objective on the samples left, measured here."""
    retain = None if forgotten is None else retained_ids(run.n_train, forgotten)
    count = run.n_train if retain is None else retain.size
    return count * float(run.objective.value_and_grad(w, retain)[1].norm())


@pytest.mark.parametrize(
    "change, why",
    [
        ({"model": "mlp"}, "strongly convex"),
        ({"lam": 0.0}, "strongly convex"),
        ({"dtype": "float32"}, "float64"),
        ({"certify": (0.0, 1e-5, 1.0)}, "epsilon > 0"),
        ({"certify": (1.0, 1.0, 1.0)}, "delta < 1"),
        ({"certify": (1.0, 1e-5, -2.0)}, "noise > 0"),
        ({"certify": (1.0, 1e-5)}, "three numbers"),
    ],
)
def test_settings_that_cannot_certify_are_refused(change: dict, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        dataclasses.replace(CERTIFIED, **change)


def test_an_ordinary_config_is_unchanged() -> None:
    plain = TrainConfig(dataset="digits")
    assert "certify" not in plain.to_dict() and perturbation(plain, 10) is None
    assert TrainConfig.from_dict(CERTIFIED.to_dict()) == CERTIFIED


def test_the_budget_is_guo_et_als() -> None:
    assert removal_constant(1e-5) == pytest.approx(math.sqrt(2 * math.log(1.5e5)))
    assert removal_budget(CERTIFIED) == pytest.approx(1.0 * 1.0 / removal_constant(1e-5))


def test_the_objective_adds_b_once_to_every_subset(certified_run: Run) -> None:
    objective = certified_run.objective
    b = objective.perturbation
    assert b is not None and torch.equal(b, perturbation(CERTIFIED, objective.dim))  # from the seed
    w = certified_run.load_model_params()
    ids = np.arange(3, 400, 7)
    loss, grad = objective.loss_grad_sum(w, ids)
    value, full = objective.value_and_grad(w, ids)
    lam = objective.lam
    assert torch.allclose(full, grad / ids.size + lam * w + b / ids.size, rtol=0, atol=1e-14)
    assert float(value) == pytest.approx(float(loss / ids.size + 0.5 * lam * w @ w + b @ w / ids.size))


@settings(max_examples=12, deadline=None)
@given(fraction=st.floats(0.02, 0.9), seed=st.integers(0, 10_000))
def test_the_gradient_identity_keeps_b_on_either_side(certified_run: Run, fraction: float, seed: int) -> None:
    run = certified_run
    forget_ids = random_forget_ids(run.n_train, fraction, seed=seed)
    history = run.mini_history()
    request = UnlearnRequest(run, forget_ids)
    values, grads = retain_at_checkpoints(
        run.objective, run.n_train, run.objective.lam, history.params, history.grads, history.values, request
    )
    for k in (0, len(history.params) - 1):
        value, grad = run.objective.value_and_grad(history.params[k], request.retain_ids)
        assert torch.allclose(grads[k], grad, rtol=0, atol=1e-10)
        assert float(values[k]) == pytest.approx(float(value), abs=1e-10)


def test_training_and_retraining_end_at_the_perturbed_optimum(certified_run: Run) -> None:
    budget = removal_budget(CERTIFIED)
    assert residual(certified_run, certified_run.load_model_params(), None) <= 0.1 * budget
    forget_ids = random_forget_ids(certified_run.n_train, 0.3, seed=1)
    assert residual(certified_run, retrain(certified_run, forget_ids), forget_ids) <= 0.1 * budget


def test_served_requests_are_certified_and_their_residual_is_true(run_dir: Path) -> None:
    forgotten = np.zeros(0, np.int64)
    for k, ids in enumerate(([5], [17, 400, 900], list(range(1000, 1300)))):
        outcome = forget(run_dir, ids, request_id=f"r{k}")
        forgotten = np.union1d(forgotten, ids)
        removal = outcome.certificate["removal"]
        assert removal["certified"] and removal["budget"] == pytest.approx(removal_budget(CERTIFIED))
        measured = residual(open_run(run_dir), _current(run_dir), forgotten)
        assert measured <= removal["residual"] <= measured * (1 + 1e-6) + 1e-9  # an upper bound, and tight
        assert outcome.entry.method == "mini" and outcome.entry.options["atol"] > 0  # asked to reach it


def _current(run_dir: Path) -> torch.Tensor:
    run = open_run(run_dir)
    return load_version_params(run, current_version(run))


def test_a_result_past_the_budget_is_discarded_and_retrained(run_dir: Path) -> None:
    outcome = forget(run_dir, [3, 4, 5], method="finetune", options={"steps": 1}, request_id="rough")
    assert outcome.entry.method == "retrain" and outcome.entry.request_id == "rough"
    assert "certified-removal budget" in outcome.messages[0]
    assert outcome.certificate["removal"]["certified"]
    with Ledger.open(run_dir) as ledger:
        (event,) = ledger.events("rough")
    assert event["event"] == "failed" and "certified-removal budget" in event["detail"]["reason"]


def test_a_stream_of_single_samples_is_served_without_a_retraining(run_dir: Path) -> None:
    for k in range(12):
        outcome = forget(run_dir, [50 + 37 * k], request_id=f"s{k}")
        assert outcome.entry.method == "mini" and outcome.certificate["removal"]["certified"]
        # digits' 650 parameters: the run holds its exact Hessian, so a single sample is served by
        # Newton steps aimed at half the budget, and the last one's measurement is the certificate
        diag = outcome.record["diagnostics"]
        assert diag["small_request"] and diag["steps"] <= 2 and outcome.certificate["passes"] == 0
        assert outcome.certificate["removal"]["residual"] <= 0.5 * outcome.certificate["removal"]["budget"]


def test_retraining_is_charged_the_polish_too(certified_run: Run) -> None:
    epochs = certified_run.total_steps / certified_run.plan.steps_per_epoch
    polished = certified_run.manifest["train_passes"]
    assert polished > epochs  # the polish added passes to training
    assert retraining_passes(certified_run, 10) == pytest.approx(polished)


@pytest.mark.parametrize("method", ["mini", "exact-newton", "nystrom"])
def test_a_request_already_within_a_generous_budget_still_changes_the_model(
    tmp_path_factory: pytest.TempPathFactory, method: str
) -> None:
    generous = dataclasses.replace(CERTIFIED, certify=(10.0, 1e-5, 100.0), epochs=100)
    root = tmp_path_factory.mktemp(f"generous-{method}")
    run = train_run(generous, root / "run", progress=False)
    start_residual = residual(run, run.load_model_params(), np.array([8]))
    assert start_residual < 0.5 * removal_budget(generous)  # the start is within what the solver aims at
    options = {"rank": 16, "rows": 200} if method == "nystrom" else {}
    outcome = forget(run.path, [8], method=method, options=options)
    assert outcome.entry.method == method and outcome.status == "done"
    assert outcome.certificate["removal"]["certified"]
    assert outcome.version.sha256 != open_run(run.path).files("model")[0]["sha256"]  # a new model


@pytest.mark.parametrize(
    "flags, why",
    [
        (["--certify", "1"], "two numbers EPS,DELTA"),
        (["--certify-noise", "2"], "give --certify as well"),
        (["--certify", "1,1e-5"], "--dtype float64"),
        (["--certify", "1,2", "--dtype", "float64"], "delta < 1"),
    ],
)
def test_bad_certify_flags_exit_2_and_write_nothing(
    tmp_path: Path, capsys, flags: list[str], why: str
) -> None:
    out = tmp_path / "run"
    assert main(["-q", "train", "--dataset", "digits", "--out", str(out), *flags]) == 2
    assert why in capsys.readouterr().err and not out.exists()


def test_the_ledger_marks_requests_within_the_budget(run_dir: Path, capsys) -> None:
    forget(run_dir, [9, 10], request_id="marked")
    assert main(["ledger", str(run_dir)]) == 0
    listed = capsys.readouterr().out
    row = next(line for line in listed.splitlines() if line.startswith("marked"))
    assert "+" in row.split()[5] and "certified-removal budget" in listed
