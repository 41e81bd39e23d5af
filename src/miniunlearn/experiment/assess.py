"""Judge an unlearned model next to the retrained one: accuracy, distance, KL, MIA."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..evaluation.attacks import population_mia
from ..evaluation.metrics import accuracy, mean_kl, param_distance
from ..training.rundir import Run


def split_outputs(run: Run, params: torch.Tensor, forget_ids: np.ndarray) -> dict[str, tuple[Any, Any]]:
    """Return {"retain"|"forget"|"test": (logits, labels)} of ``params`` on the run's data."""
    ds = run.dataset
    mask = np.zeros(run.n_train, dtype=bool)
    mask[forget_ids] = True
    x_train = torch.from_numpy(ds.x_train)
    out = {}
    for name, x, y in (
        ("retain", x_train[torch.from_numpy(~mask)], ds.y_train[~mask]),
        ("forget", x_train[torch.from_numpy(mask)], ds.y_train[mask]),
        ("test", torch.from_numpy(ds.x_test), ds.y_test),
    ):
        out[name] = (run.objective.logits(params, x).numpy(), y)
    return out


def assess(
    run: Run,
    params: torch.Tensor,
    retrained: torch.Tensor,
    forget_ids: np.ndarray,
    *,
    attacks: Sequence[str] = ("population",),
    seed: int = 0,
    keep_curves: bool = False,
) -> dict[str, Any]:
    """Compare ``params`` with the ``retrained`` parameters after forgetting ``forget_ids``.

    Returns a flat dict: accuracies on retain/forget/test for both models and their
    gaps, L2 distance, mean KL of test predictions (retrained || unlearned), and with
    ``"population"`` in ``attacks`` the confidence and loss attacks' forget AUC,
    balanced accuracy and TPR at 1 % FPR for both models plus the retain exposure.
    ``keep_curves`` adds ROC arrays under ``roc`` (for plots; not JSON-flat).
    """
    mine = split_outputs(run, params, forget_ids)
    ref = split_outputs(run, retrained, forget_ids)
    out: dict[str, Any] = {
        "dist_to_retrain": param_distance(params, retrained),
        "kl_to_retrain": mean_kl(ref["test"][0], mine["test"][0]),
    }
    for split in ("retain", "forget", "test"):
        out[f"{split}_acc"] = accuracy(*mine[split])
        out[f"retrain_{split}_acc"] = accuracy(*ref[split])
        out[f"{split}_acc_gap"] = out[f"{split}_acc"] - out[f"retrain_{split}_acc"]
    if "population" in attacks:
        curves = {}
        for prefix, outputs in (("", mine), ("retrain_", ref)):
            report = population_mia(*outputs["retain"], *outputs["forget"], *outputs["test"], seed=seed)
            out[f"{prefix}mia_auc"] = report.forget["confidence"].auc
            out[f"{prefix}mia_bacc"] = report.forget["confidence"].balanced_accuracy
            out[f"{prefix}mia_tpr_1pct"] = report.forget["confidence"].tpr_at_1pct_fpr
            out[f"{prefix}mia_loss_auc"] = report.forget["loss"].auc
            out[f"{prefix}retain_exposure_auc"] = report.retain["confidence"].auc
            curves[prefix or "unlearned"] = report.forget["confidence"]
        if keep_curves:
            out["roc"] = {k: (v.fpr, v.tpr) for k, v in curves.items()}
    return out
