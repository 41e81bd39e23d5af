"""Population membership-inference attacks (MIA) on a forget set.

All attacks look at the outputs of ONE model on three groups of samples:

* retain samples R (training members of the model),
* forget samples U (the samples that were supposed to be unlearned),
* test samples T (never trained on: non-members).

The test set is split in two halves with a seed. Half A, together with an equal
number of retain samples, fits/calibrates the attack (members = retain, label 1;
non-members = test-A, label 0). Half B is the non-member reference: the attack is
scored on forget (positives) vs test-B (negatives). As a control, it is also
scored on a held-out slice of retain samples (never used for fitting) vs test-B:
the "retain exposure", which shows how much the attack can see at all.

Interpretation: a model retrained without U treats forget samples like test
samples, so the forget AUC is about 0.5; an original model that overfits gives a
forget AUC above 0.5 (about its retain exposure). An AUC below 0.5 also leaks
information (forget samples look *less* like members than unseen data does).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import log_softmax
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .metrics import _logits_and_labels, logit_scaled_confidence, per_sample_loss

__all__ = [
    "ATTACKS",
    "AttackResult",
    "PopulationMIAReport",
    "attack_features",
    "best_balanced_threshold",
    "population_mia",
    "score_attack",
]

ATTACKS: tuple[str, ...] = ("loss", "confidence")
"""Names of the population attacks :func:`population_mia` knows."""


@dataclass(frozen=True)
class AttackResult:
    """Scores of one attack on positives (e.g. forget) vs negatives (unseen data).

    ``auc``: area under the ROC curve (0.5 = no signal). ``balanced_accuracy``:
    mean of TPR and TNR at ``threshold`` (chosen on calibration data, not on
    these samples, unless stated otherwise). ``tpr_at_1pct_fpr``: the highest TPR
    at FPR <= 1 %. ``fpr``/``tpr``: the ROC curve, for plotting.
    ``efficacy``: the share of positives the attack calls non-members at ``threshold``; on a
    forget set this is the "MIA efficacy" of the sparsity and SalUn papers (higher = the
    forgotten samples look less like training members).
    """

    name: str
    auc: float
    balanced_accuracy: float
    tpr_at_1pct_fpr: float
    fpr: np.ndarray = field(repr=False)
    tpr: np.ndarray = field(repr=False)
    threshold: float = math.nan
    n_pos: int = 0
    n_neg: int = 0
    efficacy: float = math.nan

    def summary(self) -> dict[str, float | int | str]:
        """Return the scalar fields as a plain dict (no ROC arrays)."""
        return {
            "name": self.name,
            "auc": self.auc,
            "balanced_accuracy": self.balanced_accuracy,
            "tpr_at_1pct_fpr": self.tpr_at_1pct_fpr,
            "efficacy": self.efficacy,
            "threshold": self.threshold,
            "n_pos": self.n_pos,
            "n_neg": self.n_neg,
        }


@dataclass(frozen=True)
class PopulationMIAReport:
    """Result of :func:`population_mia`.

    ``forget[name]``: attack ``name`` on forget vs test-B (the unlearning signal).
    ``retain[name]``: the same attack on held-out retain vs test-B (control).
    ``n_fit``: samples per class used to fit each attack; ``seed``: the split seed.
    """

    forget: dict[str, AttackResult]
    retain: dict[str, AttackResult]
    n_fit: int
    seed: int

    def forget_auc(self, name: str = "confidence") -> float:
        """Return the forget-set AUC of attack ``name``."""
        return self.forget[name].auc

    def summary(self) -> dict[str, float]:
        """Flat dict ``{"<group>_<attack>_<metric>": value}`` of every scalar metric."""
        out: dict[str, float] = {}
        for group, results in (("forget", self.forget), ("retain", self.retain)):
            for name, res in results.items():
                for metric in ("auc", "balanced_accuracy", "tpr_at_1pct_fpr"):
                    out[f"{group}_{name}_{metric}"] = float(getattr(res, metric))
        return out


def best_balanced_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Threshold maximising balanced accuracy of the rule ``score >= t`` -> member.

    Takes scores ``(n,)`` and 0/1 labels ``(n,)`` with both classes present.
    Returns ``(threshold, balanced_accuracy)``; the threshold is the midpoint
    between adjacent distinct scores, so it generalises to new scores.
    """
    s = np.asarray(scores, dtype=np.float64)
    lab = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(lab.sum()), int((~lab).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("threshold calibration needs both members and non-members")
    order = np.argsort(-s, kind="stable")
    s_sorted, lab_sorted = s[order], lab[order]
    # Candidate cut after position k (k = 0..n): predict member for the first k.
    tp = np.concatenate([[0], np.cumsum(lab_sorted)])
    fp = np.concatenate([[0], np.cumsum(~lab_sorted)])
    # Only cut between distinct scores (or at the ends).
    valid = np.ones(len(s) + 1, dtype=bool)
    valid[1:-1] = s_sorted[:-1] != s_sorted[1:]
    bal = 0.5 * (tp / n_pos + 1.0 - fp / n_neg)
    bal = np.where(valid, bal, -np.inf)
    k = int(np.argmax(bal))
    if k == 0:
        thr = math.inf
    elif k == len(s):
        thr = -math.inf
    else:
        thr = 0.5 * (s_sorted[k - 1] + s_sorted[k])
    return float(thr), float(bal[k])


def score_attack(
    name: str,
    pos_scores: Any,
    neg_scores: Any,
    threshold: float | None = None,
) -> AttackResult:
    """Evaluate attack scores (higher = "member") on positives vs negatives.

    Takes the attack name, scores of positives and negatives (1-D), and an
    optional threshold fixed beforehand on other data. Without a threshold the
    best one on these very samples is used (optimistic; the result's
    ``threshold`` says which). Returns an :class:`AttackResult`.
    """
    pos = np.asarray(pos_scores, dtype=np.float64).reshape(-1)
    neg = np.asarray(neg_scores, dtype=np.float64).reshape(-1)
    if pos.size == 0 or neg.size == 0:
        raise ValueError(f"attack '{name}' needs positives and negatives, got {pos.size} and {neg.size}")
    if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(neg))):
        raise ValueError(f"attack '{name}' produced NaN or infinite scores")
    scores = np.concatenate([pos, neg])
    labels = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])
    auc = float(roc_auc_score(labels, scores))
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    tpr_low = float(tpr[np.searchsorted(fpr, 0.01, side="right") - 1])
    if threshold is None:
        threshold, bal = best_balanced_threshold(scores, labels)
    else:
        bal = 0.5 * (float(np.mean(pos >= threshold)) + float(np.mean(neg < threshold)))
    return AttackResult(
        name=name,
        auc=auc,
        balanced_accuracy=bal,
        tpr_at_1pct_fpr=tpr_low,
        fpr=fpr,
        tpr=tpr,
        threshold=float(threshold),
        n_pos=int(pos.size),
        n_neg=int(neg.size),
        efficacy=float(np.mean(pos < threshold)),
    )


def attack_features(logits: Any, y: Any) -> np.ndarray:
    """Per-sample attack features from ``(n, c)`` logits and ``(n,)`` labels.

    Returns float64 ``(n, 4)`` columns: cross-entropy loss, max softmax
    probability, prediction entropy, logit-scaled confidence of the true class.
    """
    z, labels = _logits_and_labels(logits, y)
    log_p = log_softmax(z, axis=1)
    p = np.exp(log_p)
    return np.column_stack(
        [
            per_sample_loss(z, labels),
            p.max(axis=1),
            -np.sum(p * log_p, axis=1),
            logit_scaled_confidence(z, labels),
        ]
    )


def _split(
    n_retain: int, n_test: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Indices: retain-fit, retain-holdout, test-A (fit), test-B (reference)."""
    test_perm = rng.permutation(n_test)
    half = n_test // 2
    test_a, test_b = test_perm[:half], test_perm[half:]
    n_fit = min(half, n_retain // 2)
    retain_perm = rng.permutation(n_retain)
    retain_fit = retain_perm[:n_fit]
    retain_hold = retain_perm[n_fit : n_fit + min(test_b.size, n_retain - n_fit)]
    return retain_fit, retain_hold, test_a[:n_fit], test_b


def population_mia(
    retain_logits: Any,
    retain_y: Any,
    forget_logits: Any,
    forget_y: Any,
    test_logits: Any,
    test_y: Any,
    *,
    seed: int = 0,
    attacks: Sequence[str] = ATTACKS,
) -> PopulationMIAReport:
    """Run population membership-inference attacks against one model's outputs.

    Takes the model's ``(n, c)`` logits and ``(n,)`` labels on retain, forget and
    test samples (numpy or torch), a split seed, and which attacks to run:

    * ``"loss"``: score = -loss; threshold for best balanced accuracy chosen on
      retain-fit vs test-A.
    * ``"confidence"``: logistic regression on standardised features (loss, max
      probability, entropy, logit-scaled confidence), trained on retain-fit
      (label 1) vs test-A (label 0); score = predicted member log-odds,
      threshold calibrated on the fit data in the same way.

    The test set is split in halves A/B with ``seed``; retain samples are
    subsampled to |A| for fitting (at most half of them), and a disjoint slice
    of up to |B| retain samples is the held-out control. Needs at least 4 test
    samples, 2 retain samples and 1 forget sample. Returns a
    :class:`PopulationMIAReport` (forget vs test-B, held-out retain vs test-B).
    """
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown or not attacks:
        raise ValueError(f"unknown or no attacks {list(unknown)}; choose from {list(ATTACKS)}")
    f_retain = attack_features(retain_logits, retain_y)
    f_forget = attack_features(forget_logits, forget_y)
    f_test = attack_features(test_logits, test_y)
    n_classes = {np.shape(x)[1] for x in (retain_logits, forget_logits, test_logits)}
    if len(n_classes) != 1:
        raise ValueError(f"retain, forget and test logits have different class counts {n_classes}")
    if f_test.shape[0] < 4 or f_retain.shape[0] < 2 or f_forget.shape[0] < 1:
        raise ValueError(
            "population MIA needs >= 4 test, >= 2 retain and >= 1 forget samples, got "
            f"{f_test.shape[0]}, {f_retain.shape[0]}, {f_forget.shape[0]}"
        )
    rng = np.random.default_rng(seed)
    r_fit, r_hold, t_a, t_b = _split(f_retain.shape[0], f_test.shape[0], rng)
    x_fit = np.concatenate([f_retain[r_fit], f_test[t_a]])
    y_fit = np.concatenate([np.ones(r_fit.size), np.zeros(t_a.size)])

    forget: dict[str, AttackResult] = {}
    retain: dict[str, AttackResult] = {}
    for name in attacks:
        if name == "loss":

            def score(f: np.ndarray) -> np.ndarray:
                return -f[:, 0]

        else:
            model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
            model.fit(x_fit, y_fit)

            def score(f: np.ndarray, model: Any = model) -> np.ndarray:
                return model.decision_function(f)

        thr, _ = best_balanced_threshold(score(x_fit), y_fit)
        neg = score(f_test[t_b])
        forget[name] = score_attack(name, score(f_forget), neg, threshold=thr)
        if r_hold.size:
            retain[name] = score_attack(name, score(f_retain[r_hold]), neg, threshold=thr)
    return PopulationMIAReport(forget=forget, retain=retain, n_fit=int(r_fit.size), seed=seed)
