"""Retrain cache entries are bound to their run and forget set: foreign entries are never used."""

from __future__ import annotations

import dataclasses
import importlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from miniunlearn.fileio import cached, sha256_file
from miniunlearn.ids import ids_digest, random_forget_ids
from miniunlearn.methods import UnlearnRequest, get_method
from miniunlearn.training import Run, TrainConfig, cached_retrain, open_run, retrain, train_run
from miniunlearn.training.retrain import RETRAIN_DIR
from miniunlearn.training.rundir import save_params

# the module, not the function that miniunlearn.training exports under the same name
retrain_module = importlib.import_module("miniunlearn.training.retrain")

TINY = TrainConfig(
    dataset="digits", model="logreg", epochs=40, lr=1.0, lam=0.02, dtype="float64", history="none"
)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Two tiny runs of the same config but different seeds, trained once."""
    root = tmp_path_factory.mktemp("binding")
    return {
        seed: train_run(dataclasses.replace(TINY, seed=seed), root / f"seed{seed}", progress=False).path
        for seed in (0, 1)
    }


def _copy(pristine: dict[int, Path], seed: int, tmp_path: Path) -> Run:
    return open_run(shutil.copytree(pristine[seed], tmp_path / f"run{seed}"))


@pytest.fixture
def run(pristine: dict[int, Path], tmp_path: Path) -> Run:
    """A fresh copy of the seed-0 run for each test."""
    return _copy(pristine, 0, tmp_path)


def _forget(run: Run) -> np.ndarray:
    return random_forget_ids(run.n_train, 0.1, seed=5)


def _entry(run: Run, ids: np.ndarray) -> Path:
    return run.path / RETRAIN_DIR / f"{ids_digest(ids)}.safetensors"


def _plant(run: Run, ids: np.ndarray, source: Path) -> None:
    """Put ``source`` in the cache for ``ids`` with a matching sidecar, as a probe would."""
    entry = _entry(run, ids)
    entry.parent.mkdir(exist_ok=True)
    shutil.copyfile(source, entry)
    entry.with_name(entry.name + ".sha256").write_text(sha256_file(entry) + "\n")


def _retrain_method(run: Run, ids: np.ndarray) -> torch.Tensor:
    return get_method("retrain", use_cache=True).unlearn(UnlearnRequest(run, ids)).params


def test_the_original_model_planted_as_a_retraining_is_never_returned(run: Run) -> None:
    ids, original = _forget(run), run.load_model_params()
    fresh = retrain(run, ids)
    _plant(run, ids, run.path / "model.safetensors")
    with pytest.warns(UserWarning, match="not used"):
        assert torch.equal(cached_retrain(run, ids), fresh)
    _plant(run, ids, run.path / "model.safetensors")
    with pytest.warns(UserWarning, match="not used"):
        assert torch.equal(_retrain_method(run, ids), fresh)
    assert not torch.equal(fresh, original)
    assert sha256_file(_entry(run, ids)) != sha256_file(run.path / "model.safetensors")  # replaced


def test_the_original_model_with_a_forged_binding_is_never_returned(run: Run) -> None:
    from miniunlearn.training.retrain import _save_entry

    ids = _forget(run)
    forged = run.path / "forged.safetensors"
    _save_entry(run, ids, run.load_model_params(), forged)  # the right binding around the wrong weights
    _plant(run, ids, forged)
    with pytest.warns(UserWarning, match="original model"):
        assert torch.equal(cached_retrain(run, ids), retrain(run, ids))


def test_a_retrain_folder_copied_from_another_run_is_not_used(
    run: Run, pristine: dict[int, Path], tmp_path: Path
) -> None:
    other, ids = _copy(pristine, 1, tmp_path), _forget(run)
    theirs = cached_retrain(other, ids)
    shutil.copytree(other.path / RETRAIN_DIR, run.path / RETRAIN_DIR)
    fresh = retrain(run, ids)
    assert not torch.equal(theirs, fresh)
    with pytest.warns(UserWarning, match="another run"):
        assert torch.equal(cached_retrain(run, ids), fresh)
    shutil.rmtree(run.path / RETRAIN_DIR)
    shutil.copytree(other.path / RETRAIN_DIR, run.path / RETRAIN_DIR)
    with pytest.warns(UserWarning, match="another run"):
        assert torch.equal(_retrain_method(run, ids), fresh)


def test_an_entry_of_another_forget_set_or_without_a_binding_is_not_used(run: Run) -> None:
    ids, others = _forget(run), np.arange(7)
    cached_retrain(run, others)
    _plant(run, ids, _entry(run, others))  # renamed to this forget set's name
    with pytest.warns(UserWarning, match="ids_sha256"):
        assert torch.equal(cached_retrain(run, ids), retrain(run, ids))
    unbound = run.path / "unbound.safetensors"  # as written before entries carried a binding
    save_params(unbound, run.objective, retrain(run, ids), {"version": "retrain"})
    _plant(run, ids, unbound)
    with pytest.warns(UserWarning, match="no retrain binding"):
        assert torch.equal(cached_retrain(run, ids), retrain(run, ids))


def test_an_entry_written_here_is_bound_and_reused_without_retraining(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    from miniunlearn.training.retrain import check_retrain_entry

    ids = _forget(run)
    first = get_method("retrain", use_cache=True).unlearn(UnlearnRequest(run, ids))
    assert first.record.diagnostics["cached"] is False
    check_retrain_entry(run, ids, _entry(run, ids), first.params)  # records this run's binding
    calls: list[int] = []

    def counting(*args, **kwargs):
        calls.append(1)
        return retrain(*args, **kwargs)

    monkeypatch.setattr(retrain_module, "retrain", counting)
    reopened = open_run(run.path)
    assert torch.equal(cached_retrain(reopened, ids), first.params)
    again = get_method("retrain", use_cache=True).unlearn(UnlearnRequest(reopened, ids))
    assert again.record.diagnostics["cached"] is True and torch.equal(again.params, first.params)
    assert torch.equal(cached_retrain(reopened, []), cached_retrain(reopened, []))  # the empty set too
    assert len(calls) == 1  # only the empty set's first call retrained


def test_a_foreign_entry_stays_until_the_recomputed_one_replaces_it(tmp_path: Path) -> None:
    class Foreign(Exception):
        pass

    def load(path: Path) -> str:
        if path.read_text() != "mine":
            raise Foreign
        return "mine"

    entry = tmp_path / "entry"
    entry.write_text("theirs")
    entry.with_name("entry.sha256").write_text(sha256_file(entry) + "\n")

    def compute() -> str:
        assert entry.read_text() == "theirs"  # not removed before the replacement is ready
        return "mine"

    kwargs = {"load": load, "save": lambda v, tmp: tmp.write_text(v), "damaged": (), "foreign": (Foreign,)}
    assert cached(entry, compute=compute, **kwargs) == ("mine", False)
    assert cached(entry, compute=lambda: "recomputed", **kwargs) == ("mine", True)
