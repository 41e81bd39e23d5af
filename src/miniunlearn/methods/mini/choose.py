"""Which mode serves a run: the rules of ``mode=auto``, as one pure function."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...training.config import CONVEX_MODELS
from ...training.history import MiniHistory
from ...training.schedule import RESPONSE_FRACTIONS, fraction_steps
from .options import AUTO, FIXED_POINT, RESPONSE, REWIND, TRAJECTORY, MiniOptions


@dataclass(frozen=True)
class HistoryInfo:
    """What the choice of mode reads from a run's minimal history.

    ``residual_ratio``: |g_D(w_T)| / |g(w_0)|, the final full-data gradient norm over the
    first step's (0 when the first is 0; NaN when unknown); ``response_rows``: the rows of
    the response mode's checkpoints, ascending in step, or None when the history lacks one.
    """

    residual_ratio: float
    response_rows: list[int] | None


def response_rows(history: MiniHistory) -> list[int] | None:
    """Return the rows of the response mode's checkpoints (the RESPONSE_FRACTIONS steps and
    the end) in ascending step order, or None when the history lacks one of them."""
    total = int(history.steps[0])
    wanted = sorted(fraction_steps(total, RESPONSE_FRACTIONS) | {total})
    where = {int(step): row for row, step in enumerate(history.steps)}
    if any(step not in where for step in wanted):
        return None
    return [where[step] for step in wanted]


def history_info(history: MiniHistory) -> HistoryInfo:
    """Return the :class:`HistoryInfo` of a loaded minimal history."""
    final_grad_norm = float(history.grads[0].norm())
    ratio = final_grad_norm / history.grad_norm_start if history.grad_norm_start else 0.0
    return HistoryInfo(ratio, response_rows(history))


def choose_mode(run: Any, history_info: HistoryInfo, options: MiniOptions) -> str:
    """Return the mode that serves ``run``: ``options.mode`` when it names one, else the
    rule of ``mode=auto`` that fits.

    Takes the run (only ``run.config.model``, ``run.config.certify``,
    ``run.plan.batch_size`` and ``run.n_train`` are read, and ``run.plan`` only when the rule
    needs it), what its minimal history says (:class:`HistoryInfo`) and the method's options
    (``mode``, ``converged_tol``). Reads nothing else. The rules of ``auto``, in order:

    0. A run trained for certified removal: ``fixed-point``. Training and retraining both
       end with a polish to the (perturbed) optimum, so the retrained model is the fixed
       point, however the history's residual ratio compares with ``converged_tol``.
    1. A convex model (logistic regression) whose training converged
       (``residual_ratio <= converged_tol``; an unknown, NaN, ratio counts as converged):
       ``fixed-point``. The retrained model is the retain optimum, the fixed point of the
       contraction.
    2. A convex model stopped before convergence, trained by mini-batch SGD
       (``batch_size < n_train``), whose history has the response checkpoints:
       ``response``. Linear response along the stored SGD trajectory follows retraining's
       batches.
    3. Any other convex model stopped before convergence (full batch, or SGD trained
       before the response checkpoints were recorded): ``trajectory``. Retraining stops
       where gradient descent's schedule ends, which the trajectory propagator predicts.
    4. A non-convex model (a network) trained by mini-batch SGD: ``rewind``. It has no
       fixed point to contract to; an early checkpoint and a short retain replay serve it.
    5. A non-convex model trained full batch: ``fixed-point``. Full-batch gradient descent
       settles in a minimum, so the contraction serves it.
    """
    if options.mode != AUTO:
        return options.mode
    if run.config.certify is not None:
        return FIXED_POINT
    convex = run.config.model in CONVEX_MODELS
    unconverged = history_info.residual_ratio > options.converged_tol  # NaN compares False
    if convex and not unconverged:
        return FIXED_POINT
    sgd = run.plan.batch_size < run.n_train
    if convex:
        return RESPONSE if sgd and history_info.response_rows is not None else TRAJECTORY
    return REWIND if sgd else FIXED_POINT
