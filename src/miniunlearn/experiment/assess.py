"""Judge an unlearned model next to the retrained one: accuracy, distance, KL, MIA."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..evaluation.attacks import population_mia
from ..evaluation.metrics import accuracy, mean_kl, param_distance
from ..progress import progress_bar
from ..training.rundir import Run

ROWS_PER_BLOCK = 262_144


def model_logits(run: Run, params: torch.Tensor, x: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Logits of ``params`` on ``x`` (the ``rows`` of it, all when None), gathered a block of
    rows at a time so that no copy of a whole split is made."""
    n = x.shape[0] if rows is None else rows.size
    blocks = []
    for start in range(0, n, ROWS_PER_BLOCK):
        part = slice(start, start + ROWS_PER_BLOCK)
        block = np.ascontiguousarray(x[part] if rows is None else x[rows[part]])
        blocks.append(run.objective.logits(params, torch.from_numpy(block)).cpu().numpy())
    return np.concatenate(blocks) if blocks else np.zeros((0, 0), np.float32)


def split_outputs(run: Run, params: torch.Tensor, forget_ids: np.ndarray) -> dict[str, tuple[Any, Any]]:
    """Return {"retain"|"forget"|"test": (logits, labels)} of ``params`` on the run's data."""
    ds = run.dataset
    mask = np.zeros(run.n_train, dtype=bool)
    mask[forget_ids] = True
    retain, forget = np.flatnonzero(~mask), np.flatnonzero(mask)
    return {
        "retain": (model_logits(run, params, ds.x_train, retain), ds.y_train[retain]),
        "forget": (model_logits(run, params, ds.x_train, forget), ds.y_train[forget]),
        "test": (model_logits(run, params, ds.x_test), ds.y_test),
    }


def model_metrics(
    outputs: dict[str, tuple[Any, Any]], *, attacks: Sequence[str], seed: int
) -> tuple[dict[str, float], Any]:
    """Accuracies and, with ``"population"`` in ``attacks``, the population attack's numbers
    of ONE model from its ``split_outputs``; returns (metrics, forget ROC result or None)."""
    out = {f"{split}_acc": accuracy(*outputs[split]) for split in ("retain", "forget", "test")}
    if "population" not in attacks:
        return out, None
    report = population_mia(*outputs["retain"], *outputs["forget"], *outputs["test"], seed=seed)
    out["mia_auc"] = report.forget["confidence"].auc
    out["mia_bacc"] = report.forget["confidence"].balanced_accuracy
    out["mia_tpr_1pct"] = report.forget["confidence"].tpr_at_1pct_fpr
    out["mia_efficacy"] = report.forget["confidence"].efficacy
    out["mia_loss_auc"] = report.forget["loss"].auc
    out["retain_exposure_auc"] = report.retain["confidence"].auc
    return out, report.forget["confidence"]


@dataclass
class Reference:
    """The retrained model's outputs and metrics, computed once and shared by every
    method assessed against it."""

    params: torch.Tensor
    outputs: dict[str, tuple[Any, Any]]
    metrics: dict[str, float]
    roc: Any


def reference(
    run: Run,
    retrained: torch.Tensor,
    forget_ids: np.ndarray,
    *,
    attacks: Sequence[str] = ("population",),
    seed: int = 0,
) -> Reference:
    """Return the :class:`Reference` of the ``retrained`` parameters after forgetting ``forget_ids``."""
    outputs = split_outputs(run, retrained, forget_ids)
    metrics, roc = model_metrics(outputs, attacks=attacks, seed=seed)
    return Reference(retrained, outputs, metrics, roc)


def assess(
    run: Run,
    params: torch.Tensor,
    retrained: torch.Tensor | Reference,
    forget_ids: np.ndarray,
    *,
    attacks: Sequence[str] = ("population",),
    seed: int = 0,
    keep_curves: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Compare ``params`` with the retrained model after forgetting ``forget_ids``.

    ``retrained`` is its parameters, or a :class:`Reference` computed once with the same
    ``attacks`` and ``seed``. Returns a flat dict: accuracies on retain/forget/test for
    both models (retrained ones prefixed ``retrain_``) and their gaps, L2 distance, mean
    KL of test predictions (retrained || unlearned), and with ``"population"`` in
    ``attacks`` the confidence and loss attacks' forget AUC, balanced accuracy and TPR at
    1 % FPR for both models plus the retain exposure. ``keep_curves`` adds ROC arrays
    under ``roc`` (for plots; not JSON-flat). ``progress``: with ``"population"`` in ``attacks``,
    a bar over the models attacked (labelled ``population attack``).
    """
    n_models = 1 if isinstance(retrained, Reference) else 2
    bar = progress_bar(
        total=n_models, desc="population attack", enabled=progress and "population" in attacks, unit="model"
    )
    try:
        if isinstance(retrained, Reference):
            ref = retrained
        else:
            ref = reference(run, retrained, forget_ids, attacks=attacks, seed=seed)
            bar.update(1)
        mine = split_outputs(run, params, forget_ids)
        metrics, roc = model_metrics(mine, attacks=attacks, seed=seed)
        bar.update(1)
    finally:
        bar.close()
    out: dict[str, Any] = {
        "dist_to_retrain": param_distance(params, ref.params),
        "kl_to_retrain": mean_kl(ref.outputs["test"][0], mine["test"][0]),
        **metrics,
        **{f"retrain_{k}": v for k, v in ref.metrics.items()},
    }
    for split in ("retain", "forget", "test"):
        out[f"{split}_acc_gap"] = out[f"{split}_acc"] - out[f"retrain_{split}_acc"]
    add_average_gaps(out)
    if keep_curves and roc is not None:
        out["roc"] = {"unlearned": (roc.fpr, roc.tpr), "retrain_": (ref.roc.fpr, ref.roc.tpr)}
    return out


ACCURACY_GAP_METRICS = ("retain_acc", "forget_acc", "test_acc")
PER_EXAMPLE_GAP_METRICS = ("ulira_auc", "ulira_tpr_1pct")
"""The per-example attack's (U-LiRA's) AUC and TPR at 1 % FPR on the forget set: the privacy
terms of the average gap, stable across seeds where the single-threshold MIA efficacy is not
(docs/results.md, "A privacy score that can be read")."""
GAP_METRICS = ACCURACY_GAP_METRICS + PER_EXAMPLE_GAP_METRICS
POPULATION_GAP_METRICS = (*ACCURACY_GAP_METRICS, "mia_efficacy")
"""The average gap's terms as the deep-unlearning literature defines it, with the population
attack's MIA efficacy: ``avg_gap_population``, kept as its own column."""


def average_gap(metrics: dict[str, Any], terms: tuple[str, ...] = GAP_METRICS) -> float:
    """Return an "average gap" to retraining, in points: the mean of |metric - retraining's
    metric| * 100 over ``terms`` (default ``GAP_METRICS``: retain, forget and test accuracy,
    and the per-example attack's AUC and TPR at 1 % FPR; ``POPULATION_GAP_METRICS`` gives the
    literature's, with MIA efficacy), from an :func:`assess`-style dict holding both models'
    values (``retrain_`` prefix). Terms absent from the dict (no per-example attack run) are
    left out; NaN when none is present."""
    gaps = [
        abs(float(metrics[k]) - float(metrics[f"retrain_{k}"])) * 100
        for k in terms
        if metrics.get(k) is not None and metrics.get(f"retrain_{k}") is not None
    ]
    return float(np.mean(gaps)) if gaps else float("nan")


def add_average_gaps(metrics: dict[str, Any]) -> None:
    """Set ``avg_gap`` (accuracy and, when the per-example attack ran, its terms) and
    ``avg_gap_population`` (accuracy and MIA efficacy) in an :func:`assess`-style dict."""
    metrics["avg_gap"] = average_gap(metrics)
    metrics["avg_gap_population"] = average_gap(metrics, POPULATION_GAP_METRICS)


def split_by_model(metrics: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split an :func:`assess` dict into (the unlearned model's metrics, distance and KL to
    retraining included; the retrained model's metrics with the ``retrain_`` prefix
    removed). The gaps and average gaps, derivable from the two, are dropped."""
    theirs = {k[len("retrain_") :]: v for k, v in metrics.items() if k.startswith("retrain_")}
    mine = {
        k: v
        for k, v in metrics.items()
        if not k.startswith("retrain_") and not k.endswith("_gap") and not k.startswith("avg_gap")
    }
    return mine, theirs
