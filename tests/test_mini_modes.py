"""Mini-Unlearning's modes in isolation: the choice of mode, options refused for a mode that
does not serve the run, and cache entries bound to the run that wrote them."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from miniunlearn.errors import ConfigError, RunDirError
from miniunlearn.experiment.optimum import OPTIMUM_DIR, retain_optimum
from miniunlearn.ids import ids_digest, random_forget_ids
from miniunlearn.methods import UnlearnRequest, get_method
from miniunlearn.methods.mini import MiniOptions
from miniunlearn.methods.mini.choose import HistoryInfo, choose_mode, response_rows
from miniunlearn.methods.mini.options import MODES, SERVING_MODES, check_options_apply, option_modes
from miniunlearn.training import Run, TrainConfig, open_run, train_run

N = 1000


def fake_run(
    model: str, batch_size: int, certify: tuple[float, float, float] | None = None
) -> SimpleNamespace:
    """What choose_mode reads of a run: the model and certified-removal setting, the batch
    size of its plan, n_train."""
    return SimpleNamespace(
        config=SimpleNamespace(model=model, certify=certify),
        plan=SimpleNamespace(batch_size=batch_size),
        n_train=N,
    )


CONVERGED = HistoryInfo(residual_ratio=1e-6, response_rows=None)
UNCONVERGED = HistoryInfo(residual_ratio=0.05, response_rows=None)
UNCONVERGED_WITH_KNOTS = HistoryInfo(residual_ratio=0.05, response_rows=[5, 4, 3, 2, 1, 0])


@pytest.mark.parametrize(
    ("run", "info", "expected"),
    [
        (fake_run("logreg", N), CONVERGED, "fixed-point"),  # convex, converged
        (fake_run("logreg", 64), CONVERGED, "fixed-point"),  # converged SGD too
        (fake_run("logreg", N), UNCONVERGED, "trajectory"),  # convex, unconverged, full batch
        (fake_run("logreg", N), UNCONVERGED_WITH_KNOTS, "trajectory"),  # full batch: no SGD to follow
        (fake_run("logreg", 64), UNCONVERGED_WITH_KNOTS, "response"),  # convex SGD with its checkpoints
        (fake_run("logreg", 64), UNCONVERGED, "trajectory"),  # convex SGD without them
        (fake_run("mlp", 64), CONVERGED, "rewind"),  # non-convex SGD, whatever its residual
        (fake_run("mlp", 64), UNCONVERGED, "rewind"),
        (fake_run("mlp", N), UNCONVERGED, "fixed-point"),  # non-convex full batch
    ],
)
def test_auto_chooses_the_mode_by_model_convergence_and_batching(run, info, expected) -> None:
    assert choose_mode(run, info, MiniOptions()) == expected


def test_an_unknown_residual_counts_as_converged_and_the_tolerance_moves_the_line() -> None:
    unknown = HistoryInfo(residual_ratio=float("nan"), response_rows=None)
    assert choose_mode(fake_run("logreg", N), unknown, MiniOptions()) == "fixed-point"
    loose = MiniOptions(converged_tol=0.1)
    assert choose_mode(fake_run("logreg", N), UNCONVERGED, loose) == "fixed-point"


@pytest.mark.parametrize("mode", SERVING_MODES)
def test_an_explicit_mode_is_respected(mode: str) -> None:
    for run in (fake_run("logreg", N), fake_run("mlp", 64)):
        for info in (CONVERGED, UNCONVERGED_WITH_KNOTS):
            assert choose_mode(run, info, MiniOptions(mode=mode)) == mode


def test_a_converged_convex_run_is_served_without_reading_its_schedule() -> None:
    class NoPlan:
        config = SimpleNamespace(model="logreg", certify=None)
        n_train = N

        @property
        def plan(self) -> Any:
            raise AssertionError("the plan was read")

    assert choose_mode(NoPlan(), CONVERGED, MiniOptions()) == "fixed-point"


def test_response_rows_need_every_knot() -> None:
    total = 64  # knots at 0, 4, 8, 16, 32 and the end
    history = SimpleNamespace(steps=np.array([64, 63, 62, 60, 56, 48, 32, 16, 8, 4, 0]))
    rows = response_rows(history)
    assert rows is not None and [int(history.steps[r]) for r in rows] == [0, 4, 8, 16, 32, total]
    assert response_rows(SimpleNamespace(steps=np.array([64, 63, 62, 60, 56, 48, 32, 0]))) is None


def test_every_option_declares_the_modes_it_applies_to() -> None:
    for f in dataclasses.fields(MiniOptions):
        modes = option_modes(f.name)
        assert modes and set(modes) <= set(MODES), f.name
    assert option_modes("replay_fraction") == ("rewind",)
    assert option_modes("krylov_steps") == ("trajectory",)
    assert set(option_modes("seed")) == {"rewind", "response"}


def test_the_check_names_the_option_the_chosen_mode_and_the_modes_it_applies_to() -> None:
    with pytest.raises(ConfigError) as info:
        check_options_apply(["replay_fraction"], "auto", "fixed-point")
    assert str(info.value) == (
        "mini: option replay_fraction applies to the rewind mode, but this run is served by the "
        "fixed-point mode (chosen by mode=auto); drop it or pass mode=rewind"
    )
    with pytest.raises(ConfigError, match=r"krylov_steps \(the trajectory mode\).*xtol"):
        check_options_apply(["krylov_steps", "xtol", "seed"], "rewind", "rewind")
    with pytest.raises(
        ConfigError, match="converged_tol applies to the auto mode.*mode=trajectory was given"
    ):
        check_options_apply(["converged_tol"], "trajectory", "trajectory")
    check_options_apply(["converged_tol", "rtol", "mode"], "auto", "trajectory")
    check_options_apply(["seed", "response_hvp_samples"], "response", "response")
    check_options_apply([], "auto", "rewind")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Two tiny unconverged full-batch logistic regressions of one recipe, seeds 0 and 1."""
    root = tmp_path_factory.mktemp("modes")
    config = TrainConfig(
        dataset="digits", epochs=30, lr=0.5, lam=1e-3, dtype="float64", history="mini", checkpoints=3
    )
    return {
        seed: train_run(dataclasses.replace(config, seed=seed), root / f"seed{seed}", progress=False).path
        for seed in (0, 1)
    }


def fresh(runs: dict[int, Path], seed: int, tmp_path: Path) -> Run:
    """A copy of the run of ``seed`` that this test may change."""
    return open_run(shutil.copytree(runs[seed], tmp_path / f"run{seed}"))


def test_an_option_for_another_mode_is_refused_before_any_work(runs, tmp_path: Path) -> None:
    run = fresh(runs, 0, tmp_path)
    forget = random_forget_ids(run.n_train, 0.1, seed=0)
    method = get_method("mini", replay_fraction=0.1)
    with pytest.raises(ConfigError, match="replay_fraction applies to the rewind mode.*trajectory mode"):
        method.check_run(run)
    evals = run.objective.grad_evals
    with pytest.raises(ConfigError, match="replay_fraction"):
        method.unlearn(UnlearnRequest(run, forget))
    assert run.objective.grad_evals == evals and not (run.path / "cache").exists()
    with pytest.raises(ConfigError, match="xtol applies to the fixed-point mode"):
        get_method("mini", mode="trajectory", xtol=0.0).check_run(run)
    # options left at their defaults, and options of the serving mode, are accepted
    get_method("mini").check_run(run)
    get_method("mini", krylov_steps=5, rtol=1e-5, converged_tol=1e-3).check_run(run)
    get_method("mini", mode="fixed-point", xtol=0.0, match_residual=False).check_run(run)


def _trajectory(run: Run, forget: np.ndarray) -> Any:
    return get_method("mini", mode="trajectory").unlearn(UnlearnRequest(run, forget))


def test_a_trajectory_correction_copied_from_another_run_is_not_used(runs, tmp_path: Path) -> None:
    a, b = fresh(runs, 0, tmp_path), fresh(runs, 1, tmp_path)
    forget = random_forget_ids(a.n_train, 0.1, seed=3)
    own = _trajectory(b, forget)  # b's own correction, then removed
    shutil.rmtree(b.path / "cache")
    assert not _trajectory(a, forget).record.diagnostics["original_correction_cached"]
    shutil.copytree(a.path / "cache", b.path / "cache")  # entries and sidecars, as a probe would
    with pytest.warns(UserWarning, match="written for another run.*run_model_sha256"):
        planted = _trajectory(b, forget)
    assert not planted.record.diagnostics["original_correction_cached"]
    assert torch.equal(planted.params, own.params)
    again = _trajectory(b, forget)  # the entry was replaced by b's own
    assert again.record.diagnostics["original_correction_cached"] and torch.equal(again.params, own.params)


def test_an_unbound_trajectory_entry_is_recomputed(runs, tmp_path: Path) -> None:
    run = fresh(runs, 0, tmp_path)
    forget = random_forget_ids(run.n_train, 0.1, seed=3)
    own = _trajectory(run, forget)
    (entry,) = (run.path / "cache").glob("*.safetensors")
    from safetensors.torch import load_file, save_file

    from miniunlearn.fileio import sha256_file

    save_file({"correction": torch.zeros_like(load_file(str(entry))["correction"])}, str(entry))
    entry.with_name(entry.name + ".sha256").write_text(sha256_file(entry) + "\n")
    with pytest.warns(UserWarning, match="records no binding"):
        result = _trajectory(run, forget)
    assert torch.equal(result.params, own.params)


def test_a_retain_optimum_copied_from_another_run_is_not_used(runs, tmp_path: Path) -> None:
    a, b = fresh(runs, 0, tmp_path), fresh(runs, 1, tmp_path)
    forget = random_forget_ids(a.n_train, 0.2, seed=4)
    own = retain_optimum(b, forget)
    retain_optimum(a, forget)
    name = f"{ids_digest(forget)}.safetensors"
    for suffix in ("", ".sha256"):
        shutil.copyfile(a.path / OPTIMUM_DIR / (name + suffix), b.path / OPTIMUM_DIR / (name + suffix))
    with pytest.warns(UserWarning, match="written for another run"):
        planted = retain_optimum(b, forget)
    assert torch.equal(planted, own)
    # the entry now carries b's binding; a stricter tolerance is another entry's work
    with pytest.warns(UserWarning, match=r"depends\.rtol"):
        retain_optimum(b, forget, rtol=1e-10)


def test_a_cache_folder_that_is_a_symbolic_link_is_refused(runs, tmp_path: Path) -> None:
    run = fresh(runs, 0, tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (run.path / "cache").symlink_to(outside)
    with pytest.raises(RunDirError, match="symbolic link"):
        _trajectory(run, random_forget_ids(run.n_train, 0.1, seed=3))
    (run.path / OPTIMUM_DIR).symlink_to(outside)
    with pytest.raises(RunDirError, match="symbolic link"):
        retain_optimum(run, random_forget_ids(run.n_train, 0.1, seed=3))
    assert not any(outside.iterdir())


def test_a_certified_removal_run_is_served_at_its_fixed_point() -> None:
    """Training and retraining end at the perturbed optimum, whatever the history's ratio says."""
    unconverged = HistoryInfo(residual_ratio=0.5, response_rows=None)
    assert choose_mode(fake_run("logreg", N), unconverged, MiniOptions()) == "trajectory"
    certified = fake_run("logreg", N, certify=(1.0, 1e-5, 1.0))
    assert choose_mode(certified, unconverged, MiniOptions()) == "fixed-point"
