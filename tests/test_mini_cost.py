"""mini never costs more than retraining: with mode=auto, a request whose retraining costs no
more passes than the chosen mode's budget is served by retraining, in the method and in the
deletion workflow; a response prediction that raises the retain objective is replaced."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from miniunlearn.deletion import forget
from miniunlearn.ids import random_forget_ids
from miniunlearn.ledger import Ledger
from miniunlearn.methods import UnlearnRequest, get_method
from miniunlearn.methods.mini.cost import mode_budget_passes, retraining_passes
from miniunlearn.methods.mini.options import MiniOptions
from miniunlearn.training import TrainConfig, retrain, train_run

# The short run: 60 full-batch steps stopped far from convergence (lam 0.001).
SHORT = TrainConfig(dataset="digits", epochs=60, lr=1.0, lam=0.001, history="both", seed=0)
# SGD whose linear response leaves its region of validity (batch 128, lr 1.0, lam 0.001).
LOOSE_SGD = TrainConfig(
    dataset="digits", epochs=20, batch_size=128, lr=1.0, lam=0.001, history="mini", seed=0
)


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    return train_run(SHORT, tmp_path_factory.mktemp("short") / "run", progress=False)


def test_a_short_run_is_served_by_retraining_at_retraining_cost(short_run) -> None:
    forget_ids = random_forget_ids(short_run.n_train, 0.3, seed=0)
    request = UnlearnRequest(short_run, forget_ids)
    n_retain = short_run.n_train - forget_ids.size
    result = get_method("mini").unlearn(request)
    diag = result.record.diagnostics
    assert diag["mode"] == "retrain" and diag["mode_replaced"] == "trajectory"
    assert "retraining costs 60 passes" in diag["served_by_retraining"]
    assert torch.equal(result.params, retrain(short_run, forget_ids))
    assert result.record.grad_evals == 60 * n_retain  # no more than retraining: exactly it
    # the mode the rule replaced costs more (measured: 370 passes with its one-off correction)
    mode = get_method("mini", retrain_when_cheaper=False).unlearn(request)
    assert mode.record.diagnostics["mode"] == "trajectory"
    assert mode.record.grad_evals > 60 * n_retain
    # a mode asked by name is served as asked
    named = get_method("mini", mode="trajectory").unlearn(request)
    assert torch.equal(named.params, mode.params)


def test_budgets_against_retraining(short_run, sgd_run, convex_run) -> None:
    options = MiniOptions()
    assert retraining_passes(short_run, 100) == pytest.approx(60)
    assert mode_budget_passes("trajectory", short_run, options, 100, 2) == 100 + 40 + 1
    # SGD: a retraining costs its epochs; the response mode a product on every batch, at least twice that
    epochs = sgd_run.config.epochs
    assert retraining_passes(sgd_run, 50) == pytest.approx(epochs, rel=1e-9)
    assert mode_budget_passes("response", sgd_run, options, 50, 6) > 2 * epochs
    # a long converged run keeps the fixed-point mode
    assert mode_budget_passes("fixed-point", convex_run, options, 50, 9) == 51 < convex_run.total_steps
    assert get_method("mini").retraining_reason(convex_run, 50) is None
    assert "response mode" in get_method("mini").retraining_reason(sgd_run, 50)
    assert mode_budget_passes("rewind", sgd_run, options, 50, 6) < retraining_passes(sgd_run, 50)


def test_the_workflow_records_a_retraining_and_resets_the_budget(short_run, tmp_path: Path) -> None:
    run_dir = Path(shutil.copytree(short_run.path, tmp_path / "run"))
    outcome = forget(run_dir, np.arange(10))
    assert outcome.entry.method == "retrain"
    assert outcome.entry.options["instead_of"] == "mini"
    assert "no more than the trajectory mode" in outcome.entry.options["reason"]
    assert any("served by retraining" in m for m in outcome.messages)
    with Ledger.open(run_dir) as ledger:
        assert ledger.error_budget_since_last_retrain() == 0.0


def test_a_response_prediction_that_raises_the_retain_objective_is_replaced(tmp_path: Path) -> None:
    run = train_run(LOOSE_SGD, tmp_path / "run", progress=False)
    forget_ids = random_forget_ids(run.n_train, 0.1, seed=0)
    result = get_method("mini", mode="response").unlearn(UnlearnRequest(run, forget_ids))
    diag = result.record.diagnostics
    # measured: the prediction lands 0.97 from retraining (the original model 0.59), its
    # retain objective 0.2922 against the original model's 0.2886: a 1 % rise, far above rounding
    assert diag["mode"] == "retrain" and diag["mode_replaced"] == "response"
    assert "raised the retain objective" in diag["served_by_retraining"]
    assert torch.equal(result.params, retrain(run, forget_ids))
