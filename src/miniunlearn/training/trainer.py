"""The deterministic training loop, shared by the original run and the retrain oracle."""

from __future__ import annotations

import numpy as np
import torch

from ..objective import Objective
from ..progress import progress_bar
from .history import HistoryRecorder, NullRecorder
from .schedule import StepPlan, without_ids


def train_loop(
    objective: Objective,
    w0: torch.Tensor,
    plan: StepPlan,
    *,
    forget_mask: np.ndarray | None = None,
    recorder: HistoryRecorder | None = None,
    progress: bool = False,
    desc: str = "train",
) -> torch.Tensor:
    """Run gradient descent along ``plan`` from ``w0`` and return the final parameters.

    At step t: B_t = the plan's batch (minus ids where ``forget_mask`` is True),
    w_{t+1} = w_t - lr_t * grad F_{B_t}(w_t). A step whose batch is emptied by the mask
    is skipped (w unchanged), exactly as removing those samples from the data would.
    ``recorder`` receives every step and, where it asks, the full-data gradient.
    """
    recorder = recorder or NullRecorder()
    w = w0.detach().clone()
    total = plan.total_steps
    for t in progress_bar(range(total), desc=desc, enabled=progress, unit="step"):
        batch = plan.batch_ids(t)
        if forget_mask is not None:
            batch = without_ids(batch, forget_mask)
            if batch is not None and batch.size == 0:
                continue
        value, grad = objective.value_and_grad(w, batch)
        recorder.record_step(t, w, grad, float(plan.lrs[t]))
        if recorder.needs_full_gradient(t):
            if batch is None:
                recorder.record_full_gradient(t, w, grad, float(value))
            else:
                full_value, full_grad = objective.value_and_grad(w)
                recorder.record_full_gradient(t, w, full_grad, float(full_value))
        w = w - plan.lrs[t] * grad
    if recorder.needs_full_gradient(total):
        full_value, full_grad = objective.value_and_grad(w)
        recorder.record_full_gradient(total, w, full_grad, float(full_value))
    return w
