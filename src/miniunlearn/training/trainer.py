"""The deterministic training loop, shared by the original run and the retrain oracle."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from ..objective import Objective
from ..progress import progress_bar
from .history import HistoryRecorder, NullRecorder, RecordingCost
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
    cost: RecordingCost | None = None,
    finish: Callable[[torch.Tensor], torch.Tensor] | None = None,
    momentum: float = 0.0,
) -> torch.Tensor:
    """Run gradient descent along ``plan`` from ``w0`` and return the final parameters.

    At step t: B_t = the plan's batch (minus ids where ``forget_mask`` is True),
    w_{t+1} = w_t - lr_t * grad F_{B_t}(w_t), or with heavy-ball ``momentum`` m > 0
    v_{t+1} = m v_t + grad F_{B_t}(w_t), w_{t+1} = w_t - lr_t v_{t+1} (v_0 = 0). A step whose
    batch is emptied by the mask is skipped (w and v unchanged), exactly as removing those
    samples from the data would.
    ``recorder`` receives every step and, where it asks, the full-data gradient; what that
    costs beyond training itself is charged to ``cost`` when given. ``finish`` maps the last
    step's parameters to the final ones (a certified run's polish to its optimum) before the
    recorder sees them.
    """
    recorder = recorder or NullRecorder()
    cost = cost or RecordingCost()
    w = w0.detach().clone()
    velocity: torch.Tensor | None = None
    total = plan.total_steps
    for t in progress_bar(range(total), desc=desc, enabled=progress, unit="step"):
        batch = plan.batch_ids(t)
        if forget_mask is not None:
            batch = without_ids(batch, forget_mask)
            if batch is not None and batch.size == 0:
                continue
        value, grad = objective.value_and_grad(w, batch)
        started = time.perf_counter()
        recorder.record_step(t, w, grad, float(plan.lrs[t]))
        cost.add(cost.step_role, 0, time.perf_counter() - started)
        if recorder.needs_full_gradient(t):
            _record_full_gradient(objective, recorder, cost, t, w, (value, grad) if batch is None else None)
        if momentum:
            velocity = grad if velocity is None else momentum * velocity + grad
            grad = velocity
        w = w - plan.lrs[t] * grad
    if finish is not None:
        w = finish(w)
    if recorder.needs_full_gradient(total):
        _record_full_gradient(objective, recorder, cost, total, w, None, final=True)
    return w


def _record_full_gradient(
    objective: Objective,
    recorder: HistoryRecorder,
    cost: RecordingCost,
    step: int,
    w: torch.Tensor,
    known: tuple[torch.Tensor, torch.Tensor] | None,
    *,
    final: bool = False,
) -> None:
    """Hand the recorder the full-data value and gradient at ``w``: ``known`` when the step's
    batch was the whole data, else one extra pass, charged to ``cost`` (its final role for
    the end of training)."""
    started, evals = time.perf_counter(), objective.grad_evals
    value, grad = known if known is not None else objective.value_and_grad(w)
    recorder.record_full_gradient(step, w, grad, float(value))
    role = cost.final_role if final else cost.gradient_role
    cost.add(role, objective.grad_evals - evals, time.perf_counter() - started)
