"""The float64 retain optimum every record's ``dist_to_optimum`` is measured against."""

from __future__ import annotations

import numpy as np
import torch

from miniunlearn.experiment.optimum import OPTIMUM_DIR, retain_optimum
from miniunlearn.ids import ids_digest, random_forget_ids
from miniunlearn.methods import UnlearnRequest, get_method


def test_optimum_zeroes_the_retain_gradient_and_is_cached(convex_run, monkeypatch) -> None:
    forget = random_forget_ids(convex_run.n_train, 0.3, seed=21)
    optimum = retain_optimum(convex_run, forget)
    assert optimum is not None and optimum.dtype == torch.float64
    retain = np.setdiff1d(np.arange(convex_run.n_train), forget)
    _, g_start = convex_run.objective.value_and_grad(convex_run.load_model_params(), retain)
    _, g_end = convex_run.objective.value_and_grad(optimum, retain)
    assert float(g_end.norm()) < 1e-8 * float(g_start.norm())
    path = convex_run.path / OPTIMUM_DIR / f"{ids_digest(forget)}.safetensors"
    assert path.exists()
    import miniunlearn.experiment.optimum as module

    def no_solve(*args, **kwargs):
        raise AssertionError("the cached optimum was solved again")

    monkeypatch.setattr(module, "objective_for", no_solve)
    assert torch.equal(retain_optimum(convex_run, forget), optimum)


def test_a_damaged_cache_entry_is_recomputed(convex_run) -> None:
    forget = random_forget_ids(convex_run.n_train, 0.2, seed=22)
    optimum = retain_optimum(convex_run, forget)
    path = convex_run.path / OPTIMUM_DIR / f"{ids_digest(forget)}.safetensors"
    path.write_bytes(b"garbage")
    assert torch.allclose(retain_optimum(convex_run, forget), optimum, atol=1e-12)


def test_non_convex_models_have_no_optimum_to_report(mlp_run) -> None:
    assert retain_optimum(mlp_run, random_forget_ids(mlp_run.n_train, 0.1, seed=0)) is None


def test_the_residual_matched_fixed_point_is_what_mini_solves_for(exact_run) -> None:
    # a run stopped with a residual: the fixed point g_R(w) = g_D(w_T) is not the optimum
    forget = random_forget_ids(exact_run.n_train, 0.3, seed=23)
    retain = np.setdiff1d(np.arange(exact_run.n_train), forget)
    c = exact_run.mini_history().grads[0].double()
    point = retain_optimum(exact_run, forget, match_residual=True)
    optimum = retain_optimum(exact_run, forget)
    assert point is not None and optimum is not None
    _, g_start = exact_run.objective.value_and_grad(exact_run.load_model_params(), retain)
    _, g_point = exact_run.objective.value_and_grad(point, retain)
    # solved to 1e-9 of where it started
    assert float((g_point - c).norm()) < 1e-8 * float((g_start - c).norm())
    # cached under a key of its own: the optimum's entry is untouched
    assert (exact_run.path / OPTIMUM_DIR / f"{ids_digest(forget)}-residual.safetensors").exists()
    apart = float((point - optimum).norm())
    move = float((optimum - exact_run.load_model_params().double()).norm())
    # measured: 0.0030 apart, against a move of 0.26 from the trained model
    assert apart > 1e-3 * move
    # mini's residual matching lands at the fixed point, far nearer it than the optimum
    served = get_method("mini").unlearn(UnlearnRequest(exact_run, forget)).params.double()
    # measured: 1.2e-5 from the fixed point, 250 times nearer it than the optimum is
    assert float((served - point).norm()) < 0.05 * apart
