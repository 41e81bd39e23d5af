"""Population membership-inference attacks on synthetic model outputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from miniunlearn.evaluation.attacks import (
    AttackResult,
    PopulationMIAReport,
    best_balanced_threshold,
    population_mia,
    score_attack,
)

N_CLASSES = 10


def fake_logits(n: int, margin: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose true class is ahead by about ``margin`` (higher = more 'member')."""
    y = rng.integers(0, N_CLASSES, size=n)
    z = rng.normal(size=(n, N_CLASSES))
    z[np.arange(n), y] += rng.normal(margin, 1.0, size=n)
    return z, y


def run(forget_margin: float, member_margin: float = 5.0, seed: int = 0) -> PopulationMIAReport:
    rng = np.random.default_rng(seed)
    retain = fake_logits(4000, member_margin, rng)
    forget = fake_logits(500, forget_margin, rng)
    test = fake_logits(2000, 2.0, rng)
    return population_mia(*retain, *forget, *test, seed=seed)


# With 500 forget samples vs 1000 test-B samples the null AUC has standard
# deviation sqrt((n1 + n2 + 1) / (12 n1 n2)) ~= 0.016, so 0.06 is ~4 sd.
NULL_TOL = 0.06


def test_members_with_lower_loss_are_detected() -> None:
    report = run(forget_margin=5.0)  # forget samples look like retain: not unlearned
    for name in ("loss", "confidence"):
        res = report.forget[name]
        assert res.auc > 0.75, (name, res.auc)
        assert res.balanced_accuracy > 0.65
        assert report.retain[name].auc > 0.75
        assert abs(res.auc - report.retain[name].auc) < NULL_TOL
    assert report.n_fit == 1000


def test_forget_like_test_gives_chance_auc() -> None:
    # A retrained model: forget samples come from the test distribution.
    report = run(forget_margin=2.0)
    for name in ("loss", "confidence"):
        assert abs(report.forget[name].auc - 0.5) < NULL_TOL, (name, report.forget[name].auc)
        assert abs(report.forget[name].balanced_accuracy - 0.5) < NULL_TOL
        assert report.retain[name].auc > 0.75  # the attack itself works


def test_identical_distributions_everywhere_give_chance() -> None:
    report = run(forget_margin=2.0, member_margin=2.0, seed=3)
    for group in (report.forget, report.retain):
        for res in group.values():
            assert abs(res.auc - 0.5) < NULL_TOL


def test_report_structure_and_torch_inputs() -> None:
    rng = np.random.default_rng(1)
    parts = [fake_logits(n, m, rng) for n, m in ((300, 4.0), (50, 4.0), (200, 1.0))]
    args = [torch.tensor(a) for pair in parts for a in pair]
    report = population_mia(*args, seed=7, attacks=["loss"])
    assert set(report.forget) == {"loss"} == set(report.retain)
    res = report.forget["loss"]
    assert isinstance(res, AttackResult)
    assert res.n_pos == 50 and res.n_neg == 100
    assert res.fpr.shape == res.tpr.shape and res.fpr[0] == 0.0 and res.fpr[-1] == 1.0
    assert np.all(np.diff(res.fpr) >= 0) and np.all(np.diff(res.tpr) >= 0)
    assert 0.0 <= res.tpr_at_1pct_fpr <= 1.0
    summary = report.summary()
    assert summary["forget_loss_auc"] == res.auc
    assert report.forget_auc("loss") == res.auc
    # Same seed, same split, same result.
    again = population_mia(*args, seed=7, attacks=["loss"])
    assert again.forget["loss"].auc == res.auc


def test_population_mia_validation() -> None:
    rng = np.random.default_rng(0)
    z, y = fake_logits(10, 1.0, rng)
    with pytest.raises(ValueError, match="unknown"):
        population_mia(z, y, z, y, z, y, attacks=["nope"])
    with pytest.raises(ValueError, match=">= 4 test"):
        population_mia(z, y, z, y, z[:3], y[:3])
    with pytest.raises(ValueError, match="class counts"):
        population_mia(z, y, z[:, :5], y % 5, z, y)


def test_best_balanced_threshold_hand_case() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    labels = np.array([0, 0, 1, 1, 1])
    thr, bal = best_balanced_threshold(scores, labels)
    assert thr == pytest.approx(0.25) and bal == 1.0
    # Ties are never split.
    thr, bal = best_balanced_threshold(np.array([0.5, 0.5, 0.5]), np.array([1, 0, 1]))
    assert bal == 0.5 and math.isinf(thr)


def test_score_attack_hand_case() -> None:
    res = score_attack("x", [3.0, 2.0, 0.5], [1.0, 0.0, -1.0], threshold=1.5)
    assert res.auc == pytest.approx(8 / 9)
    assert res.balanced_accuracy == pytest.approx(0.5 * (2 / 3 + 1.0))
    # Lowest FPR reached is 0 with TPR 2/3 (one positive below the top negative).
    assert res.tpr_at_1pct_fpr == pytest.approx(2 / 3)
    oracle = score_attack("x", [3.0, 2.0, 0.5], [1.0, 0.0, -1.0])
    assert oracle.balanced_accuracy >= res.balanced_accuracy
    with pytest.raises(ValueError, match="positives and negatives"):
        score_attack("x", [], [1.0])
