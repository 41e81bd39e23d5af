"""Guo et al.'s Newton removal and its data-dependent bound: the constant, the bound and the
step are checked against measured residuals, so a wrong constant or step fails."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from miniunlearn.errors import ConfigError
from miniunlearn.ids import retained_ids
from miniunlearn.training.newton_bound import (
    SOFTMAX_HESSIAN_LIPSCHITZ,
    augmented_spectral_norm,
    newton_removal_step,
    newton_residual_bound,
)


def softmax_hessian(z: torch.Tensor) -> torch.Tensor:
    p = torch.softmax(z, dim=0)
    return torch.diag(p) - torch.outer(p, p)


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 12), st.integers(0, 2**31 - 1), st.floats(1e-4, 30.0))
def test_the_softmax_hessian_changes_no_faster_than_gamma(k: int, seed: int, scale: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    z = scale * torch.randn(k, generator=gen, dtype=torch.float64)
    dz = torch.randn(k, generator=gen, dtype=torch.float64)
    dz = 1e-3 * dz / dz.norm()
    change = torch.linalg.matrix_norm(softmax_hessian(z + dz) - softmax_hessian(z), ord=2)
    assert float(change) <= SOFTMAX_HESSIAN_LIPSCHITZ * float(dz.norm())


def test_the_spectral_norm_is_that_of_the_inputs_with_a_ones_column(convex_run) -> None:
    x = convex_run.objective.x.to(torch.float64)
    x1 = torch.cat([x.reshape(x.shape[0], -1), torch.ones(x.shape[0], 1, dtype=torch.float64)], dim=1)
    expected = float(torch.linalg.matrix_norm(x1, ord=2))
    assert augmented_spectral_norm(convex_run.objective.x, block=100) == pytest.approx(expected, rel=1e-10)


def sum_gradient(run, w: torch.Tensor, ids: np.ndarray) -> torch.Tensor:
    """grad L(w; S) = |S| grad F_S(w) in float64."""
    objective = run.objective.cast(torch.float64)
    return ids.size * objective.value_and_grad(w.to(torch.float64), ids)[1]


@settings(max_examples=20, deadline=None)
@given(st.floats(1e-3, 3.0), st.integers(0, 2**31 - 1))
def test_the_bound_holds_for_any_step(convex_run, size: float, seed: int) -> None:
    objective = convex_run.objective.cast(torch.float64)
    ids = np.arange(convex_run.n_train)
    w = convex_run.load_model_params().to(torch.float64)
    step = torch.randn(w.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    step = size * step / step.norm()
    taylor = (
        sum_gradient(convex_run, w + step, ids)
        - sum_gradient(convex_run, w, ids)
        - ids.size * objective.hvp(w, step, ids)
    )
    bound = newton_residual_bound(objective, w, step, ids, augmented_spectral_norm(objective.x))
    assert float(taylor.norm()) <= bound


def test_a_newton_removal_cancels_the_change_within_its_bound(convex_run) -> None:
    removed = np.array([5, 17, 300])
    retain = retained_ids(convex_run.n_train, removed)
    w = convex_run.load_model_params().to(torch.float64)
    before = sum_gradient(convex_run, w, np.arange(convex_run.n_train))  # training's own residual
    change = float((sum_gradient(convex_run, w, retain) - before).norm())
    removal = newton_removal_step(convex_run.objective, w, removed, retain)
    assert removal.cg_relative_residual <= 1e-10
    after = sum_gradient(convex_run, w + removal.step, retain)
    bound = newton_residual_bound(
        convex_run.objective, w, removal.step, retain, augmented_spectral_norm(convex_run.objective.x)
    )
    # what is left: training's residual plus the step's Taylor remainder, never more than its bound
    assert float((after - before).norm()) <= bound
    assert bound < 0.1 * change  # and the step did remove the change to first order


def test_the_bound_refuses_a_network(mlp_run) -> None:
    w = mlp_run.load_model_params()
    with pytest.raises(ConfigError, match="linear in the parameters"):
        newton_residual_bound(mlp_run.objective, w, torch.zeros_like(w), np.arange(5), 1.0)
