"""Evaluation of unlearning: metrics, membership-inference attacks, reports and plots.

This layer works on arrays and on callables passed in; it never imports the
training or method code. Plots live in :mod:`miniunlearn.evaluation.plots`
(imported on demand, since it loads matplotlib).
"""

from .attacks import (
    ATTACKS,
    AttackResult,
    PopulationMIAReport,
    attack_features,
    best_balanced_threshold,
    population_mia,
    score_attack,
)
from .metrics import (
    accuracy,
    compare_to_retrain,
    entropy,
    logit_scaled_confidence,
    mean_kl,
    param_distance,
    per_sample_loss,
    to_numpy,
)
from .report import markdown_table, summarise
from .ulira import ULiRAResult, member_set_hash, ulira_attack

__all__ = [
    "ATTACKS",
    "AttackResult",
    "PopulationMIAReport",
    "ULiRAResult",
    "accuracy",
    "attack_features",
    "best_balanced_threshold",
    "compare_to_retrain",
    "entropy",
    "logit_scaled_confidence",
    "markdown_table",
    "mean_kl",
    "member_set_hash",
    "param_distance",
    "per_sample_loss",
    "population_mia",
    "score_attack",
    "summarise",
    "to_numpy",
    "ulira_attack",
]
