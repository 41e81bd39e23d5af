"""Rewind mode: for non-convex models, e.g. networks trained by SGD, which memorise their
training samples late in training and never reach a fixed point of the retain map.

Go back to the stored early checkpoint at ``rewind_fraction`` of training, before the
network has memorised individual samples, and from there contract onto the retain set
with a short replay: heavy-ball SGD on retain batches with a cosine-decayed rate,
``replay_fraction`` (40 %) of the original run's passes, or until it fits the retain
set as well as the original run fitted its data (``match_loss``; the attacks are
sensitive to the retain fit: an under-fitted retain set moves the attacker's threshold).
The budget is a cap, not the usual cost: on the plain-SGD leaky MLP the fit is reached
within 8-10 passes of 60, while a run trained efficiently (momentum, 20 epochs) needs all of
its 8 and at 15 % it under-fitted by 3-5 points (docs/results.md, momentum presets).
With ``correct_rewind`` the checkpoint is first moved by the gradient identity to where
the retain-only run would have been (first order: w_t0 - sum_t lr_t (g_R - g_D)(w_t)
over the stored checkpoints before t0); measured on the leaky MNIST MLP it cost 1.5-3
passes for 0.1-0.3 points of accuracy (benchmarks/rewind_variants.py), so it is off by
default. The same measurement found the same replay from the initial weights (no history)
as close to retraining: on that model the early checkpoint adds nothing measurable.
``mode=auto`` uses the rewind mode for non-convex models trained by mini-batch SGD (a
full-batch network converges and the fixed point serves it). See docs/method.md for the
measurements behind these choices.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ...objective import Objective
from ...training.history import MiniHistory
from ...training.rundir import Run
from ..base import UnlearnRequest
from ..finetune import seeded_batches
from .identity import retain_at_checkpoints
from .options import MiniOptions

MAX_REPLAY_RESTARTS = 4
"""How often a diverging replay is restarted at half the rate before its result is kept."""

COLLAPSE_LOSS_FRACTION = 0.9
"""A replay whose mean batch objective over its last pass is at or above this fraction of
the retain labels' entropy (the loss of a model that predicts the class frequencies) has
collapsed: it learnt nothing (measured: the Fashion-MNIST CNN replayed from its initial
weights at 50 % ended at 10 % retain accuracy, a constant prediction, which the comparison
with the first pass missed, the first pass having collapsed already). Checked at the end
only: at a high rate the loss may sit there for passes and recover as the cosine rate
decays."""


SHARPNESS_BATCHES = 3
SHARPNESS_ITERATIONS = 10
"""The replay's rate cap (``replay_sharpness_cap``) estimates the largest Hessian eigenvalue of
this many seeded retain batches by this many power iterations each, and takes their median."""


def batch_sharpness(
    objective: Objective, w: torch.Tensor, retain: np.ndarray, batch: int, seed: int
) -> float:
    """The median over ``SHARPNESS_BATCHES`` seeded batches of ``batch`` retain samples of the
    largest eigenvalue of the batch objective's Hessian at ``w`` (``SHARPNESS_ITERATIONS``
    power iterations of Hessian-vector products each, counted on ``objective``)."""
    batches = seeded_batches(retain, batch, seed + 0x5A)
    generator = torch.Generator().manual_seed(int(seed))
    estimates = []
    for _ in range(SHARPNESS_BATCHES):
        ids = next(batches)
        v = torch.randn(w.shape, generator=generator, dtype=w.dtype).to(w.device)
        v, value = v / v.norm(), 0.0
        for _ in range(SHARPNESS_ITERATIONS):
            hv = objective.hvp(w, v, ids)
            value = float(torch.dot(v, hv))
            norm = float(hv.norm())
            if norm == 0.0 or not math.isfinite(norm):
                break
            v = hv / norm
        estimates.append(value)
    return float(np.median(estimates))


def stable_peak(sharpness: float, momentum: float) -> float:
    """The highest peak rate the replay takes at batch sharpness ``sharpness``: (1 + momentum) /
    sharpness, half of heavy-ball's stability limit 2 (1 + momentum) / sharpness on a quadratic,
    leaving room for the sharpening a network's Hessian undergoes as it fits; inf when not
    positive."""
    return (1.0 + momentum) / sharpness if sharpness > 0 else math.inf


def replay_budget(run: Run, retain: np.ndarray, fraction: float) -> tuple[int, int]:
    """Return (batch size, steps) of a replay over ``retain`` on ``run``'s batch size (the whole
    retain set when that is smaller, or the run was full batch) for ``fraction`` of its epochs."""
    batch = run.config.batch_size if 0 < run.config.batch_size < retain.size else retain.size
    return batch, max(1, math.ceil(fraction * run.config.epochs * retain.size / batch))


def replay_peak(
    objective: Objective,
    w: torch.Tensor,
    retain: np.ndarray,
    batch: int,
    peak: float,
    momentum: float,
    seed: int,
    *,
    sharpness_cap: bool,
) -> tuple[float, float | None]:
    """Return (the replay's peak rate from ``w``, the batch sharpness it was capped by): ``peak``
    itself, or with ``sharpness_cap`` at most :func:`stable_peak` of :func:`batch_sharpness`."""
    if not sharpness_cap:
        return peak, None
    sharpness = batch_sharpness(objective, w, retain, batch, seed)
    return min(peak, stable_peak(sharpness, momentum)), sharpness


def label_entropy(objective: Objective, ids: np.ndarray) -> float:
    """Entropy (nats) of the class frequencies among the samples ``ids``: the mean loss of a
    model that predicts those frequencies for every input."""
    labels = objective.y[torch.as_tensor(np.asarray(ids), dtype=torch.long, device=objective.y.device)]
    counts = torch.bincount(labels).to(torch.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())


def unlearn_rewind(
    request: UnlearnRequest, history: MiniHistory, options: MiniOptions
) -> tuple[torch.Tensor, int, dict[str, Any]]:
    """Rewind to an early checkpoint, optionally correct it by the gradient identity, replay
    on the retain set (see the module docstring). Takes the request, the run's minimal
    history and the options; returns (parameters, history bytes read, diagnostics).

    Always starts from the original run, so a sequence of requests gives the same model as
    their union at once."""
    opts = options
    run, objective = request.run, request.run.objective
    t0, w, read = rewind_point(request, history, opts.rewind_fraction, correct=opts.correct_rewind)
    correction_norm = 0.0
    if opts.correct_rewind:
        uncorrected = rewind_point(request, history, opts.rewind_fraction, correct=False)[1]
        correction_norm = float((w - uncorrected).norm())
    retain = request.retain_ids
    batch, steps = replay_budget(run, retain, opts.replay_fraction)
    peak, sharpness = replay_peak(
        objective,
        w,
        retain,
        batch,
        opts.replay_lr_scale * run.config.lr,
        opts.replay_momentum,
        opts.seed,
        sharpness_cap=opts.replay_sharpness_cap,
    )
    # the original run's final training objective: retraining fits the retain set about as well
    target = float(history.values[0]) if opts.match_loss else -math.inf
    replay, peak, restarts = replay_with_restarts(
        objective, w, retain, batch, steps, peak, opts.replay_momentum, target, opts.seed
    )
    return (
        replay.w,
        read,
        {
            "rewind_step": t0,
            "rewind_correction_norm": correction_norm,
            "replay_steps": replay.steps,
            "replay_stop": replay.stop,
            "replay_batch": int(batch),
            "replay_peak_lr": peak,
            "replay_restarts": restarts,
            "replay_sharpness": sharpness,
        },
    )


@dataclass
class Replay:
    """Result of one replay: parameters, steps taken and why it stopped (budget, loss, diverged)."""

    w: torch.Tensor
    steps: int
    stop: str


def replay_retain(
    objective: Objective,
    w: torch.Tensor,
    retain: np.ndarray,
    batch: int,
    steps: int,
    peak: float,
    momentum: float,
    target: float,
    seed: int,
) -> Replay:
    """Run heavy-ball SGD on seeded ``retain`` batches of size ``batch`` from ``w`` for ``steps``
    steps at rate ``peak`` cosine-decayed to zero; stop early when the mean batch objective
    over the last pass is at most ``target``. ``stop="diverged"`` (the caller retries at a
    lower rate) when the objective turns non-finite or rises above ten times its start, or
    when the replay ends with a mean batch objective over its last pass no lower than over
    its first; ``stop="collapsed"`` (retried too) when it ends with that mean still at the
    loss of a model predicting the class frequencies (a network collapsed to a constant
    prediction sits there without ever blowing up, and one that collapsed within its first
    pass ends below that pass)."""
    batches = seeded_batches(retain, batch, seed)
    velocity = torch.zeros_like(w)
    per_pass = math.ceil(retain.size / batch)
    collapsed_at = COLLAPSE_LOSS_FRACTION * label_entropy(objective, retain)
    window: deque[float] = deque(maxlen=per_pass)
    first_pass: list[float] = []
    for step in range(steps):
        value, grad = objective.value_and_grad(w, next(batches))
        value = float(value)
        if len(first_pass) < per_pass:
            first_pass.append(value)
        if not math.isfinite(value) or value > 10 * first_pass[0]:
            return Replay(w, step, "diverged")
        window.append(value)
        if len(window) == per_pass and sum(window) / per_pass <= target:
            return Replay(w, step, "loss")
        velocity = momentum * velocity + grad
        w = w - peak * 0.5 * (1.0 + math.cos(math.pi * step / steps)) * velocity
    last_pass = sum(window) / len(window)
    if steps > per_pass and last_pass >= collapsed_at:
        return Replay(w, steps, "collapsed")
    if steps > per_pass and last_pass >= sum(first_pass) / len(first_pass):
        return Replay(w, steps, "diverged")
    return Replay(w, steps, "budget")


def replay_with_restarts(
    objective: Objective,
    w: torch.Tensor,
    retain: np.ndarray,
    batch: int,
    steps: int,
    peak: float,
    momentum: float,
    target: float,
    seed: int,
) -> tuple[Replay, float, int]:
    """:func:`replay_retain`, restarted from ``w`` at half the rate each time it diverges or
    collapses (at most ``MAX_REPLAY_RESTARTS`` times, the last result kept); returns (the
    replay, the peak rate it ran at, the restarts)."""
    restarts = 0
    while True:
        replay = replay_retain(objective, w, retain, batch, steps, peak, momentum, target, seed)
        if replay.stop not in ("diverged", "collapsed") or restarts == MAX_REPLAY_RESTARTS:
            return replay, peak, restarts
        restarts, peak = restarts + 1, peak / 2  # the rate was too high for this model: halve it


def _rewind_rows(history: MiniHistory, target: float) -> list[int]:
    """Rows of the stored checkpoints at or before step ``target``, oldest first."""
    return [j for j in range(len(history.steps) - 1, -1, -1) if history.steps[j] <= target]


def rewind_point(
    request: UnlearnRequest, history: MiniHistory, fraction: float, *, correct: bool = True
) -> tuple[int, torch.Tensor, int]:
    """Return (t0, w, history bytes read): the latest stored checkpoint t0 at or before
    ``fraction`` of training (t0 = 0, the initial model, when none is), and with ``correct``
    its parameters moved towards the retain-only run by the gradient identity,

        w = w_t0 - sum_j (sum of lr_t over [s_j, s_j+1)) (g_R - g_D)(w_s_j),

    a left Riemann sum over the stored checkpoints s_j <= t0 (s_j+1 = t0 for the last),
    with g_R read through the identity from whichever of forget and retain set is smaller.
    It is first order: the retain-only run is taken to pass the same points.
    """
    objective, plan = request.run.objective, request.run.plan
    rows = _rewind_rows(history, fraction * plan.total_steps)
    if not rows:
        return 0, request.run.initial_params().to(objective.dtype), 0
    t0 = int(history.steps[rows[-1]])
    w = history.params[rows[-1]].to(objective.dtype).clone()
    if not correct or t0 == 0:
        return t0, w, int(history.params[rows[-1]].nbytes)
    W = history.params[rows].to(objective.dtype)
    G = history.grads[rows].to(objective.dtype)
    _, grad_r = retain_at_checkpoints(objective, history.n, history.lam, W, G, history.values[rows], request)
    ends = [int(history.steps[j]) for j in rows[1:]] + [t0]
    rates = torch.tensor(
        [float(plan.lrs[int(history.steps[j]) : end].sum()) for j, end in zip(rows, ends, strict=True)],
        dtype=objective.dtype,
        device=objective.device,
    )
    w = w - rates @ (grad_r - G)
    return t0, w, int(W.nbytes + G.nbytes + history.values[rows].nbytes)
