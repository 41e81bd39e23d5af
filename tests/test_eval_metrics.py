"""Metrics of the evaluation layer against hand-computed values and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from miniunlearn.evaluation.metrics import (
    accuracy,
    compare_to_retrain,
    entropy,
    logit_scaled_confidence,
    mean_kl,
    param_distance,
    per_sample_loss,
)

LOGITS = np.array([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0], [-1.0, 3.0, 1.0]])
LABELS = np.array([0, 2, 2])

logit_rows = st.integers(1, 8).flatmap(
    lambda n: st.integers(2, 6).flatmap(
        lambda c: st.tuples(
            arrays(np.float64, (n, c), elements=st.floats(-30, 30)),
            arrays(np.int64, (n,), elements=st.integers(0, c - 1)),
        )
    )
)


def test_accuracy_hand_computed() -> None:
    # Row 0 predicts 0 (correct), row 1 ties -> argmax 0 (wrong), row 2 predicts 1 (wrong).
    assert accuracy(LOGITS, LABELS) == pytest.approx(1 / 3)
    assert accuracy(torch.tensor(LOGITS), torch.tensor(LABELS)) == pytest.approx(1 / 3)


def test_per_sample_loss_hand_computed() -> None:
    lse0 = math.log(math.e**2 + math.e + 1)
    expected = [lse0 - 2.0, math.log(3.0), math.log(math.exp(-1) + math.e**3 + math.e) - 1.0]
    loss = per_sample_loss(LOGITS, LABELS)
    assert loss.dtype == np.float64
    np.testing.assert_allclose(loss, expected, rtol=1e-12)
    torch_loss = torch.nn.functional.cross_entropy(
        torch.tensor(LOGITS), torch.tensor(LABELS), reduction="none"
    )
    np.testing.assert_allclose(loss, torch_loss.numpy(), rtol=1e-12)


def test_phi_hand_computed_and_stable() -> None:
    # Two classes: phi = z_y - z_other exactly.
    z = np.array([[3.0, 1.0], [0.0, 50.0]])
    np.testing.assert_allclose(logit_scaled_confidence(z, [0, 0]), [2.0, -50.0])
    # p_y rounds to 1 in float64, but phi stays finite and exact.
    big = np.array([[1000.0, 0.0, 0.0]])
    assert logit_scaled_confidence(big, [0])[0] == pytest.approx(1000.0 - math.log(2.0))
    # float32 torch input works too.
    out = logit_scaled_confidence(torch.tensor(big, dtype=torch.float32), torch.tensor([0]))
    assert np.isfinite(out).all()


@settings(max_examples=60, deadline=None)
@given(logit_rows)
def test_phi_matches_naive_formula(data: tuple[np.ndarray, np.ndarray]) -> None:
    z, y = data
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    py = p[np.arange(len(y)), y]
    ok = (py > 1e-12) & (py < 1 - 1e-9)  # where the naive formula is stable
    naive = np.log(py[ok]) - np.log1p(-py[ok])
    np.testing.assert_allclose(logit_scaled_confidence(z, y)[ok], naive, rtol=1e-6, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(logit_rows, st.integers(0, 2**16))
def test_kl_nonnegative_and_zero_on_identity(data: tuple[np.ndarray, np.ndarray], seed: int) -> None:
    z, _ = data
    other = z + np.random.default_rng(seed).normal(size=z.shape)
    assert mean_kl(z, z) == pytest.approx(0.0, abs=1e-12)
    assert mean_kl(z, z + 7.0) == pytest.approx(0.0, abs=1e-9)  # softmax is shift-invariant
    assert mean_kl(z, other) >= 0.0


@settings(max_examples=60, deadline=None)
@given(logit_rows)
def test_accuracy_bounds_and_loss_nonnegative(data: tuple[np.ndarray, np.ndarray]) -> None:
    z, y = data
    assert 0.0 <= accuracy(z, y) <= 1.0
    assert (per_sample_loss(z, y) >= 0).all()
    assert (entropy(z) >= -1e-12).all()
    assert accuracy(z, np.argmax(z, axis=1)) == 1.0


def test_mean_kl_hand_computed() -> None:
    p = np.array([0.5, 0.5])
    q = np.array([0.9, 0.1])
    expected = float(np.sum(p * np.log(p / q)))
    assert mean_kl(np.log(p)[None], np.log(q)[None]) == pytest.approx(expected, rel=1e-12)
    # Mean over samples, direction KL(ref || other).
    two = mean_kl(np.log([p, q]), np.log([q, q]))
    assert two == pytest.approx(expected / 2, rel=1e-12)


def test_param_distance_accepts_many_forms() -> None:
    a = [torch.zeros(2, 2), torch.zeros(3)]
    b = [torch.ones(2, 2), torch.full((3,), 2.0)]
    expected = math.sqrt(4 * 1 + 3 * 4)
    assert param_distance(a, b) == pytest.approx(expected)
    assert param_distance({"w": a[0], "b": a[1]}, {"b": b[1], "w": b[0]}) == pytest.approx(expected)
    assert param_distance(np.zeros(3), np.array([3.0, 4.0, 0.0])) == pytest.approx(5.0)
    lin = torch.nn.Linear(3, 2)
    assert param_distance(lin, lin) == 0.0
    with pytest.raises(ValueError, match="different sizes"):
        param_distance(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="different keys"):
        param_distance({"a": np.zeros(1)}, {"b": np.zeros(1)})


def test_compare_to_retrain_gaps() -> None:
    gaps = compare_to_retrain(
        {"test_acc": 0.90, "forget_acc": 0.99, "retain_acc": None},
        {"test_acc": 0.92, "forget_acc": 0.90, "retain_acc": 1.0, "other": 1.0},
    )
    assert set(gaps) == {"test_acc", "forget_acc", "retain_acc", "avg_abs_gap"}
    assert gaps["test_acc"] == pytest.approx(-0.02)
    assert gaps["forget_acc"] == pytest.approx(0.09)
    assert math.isnan(gaps["retain_acc"])
    assert gaps["avg_abs_gap"] == pytest.approx((0.02 + 0.09) / 2)
    with pytest.raises(ValueError, match="share no keys"):
        compare_to_retrain({"a": 1.0}, {"b": 1.0})


def test_input_validation() -> None:
    with pytest.raises(ValueError, match="2-D"):
        accuracy(np.zeros(3), np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="one entry per logit row"):
        per_sample_loss(np.zeros((3, 2)), np.zeros(2, dtype=int))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\]"):
        per_sample_loss(np.zeros((2, 2)), np.array([0, 2]))
    with pytest.raises(ValueError, match="NaN"):
        logit_scaled_confidence(np.array([[np.nan, 0.0]]), [0])
