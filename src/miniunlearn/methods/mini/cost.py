"""What a request may cost each mode, against what retraining costs: the rule that makes
``mini`` never costlier than retraining.

Costs are passes over the retain set (per-sample gradient evaluations / retain size; a
Hessian-vector product counts two), as every benchmark counts them. A mode's cost is its
*budget* at one pass a solver step (what it may spend unless a line search backtracks),
not a guess of what it will spend: a request whose retraining costs no more than that is
served by retraining (exact, and no dearer).
"""

from __future__ import annotations

from ...training.rundir import Run
from .options import AUTO, FIXED_POINT, RESPONSE, REWIND, TRAJECTORY, MiniOptions
from .trajectory import OPTIMUM_MIN_STEPS


def retraining_passes(run: Run, n_forget: int) -> float:
    """Passes over the retain set a retraining without ``n_forget`` samples costs: every
    epoch of the run's plan visits each retained sample once; a certified-removal run's
    retraining also polishes to its optimum, as its training did (the manifest's passes)."""
    if run.n_train <= n_forget:
        return 0.0
    epochs = run.total_steps / run.plan.steps_per_epoch
    if run.config.certify is not None:
        return max(epochs, float(run.manifest.get("train_passes") or epochs))
    return epochs


def mode_budget_passes(mode: str, run: Run, options: MiniOptions, n_forget: int, checkpoints: int) -> float:
    """The most passes over the retain set ``mode`` may spend on a request forgetting
    ``n_forget`` samples in all, on ``run`` with ``checkpoints`` stored checkpoints.

    fixed-point: its step budget, each step one pass, plus one. trajectory: the retain
    optimum's budget, the Lanczos products and one pass (the original run's correction,
    computed once per run and cached, is a one-off like the recording and not counted).
    response: a Hessian-vector product on each step's
    retain subsample, the slope products at the checkpoints and the forget set's
    gradients along the batches. rewind: its replay budget.
    """
    n_retain = max(run.n_train - n_forget, 1)
    if mode == FIXED_POINT:
        return float(options.max_steps + 1)
    if mode == TRAJECTORY:
        return float(max(options.max_steps, OPTIMUM_MIN_STEPS) + 2 * options.krylov_steps + 1)
    if mode == RESPONSE:
        batch = run.n_train / run.plan.steps_per_epoch  # the mean batch
        retain_batch = batch * n_retain / run.n_train
        hvps = 2 * run.total_steps * min(options.response_hvp_samples, retain_batch)
        slopes = 2 * min(options.response_slope_samples, run.n_train) * checkpoints
        forget_part = run.total_steps * batch * n_forget / run.n_train
        return (hvps + slopes + forget_part) / n_retain
    if mode == REWIND:
        return options.replay_fraction * retraining_passes(run, n_forget)
    raise ValueError(f"unknown mode {mode!r}")


def retraining_reason(
    mode: str, run: Run, options: MiniOptions, n_forget: int, checkpoints: int
) -> str | None:
    """Why a request forgetting ``n_forget`` samples in all is better served by retraining
    than by ``mode`` (its budget reaches retraining's cost), or None when the mode is cheaper.
    Always None with ``options.retrain_when_cheaper`` off or a mode asked by name (the
    caller chose it)."""
    if not options.retrain_when_cheaper or options.mode != AUTO:
        return None
    budget = mode_budget_passes(mode, run, options, n_forget, checkpoints)
    full = retraining_passes(run, n_forget)
    if budget < full:
        return None
    return (
        f"retraining costs {full:.0f} passes over the retain set, no more than the {mode} mode "
        f"may spend ({budget:.0f}); set mini option retrain_when_cheaper=false to use the mode anyway"
    )
