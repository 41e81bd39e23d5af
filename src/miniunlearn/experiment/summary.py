"""What a freshly trained run looks like: accuracy, loss, gradient and how `mini` will serve it."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..evaluation.metrics import accuracy
from ..methods.mini.choose import choose_mode, history_info
from ..methods.mini.options import MiniOptions
from ..training.rundir import Run
from .assess import model_logits


def run_summary(run: Run) -> dict[str, Any]:
    """Summarise a trained ``run`` for the person who trained it.

    Returns ``train_acc`` and ``test_acc``, ``loss`` (the regularised training objective at
    the trained model), ``grad_norm`` (its full-data gradient norm) and ``grad_ratio`` (that
    over the first step's), ``converged`` (``grad_ratio`` at most ``mini``'s ``converged_tol``)
    and ``mini_mode`` (the mode ``mini``'s ``mode=auto`` picks for requests on this run;
    None when the run keeps no minimal history). Costs one pass over the data.
    """
    w = run.load_model_params()
    data = run.dataset
    with torch.no_grad():
        train_acc = accuracy(model_logits(run, w, data.x_train), data.y_train)
        test_acc = (
            accuracy(model_logits(run, w, data.x_test), data.y_test) if len(data.y_test) else float("nan")
        )
    value, grad = run.objective.value_and_grad(w)
    summary: dict[str, Any] = {
        "train_acc": float(train_acc),
        "test_acc": float(test_acc),
        "loss": float(value),
        "grad_norm": float(grad.norm()),
        "grad_ratio": float("nan"),
        "converged": None,
        "mini_mode": None,
    }
    if run.files("history-mini"):
        info = history_info(run.mini_history())
        options = MiniOptions()
        summary.update(
            grad_ratio=info.residual_ratio,
            converged=bool(
                not np.isnan(info.residual_ratio) and info.residual_ratio <= options.converged_tol
            ),
            mini_mode=choose_mode(run, info, options),
        )
    return summary
