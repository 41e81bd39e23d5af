"""The input-subspace curvature a larger logistic regression records: its Hessian exact on the
inputs' principal directions, a never-overshooting scalar elsewhere."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from miniunlearn.errors import ConfigError, HistoryError
from miniunlearn.ids import random_forget_ids
from miniunlearn.methods import UnlearnRequest, get_method
from miniunlearn.training import Run, TrainConfig, retrain, train_run
from miniunlearn.training.curvature import (
    CURVATURE_FILE,
    curvature_budget,
    load_input_subspace,
    softmax_regression_hessian,
)
from miniunlearn.training.input_subspace import (
    InputSubspaceCurvature,
    basis_bytes,
    complement_tail,
    core_evals_per_row,
    from_blocks,
    gram_multiply_adds,
    input_basis,
    input_subspace_curvature,
    largest_basis,
    projected_hessian,
    recording_passes,
    require_linear_logits,
    symmetric_gram,
    to_blocks,
)
from miniunlearn.training.recording import recording_budget

CLASSES, FEATURES = 10, 64  # digits: 8x8 inputs, ten classes


def subspace_matrix(basis: torch.Tensor) -> torch.Tensor:
    """V = I_K kron basis as a (d, K k) matrix in the model's flat parameter layout."""
    k = basis.shape[1]
    columns = torch.zeros(CLASSES, FEATURES + 1, CLASSES * k, dtype=torch.float64)
    for c in range(CLASSES):
        columns[c, :, c * k : (c + 1) * k] = basis.double()
    return from_blocks(columns.permute(2, 0, 1)).T


def test_the_default_records_the_projected_hessian_within_the_history_budget(subspace_run: Run) -> None:
    curvature = subspace_run.curvature_sketch()
    assert isinstance(curvature, InputSubspaceCurvature) and not curvature.exact
    summary = subspace_run.manifest["curvature"]
    # 300 float64 steps and 9 checkpoints leave 8 (0.05 * 300 - 9) - 1 = 47 sketch rows of 2 d
    # bytes: 18 directions per class fit (the core's upper triangle stored in half precision);
    # 19 would take a 15th pass to record the core, past 0.05 * 300 - 1 = 14 (the basis and
    # tail alone take more on this small set, so only the core is held to it)
    budget = curvature_budget(300, 9, 8, subspace_run.objective.dim)
    passes = recording_budget(subspace_run.config, 300, subspace_run.n_train)
    assert passes == 14 and summary["kind"] == "input-subspace"
    assert summary["basis"] == 18 == largest_basis(64, budget, 10, 64, passes)
    assert basis_bytes(18, CLASSES, FEATURES) <= budget and core_evals_per_row(18, CLASSES, FEATURES) <= 14
    assert core_evals_per_row(19, CLASSES, FEATURES) > 14 and largest_basis(64, budget, 10, 64) >= 19
    assert curvature.rank == CLASSES * 18 and curvature.nbytes == basis_bytes(18, CLASSES, FEATURES)
    stored = (subspace_run.path / CURVATURE_FILE).stat().st_size
    assert curvature.nbytes <= stored <= curvature.nbytes + 1024  # the triangle, not the square, plus headers
    assert summary["rows"] == 2048 or summary["rows"] == subspace_run.n_train


def test_the_core_is_the_exact_hessian_projected_and_the_tail_its_complements_top(subspace_run: Run) -> None:
    objective = subspace_run.objective
    w = subspace_run.load_model_params()
    data_hessian = softmax_regression_hessian(objective, w, None, regularised=False)
    basis = input_basis(objective, 16, None)
    assert torch.allclose(basis.T @ basis, torch.eye(16, dtype=torch.float64), atol=1e-12)
    v = subspace_matrix(basis)
    core = projected_hessian(objective, w, basis)
    assert torch.allclose(core, v.T @ data_hessian @ v, rtol=1e-9, atol=1e-12)
    complement = torch.eye(objective.dim, dtype=torch.float64) - v @ v.T
    top = float(torch.linalg.eigvalsh(complement @ data_hessian @ complement)[-1])
    tail = complement_tail(objective, w, basis, None, seed=0, iters=40)
    # Rayleigh quotients of the complement never exceed its top eigenvalue, and 40 iterations reach it
    assert 0.95 * top <= tail <= top * (1 + 1e-9)


def test_the_preconditioner_inverts_the_matrix_it_describes() -> None:
    """P = V (core + lam) V^T + (tail + lam)(I - V V^T); P^-1 applied to P x gives x back."""
    gen = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(FEATURES + 1, 5, generator=gen, dtype=torch.float64))[0]
    a = torch.randn(CLASSES * 5, CLASSES * 5, generator=gen, dtype=torch.float64)
    core = a @ a.T / 50
    curvature = InputSubspaceCurvature(basis, core, tail=0.3, lam=0.05)
    v = subspace_matrix(basis)
    dim = CLASSES * (FEATURES + 1)
    eye = torch.eye(dim, dtype=torch.float64)
    p = v @ (core + 0.05 * torch.eye(CLASSES * 5, dtype=torch.float64)) @ v.T + 0.35 * (eye - v @ v.T)
    x = torch.randn(dim, generator=gen, dtype=torch.float64)
    assert torch.allclose(curvature.inverse_hessian_product(p @ x), x, atol=1e-10)
    assert curvature.inverse_hessian_product(x.float()).dtype == torch.float32
    blocks = to_blocks(x, CLASSES)
    assert blocks.shape == (CLASSES, FEATURES + 1) and torch.equal(from_blocks(blocks), x)
    assert torch.equal(blocks[:, -1], x[CLASSES * FEATURES :])  # the bias is each block's last entry


def test_it_preconditions_better_than_a_sketch_of_the_same_budget(subspace_run: Run, convex_run: Run) -> None:
    """Both runs are the same training with the same history budget; the input subspace resolves
    160 directions exactly, the sketch 47 approximately."""
    assert torch.equal(subspace_run.load_model_params(), convex_run.load_model_params())
    forget = random_forget_ids(subspace_run.n_train, 0.3, seed=5)
    target = retrain(subspace_run, forget)
    records = {}
    for run in (subspace_run, convex_run):
        result = get_method("mini", rtol=1e-8, xtol=0.0, max_steps=200).unlearn(UnlearnRequest(run, forget))
        assert float((result.params - target).norm()) < 1e-6
        records[run.manifest["curvature"].get("kind", "sketch")] = result.record
    assert records["input-subspace"].grad_evals < records["sketch"].grad_evals


def test_recording_is_deterministic_and_a_damaged_file_is_refused(tmp_path: Path) -> None:
    from conftest import SUBSPACE

    a = train_run(SUBSPACE, tmp_path / "a", progress=False)
    b = train_run(SUBSPACE, tmp_path / "b", progress=False)
    assert (a.path / CURVATURE_FILE).read_bytes() == (b.path / CURVATURE_FILE).read_bytes()
    path = a.path / CURVATURE_FILE
    tensors = load_file(str(path))
    metadata = json.loads(path.read_bytes()[8 : 8 + int.from_bytes(path.read_bytes()[:8], "little")])
    meta = metadata["__metadata__"]
    damaged = [
        ("basis", tensors["basis"][:-1]),
        ("core", tensors["core"][:-1]),
        ("tail", torch.tensor([-1.0], dtype=torch.float64)),
    ]
    for name, bad in damaged:
        save_file({**tensors, name: bad}, str(path), metadata=meta)
        with pytest.raises(HistoryError, match="does not fit|negative"):
            a.curvature_sketch()
    for scale in (0.0, float("nan"), -1.0):
        save_file(
            {**tensors, "core_scale": torch.tensor([scale], dtype=torch.float64)}, str(path), metadata=meta
        )
        with pytest.raises(HistoryError, match="core scale"):
            a.curvature_sketch()
    save_file({k: t for k, t in tensors.items() if k != "core"}, str(path), metadata=meta)
    with pytest.raises(HistoryError, match="corrupt"):
        a.curvature_sketch()


def test_the_core_is_stored_in_half_precision_and_float32_cores_still_load(
    subspace_run: Run, tmp_path: Path
) -> None:
    """The stored core is the float16 triangle of core / its largest entry plus that scale: read
    back within float16's resolution of the core, and preconditioning as the float32 core does;
    a run recorded before (a float32 triangle, no scale) reads back exactly."""
    path = subspace_run.path / CURVATURE_FILE
    tensors = load_file(str(path))
    assert tensors["core"].dtype == torch.float16 and tensors["core_scale"].dtype == torch.float64
    stored = subspace_run.curvature_sketch()
    assert isinstance(stored, InputSubspaceCurvature)
    objective = subspace_run.objective
    w = subspace_run.load_model_params()
    exact = projected_hessian(objective, w, stored.basis.to(torch.float64))
    scale = float(exact.abs().max())
    assert float(tensors["core_scale"][0]) == pytest.approx(scale, rel=1e-6)
    assert float((stored.core.double() - exact).abs().max()) <= 2**-11 * scale
    full = InputSubspaceCurvature(stored.basis, exact.float(), stored.tail, stored.lam)
    g = objective.cast(torch.float64).value_and_grad(w.double(), np.array([0]))[1]
    step, exact_step = stored.inverse_hessian_product(g), full.inverse_hessian_product(g)
    assert 0 < float((step - exact_step).norm()) <= 1e-3 * float(exact_step.norm())
    # a float32 triangle without a scale, as runs recorded before half precision stored it
    rows, cols = torch.triu_indices(full.rank, full.rank)
    old = tmp_path / "old.safetensors"
    meta = json.loads(path.read_bytes()[8 : 8 + int.from_bytes(path.read_bytes()[:8], "little")])[
        "__metadata__"
    ]
    older = {k: t for k, t in tensors.items() if k != "core_scale"}
    save_file({**older, "core": full.core[rows, cols].contiguous()}, str(old), metadata=meta)
    loaded = load_input_subspace(old, load_file(str(old)), dim=objective.dim, lam=stored.lam)
    assert torch.equal(loaded.core, full.core)


@pytest.mark.parametrize(("width", "tile"), [(1, 16), (17, 16), (33, 8), (40, 40), (5, 64)])
def test_the_symmetric_gram_is_the_full_one_at_about_half_the_work(width: int, tile: int) -> None:
    gen = torch.Generator().manual_seed(width)
    z = torch.randn(50, width, generator=gen, dtype=torch.float64)
    weights = torch.randn(50, generator=gen, dtype=torch.float64)
    full = (z * weights[:, None]).T @ z
    assert torch.allclose(symmetric_gram(z, weights, tile), full, rtol=1e-12, atol=1e-12)
    assert width * (width + 1) // 2 <= gram_multiply_adds(width, tile) <= width * width
    if width >= 4 * tile:
        assert gram_multiply_adds(width, tile) <= 0.65 * width * width


def test_recording_passes_are_what_the_recording_counts(subspace_run: Run) -> None:
    objective = subspace_run.objective
    w = subspace_run.load_model_params()
    n = objective.n
    rows = np.sort(np.random.default_rng(0).choice(n, n // 3, replace=False))
    for k, basis_rows in [(8, None), (16, rows)]:
        before = objective.grad_evals
        input_subspace_curvature(objective, w, k, basis_rows, seed=0)
        share = 1.0 if basis_rows is None else basis_rows.size / n
        assert (objective.grad_evals - before) / n == pytest.approx(
            recording_passes(k, CLASSES, FEATURES, share)
        )


def test_networks_are_refused_and_old_configs_read_as_sketched(mlp_run: Run) -> None:
    with pytest.raises(ConfigError, match="logistic regression"):
        require_linear_logits(mlp_run.objective)
    with pytest.raises(ConfigError, match="curvature-basis"):
        TrainConfig(dataset="digits", curvature_basis=-1)
    old = TrainConfig(dataset="digits").to_dict()
    del old["curvature_basis"]  # a logistic regression recorded before the option
    assert TrainConfig.from_dict(old).curvature_basis == 0
    network = TrainConfig(dataset="digits", model="mlp")
    assert "curvature_basis" not in network.to_dict()  # a network's run key is unchanged
    assert TrainConfig.from_dict(network.to_dict()) == network


def test_a_zero_basis_or_a_set_rank_records_a_sketch(tmp_path: Path) -> None:
    from conftest import SUBSPACE

    for name, change in [("zero", {"curvature_basis": 0}), ("rank", {"curvature_rank": 16})]:
        run = train_run(dataclasses.replace(SUBSPACE, **change), tmp_path / name, progress=False)
        assert run.manifest["curvature"]["kind"] == "sketch"
        assert not isinstance(run.curvature_sketch(), InputSubspaceCurvature)


def test_the_request_time_peer_forms_it_on_retain_rows_and_lands_where_mini_does(
    subspace_run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    from miniunlearn.training import input_subspace

    seen: list[np.ndarray] = []
    original = input_subspace.projected_hessian

    def spy(objective, w, basis, ids=None):
        seen.append(np.asarray(ids))
        return original(objective, w, basis, ids)

    monkeypatch.setattr(input_subspace, "projected_hessian", spy)
    forget = random_forget_ids(subspace_run.n_train, 0.3, seed=5)
    request = UnlearnRequest(subspace_run, forget)
    peer = get_method("nystrom", basis=8, rows=300, rtol=1e-8, xtol=0.0, max_steps=200).unlearn(request)
    diag = peer.record.diagnostics
    # formed once, on the request, over 300 retain rows only, and counted
    assert len(seen) == 1 and seen[0].size == 300 and np.isin(seen[0], request.retain_ids).all()
    assert diag["sketch_kind"] == "input-subspace" and diag["sketch_passes"] > 0 and diag["converged"]
    mini = get_method("mini", rtol=1e-10, xtol=0.0, max_steps=200)
    mini = mini.unlearn(UnlearnRequest(subspace_run, forget))
    w0 = subspace_run.load_model_params()
    assert float((peer.params - mini.params).norm()) < 1e-6 * float((w0 - mini.params).norm())


def test_a_stream_of_single_samples_on_it_ends_where_the_union_does(
    subspace_run: Run, tmp_path: Path
) -> None:
    from miniunlearn.experiment.stream import StreamSpec, run_stream, stream_ids

    records, summary = run_stream(subspace_run, StreamSpec(8), workdir=tmp_path, progress=False)
    # every request served by its own measured steps, the last measurement its certificate
    assert all(r["passes_with_certificate"] == pytest.approx(r["passes"]) for r in records)
    assert summary["served_by_retraining"] == 0
    every = np.sort(
        np.concatenate([np.atleast_1d(r) for r in stream_ids(subspace_run.n_train, StreamSpec(8))])
    )
    original = float((subspace_run.load_model_params() - retrain(subspace_run, every)).norm())
    assert summary["final_dist_to_retrain"] <= 1.5 * summary["union_dist_to_retrain"] + 1e-4 * original


def test_the_flag_states_the_default_it_sets() -> None:
    from miniunlearn.cli.training_flags import TRAINING_FLAGS
    from miniunlearn.training.config import DEFAULT_CURVATURE_BASIS

    (flag,) = [f for f in TRAINING_FLAGS if f.flag == "--curvature-basis"]
    assert f"default {DEFAULT_CURVATURE_BASIS}," in flag.help
    assert TrainConfig(dataset="digits").curvature_basis == DEFAULT_CURVATURE_BASIS


def test_an_unregularised_singular_core_still_factors() -> None:
    basis = torch.eye(FEATURES + 1, 2, dtype=torch.float64)
    core = torch.zeros(CLASSES * 2, CLASSES * 2, dtype=torch.float64)  # lam = 0 and no curvature at all
    curvature = InputSubspaceCurvature(basis, core, tail=0.0, lam=0.0)
    g = torch.ones(CLASSES * (FEATURES + 1), dtype=torch.float64)
    assert torch.isfinite(curvature.inverse_hessian_product(g)).all()


def test_a_larger_history_budget_resolves_more_directions_and_its_step_leaves_less(
    subspace_run: Run, tmp_path: Path
) -> None:
    """Twice the default budget: 29 passes to record the core fit 29 directions per class where
    the default's 14 fit 18 (the bytes, 8 (0.1 * 300 - 9) - 1 = 167 sketch rows of 2 d, would
    fit more), and a single-sample removal's one preconditioned step leaves less of its
    gradient change on the exact Hessian."""
    from conftest import SUBSPACE

    config = dataclasses.replace(SUBSPACE, history_budget=0.1)
    assert config.to_dict()["history_budget"] == 0.1 and "history_budget" not in SUBSPACE.to_dict()
    assert TrainConfig.from_dict(config.to_dict()) == config
    wider = train_run(config, tmp_path / "wider", progress=False)
    budget = curvature_budget(300, 9, 8, wider.objective.dim, 0.1)
    passes = recording_budget(config, 300, wider.n_train)
    assert passes == 29 and core_evals_per_row(30, CLASSES, FEATURES) > 29
    assert wider.manifest["curvature"]["basis"] == 29 == largest_basis(64, budget, CLASSES, FEATURES, passes)
    assert torch.equal(wider.load_model_params(), subspace_run.load_model_params())  # same training
    objective = subspace_run.objective
    w = subspace_run.load_model_params().double()
    hessian = softmax_regression_hessian(objective, w, None)
    o64 = objective.cast(torch.float64)
    full = o64.value_and_grad(w)[1]
    left = {}
    for name, run in [("default", subspace_run), ("wider", wider)]:
        curvature = run.curvature_sketch()
        assert isinstance(curvature, InputSubspaceCurvature)
        steps = []
        for j in range(5):
            change = full - o64.value_and_grad(w, np.array([j]))[1]
            steps.append(
                float((change - hessian @ curvature.inverse_hessian_product(change)).norm() / change.norm())
            )
        left[name] = np.median(steps)
    assert left["wider"] < 0.8 * left["default"]


@pytest.mark.parametrize("budget", [0.0, -0.1, 1.5, float("nan")])
def test_a_history_budget_outside_its_range_is_refused(budget: float) -> None:
    with pytest.raises(ConfigError, match="history-budget"):
        TrainConfig(dataset="digits", history_budget=budget)


def test_a_history_budget_for_a_run_without_curvature_is_refused() -> None:
    for change in [{"model": "mlp"}, {"history": "full"}]:
        with pytest.raises(ConfigError, match="history-budget"):
            TrainConfig(dataset="digits", history_budget=0.1, **change)
