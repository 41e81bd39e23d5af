"""Training with history: determinism, the gradient identity, retrain oracle, run directories."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from miniunlearn.errors import ConfigError, HistoryError, RunDirError
from miniunlearn.ids import random_forget_ids
from miniunlearn.models import check_replayable
from miniunlearn.training import TrainConfig, checkpoint_steps, open_run, retrain, train_run
from miniunlearn.training import recording as recording_module
from miniunlearn.training.rundir import load_params
from miniunlearn.training.schedule import make_plan

SMALL = TrainConfig(dataset="digits", epochs=30, lr=0.5, lam=0.01, history="both", checkpoints=4, seed=3)


def test_same_seed_gives_byte_identical_model_files(tmp_path: Path) -> None:
    a = train_run(SMALL, tmp_path / "a", progress=False)
    b = train_run(SMALL, tmp_path / "b", progress=False)
    assert (a.path / "model.safetensors").read_bytes() == (b.path / "model.safetensors").read_bytes()
    assert [f["sha256"] for f in a.manifest["files"]] == [f["sha256"] for f in b.manifest["files"]]


def test_different_seed_gives_a_different_model(tmp_path: Path) -> None:
    a = train_run(SMALL, tmp_path / "a", progress=False)
    b = train_run(TrainConfig(**{**SMALL.to_dict(), "seed": 4}), tmp_path / "b", progress=False)
    assert not torch.equal(a.load_model_params(), b.load_model_params())


def test_gradient_identity_holds_at_every_stored_checkpoint(convex_run) -> None:
    obj = convex_run.objective
    hist = convex_run.mini_history()
    n, lam = convex_run.n_train, convex_run.config.lam
    forget = random_forget_ids(n, 0.3, seed=0)
    retain = np.setdiff1d(np.arange(n), forget)
    r = forget.size
    for w, g_full in zip(hist.params, hist.grads, strict=True):
        _, g_r = obj.value_and_grad(w, retain)
        _, g_u = obj.value_and_grad(w, forget)
        lhs = n * (g_full - lam * w)
        rhs = (n - r) * (g_r - lam * w) + r * (g_u - lam * w)
        assert torch.allclose(lhs, rhs, rtol=0, atol=1e-10 * float(lhs.abs().max()))


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_gradient_identity_holds_for_any_forget_set(convex_run, data) -> None:
    n, lam = convex_run.n_train, convex_run.config.lam
    forget = np.unique(data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n // 2)))
    retain = np.setdiff1d(np.arange(n), forget)
    hist = convex_run.mini_history()
    j = data.draw(st.integers(0, len(hist.steps) - 1))
    w, g_full = hist.params[j], hist.grads[j]
    _, g_r = convex_run.objective.value_and_grad(w, retain)
    _, g_u = convex_run.objective.value_and_grad(w, forget)
    r = forget.size
    recovered = (n * (g_full - lam * w) - r * (g_u - lam * w)) / (n - r) + lam * w
    torch.testing.assert_close(recovered, g_r, rtol=0, atol=1e-12)


def test_mini_history_holds_the_full_gradient_at_geometric_checkpoints(convex_run) -> None:
    hist = convex_run.mini_history()
    total = convex_run.total_steps
    assert hist.steps.tolist() == checkpoint_steps(total, convex_run.config.checkpoints).tolist()
    assert hist.steps[0] == total
    full = convex_run.full_history()
    for step, w, g in zip(hist.steps, hist.params, hist.grads, strict=True):
        if step < total:  # full-batch run: the stored batch gradient is the full gradient
            np.testing.assert_array_equal(full.params[step], w.numpy())
            np.testing.assert_array_equal(full.grads[step], g.numpy())
    torch.testing.assert_close(hist.params[0], convex_run.load_model_params(), rtol=0, atol=0)
    _, g_final = convex_run.objective.value_and_grad(hist.params[0])
    torch.testing.assert_close(hist.grads[0], g_final, rtol=0, atol=1e-14)


def test_full_history_replays_training_exactly(sgd_run) -> None:
    full, plan = sgd_run.full_history(), sgd_run.plan
    for t in range(plan.total_steps - 1):
        np.testing.assert_array_equal(full.params[t + 1], full.params[t] - plan.lrs[t] * full.grads[t])
    t = plan.total_steps // 2
    _, g = sgd_run.objective.value_and_grad(torch.from_numpy(np.array(full.params[t])), plan.batch_ids(t))
    np.testing.assert_array_equal(full.grads[t], g.numpy())


def test_sgd_batches_cover_every_sample_once_per_epoch(sgd_run) -> None:
    plan = sgd_run.plan
    epoch0 = np.concatenate([plan.batch_ids(t) for t in range(plan.steps_per_epoch)])
    assert np.array_equal(np.sort(epoch0), np.arange(sgd_run.n_train))


def test_retrain_oracle_equals_a_fresh_training_on_the_retain_set(convex_run) -> None:
    forget = random_forget_ids(convex_run.n_train, 0.2, seed=5)
    oracle = retrain(convex_run, forget)
    obj = convex_run.objective
    retain = np.setdiff1d(np.arange(convex_run.n_train), forget)
    w = convex_run.initial_params()
    for lr in convex_run.plan.lrs:  # plain GD written out by hand on R only
        _, g = obj.value_and_grad(w, retain)
        w = w - lr * g
    torch.testing.assert_close(oracle, w, rtol=0, atol=1e-13)


def test_retrain_with_an_empty_forget_set_reproduces_the_original(convex_run) -> None:
    again = retrain(convex_run, np.zeros(0, np.int64))
    torch.testing.assert_close(again, convex_run.load_model_params(), rtol=0, atol=0)


def test_history_sizes_are_accounted_in_the_manifest(convex_run) -> None:
    for entry in convex_run.manifest["files"]:
        assert (convex_run.path / entry["path"]).stat().st_size == entry["bytes"]
    d, k = convex_run.objective.dim, convex_run.config.checkpoints
    mini, full = convex_run.history_bytes("history-mini"), convex_run.history_bytes("history-full")
    assert 2 * (k + 1) * d * 8 <= mini <= 2 * (k + 1) * d * 8 + 4096
    assert full >= 2 * convex_run.total_steps * d * 8
    assert mini < 0.1 * full


@given(total=st.integers(1, 5000), k=st.integers(1, 16))
def test_checkpoint_steps_are_geometric_and_end_at_the_final_step(total: int, k: int) -> None:
    steps = checkpoint_steps(total, k)
    assert steps[0] == total and np.all(np.diff(steps) < 0) and steps[-1] >= 0
    assert len(steps) == min(k, int(np.floor(np.log2(total))) + 1) + 1
    gaps = total - steps[1:]
    assert np.all((gaps & (gaps - 1)) == 0)  # powers of two back from the end


def test_plan_is_a_function_of_the_config() -> None:
    cfg = TrainConfig(dataset="digits", epochs=3, batch_size=100, seed=9)
    a, b = make_plan(cfg, 1000), make_plan(cfg, 1000)
    assert np.array_equal(a.order, b.order) and a.total_steps == 30
    assert not np.array_equal(a.order, make_plan(TrainConfig(**{**cfg.to_dict(), "seed": 8}), 1000).order)


def test_training_into_an_existing_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    with pytest.raises(RunDirError, match="already exists"):
        train_run(SMALL, tmp_path / "run", progress=False)


def test_interrupted_training_leaves_nothing_behind(tmp_path: Path, monkeypatch) -> None:
    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(recording_module, "save_schedule", boom)
    with pytest.raises(KeyboardInterrupt):
        train_run(SMALL, tmp_path / "run", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_partials_left_by_a_killed_training_are_removed_by_the_next(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    owners = {"dead": int(dead.stdout), "alive": os.getpid()}
    for name, pid in owners.items():
        partial = tmp_path / f".run.partial-{name}"
        partial.mkdir()
        (partial / ".owner.json").write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
    (tmp_path / ".run.partial-unknown").mkdir()  # no owner record: not ours to judge
    run = train_run(SMALL, tmp_path / "run", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.partial-alive", ".run.partial-unknown", "run"]
    assert not (run.path / ".owner.json").exists()


@pytest.mark.parametrize(
    "damage",
    [
        lambda m: m.pop("n_train"),
        lambda m: m.update(total_steps="300"),
        lambda m: m.update(n_params=0),
        lambda m: m["files"][0].update(bytes="12"),
        lambda m: m["files"][0].pop("role"),
    ],
)
def test_a_manifest_with_missing_or_mistyped_keys_is_reported(tmp_path: Path, damage) -> None:
    run = train_run(SMALL, tmp_path / "run", progress=False)
    manifest = json.loads((run.path / "manifest.json").read_text())
    damage(manifest)
    (run.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RunDirError, match="manifest.json is corrupt"):
        open_run(run.path)


def test_tampered_or_missing_files_are_reported(tmp_path: Path) -> None:
    run = train_run(SMALL, tmp_path / "run", progress=False)
    model = run.path / "model.safetensors"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(RunDirError, match="sha256"):
        open_run(run.path)
    (run.path / "manifest.json").write_text("{not json")
    with pytest.raises(RunDirError, match="corrupt"):
        open_run(run.path)
    with pytest.raises(RunDirError, match="not a run directory"):
        open_run(tmp_path / "nope")


def test_corrupt_or_mismatched_history_is_reported(tmp_path: Path) -> None:
    run = train_run(SMALL, tmp_path / "run", progress=False)
    mini = run.path / "history" / "mini.safetensors"
    mini.write_bytes(b"\x00" * mini.stat().st_size)  # same size: only the content check can catch it
    with pytest.raises(HistoryError, match="corrupt"):
        open_run(run.path, verify_hashes=False).mini_history()
    full = run.path / "history" / "full_params.npy"
    size = full.stat().st_size
    np.save(full, np.zeros((3, 3)))
    with open(full, "ab") as handle:  # pad back to the recorded size
        handle.write(b"\x00" * (size - full.stat().st_size))
    with pytest.raises(HistoryError, match="shape"):
        open_run(run.path, verify_hashes=False).full_history()
    other = train_run(
        TrainConfig(**{**SMALL.to_dict(), "history": "mini"}), tmp_path / "mini", progress=False
    )
    with pytest.raises(HistoryError, match="--history full"):
        other.full_history()


def test_model_file_for_another_model_is_refused(tmp_path: Path, convex_run) -> None:
    mlp = train_run(
        TrainConfig(**{**SMALL.to_dict(), "model": "mlp", "hidden": (8,)}), tmp_path / "m", progress=False
    )
    with pytest.raises(RunDirError, match="does not fit"):
        load_params(mlp.path / "model.safetensors", convex_run.objective)


def test_models_that_cannot_be_replayed_are_refused() -> None:
    with pytest.raises(ConfigError, match="BatchNorm"):
        check_replayable(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)))
    with pytest.raises(ConfigError, match="dropout"):
        check_replayable(nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5)))


def test_invalid_configs_are_refused() -> None:
    nan, inf = float("nan"), float("inf")
    for bad in (
        {"epochs": 0},
        {"lr": -1.0},
        {"lr": nan},
        {"lr": inf},
        {"history": "most"},
        {"dtype": "float16"},
        {"lam": -1.0},
        {"lam": nan},
        {"lam": inf},
    ):
        with pytest.raises(ConfigError):
            TrainConfig(dataset="digits", **bad)
    with pytest.raises(ConfigError, match="unknown"):
        TrainConfig.from_dict({"dataset": "digits", "epoch": 3})


def test_config_round_trips_through_json(convex_run) -> None:
    data = json.loads((convex_run.path / "config.json").read_text())
    assert TrainConfig.from_dict(data) == convex_run.config


def test_small_cnn_trains_deterministically_and_unlearns(tmp_path: Path) -> None:
    from miniunlearn.methods import UnlearnRequest, get_method

    cfg = TrainConfig(
        dataset="digits",
        model="cnn",
        epochs=2,
        batch_size=256,
        lr=0.1,
        lam=1e-3,
        history="both",
        checkpoints=3,
        seed=5,
    )
    a = train_run(cfg, tmp_path / "a", progress=False)
    b = train_run(cfg, tmp_path / "b", progress=False)
    assert (a.path / "model.safetensors").read_bytes() == (b.path / "model.safetensors").read_bytes()
    assert not torch.equal(a.load_model_params(), a.initial_params())
    forget = random_forget_ids(a.n_train, 0.1, seed=0)
    result = get_method("mini").unlearn(UnlearnRequest(a, forget))
    assert result.record.diagnostics["mode"] == "rewind"  # a network fitted by SGD: rewind, not trajectory
    assert torch.isfinite(result.params).all()
    with pytest.raises(ConfigError, match="image dataset"):
        train_run(TrainConfig(dataset="breast-cancer", model="cnn", epochs=1), tmp_path / "c", progress=False)


def test_diverged_training_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    config = TrainConfig(dataset="digits", epochs=30, lr=1e6, lam=0.01)
    with pytest.raises(ConfigError, match="diverged"):
        train_run(config, tmp_path / "run", progress=False)
    assert list(tmp_path.iterdir()) == []
