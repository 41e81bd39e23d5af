"""Tuning the gradient-step baselines without the retrained model (experiment.tuning, bench
--tune-baselines): the grid, the held-out rows, a score that tells the original model from a
retrained one, and the sweep's records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from miniunlearn.cli import main
from miniunlearn.data.registry import load_dataset
from miniunlearn.errors import ConfigError
from miniunlearn.experiment import bench
from miniunlearn.experiment.bench import BenchSpec, run_bench
from miniunlearn.experiment.tuning import (
    BUDGET_GRID,
    RATE_GRID,
    tune,
    tuning_data,
    tuning_grid,
    tuning_score,
    tuning_table,
)
from miniunlearn.ids import random_forget_ids
from miniunlearn.methods import UnlearnRequest, get_method
from miniunlearn.training import Run, TrainConfig, retrain, train_run

# an MLP that memorises 500 of digits' 1,437 training rows (training accuracy 1.0, no weight
# decay): the other 937 are the unseen rows the score reads
SUBSET_MLP = TrainConfig(
    dataset="digits",
    model="mlp",
    hidden=(64,),
    n_train=500,
    epochs=1000,
    lr=1.0,
    lam=0.0,
    dtype="float64",
    history="mini",
    seed=3,
)


@pytest.fixture(scope="module")
def subset_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return train_run(SUBSET_MLP, tmp_path_factory.mktemp("tuning") / "run", progress=False)


@pytest.fixture(scope="module")
def forget(subset_run: Run) -> np.ndarray:
    return random_forget_ids(subset_run.n_train, 0.4, seed=0)


def test_the_grid_varies_budget_and_rate_around_the_defaults() -> None:
    grid = tuning_grid("finetune", {})
    assert len(grid) == len(BUDGET_GRID) * len(RATE_GRID)
    assert {(g["steps_fraction"], g["lr_scale"]) for g in grid} == {
        (b, r) for b in BUDGET_GRID for r in RATE_GRID
    }
    # SCRUB steps by its authors' Adam: its rate is adam_lr, around their 5e-4
    assert {g["adam_lr"] for g in tuning_grid("scrub", {})} == {5e-4 * r for r in RATE_GRID}
    assert {g["lr_scale"] for g in tuning_grid("scrub", {"optimizer": "sgd"})} == set(RATE_GRID)


def test_options_the_user_gave_are_not_varied() -> None:
    grid = tuning_grid("rl", {"lr_scale": 0.3, "beta": 2.0})
    assert len(grid) == len(BUDGET_GRID)
    assert all(g["lr_scale"] == 0.3 and g["beta"] == 2.0 for g in grid)
    assert tuning_grid("neggrad", {"steps": 5, "lr_scale": 1.0}) == [{"steps": 5, "lr_scale": 1.0}]


@pytest.mark.parametrize("method", ["mini", "retrain", "warmstart", "none"])
def test_methods_without_a_step_budget_are_refused(method: str) -> None:
    with pytest.raises(ConfigError, match="gradient-step baselines"):
        tuning_grid(method, {})


def test_the_unseen_rows_are_the_training_rows_the_run_never_saw(subset_run: Run, forget: np.ndarray) -> None:
    data = tuning_data(subset_run, forget, seed=0)
    full = load_dataset("digits")
    kept = full.subset_indices(500, SUBSET_MLP.seed)
    assert data.unseen_y.size == full.n_train - kept.size == 937
    # every unseen row is a training-split row outside the subset, and none of the run's rows
    unseen = {row.tobytes() for row in data.unseen_x}
    outside = {full.x_train[i].tobytes() for i in np.setdiff1d(np.arange(full.n_train), kept)}
    assert unseen <= outside
    assert not unseen & {row.tobytes() for row in subset_run.dataset.x_train}
    assert np.intersect1d(data.retain_val_ids, forget).size == 0
    assert data.retain_val_ids.size == 300  # every retained row: fewer than TUNING_ROWS


def test_a_run_on_its_whole_training_split_cannot_be_tuned(mlp_run: Run) -> None:
    with pytest.raises(ConfigError, match="never trained on"):
        tuning_data(mlp_run, np.arange(10), seed=0)


def test_the_score_tells_the_original_model_from_the_retrained_one(
    subset_run: Run, forget: np.ndarray
) -> None:
    """The score reads no retrained model, yet it must rank one above the model that still
    memorises the forget set: otherwise it cannot fail."""
    data = tuning_data(subset_run, forget, seed=0)
    original = subset_run.load_model_params()
    retrained = retrain(subset_run, forget, progress=False)
    start_acc = tuning_score(subset_run, original, data, 0.0)  # retain drop is 0 against 0
    x, y = subset_run.dataset.x_train, subset_run.dataset.y_train
    assert start_acc["retain_val_drop"] == 0
    kept = tuning_score(subset_run, original, data, 1.0)
    logits = subset_run.objective.logits(original, torch.from_numpy(x[data.retain_val_ids])).argmax(1).numpy()
    retain_acc = float((logits == y[data.retain_val_ids]).mean())
    assert kept["retain_val_drop"] == pytest.approx(100 * (1 - retain_acc))
    old = tuning_score(subset_run, original, data, retain_acc)
    new = tuning_score(subset_run, retrained, data, retain_acc)
    # the original model memorised the forget set (4.3 points above the unseen rows); the
    # retrained model is within sampling noise of them (0.8)
    assert old["forget_unseen_acc_gap"] > 3
    assert new["forget_unseen_acc_gap"] < old["forget_unseen_acc_gap"] / 2
    assert new["score"] < 0.75 * old["score"]
    assert new["score"] == pytest.approx(sum(v for k, v in new.items() if k != "score"))


def test_tune_returns_the_best_configuration_of_its_grid(subset_run: Run, forget: np.ndarray) -> None:
    data = tuning_data(subset_run, forget, seed=0)
    request = UnlearnRequest(subset_run, forget)
    fixed = {"steps_fraction": 0.02}
    choice = tune("finetune", fixed, request, data)
    assert choice.configurations == len(RATE_GRID)
    assert set(choice.chosen) == {"lr_scale"} and choice.options == {**fixed, **choice.chosen}
    start = subset_run.load_model_params()
    x, y = subset_run.dataset.x_train, subset_run.dataset.y_train
    start_acc = float(
        (
            subset_run.objective.logits(start, torch.from_numpy(x[data.retain_val_ids])).argmax(1).numpy()
            == y[data.retain_val_ids]
        ).mean()
    )
    scores, evals = [], 0
    for options in tuning_grid("finetune", fixed):
        result = get_method("finetune", **options).unlearn(request)
        scores.append(tuning_score(subset_run, result.params, data, start_acc)["score"])
        evals += result.record.grad_evals
        if options == choice.options:
            assert torch.equal(result.params, choice.result.params)
    assert choice.score["score"] == pytest.approx(min(scores))
    assert choice.grid_evals == evals


def _tuned_spec(runs_dir: Path, **kw: Any) -> BenchSpec:
    fields: dict[str, Any] = {
        "dataset": "digits",
        "model": "mlp",
        "ratios": [0.2],
        "methods": ["retrain", "finetune", "mini"],
        "seeds": 1,
        "runs_dir": runs_dir,
        "train_overrides": {"hidden": (32,), "n_train": 1000, "epochs": 60, "lr": 0.5, "lam": 0.0},
        "method_options": {"finetune": {"steps_fraction": 0.05}},
        "tune_baselines": True,
        "threads": 1,
    }
    return BenchSpec(**(fields | kw))


def test_a_tuned_sweep_records_the_choice_and_the_grids_cost(tmp_path: Path) -> None:
    records, _ = run_bench(_tuned_spec(tmp_path), progress=False)
    rows = {r["method"]: r for r in records}
    chosen = json.loads(rows["finetune"]["tuned_options"])
    assert set(chosen) == {"lr_scale"} and chosen["lr_scale"] in RATE_GRID
    assert rows["finetune"]["tuning_configurations"] == len(RATE_GRID)
    assert rows["finetune"]["tuning_passes"] > rows["finetune"]["passes"] > 0
    assert rows["finetune"]["tuning_score"] >= 0
    assert "tuned_options" not in rows["mini"] and "tuned_options" not in rows["retrain"]


def test_a_tuned_baselines_attack_uses_the_options_its_cell_chose(tmp_path: Path) -> None:
    spec = _tuned_spec(tmp_path)
    cells = {(0, 0): ([{"method": "finetune", "tuned_options": json.dumps({"lr_scale": 2.0})}], {})}
    _, args = bench._attack_task(spec, (0, 0, "finetune"), {0: np.arange(40)}, cells)
    assert args[-1] == {"steps_fraction": 0.05, "lr_scale": 2.0}
    _, args = bench._attack_task(spec, (0, 0, "mini"), {0: np.arange(40)}, cells)
    assert args[-1] == {}


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"methods": ["retrain", "mini"], "method_options": {}}, "names none of them"),
        ({"train_overrides": {"hidden": (32,), "epochs": 5}}, "never trained on"),
    ],
)
def test_a_sweep_that_cannot_be_tuned_is_refused_before_training(
    kw: dict[str, Any], message: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=message):
        _tuned_spec(tmp_path, **kw)
    assert not any(tmp_path.iterdir())


def test_the_tuning_table_lists_each_seeds_choice() -> None:
    rows = [
        {
            "method": "scrub",
            "ratio": 0.5,
            "seed": s,
            "tuned_options": json.dumps({"adam_lr": a}),
            "tuning_score": sc,
            "tuning_passes": 30.0,
            "passes": p,
        }
        for s, a, sc, p in [(1, 0.001, 3.0, 4.0), (0, 0.00025, 1.0, 2.0)]
    ] + [{"method": "mini", "ratio": 0.5, "seed": 0, "passes": 7.0}]
    table = tuning_table(rows).splitlines()
    assert len(table) == 3
    assert table[2] == "| scrub | 50% | adam_lr 0.00025; adam_lr 0.001 | 2.00 | 30.0 | 3.0 |"
    assert tuning_table(rows[2:]) == ""


def test_the_cli_refuses_tuning_a_stream(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["bench", "--dataset", "digits", "--model", "mlp", "--n-train", "500", "--stream", "3"]
    args += ["--methods", "retrain,finetune", "--tune-baselines", "--runs-dir", str(tmp_path / "runs")]
    assert main(args) == 2
    assert "not --stream" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
