"""Per-model metrics on logits and parameters.

Every function accepts numpy arrays or torch tensors (any device, any float dtype)
and computes in float64 numpy, so results do not depend on where a model ran.
Logits are ``(n_samples, n_classes)``; labels are integer class ids ``(n_samples,)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from scipy.special import log_softmax, logsumexp

__all__ = [
    "accuracy",
    "compare_to_retrain",
    "entropy",
    "logit_scaled_confidence",
    "mean_kl",
    "param_distance",
    "per_sample_loss",
    "to_numpy",
]


def to_numpy(x: Any, dtype: Any = None) -> np.ndarray:
    """Return ``x`` (numpy array, torch tensor, or sequence) as a numpy array.

    Tensors are detached and moved to the CPU. ``dtype`` optionally casts the result.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype == torch.bfloat16 or x.dtype == torch.float16:
            x = x.float()
        x = x.numpy()
    arr = np.asarray(x)
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    return arr


def _logits_and_labels(logits: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert a ``(n, c)`` logit matrix and ``(n,)`` label vector."""
    z = to_numpy(logits, np.float64)
    labels = to_numpy(y)
    if z.ndim != 2:
        raise ValueError(f"logits must be 2-D (n_samples, n_classes), got shape {z.shape}")
    if z.shape[1] < 2:
        raise ValueError(f"logits need at least 2 classes, got {z.shape[1]}")
    if labels.ndim != 1 or labels.shape[0] != z.shape[0]:
        raise ValueError(
            f"labels must be 1-D with one entry per logit row: labels shape {labels.shape}, "
            f"logits shape {z.shape}"
        )
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.equal(np.mod(labels, 1), 0)):
            raise ValueError("labels must be integer class ids")
        labels = labels.astype(np.int64)
    labels = labels.astype(np.int64, copy=False)
    if labels.size and (labels.min() < 0 or labels.max() >= z.shape[1]):
        raise ValueError(
            f"labels must lie in [0, {z.shape[1] - 1}], got range [{labels.min()}, {labels.max()}]"
        )
    if not np.all(np.isfinite(z)):
        raise ValueError("logits contain NaN or infinite values")
    return z, labels


def accuracy(logits: Any, y: Any) -> float:
    """Fraction of rows whose arg-max logit equals the label.

    Takes ``(n, c)`` logits and ``(n,)`` labels; returns a float in [0, 1]
    (NaN for zero samples).
    """
    z, labels = _logits_and_labels(logits, y)
    if labels.size == 0:
        return math.nan
    return float(np.mean(np.argmax(z, axis=1) == labels))


def _flatten_params(w: Any) -> np.ndarray:
    """Concatenate a tensor, array, state dict, or iterable of them into one float64 vector."""
    if isinstance(w, torch.nn.Module):
        w = list(w.parameters())
    if isinstance(w, Mapping):
        parts = [_flatten_params(w[k]) for k in sorted(w)]
    elif isinstance(w, torch.Tensor | np.ndarray) or np.isscalar(w):
        return to_numpy(w, np.float64).reshape(-1)
    elif isinstance(w, Iterable):
        parts = [_flatten_params(p) for p in w]
    else:
        raise ValueError(f"cannot read parameters from an object of type {type(w).__name__}")
    if not parts:
        return np.zeros(0, dtype=np.float64)
    return np.concatenate(parts)


def param_distance(w_a: Any, w_b: Any) -> float:
    """Euclidean (L2) distance between two parameter sets, flattened.

    ``w_a``/``w_b`` may each be a tensor or array, a sequence of them (e.g.
    ``list(model.parameters())``), a state dict (keys are sorted, so both must
    have the same keys), or an ``nn.Module``. Returns a non-negative float.
    """
    if isinstance(w_a, Mapping) and isinstance(w_b, Mapping) and set(w_a) != set(w_b):
        missing = sorted(set(w_a) ^ set(w_b))
        raise ValueError(f"state dicts have different keys: {missing[:5]}")
    a = _flatten_params(w_a)
    b = _flatten_params(w_b)
    if a.shape != b.shape:
        raise ValueError(
            f"parameter sets have different sizes ({a.size} vs {b.size} values); "
            "are they from the same architecture?"
        )
    return float(np.linalg.norm(a - b))


def mean_kl(logits_ref: Any, logits_other: Any) -> float:
    """Mean over samples of KL(p_ref || p_other), with ``p = softmax(logits)``.

    Both inputs are ``(n, c)`` logits for the same samples. Computed from
    log-softmax so large logits do not overflow. Returns a float >= 0 (nats).
    """
    a = to_numpy(logits_ref, np.float64)
    b = to_numpy(logits_other, np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"logits must be 2-D with equal shapes, got {a.shape} and {b.shape}")
    if a.shape[0] == 0:
        return math.nan
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("logits contain NaN or infinite values")
    log_p = log_softmax(a, axis=1)
    log_q = log_softmax(b, axis=1)
    kl = np.sum(np.exp(log_p) * (log_p - log_q), axis=1)
    # Rounding can give tiny negative values for identical distributions.
    return float(np.mean(np.maximum(kl, 0.0)))


def per_sample_loss(logits: Any, y: Any) -> np.ndarray:
    """Cross-entropy of each sample: ``logsumexp(z) - z_y``.

    Computed as ``log(1 + exp(-phi))`` from the logit-scaled confidence ``phi``, so the
    loss of a confidently right sample stays positive and distinct (``logsumexp(z) - z_y``
    rounds every margin above ~37 to exactly 0, which ties memorised and merely easy
    samples and blinds a loss-threshold attack). Takes ``(n, c)`` logits and ``(n,)``
    labels; returns a float64 array ``(n,)``.
    """
    return np.logaddexp(0.0, -logit_scaled_confidence(logits, y))


def logit_scaled_confidence(logits: Any, y: Any) -> np.ndarray:
    """Logit-scaled confidence ``phi = log p_y - log(1 - p_y)`` of the true class.

    Computed exactly and stably as ``z_y - logsumexp(z_j, j != y)``, so it stays
    finite even when ``p_y`` rounds to 1. Takes ``(n, c)`` logits and ``(n,)``
    labels; returns a float64 array ``(n,)``.
    """
    z, labels = _logits_and_labels(logits, y)
    rows = np.arange(z.shape[0])
    z_true = z[rows, labels].copy()
    others = z.copy()
    others[rows, labels] = -np.inf
    return z_true - logsumexp(others, axis=1)


def entropy(logits: Any) -> np.ndarray:
    """Shannon entropy (nats) of ``softmax(logits)`` for each row of ``(n, c)`` logits."""
    z = to_numpy(logits, np.float64)
    if z.ndim != 2:
        raise ValueError(f"logits must be 2-D (n_samples, n_classes), got shape {z.shape}")
    log_p = log_softmax(z, axis=1)
    return -np.sum(np.exp(log_p) * log_p, axis=1)


def compare_to_retrain(
    unlearned: Mapping[str, float | None],
    retrained: Mapping[str, float | None],
    keys: Iterable[str] | None = None,
) -> dict[str, float]:
    """Gaps between an unlearned model's metrics and the retrained model's.

    Takes two dicts of numbers (e.g. ``{"test_acc": .., "retain_acc": ..,
    "forget_acc": ..}``) and optionally the keys to compare (default: the keys
    both dicts share, sorted). Returns ``{key: unlearned[key] - retrained[key]}``
    (signed; positive = the unlearned model scores higher) plus ``"avg_abs_gap"``,
    the mean absolute gap over the keys whose gap is finite. A missing or None
    value gives a NaN gap.
    """
    names = sorted(set(unlearned) & set(retrained)) if keys is None else list(keys)
    if not names:
        raise ValueError(
            "no metric to compare: the two dicts share no keys "
            f"(unlearned: {sorted(unlearned)}, retrained: {sorted(retrained)})"
        )
    gaps: dict[str, float] = {}
    for name in names:
        u, r = unlearned.get(name), retrained.get(name)
        gaps[name] = math.nan if u is None or r is None else float(u) - float(r)
    finite = [abs(g) for g in gaps.values() if math.isfinite(g)]
    gaps["avg_abs_gap"] = float(np.mean(finite)) if finite else math.nan
    return gaps
