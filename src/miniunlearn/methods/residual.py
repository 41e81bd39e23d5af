"""The point the contraction methods aim at: the gradient training stopped at.

``mini`` and its peers (``warmstart``, ``nystrom``, ``exact-newton``) solve
g_R(w) = c with c = g_D(w_T), the full-data gradient at the trained model (the residual
matched target, see docs/method.md); with c = 0 they aim at the retain optimum instead.
"""

from __future__ import annotations

import torch

from ..errors import HistoryError
from ..objective import Objective
from ..training.rundir import Run


def trained_residual(run: Run, objective: Objective) -> tuple[torch.Tensor, int]:
    """Return (c, bytes read): c = g_D(w_T) in ``objective``'s precision, read from the minimal
    history's final checkpoint when the run has one (its size in bytes), else computed by one
    pass over the training data (0 bytes read; the pass is counted on ``objective``)."""
    try:
        final_grad = run.mini_history().grads[0]
        return final_grad.to(objective.dtype), int(final_grad.nbytes)
    except HistoryError:
        return objective.value_and_grad(run.load_model_params().to(objective.dtype))[1], 0


def aimed_residual(run: Run, objective: Objective, match_residual: bool) -> tuple[torch.Tensor, int]:
    """Return (c, bytes read): :func:`trained_residual` when ``match_residual``, else zeros
    (the retain optimum is aimed at; nothing read)."""
    if match_residual:
        return trained_residual(run, objective)
    return torch.zeros(objective.dim, dtype=objective.dtype, device=objective.device), 0
