"""U-LiRA sanity checks with real (tiny) training on a digits subset.

The model is multinomial logistic regression on 8x8 digits, trained full-batch
with L-BFGS and no regularisation on ~100 samples, so it overfits: members get
much higher confidence than unseen samples. Two unlearning "methods":

* identity (no unlearning): forgotten samples are still members, so the attack
  must succeed;
* exact retraining without the forget set: forgotten samples are never-seen
  samples, so the attack must be at chance.

Calibration (seeds 0-19 of exactly this configuration, measured while writing
this test): identity AUC 0.711 +- 0.031 (min 0.657), balanced accuracy at the
shadow threshold 0.634 +- 0.024 (min 0.586); retrain AUC 0.501 +- 0.021
(range 0.466-0.540), balanced accuracy 0.499 +- 0.013. Each run pools 4
targets: ~200 forgotten vs 400 never-seen scores (iid null sd ~0.025). Hence
the bounds, each ~3.5-4 sd from the observed means: identity AUC > 0.6 and
balanced accuracy > 0.55; |retrain AUC - 0.5| < 0.08. The test uses seed 0
(identity 0.696, retrain 0.490).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from miniunlearn.evaluation.metrics import logit_scaled_confidence
from miniunlearn.evaluation.ulira import (
    ULiRAResult,
    _Moments,
    _plan_models,
    member_set_hash,
    ulira_attack,
)

N_POOL = 200
CONFIG = {"n_shadows": 16, "n_targets": 4, "forget_fraction": 0.5}


@lru_cache(maxsize=1)
def pool() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_digits(return_X_y=True)
    idx = np.random.default_rng(0).permutation(len(y))[:N_POOL]
    return torch.tensor(x[idx] / 16.0, dtype=torch.float64), torch.tensor(y[idx])


def train(member_ids: np.ndarray, seed: int) -> torch.nn.Linear:
    """Unregularised softmax regression, full-batch L-BFGS."""
    x, y = pool()
    torch.manual_seed(seed)
    model = torch.nn.Linear(64, 10).double()
    opt = torch.optim.LBFGS(model.parameters(), max_iter=100, line_search_fn="strong_wolfe")
    xb, yb = x[member_ids], y[member_ids]

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        return loss

    opt.step(closure)
    return model


def confidence(model: torch.nn.Linear, ids: np.ndarray) -> np.ndarray:
    x, y = pool()
    with torch.no_grad():
        return logit_scaled_confidence(model(x[ids]), y[ids])


def no_unlearning(state, forget_ids, member_ids, seed):  # noqa: ANN001, ANN201
    return state


def retrain(state, forget_ids, member_ids, seed):  # noqa: ANN001, ANN201
    return train(np.setdiff1d(member_ids, forget_ids), seed)


def counting(fn: Callable, calls: list[int]) -> Callable:
    def wrapped(*args):  # noqa: ANN002, ANN202
        calls.append(1)
        return fn(*args)

    return wrapped


@pytest.fixture(scope="module")
def results() -> dict[str, ULiRAResult]:
    cache: dict = {}
    calls: list[int] = []
    out = {
        "identity": ulira_attack(
            N_POOL, counting(train, calls), no_unlearning, confidence, seed=0, cache=cache, **CONFIG
        )
    }
    first = len(calls)
    out["retrain"] = ulira_attack(
        N_POOL, counting(train, calls), retrain, confidence, seed=0, cache=cache, progress=True, **CONFIG
    )
    out["_train_calls"] = (first, len(calls) - first)  # type: ignore[assignment]
    return out


def test_attack_succeeds_without_unlearning(results: dict) -> None:
    res = results["identity"]
    assert res.auc > 0.6, res.auc
    assert res.shadow_auc > 0.6
    assert res.balanced_accuracy > 0.55  # threshold taken from the shadows
    assert res.balanced_accuracy_oracle >= res.balanced_accuracy


def test_attack_fails_against_exact_retraining(results: dict) -> None:
    res = results["retrain"]
    assert abs(res.auc - 0.5) < 0.08, res.auc
    assert abs(res.balanced_accuracy - 0.5) < 0.08
    assert results["identity"].auc - res.auc > 0.1


def test_cache_reuses_trained_states(results: dict) -> None:
    first, second = results["_train_calls"]
    assert first == CONFIG["n_shadows"] + CONFIG["n_targets"]
    assert second == 0  # every trained state came from the cache


def test_result_structure(results: dict) -> None:
    res = results["identity"]
    assert res.n_pos > 0 and res.n_neg > 0
    assert res.per_target_auc.shape == (CONFIG["n_targets"],)
    assert res.fpr.shape == res.tpr.shape
    assert 0.0 <= res.tpr_at_1pct_fpr <= 1.0
    attack = res.as_attack_result()
    assert attack.auc == res.auc and attack.name == "ulira"


def test_plan_is_balanced() -> None:
    ss = np.random.SeedSequence(5)
    keep, forget, seeds = _plan_models(101, 8, 0.3, ss)
    assert (keep.sum(axis=0) == 4).all()  # every sample in exactly half of the models
    assert not (forget & ~keep).any()  # forget sets are subsets of the members
    counts = forget.sum(axis=0)
    assert counts.max() - counts.min() <= 2  # greedy balancing under membership constraints
    assert abs(counts.mean() - 8 / 2 * 0.3) < 0.1
    np.testing.assert_allclose(forget.sum(axis=1), np.round(0.3 * keep.sum(axis=1)))
    assert seeds.shape == (8, 2)
    keep2, _, seeds2 = _plan_models(101, 8, 0.1, np.random.SeedSequence(5))
    assert (keep2 == keep).all() and (seeds2 == seeds).all()  # independent of the fraction


def test_leave_one_out_moments_match_recomputation() -> None:
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(6, 9))
    obs[rng.random(obs.shape) < 0.4] = np.nan
    full = _Moments.of(obs)
    loo = full.without(obs[2])
    ref = _Moments.of(np.delete(obs, 2, axis=0))
    for a, b in ((loo.n, ref.n), (loo.s1, ref.s1), (loo.s2, ref.s2)):
        np.testing.assert_allclose(a, b, atol=1e-12)
    mu, sd = ref.gaussians(0.0, 1.0, min_obs_for_std=3, std_floor_frac=0.25, fix_variance=False)
    for i in range(9):
        col = np.delete(obs, 2, axis=0)[:, i]
        col = col[~np.isnan(col)]
        assert mu[i] == pytest.approx(col.mean() if col.size else 0.0)
        if col.size >= 3:
            assert sd[i] == pytest.approx(max(col.std(ddof=1), 0.25))
        else:
            assert sd[i] == 1.0


def test_member_set_hash_is_order_free() -> None:
    assert member_set_hash(np.array([3, 1, 2])) == member_set_hash(np.array([1, 2, 3]))
    assert member_set_hash(np.array([1, 2])) != member_set_hash(np.array([1, 3]))


def test_validation() -> None:
    with pytest.raises(ValueError, match="forget_fraction"):
        ulira_attack(N_POOL, train, no_unlearning, confidence, forget_fraction=1.0)
    with pytest.raises(ValueError, match="n_shadows"):
        ulira_attack(N_POOL, train, no_unlearning, confidence, n_shadows=1)
    with pytest.raises(ValueError, match="confidence_fn returned"):
        ulira_attack(
            20, lambda m, s: None, no_unlearning, lambda s, ids: np.zeros(1), n_shadows=2, n_targets=1
        )
