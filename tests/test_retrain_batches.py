"""How retraining forms its batches: ``keep`` (each original batch minus its forgotten ids) or
``refill`` (the recipe run afresh on the retain set, in batches of the recipe's size)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import CONVEX, SGD
from miniunlearn.errors import ConfigError
from miniunlearn.ids import random_forget_ids
from miniunlearn.training import TrainConfig, retrain, train_run
from miniunlearn.training.schedule import make_plan, refilled_plan

REFILL = dataclasses.replace(SGD, history="mini", retrain_batches="refill")


@pytest.fixture(scope="module")
def refill_run(tmp_path_factory: pytest.TempPathFactory):
    return train_run(REFILL, tmp_path_factory.mktemp("refill") / "run", progress=False)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 300),
    batch=st.integers(1, 64),
    epochs=st.integers(1, 4),
    share=st.floats(0.0, 0.95),
    seed=st.integers(0, 2**32 - 1),
)
def test_a_refilled_plan_visits_each_retained_id_once_an_epoch_in_full_batches(
    n: int, batch: int, epochs: int, share: float, seed: int
) -> None:
    config = TrainConfig(dataset="digits", batch_size=batch, epochs=epochs, seed=seed, lr_schedule="cosine")
    retained = np.sort(np.random.default_rng(seed).permutation(n)[: max(1, round(n * (1 - share)))])
    plan = refilled_plan(config, retained)
    per_epoch = math.ceil(retained.size / batch)
    assert plan.total_steps == epochs * per_epoch
    assert np.array_equal(plan.lrs, make_plan(config, retained.size).lrs)  # the schedule of that many steps
    for epoch in range(epochs):
        batches = [plan.batch_ids(epoch * per_epoch + step) for step in range(per_epoch)]
        if batch >= retained.size:  # one batch of the whole retain set: the caller's mask leaves it
            assert batches == [None]
            continue
        assert np.array_equal(np.sort(np.concatenate(batches)), retained)
        assert all(b.size == batch for b in batches[:-1])  # full batches, where keep would shrink them
    if retained.size == n:  # nothing forgotten: the original plan
        original = make_plan(config, n)
        assert plan.total_steps == original.total_steps
        assert all(
            np.array_equal(plan.batch_ids(t), original.batch_ids(t))
            for t in range(plan.total_steps)
            if original.order is not None
        )


def test_refill_retraining_is_the_recipe_trained_afresh_on_the_retain_set(refill_run, tmp_path: Path) -> None:
    forget = random_forget_ids(refill_run.n_train, 0.4, seed=3)
    retained = np.setdiff1d(np.arange(refill_run.n_train), forget)
    subset = dataclasses.replace(REFILL, subset_ids=tuple(int(i) for i in retained))
    fresh = train_run(subset, tmp_path / "fresh", progress=False)
    # the same init, the batches the seed draws over the retain set, the rates of that many steps
    assert torch.equal(retrain(refill_run, forget), fresh.load_model_params())
    # nothing forgotten: the original model, as with kept batches
    assert torch.equal(retrain(refill_run, np.array([], dtype=np.int64)), refill_run.load_model_params())


def test_keep_and_refill_differ_only_for_mini_batch_runs(refill_run, sgd_run, tmp_path: Path) -> None:
    forget = random_forget_ids(sgd_run.n_train, 0.4, seed=3)
    assert torch.equal(refill_run.initial_params(), sgd_run.initial_params())
    assert not torch.equal(retrain(refill_run, forget), retrain(sgd_run, forget))
    full = dataclasses.replace(CONVEX, epochs=40, history="mini")
    kept = train_run(full, tmp_path / "kept", progress=False)
    refilled = train_run(
        dataclasses.replace(full, retrain_batches="refill"), tmp_path / "full", progress=False
    )
    assert torch.equal(retrain(refilled, forget), retrain(kept, forget))  # one batch: the retain set


def test_the_default_keeps_every_earlier_key_and_a_bad_value_is_refused() -> None:
    assert "retrain_batches" not in SGD.to_dict()  # every earlier run's config (and key) unchanged
    assert TrainConfig.from_dict(REFILL.to_dict()) == REFILL
    assert REFILL.to_dict()["retrain_batches"] == "refill"
    with pytest.raises(ConfigError, match="--retrain-batches"):
        dataclasses.replace(SGD, retrain_batches="shuffle")


def test_train_records_the_retraining_batches_and_refuses_an_unknown_one(tmp_path: Path) -> None:
    from miniunlearn.cli import main
    from miniunlearn.training import open_run

    flags = ["-q", "train", "--dataset", "digits", "--model", "mlp", "--batch-size", "64", "--epochs", "2"]
    assert main([*flags, "--retrain-batches", "refill", "--out", str(tmp_path / "run")]) == 0
    assert open_run(tmp_path / "run").config.retrain_batches == "refill"
    with pytest.raises(SystemExit) as exit_info:
        main([*flags, "--retrain-batches", "shuffle", "--out", str(tmp_path / "bad")])
    assert exit_info.value.code == 2 and not (tmp_path / "bad").exists()
