"""Training with heavy-ball momentum (networks only): the steps, the retrain oracle that follows
the same recipe, and the methods that cannot replay it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from miniunlearn.deletion import forget
from miniunlearn.errors import ConfigError
from miniunlearn.methods import UnlearnRequest, get_method
from miniunlearn.presets import preset
from miniunlearn.training import TrainConfig, open_run, retrain, train_run
from miniunlearn.training.schedule import without_ids

MOMENTUM = TrainConfig(
    dataset="digits",
    model="mlp",
    hidden=(16,),
    epochs=4,
    batch_size=256,
    lr=0.05,
    momentum=0.9,
    lam=0.01,
    dtype="float64",
    history="both",
    seed=3,
)


@pytest.fixture(scope="module")
def momentum_run(tmp_path_factory: pytest.TempPathFactory):
    return train_run(MOMENTUM, tmp_path_factory.mktemp("momentum") / "run", progress=False)


def heavy_ball(run, forget_ids: np.ndarray) -> torch.Tensor:
    """The run's recipe written out: v <- m v + g, w <- w - lr v, batches without ``forget_ids``."""
    mask = np.zeros(run.n_train, dtype=bool)
    mask[forget_ids] = True
    w, v = run.initial_params().clone(), None
    for t in range(run.plan.total_steps):
        batch = without_ids(run.plan.batch_ids(t), mask)
        if batch is not None and batch.size == 0:
            continue
        _, g = run.objective.value_and_grad(w, batch)
        v = g if v is None else run.config.momentum * v + g
        w = w - run.plan.lrs[t] * v
    return w


def test_training_and_retraining_take_heavy_ball_steps(momentum_run) -> None:
    none = np.zeros(0, np.int64)
    assert torch.equal(momentum_run.load_model_params(), heavy_ball(momentum_run, none))
    forget_ids = np.arange(0, 300, 7)
    assert torch.equal(retrain(momentum_run, forget_ids), heavy_ball(momentum_run, forget_ids))


def test_momentum_changes_the_trajectory(momentum_run, tmp_path: Path) -> None:
    plain = train_run(dataclasses.replace(MOMENTUM, momentum=0.0), tmp_path / "plain", progress=False)
    assert torch.equal(plain.initial_params(), momentum_run.initial_params())
    moved_plain = float((plain.load_model_params() - plain.initial_params()).norm())
    moved = float((momentum_run.load_model_params() - momentum_run.initial_params()).norm())
    assert moved > 2 * moved_plain  # heavy-ball 0.9 takes about 10x longer effective steps


def test_a_config_without_momentum_keeps_its_key_and_bad_momentum_is_refused() -> None:
    plain = TrainConfig(dataset="digits", model="mlp")
    assert "momentum" not in plain.to_dict()  # every earlier run's key is unchanged
    assert TrainConfig.from_dict(MOMENTUM.to_dict()) == MOMENTUM
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ConfigError, match="momentum"):
            dataclasses.replace(MOMENTUM, momentum=bad)
    with pytest.raises(ConfigError, match="momentum is for networks"):
        TrainConfig(dataset="digits", model="logreg", momentum=0.9)


def test_deltagrad_refuses_a_momentum_run_and_mini_serves_it(momentum_run, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="replays plain SGD steps"):
        get_method("deltagrad").unlearn(UnlearnRequest(momentum_run, np.array([1, 2, 3])))
    import shutil

    run_dir = Path(shutil.copytree(momentum_run.path, tmp_path / "run"))
    with pytest.raises(ConfigError, match="replays plain SGD steps"):
        forget(run_dir, [4, 5], method="deltagrad", request_id="d")
    outcome = forget(run_dir, [4, 5], request_id="m")
    assert outcome.status == "done" and outcome.entry.method == "mini"
    assert open_run(run_dir).config.momentum == 0.9


@pytest.mark.parametrize(("dataset", "model"), [("mnist", "mlp"), ("fashion-mnist", "cnn")])
def test_the_momentum_preset_is_the_leaky_model_trained_efficiently(dataset: str, model: str) -> None:
    plain, fast = preset(dataset, model, "leaky"), preset(dataset, model, "leaky-momentum")
    assert fast["momentum"] == 0.9 and fast["epochs"] < plain["epochs"]
    assert {k: v for k, v in fast.items() if k not in ("epochs", "lr", "momentum", "lr_schedule")} == {
        k: v for k, v in plain.items() if k not in ("epochs", "lr", "lr_schedule")
    }
