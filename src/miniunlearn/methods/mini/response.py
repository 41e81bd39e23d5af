"""Response mode: linear response along the stored trajectory, for convex models trained by
mini-batch SGD and stopped before convergence (DeltaGrad's own regime). It predicts the
retrained endpoint of an SGD run from a few checkpoints, without replaying training.

Original run: w_{t+1} = w_t - lr_t grad F_{B_t}(w_t). Retraining with the forget set U left
out of every batch: v_{t+1} = v_t - lr_t grad F_{R_t}(v_t), R_t = B_t minus U. To first
order in d_t = v_t - w_t,

    d_{t+1} = d_t - lr_t (H_t d_t + e_t),   e_t = (|U_t| / |R_t|) (gbar_{B_t}(w_t) - gbar_{U_t}(w_t)),

where gbar_S is the mean loss gradient over S and H_t the retain-batch Hessian at w_t. The
stored checkpoints give w_t and gbar_D(w_t) at a few steps s_j (the minimal history: 0, and
1/16, 1/8, 1/4, 1/2 of training and the end, for convex models trained by SGD); between
them both are cubic Hermite interpolants in t, with slopes dw/dt = -lr grad F_D(w) from the
stored gradients and d gbar_D/dt = H_D(w) dw/dt from one Hessian-vector product per
checkpoint (on ``slope_samples`` samples). The batch mean gbar_{B_t} is replaced by the
full-data mean. The forget part gbar_{U_t} is either computed exactly per batch at the
interpolated point (``per_batch``: a pass over the forget part of every batch, cheap for
small forget sets, and it keeps which forgotten samples each batch held) or interpolated
like gbar_D from the forget set's mean gradients at the checkpoints (large forget sets:
``response_per_batch_below`` or more of the data). H_t d_t uses a fresh seeded subsample
of ``hvp_samples`` retain ids of batch t each step, so its sampling noise averages out
over the steps instead of adding up.

``mode=auto`` uses it for such runs when their history has the checkpoints (trained by a
version that records them), the trajectory mode otherwise. benchmarks/linear_response.py
measures what each ingredient is worth (docs/results.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ...errors import HistoryError
from ...ids import retained_ids
from ...objective import Objective
from ...training.history import MiniHistory
from ...training.schedule import RESPONSE_FRACTIONS, StepPlan
from ..base import UnlearnRequest
from .options import MiniOptions


@dataclass
class Trajectory:
    """Cubic Hermite interpolation in the step number of values known at a few steps
    (ascending ``steps``), with their per-step slopes."""

    steps: np.ndarray
    values: torch.Tensor
    slopes: torch.Tensor

    def at(self, t: int) -> torch.Tensor:
        """The interpolated value at step ``t`` (steps[0] <= t <= steps[-1])."""
        k = int(np.searchsorted(self.steps, t, side="left"))
        if self.steps[k] == t:
            return self.values[k]
        j = k - 1
        h = float(self.steps[k] - self.steps[j])
        s = (t - float(self.steps[j])) / h
        h00, h10 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s
        h01, h11 = -2 * s**3 + 3 * s**2, s**3 - s**2
        return (
            h00 * self.values[j] + h10 * h * self.slopes[j] + h01 * self.values[k] + h11 * h * self.slopes[k]
        )


def mean_gradient_path(
    objective: Objective,
    steps: np.ndarray,
    W: torch.Tensor,
    means: torch.Tensor,
    V: torch.Tensor,
    ids: np.ndarray,
) -> Trajectory:
    """The interpolant of the mean loss gradient over ``ids`` given its values ``means`` at the
    checkpoints ``W``; slopes H_ids(w) dw/dt from one Hessian-vector product per checkpoint."""
    slopes = torch.stack([objective.hvp_sum(W[j], V[j], ids) / ids.size for j in range(W.shape[0])])
    return Trajectory(steps, means, slopes)


@dataclass
class Response:
    """The predicted retrained endpoint and how it was computed."""

    w: torch.Tensor
    per_batch: bool
    hvp_steps: int


def linear_response(
    objective: Objective,
    plan: StepPlan,
    steps: np.ndarray,
    W: torch.Tensor,
    G: torch.Tensor,
    forget: np.ndarray,
    *,
    per_batch: bool,
    hvp_samples: int,
    slope_samples: int,
    seed: int,
) -> Response:
    """Predict the retrained endpoint of the run of ``plan`` without the ``forget`` ids.

    ``steps`` (ascending, first 0, last the final step T), ``W`` and ``G`` (rows in that
    order): the stored checkpoints' parameters and full-data gradients (regulariser
    included). Returns W[-1] + d_T (see the module docstring).
    """
    n, lam, total = objective.n, objective.lam, plan.total_steps
    rng = np.random.default_rng(seed)
    forget_mask = np.zeros(n, dtype=bool)
    forget_mask[forget] = True
    rates = torch.tensor([plan.lrs[min(int(s), total - 1)] for s in steps], dtype=W.dtype, device=W.device)
    V = -rates[:, None] * G  # dw/dt at the checkpoints
    data_means = G - lam * W
    slope_ids = np.sort(rng.choice(n, min(slope_samples, n), replace=False))
    positions = Trajectory(steps, W, V)
    mean_path = mean_gradient_path(objective, steps, W, data_means, V, slope_ids)
    forget_path = None
    if not per_batch:
        forget_path = _forget_mean_path(objective, steps, W, data_means, V, forget, slope_samples, rng)

    d = torch.zeros_like(W[-1])
    moved, hvp_steps = False, 0
    for t in range(total):
        batch = plan.batch_ids(t)
        batch = np.arange(n) if batch is None else batch
        hit = forget_mask[batch]
        forget_t, retain_t = batch[hit], batch[~hit]
        if not moved and forget_t.size == 0:
            continue  # the retrained run is the original one up to the first batch that loses samples
        w_t = positions.at(t)
        if retain_t.size == 0:  # retraining skips this step; the original took it
            d = d + plan.lrs[t] * (mean_path.at(t) + lam * w_t)
            moved = True
            continue
        step = torch.zeros_like(d)
        if moved:
            sample = np.sort(rng.choice(retain_t, min(hvp_samples, retain_t.size), replace=False))
            step = objective.hvp(w_t, d, sample)
            hvp_steps += 1
        if forget_t.size:
            if forget_path is None:
                forget_mean = objective.loss_grad_sum(w_t, forget_t)[1] / forget_t.size
            else:
                forget_mean = forget_path.at(t)
            step = step + (forget_t.size / retain_t.size) * (mean_path.at(t) - forget_mean)
        d = d - plan.lrs[t] * step
        moved = True
    return Response(W[-1] + d, per_batch, hvp_steps)


def _forget_mean_path(
    objective: Objective,
    steps: np.ndarray,
    W: torch.Tensor,
    data_means: torch.Tensor,
    V: torch.Tensor,
    forget: np.ndarray,
    slope_samples: int,
    rng: np.random.Generator,
) -> Trajectory:
    """The interpolant of the forget set's mean loss gradient, its values at the checkpoints read
    from whichever of forget and retain set is smaller (gradient identity)."""
    n, r = objective.n, forget.size
    if r <= n - r:
        means = objective.loss_grad_sum_many(W, forget)[1] / r
    else:
        retain = retained_ids(n, forget)
        retain_sums = objective.loss_grad_sum_many(W, retain)[1]
        means = (n * data_means - retain_sums) / r
    sample = np.sort(rng.choice(forget, min(slope_samples, r), replace=False))
    return mean_gradient_path(objective, steps, W, means, V, sample)


def unlearn_response(
    request: UnlearnRequest, history: MiniHistory, rows: list[int] | None, options: MiniOptions
) -> tuple[torch.Tensor, int, dict[str, Any]]:
    """Linear response along the stored trajectory (see the module docstring).

    Takes the request, the run's minimal history, the rows of its response checkpoints
    (None when it lacks them: HistoryError) and the options; returns (parameters, history
    bytes read, diagnostics). Always predicts from the original run, so a sequence of
    requests gives the same model as their union at once.
    """
    run, objective = request.run, request.run.objective
    if rows is None:
        raise HistoryError(
            f"mini's response mode needs the checkpoints at {RESPONSE_FRACTIONS} of training, which "
            f"run {run.path} lacks (only convex runs trained by mini-batch SGD keep them, and only "
            "since this mode exists); use mode=trajectory, or retrain the run with --batch-size"
        )
    ratio = request.all_forgotten.size / run.n_train
    W, G, values = history.params[rows], history.grads[rows], history.values[rows]
    response = linear_response(
        objective,
        run.plan,
        history.steps[rows],
        W.to(objective.dtype),
        G.to(objective.dtype),
        request.all_forgotten,
        per_batch=ratio < options.response_per_batch_below,
        hvp_samples=options.response_hvp_samples,
        slope_samples=options.response_slope_samples,
        seed=options.seed,
    )
    return (
        response.w,
        int(W.nbytes + G.nbytes + values.nbytes),
        {
            "checkpoints_used": len(rows),
            "forget_part": "per batch" if response.per_batch else "interpolated",
            "hvp_steps": response.hvp_steps,
        },
    )
