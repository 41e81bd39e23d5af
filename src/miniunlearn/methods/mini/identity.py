"""The gradient identity: exact retain-set quantities from the stored full-data ones.

With n training samples, r of them forgotten (U) and R the rest, the regularised
full-data gradient g_D and the retain and forget gradients satisfy

    n (g_D - lam w) = (n - r)(g_R - lam w) + r (g_U - lam w),

and the objective values likewise (with lam |w|^2 / 2). At a stored checkpoint g_D is
known, so the retain gradient costs a pass over the forget set only (or over the retain
set, when that is the smaller).
"""

from __future__ import annotations

import numpy as np
import torch

from ...objective import Objective
from ..base import UnlearnRequest


def retain_at_checkpoints(
    objective: Objective,
    n: int,
    lam: float,
    W: torch.Tensor,
    G: torch.Tensor,
    V: torch.Tensor,
    request: UnlearnRequest,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (retain objective values, retain gradients) at the checkpoints ``W`` (rows),
    whose full-data gradients ``G`` and values ``V`` were stored.

    Reads whichever side is smaller, in one vectorised pass over the checkpoints: the
    forget set through the gradient identity
    n (g_D - lam w) = (n - r)(g_R - lam w) + r (g_U - lam w), or, when more than half of
    the data is forgotten, the retain set directly.
    """
    forget, retain = request.all_forgotten, request.retain_ids
    r = forget.size
    sq = (W * W).sum(dim=1)
    if r <= retain.size:
        loss_u, grad_u = objective.loss_grad_sum_many(W, forget)
        grad_r = (n * (G - lam * W) - grad_u) / (n - r) + lam * W
        value_r = (n * (V.to(objective.dtype) - 0.5 * lam * sq) - loss_u) / (n - r) + 0.5 * lam * sq
        return value_r, grad_r
    loss_r, grad_sum_r = objective.loss_grad_sum_many(W, retain)
    if objective.perturbation is not None:  # a certified-removal run's b.w, once per subset
        loss_r, grad_sum_r = loss_r + W @ objective.perturbation, grad_sum_r + objective.perturbation
    return loss_r / retain.size + 0.5 * lam * sq, grad_sum_r / retain.size + lam * W


def retain_after_removing(
    objective: Objective,
    lam: float,
    w: torch.Tensor,
    value: torch.Tensor,
    grad: torch.Tensor,
    n_before: int,
    removed: np.ndarray,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (F_R, grad F_R) at ``w`` once the ids ``removed`` leave a retain set of
    ``n_before`` samples whose objective ``value`` and gradient ``grad`` at ``w`` are known.

    The same identity one level down: n_before (g_before - lam w) = n_after (g_R - lam w) +
    sum over the removed ids of their loss gradients; it reads the removed samples only.
    """
    loss_u, grad_u = objective.loss_grad_sum(w, removed)
    n_after = n_before - removed.size
    reg_value, reg_grad = 0.5 * lam * torch.dot(w, w), lam * w
    grad_r = (n_before * (grad.to(w.dtype) - reg_grad) - grad_u) / n_after + reg_grad
    value_r = (n_before * (value.to(w.dtype) - reg_value) - loss_u) / n_after + reg_value
    return value_r, grad_r
