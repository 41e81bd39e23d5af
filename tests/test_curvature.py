"""The curvature sketch recorded with the minimal history, and what it buys Mini-Unlearning."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import hessian

from miniunlearn.errors import ConfigError, HistoryError, RunDirError
from miniunlearn.ids import random_forget_ids
from miniunlearn.methods import UnlearnRequest, get_method
from miniunlearn.methods.mini import retain_at_checkpoints
from miniunlearn.training import TrainConfig, open_run, retrain, train_run
from miniunlearn.training.curvature import CURVATURE_FILE, CurvatureSketch, sketch_hessian

SMALL = TrainConfig(dataset="digits", epochs=60, lr=1.0, lam=0.05, dtype="float64", seed=0, curvature_rank=16)
# The session's convex run: T = 300 float64 steps, 9 checkpoints; the default rank keeps the
# minimal history within 5 % of the full one: 8 bytes * (0.05 * 300 - 9) = 48 numbers per parameter,
# less one for file headers.
CONVEX_RANK = 47


def exact_data_hessian(run) -> torch.Tensor:
    """The (d, d) data Hessian (1/n) sum_i Hess l_i at the trained model, by torch.func."""
    objective = run.objective
    w = run.load_model_params()
    return hessian(lambda v: objective._chunk_loss_sum(objective.x, objective.y)(v))(w) / objective.n


def test_sketch_finds_the_top_eigenpairs_of_the_data_hessian(convex_run) -> None:
    exact = torch.linalg.eigvalsh(exact_data_hessian(convex_run)).flip(0)
    sketch = convex_run.curvature_sketch()
    assert sketch is not None and sketch.rank == CONVEX_RANK
    values = sketch.values.double()  # stored in float32
    assert torch.allclose(values[:9], exact[:9], rtol=1e-4)  # the steep directions, nearly exact
    assert torch.allclose(values[9:32], exact[9:32], rtol=0.15)  # a flat bulk: within 15 %
    # every sketched value is a lower bound of its true eigenvalue (Nyström is conservative)
    assert (values <= exact[: sketch.rank] * (1 + 1e-5)).all()
    gram = sketch.vectors @ sketch.vectors.T
    assert torch.allclose(gram, torch.eye(sketch.rank, dtype=gram.dtype), atol=1e-5)


def test_a_full_rank_sketch_is_the_exact_inverse_hessian(convex_run) -> None:
    objective = convex_run.objective
    w = convex_run.load_model_params()
    sketch = sketch_hessian(objective, w, rank=objective.dim, iters=1, seed=0)
    h = exact_data_hessian(convex_run) + objective.lam * torch.eye(objective.dim, dtype=torch.float64)
    g = torch.randn(objective.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.allclose(sketch.inverse_hessian_product(g), torch.linalg.solve(h, g), rtol=1e-6, atol=1e-9)


def test_the_preconditioner_never_overshoots_an_unsketched_direction() -> None:
    vectors = torch.eye(4, dtype=torch.float64)[:2]
    sketch = CurvatureSketch(vectors, torch.tensor([3.0, 1.0], dtype=torch.float64), lam=0.5)
    g = torch.tensor([3.5, 1.5, 1.0, 1.0], dtype=torch.float64)
    # inside: (value + lam)^-1; outside: (smallest kept value + lam)^-1
    assert torch.allclose(sketch.inverse_hessian_product(g), torch.tensor([1.0, 1.0, 2 / 3, 2 / 3]).double())


def test_sketch_is_stored_in_half_precision_and_listed_in_the_manifest(convex_run) -> None:
    entry = [f for f in convex_run.manifest["files"] if f["path"] == CURVATURE_FILE]
    assert entry and entry[0]["role"] == "history-curvature"
    d = convex_run.objective.dim
    assert entry[0]["bytes"] < 2 * CONVEX_RANK * d + 4 * CONVEX_RANK + 1024  # float16 vectors + header
    cost = convex_run.manifest["curvature"]
    assert cost["rank"] == CONVEX_RANK and cost["iters"] == 2
    assert cost["grad_evals"] == 2 * 2 * CONVEX_RANK * convex_run.n_train  # two blocks of products
    full = sum(f["bytes"] for f in convex_run.manifest["files"] if f["role"] == "history-full")
    minimal = sum(
        f["bytes"] for f in convex_run.manifest["files"] if f["role"] in ("history-mini", "history-curvature")
    )
    assert minimal <= 0.05 * full
    assert cost["seconds"] > 0 and cost["cost_vs_training"] > 0


def test_non_convex_models_and_runs_without_minimal_history_record_no_sketch(mlp_run, tmp_path) -> None:
    assert mlp_run.curvature_sketch() is None
    with pytest.raises(ConfigError, match="minimal history"):
        dataclasses.replace(SMALL, history="full")
    with pytest.raises(ConfigError, match="convex"):
        dataclasses.replace(SMALL, model="mlp")
    with pytest.raises(ConfigError, match="rank"):
        dataclasses.replace(SMALL, curvature_rank=-1)
    run = train_run(
        dataclasses.replace(SMALL, history="full", curvature_rank=None), tmp_path / "full", progress=False
    )
    assert run.curvature_sketch() is None and "curvature" not in run.manifest
    run = train_run(dataclasses.replace(SMALL, curvature_rank=0), tmp_path / "none", progress=False)
    assert not (run.path / CURVATURE_FILE).exists()
    # 60 steps leave no room for a sketch within the history budget: none by default...
    sketched = dataclasses.replace(SMALL, curvature_rank=None, exact_curvature_dim=0)
    run = train_run(sketched, tmp_path / "short", progress=False)
    assert run.curvature_sketch() is None
    # ...while a small model's exact Hessian is exempt from it
    run = train_run(dataclasses.replace(SMALL, curvature_rank=None), tmp_path / "exact", progress=False)
    sketch = run.curvature_sketch()
    assert sketch is not None and sketch.exact and sketch.rank == run.objective.dim


def test_corrupt_or_foreign_sketch_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    run = train_run(SMALL, tmp_path / "run", progress=False)
    path = run.path / CURVATURE_FILE
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(HistoryError, match="corrupt"):
        run.curvature_sketch()
    other = train_run(dataclasses.replace(SMALL, lam=0.1), tmp_path / "other", progress=False)
    path.write_bytes((other.path / CURVATURE_FILE).read_bytes())
    with pytest.raises(HistoryError, match="lam"):
        run.curvature_sketch()
    # the manifest's size and hash checks catch the swap before any method reads it
    with pytest.raises(RunDirError, match="manifest says|sha256"):
        open_run(run.path)


def test_preconditioning_cuts_the_passes_and_keeps_the_answer(convex_run) -> None:
    forget = random_forget_ids(convex_run.n_train, 0.5, seed=11)
    target = retrain(convex_run, forget)
    results = {
        pre: get_method("mini", precondition=pre, rtol=1e-8, xtol=0.0, max_steps=200).unlearn(
            UnlearnRequest(convex_run, forget)
        )
        for pre in (True, False)
    }
    with_sketch, without = results[True].record, results[False].record
    assert (
        with_sketch.diagnostics["curvature_rank"] == CONVEX_RANK
        and without.diagnostics["curvature_rank"] == 0
    )
    assert with_sketch.grad_evals * 2 < without.grad_evals
    for result in results.values():
        assert float((result.params - target).norm()) < 1e-6


def test_sketch_recording_is_deterministic(tmp_path: Path) -> None:
    a = train_run(SMALL, tmp_path / "a", progress=False)
    b = train_run(SMALL, tmp_path / "b", progress=False)
    assert (a.path / CURVATURE_FILE).read_bytes() == (b.path / CURVATURE_FILE).read_bytes()
    manifest = json.loads((a.path / "manifest.json").read_text())
    assert manifest["curvature"]["rank"] == 16


@settings(max_examples=15, deadline=None)
@given(st.data())
def test_retain_quantities_agree_whichever_side_is_read(convex_run, data) -> None:
    n = convex_run.n_train
    size = data.draw(st.integers(1, n - 1))
    forget = np.sort(np.random.default_rng(size).choice(n, size, replace=False))
    request = UnlearnRequest(convex_run, forget)
    history = convex_run.mini_history()
    objective = convex_run.objective
    rows = [0, history.params.shape[0] - 1]
    W, G, V = history.params[rows], history.grads[rows], history.values[rows]
    before = objective.grad_evals
    values, grads = retain_at_checkpoints(objective, n, history.lam, W, G, V, request)
    assert objective.grad_evals - before == len(rows) * min(size, n - size)
    for j, w in enumerate(W):
        f, g = objective.value_and_grad(w, request.retain_ids)
        assert torch.allclose(grads[j], g, atol=1e-10) and torch.allclose(values[j], f, atol=1e-10)
