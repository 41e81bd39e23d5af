"""``exact-newton``: the explicit retain Hessian formed on the request, then Newton steps to
the residual-matched point; history-free (the final gradient aside), small convex models only."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from miniunlearn.errors import ConfigError
from miniunlearn.experiment.optimum import retain_optimum
from miniunlearn.ids import random_forget_ids
from miniunlearn.methods import UnlearnRequest, get_method
from miniunlearn.training import Run
from miniunlearn.training.curvature import softmax_regression_hessian


def dist(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm())


def test_the_hessian_is_the_objectives_own(convex_run: Run) -> None:
    objective = convex_run.objective
    ids = np.arange(0, 60, 3)
    w = convex_run.load_model_params()
    formed = softmax_regression_hessian(objective, w, ids)
    assert formed.dtype == torch.float64 and formed.shape == (objective.dim, objective.dim)
    assert torch.equal(formed, formed.T)
    step = 1e-5
    for j in (0, 7, 333, objective.dim - 1):  # central differences of the gradient, column j
        e = torch.zeros_like(w)
        e[j] = step
        column = (objective.value_and_grad(w + e, ids)[1] - objective.value_and_grad(w - e, ids)[1]) / (
            2 * step
        )
        assert torch.allclose(formed[:, j], column, rtol=1e-6, atol=1e-8)


def test_the_structured_hessian_equals_hessian_vector_products(convex_run: Run) -> None:
    objective = convex_run.objective
    ids = np.arange(5, 900, 4)
    w = convex_run.load_model_params()
    structured = softmax_regression_hessian(objective, w, ids)
    before = objective.grad_evals
    generic = torch.cat(
        [
            objective.hvp_sum_many(w, rows, ids)
            for rows in torch.eye(objective.dim, dtype=objective.dtype).split(200)
        ]
    )
    assert objective.grad_evals - before == 2 * objective.dim * ids.size
    generic = generic.double() / ids.size + objective.lam * torch.eye(objective.dim, dtype=torch.float64)
    assert torch.allclose(structured, generic, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.9])
def test_it_solves_the_residual_matched_point_mini_solves_in_a_few_passes(
    convex_run: Run, ratio: float
) -> None:
    forget = random_forget_ids(convex_run.n_train, ratio, seed=11)
    request = UnlearnRequest(convex_run, forget)
    result = get_method("exact-newton").unlearn(request)
    diag = result.record.diagnostics
    assert diag["converged"] and diag["exact_retain_passes"] <= 6  # measured: 3, 4, 5
    objective, w0 = convex_run.objective, convex_run.load_model_params()
    c = convex_run.mini_history().grads[0]
    _, g0 = objective.value_and_grad(w0, request.retain_ids)
    _, g1 = objective.value_and_grad(result.params, request.retain_ids)
    assert float((g1 - c).norm()) < 1e-3 * float((g0 - c).norm())  # the xtol stop: measured 6e-4 at 90 %
    reference = get_method("mini", rtol=1e-10, xtol=0.0, max_steps=200).unlearn(request).params
    assert dist(result.params, reference) < 1e-3 * dist(w0, reference)
    # the Hessian is counted per retain sample as its Gram matrices' multiply-adds over a
    # gradient's 2 d: 55 class pairs of 65 x 65 on digits, each formed on and above its diagonal
    # in bands of 16 columns (2,625 multiply-adds, against 4,225 for the square): about d / 8
    per_row = math.ceil(55 * 2625 / (2 * objective.dim))
    assert per_row == 112
    assert diag["hessian_passes"] == pytest.approx(per_row)
    retain = request.retain_ids.size
    assert result.record.grad_evals == (per_row + diag["exact_retain_passes"]) * retain
    assert result.record.history_bytes == objective.dim * 8  # the final gradient only


def test_without_residual_matching_it_lands_on_the_retain_optimum(convex_run: Run) -> None:
    forget = random_forget_ids(convex_run.n_train, 0.3, seed=4)
    target = retain_optimum(convex_run, forget)
    result = get_method("exact-newton", match_residual=False, xtol=0.0, rtol=1e-10).unlearn(
        UnlearnRequest(convex_run, forget)
    )
    assert dist(result.params, target) < 1e-6 * dist(convex_run.load_model_params(), target)


def test_networks_and_large_models_are_refused(convex_run: Run, mlp_run: Run) -> None:
    with pytest.raises(ConfigError, match="convex model"):
        get_method("exact-newton").check_run(mlp_run)
    with pytest.raises(ConfigError, match="above max_dim=100"):
        get_method("exact-newton", max_dim=100).check_run(convex_run)
