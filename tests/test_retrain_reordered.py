"""Retraining along another batch order: retraining's noise floor, exact by construction."""

from __future__ import annotations

import numpy as np
import torch

from miniunlearn.ids import random_forget_ids
from miniunlearn.methods import UnlearnRequest, get_method
from miniunlearn.training import retrain


def test_offset_zero_is_retraining_and_another_order_lands_nearer_it_than_the_original(sgd_run) -> None:
    forget = random_forget_ids(sgd_run.n_train, 0.3, seed=4)
    request = UnlearnRequest(sgd_run, forget)
    oracle = retrain(sgd_run, forget)
    same = get_method("retrain-reordered", seed_offset=0).unlearn(request)
    assert torch.equal(same.params, oracle)
    other = get_method("retrain-reordered").unlearn(request)
    assert other.record.diagnostics["batch_order_seed"] == sgd_run.config.seed + 1000
    assert not torch.equal(other.params, oracle)  # another draw of SGD's noise
    noise = float((other.params - oracle).norm())
    original = float((sgd_run.load_model_params() - oracle).norm())
    assert 0 < noise < original
    # it reads no history, and it trains the whole schedule on the retain set
    assert get_method("retrain-reordered").needs_history == ()
    assert other.record.grad_evals == sgd_run.config.epochs * (sgd_run.n_train - forget.size)


def test_a_full_batch_run_has_no_batch_order_to_change(convex_run) -> None:
    forget = np.array([3, 9, 27])
    result = get_method("retrain-reordered").unlearn(UnlearnRequest(convex_run, forget))
    assert torch.equal(result.params, retrain(convex_run, forget))
