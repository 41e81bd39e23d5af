"""Mini-Unlearning: minimal gradient history plus contraction iterations on the retain objective.

1. Read the minimal history: the stored checkpoints (w_t, full-data gradient g_t,
   objective value) and, when the run has one, the curvature sketch (top eigenpairs of
   the data Hessian at w_T; see ``training/curvature.py``).
2. Exact retain-set information from the gradient identity
   n (g_D - lam w) = (n - r)(g_R - lam w) + r (g_U - lam w), reading whichever of the
   forget and retain sets is smaller, at the final checkpoint (at every checkpoint with
   ``use_history_pairs``, whose secant pairs then seed the L-BFGS store too).
3. Contraction iterations from the current model: w <- w - a H (g_R(w) - c), with H the
   L-BFGS inverse Hessian started from the sketch's Nyström preconditioner (new pairs
   appended as the iterate moves) and the step a from Armijo backtracking on
   F_R(w) - c.w, so every accepted step contracts. g_R is exact at the start (identity)
   and after each step (one retain pass).
   c = g_D(w_T) ("residual matching", default): a run stopped before convergence leaves
   a residual gradient, and retraining stops with about the same one; with converged
   training c ~ 0 and the fixed point is the retain optimum.
4. Stop when |g_R - c| <= rtol * (its start) (or atol), when a step moves less than
   xtol times the distance travelled, or after ``max_steps``.

**Trajectory mode** (for training stopped well before convergence): gradient descent
on a quadratic maps the start offset w_0 - w* to f(H)(w_0 - w*) with
f(x) = prod_t (1 - eta_t x). Mini predicts the retrained endpoint as
w*_R + f(H_R)(w_0 - w*_R) and corrects it by the same prediction's error on the
original run, w_T - [w*_D + f(H_D)(w_0 - w*_D)], which cancels most of what the
quadratic model gets wrong. f(H) v comes from a few Lanczos steps with exact
Hessian-vector products; the original run's correction is computed once and cached in
RUN_DIR/cache/. ``mode="auto"`` uses it for convex models (logistic regression) whose
final gradient is above ``converged_tol`` times the first step's, and the fixed point
otherwise.

**Response mode** (convex models trained by mini-batch SGD and stopped before
convergence, DeltaGrad's own regime): predict the retrained endpoint to first order along
the original trajectory, d_{t+1} = d_t - lr_t (H_t d_t + e_t), with e_t the change of the
step-t batch gradient when the forget set leaves the batch; positions and full-data
gradients between the stored checkpoints (0, 1/16, 1/8, 1/4, 1/2 of training and the end)
come from cubic Hermite interpolation, the forget part of each batch is exact (or, for
forget sets of ``response_per_batch_below`` or more of the data, interpolated too), H_t d_t
uses a fresh ``response_hvp_samples`` retain subsample of the batch each step. See
``methods/response.py``; ``mode="auto"`` uses it for such runs when their history has the
checkpoints (trained by this version), the trajectory mode otherwise.

**Rewind mode** (non-convex models, e.g. networks trained by SGD, which memorise their
training samples late in training and never reach a fixed point of the retain map): go
back to the stored early checkpoint at ``rewind_fraction`` of training, before the
network has memorised individual samples, and from there contract onto the retain set
with a short replay: heavy-ball SGD on retain batches with a cosine-decayed rate,
``replay_fraction`` (15 %) of the original run's passes, or until it fits the retain
set as well as the original run fitted its data (``match_loss``; the attacks are
sensitive to the retain fit: an under-fitted retain set moves the attacker's threshold).
With ``correct_rewind`` the checkpoint is first moved by the gradient identity to where
the retain-only run would have been (first order: w_t0 - sum_t lr_t (g_R - g_D)(w_t)
over the stored checkpoints before t0); measured on the leaky MNIST MLP it cost 1.5-3
passes for 0.1-0.3 points of accuracy (benchmarks/rewind_variants.py), so it is off by
default. The same measurement found the same replay from the initial weights (no history)
as close to retraining: on that model the early checkpoint adds nothing measurable.
``mode="auto"`` uses the rewind mode for non-convex models trained by mini-batch SGD (a
full-batch network converges and the fixed point serves it). See docs/method.md for the
measurements behind these choices.
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..errors import HistoryError
from ..fileio import cached, save_tensors
from ..objective import Objective
from ..training.config import CONVEX_MODELS
from ..training.history import MiniHistory
from ..training.rundir import Run
from ..training.schedule import RESPONSE_FRACTIONS, fraction_steps
from .base import UnlearningMethod, UnlearnRequest, register
from .finetune import seeded_batches
from .krylov import gd_propagator, lanczos_function_apply
from .lbfgs import SecantPairs
from .response import linear_response

MODES = ("auto", "fixed-point", "trajectory", "rewind", "response")


@dataclass
class _Solve:
    """Result of one contraction solve."""

    w: torch.Tensor
    passes: int
    grad_norms: list[float]
    factors: list[float]
    step_sizes: list[float]
    converged: bool
    stop_reason: str


def contract(
    objective: Objective,
    ids: np.ndarray | None,
    w: torch.Tensor,
    f: torch.Tensor,
    g: torch.Tensor,
    pairs: SecantPairs,
    c: torch.Tensor,
    *,
    max_steps: int,
    rtol: float,
    atol: float,
    armijo: float,
    max_backtracks: int,
    xtol: float = 0.0,
) -> _Solve:
    """Minimise F_ids(w) - c.w from ``w`` (value ``f`` and gradient ``g`` of that tilted
    objective given) by safeguarded L-BFGS; return the final iterate and diagnostics.

    Stops when the gradient norm falls to max(``rtol`` * its start, ``atol``), or when a
    step moves less than ``xtol`` times the distance travelled from the start (the
    remaining error is then about that small a share of the whole move; 0 disables it).
    """
    g0_norm = float(g.norm())
    tol = max(rtol * g0_norm, atol)
    grad_norms, factors, step_sizes = [g0_norm], [], []
    prev_move: float | None = None
    passes = 0
    start = w
    settled = False
    reason = "budget"
    while len(step_sizes) < max_steps and grad_norms[-1] > tol and not settled:
        direction = -pairs.inverse_hessian_product(g)
        slope = torch.dot(g, direction)
        if not slope < 0:  # not a descent direction: fall back to scaled steepest descent
            direction = -pairs.gamma() * g
            slope = torch.dot(g, direction)
        a = 1.0
        for _ in range(max_backtracks + 1):
            w_new = w + a * direction
            f_new, g_new = objective.value_and_grad(w_new, ids)
            f_new, g_new = f_new - torch.dot(c, w_new), g_new - c
            passes += 1
            if f_new <= f + armijo * a * slope:
                break
            # Near the optimum f changes less than its rounding error; then a step that
            # does not raise f beyond that noise and shrinks the gradient is progress.
            noise = 16 * torch.finfo(f.dtype).eps * abs(float(f))
            if float(f_new - f) <= noise and g_new.norm() < g.norm():
                break
            a *= 0.5
        else:
            reason = "precision"  # no decrease found: the iterate sits at the precision floor
            break
        move = float((w_new - w).norm())
        settled = move <= xtol * float((w_new - start).norm())
        if prev_move:
            factors.append(move / prev_move)
        prev_move = move
        pairs.add(w_new - w, g_new - g)
        w, g, f = w_new, g_new, f_new
        grad_norms.append(float(g.norm()))
        step_sizes.append(a)
    if grad_norms[-1] <= tol:
        reason = "gradient"
    elif settled:
        reason = "step"
    return _Solve(w, passes, grad_norms, factors, step_sizes, reason in ("gradient", "step"), reason)


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
    return loss_r / retain.size + 0.5 * lam * sq, grad_sum_r / retain.size + lam * W


@register
class MiniUnlearning(UnlearningMethod):
    """Minimal-history, contraction-mapping unlearning (the flagship method)."""

    name = "mini"
    needs_history = ("history-mini",)
    summary = (
        "stored checkpoints and curvature sketch; exact retain gradient by the gradient identity; "
        "sketch-preconditioned L-BFGS contraction (networks trained by SGD: rewind to an early "
        "checkpoint and replay on the retain set)"
    )

    @dataclass(frozen=True)
    class Options:
        """max_steps: step budget; rtol/atol: stop when the gradient norm falls to
        max(rtol * start, atol); xtol: or, when a curvature sketch preconditions the
        iteration, when a step moves less than xtol times the distance travelled (0 = off);
        memory: L-BFGS pairs kept; armijo: sufficient-decrease
        constant; max_backtracks: halvings tried per step; use_history_pairs: also seed
        curvature with secant pairs between the stored checkpoints (measured to cost passes);
        precondition: start L-BFGS from the run's curvature sketch when it has one;
        match_residual: solve g_R(w) = g_D(w_T) rather than g_R(w) = 0 (identical when
        training converged); mode: auto, fixed-point,
        trajectory or rewind; krylov_steps: Lanczos steps of the trajectory mode; converged_tol: auto
        mode treats training as converged when |g_D(w_T)| <= converged_tol * |g(w_0)|.
        Rewind mode: rewind_fraction: go back to the latest stored checkpoint at or before this
        fraction of training (0 = the initial weights); correct_rewind: move it by the gradient
        identity; replay_fraction: replay budget as a fraction of the original run's passes over
        the data; replay_momentum, replay_lr_scale: heavy-ball momentum and peak rate (times the
        run's base rate) of the replay; match_loss: stop the replay once the mean batch objective
        over the last pass is at most the original run's final objective F_D(w_T); seed:
        retain-batch order of the replay (and the response mode's subsamples).
        Response mode: response_hvp_samples: retain samples of each batch in its Hessian-vector
        product; response_slope_samples: samples in the Hessian-vector product giving the slope
        of the mean gradient at each checkpoint; response_per_batch_below: forget sets smaller
        than this share of the data are read batch by batch, larger ones interpolated."""

        max_steps: int = 50
        rtol: float = 1e-4
        xtol: float = 1e-3
        atol: float = 0.0
        memory: int = 10
        armijo: float = 1e-4
        max_backtracks: int = 10
        use_history_pairs: bool = False
        match_residual: bool = True
        precondition: bool = True
        mode: str = "auto"
        krylov_steps: int = 20
        converged_tol: float = 1e-3
        rewind_fraction: float = 1 / 16
        correct_rewind: bool = False
        replay_fraction: float = 0.15
        replay_momentum: float = 0.9
        replay_lr_scale: float = 1.5
        match_loss: bool = True
        seed: int = 0
        response_hvp_samples: int = 1024
        response_slope_samples: int = 16384
        response_per_batch_below: float = 0.3

        def __post_init__(self) -> None:
            from ..errors import ConfigError

            if self.mode not in MODES:
                raise ConfigError(f"mini mode must be one of {MODES}, got {self.mode!r}")
            if self.max_steps < 0 or self.krylov_steps < 1 or self.memory < 1:
                raise ConfigError("mini needs max_steps >= 0, krylov_steps >= 1 and memory >= 1")
            for name in ("rtol", "xtol", "atol"):
                value = getattr(self, name)
                if not 0 <= value < float("inf"):  # also refuses NaN
                    raise ConfigError(f"mini: {name} must be a finite number >= 0, got {value}")
            if not 0 <= self.rewind_fraction < 1:
                raise ConfigError(f"mini: rewind_fraction must be in [0, 1), got {self.rewind_fraction}")
            if not 0 < self.replay_fraction < float("inf"):
                raise ConfigError(f"mini: replay_fraction must be positive, got {self.replay_fraction}")
            if not 0 <= self.replay_momentum < 1:
                raise ConfigError(f"mini: replay_momentum must be in [0, 1), got {self.replay_momentum}")
            if not 0 < self.replay_lr_scale < float("inf"):
                raise ConfigError(f"mini: replay_lr_scale must be positive, got {self.replay_lr_scale}")
            if self.response_hvp_samples < 1 or self.response_slope_samples < 1:
                raise ConfigError("mini: response_hvp_samples and response_slope_samples must be at least 1")
            if not 0 <= self.response_per_batch_below <= 1:
                raise ConfigError(
                    f"mini: response_per_batch_below must be in [0, 1], got {self.response_per_batch_below}"
                )

    def _solve_kwargs(self) -> dict[str, Any]:
        o = self.options
        return {
            "max_steps": o.max_steps,
            "rtol": o.rtol,
            "xtol": o.xtol,
            "atol": o.atol,
            "armijo": o.armijo,
            "max_backtracks": o.max_backtracks,
        }

    def _unlearn(self, request: UnlearnRequest) -> tuple[torch.Tensor, int, dict[str, Any]]:
        opts = self.options
        run, objective = request.run, request.run.objective
        history = run.mini_history()
        final_grad_norm = float(history.grads[0].norm())
        residual_ratio = final_grad_norm / history.grad_norm_start if history.grad_norm_start else 0.0
        mode = opts.mode
        if mode == "auto":
            unconverged = residual_ratio > opts.converged_tol  # unknown (NaN) counts as converged
            if run.config.model in CONVEX_MODELS and not unconverged:
                mode = "fixed-point"
            elif run.config.model in CONVEX_MODELS:
                sgd = run.plan.batch_size < run.n_train
                mode = "response" if sgd and _response_rows(history) is not None else "trajectory"
            else:  # a network fitted by SGD has no fixed point to contract to; full batch does
                mode = "rewind" if run.plan.batch_size < run.n_train else "fixed-point"
        if mode == "rewind":  # needs neither the sketch nor the final checkpoint's retain gradient
            w, read, extra = self._rewind(request, history)
            return w, read, {"mode": mode, "residual_ratio": residual_ratio, **extra}
        if mode == "response":
            w, read, extra = self._response(request, history)
            return w, read, {"mode": mode, "residual_ratio": residual_ratio, **extra}
        sketch = run.curvature_sketch() if opts.precondition else None
        h0 = sketch.inverse_hessian_product if sketch is not None else None
        history_bytes = history.nbytes + (sketch.nbytes if sketch is not None else 0)
        # Only the checkpoints whose retain quantities are used: all of them for history
        # pairs, else the last one (and none when a later request starts elsewhere).
        rows = list(range(history.params.shape[0])) if opts.use_history_pairs else [0]
        W, G = history.params[rows].to(objective.dtype), history.grads[rows].to(objective.dtype)
        V = history.values[rows]
        first_request = request.base_params is None or torch.equal(request.start_params(), W[0])
        diagnostics: dict[str, Any] = {
            "mode": mode,
            "residual_ratio": residual_ratio,
            "checkpoints_used": len(rows),
            "curvature_rank": sketch.rank if sketch is not None else 0,
        }
        value_r = grad_r = None
        if mode == "trajectory" or first_request or opts.use_history_pairs:
            value_r, grad_r = retain_at_checkpoints(objective, history.n, history.lam, W, G, V, request)
        if mode == "trajectory":
            w, extra = self._trajectory(request, W, G, V, grad_r, value_r, h0)
            diagnostics.update(extra)
            return w, history_bytes, diagnostics

        # Fixed point: F_R(w) - c.w from the current model.
        c = G[0].clone() if opts.match_residual else torch.zeros_like(G[0])
        pairs = self._history_pairs(W, grad_r, h0)
        history_pairs = len(pairs)
        if first_request:
            w, f, g, passes = W[0].clone(), value_r[0] - torch.dot(c, W[0]), grad_r[0] - c, 0
        else:
            start = request.start_params()
            f, g = objective.value_and_grad(start, request.retain_ids)
            w, f, g, passes = start, f - torch.dot(c, start), g - c, 1
        # A step is a fair estimate of the remaining error only when the sketch makes the
        # steps Newton-like; unpreconditioned L-BFGS takes small steps long before it
        # converges (measured: 3x farther from retraining), so xtol needs the sketch.
        kwargs = {**self._solve_kwargs(), "xtol": opts.xtol if h0 is not None else 0.0}
        solve = contract(objective, request.retain_ids, w, f, g, pairs, c, **kwargs)
        diagnostics.update(
            {
                "steps": len(solve.step_sizes),
                "exact_retain_passes": passes + solve.passes,
                "grad_norm_start": solve.grad_norms[0],
                "grad_norm_final": solve.grad_norms[-1],
                "grad_norms": solve.grad_norms,
                "contraction_factors": solve.factors,
                "step_sizes": solve.step_sizes,
                "history_pairs_kept": history_pairs,
                "pairs_rejected": pairs.rejected,
                "converged": solve.converged,
                "stop_reason": solve.stop_reason,
                "residual_norm": float(c.norm()),
            }
        )
        return solve.w, history_bytes, diagnostics

    def _history_pairs(
        self, W: torch.Tensor, grads: torch.Tensor | None, h0: Callable[[torch.Tensor], torch.Tensor] | None
    ) -> SecantPairs:
        """The L-BFGS store the contraction starts with: seeded with the curvature sketch
        when the run has one, and with secant pairs between the final checkpoint and each
        earlier one when ``use_history_pairs`` (farthest first, so the most local pair is
        the newest)."""
        pairs = SecantPairs(self.options.memory, h0=h0)
        if self.options.use_history_pairs and grads is not None:
            for j in range(W.shape[0] - 1, 0, -1):
                pairs.add(W[0] - W[j], grads[0] - grads[j])
        return pairs

    def _optimum(
        self,
        objective: Objective,
        ids: np.ndarray | None,
        W: torch.Tensor,
        grads: torch.Tensor,
        values: torch.Tensor,
        h0: Callable[[torch.Tensor], torch.Tensor] | None,
    ) -> _Solve:
        """Minimise F_ids from the final checkpoint, whose value and gradient are known exactly."""
        zero = torch.zeros_like(W[0])
        return contract(
            objective,
            ids,
            W[0].clone(),
            values[0].clone(),
            grads[0].clone(),
            self._history_pairs(W, grads, h0),
            zero,
            **{
                **self._solve_kwargs(),
                "rtol": min(self.options.rtol, 1e-6),
                "xtol": 0.0,
                "max_steps": max(self.options.max_steps, 100),
            },
        )

    def _propagate(
        self,
        objective: Objective,
        ids: np.ndarray | None,
        optimum: torch.Tensor,
        w0: torch.Tensor,
        lrs: np.ndarray,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (optimum + f(H)(w0 - optimum), Ritz values) with H the Hessian of F_ids at the optimum."""
        offset, ritz = lanczos_function_apply(
            lambda v: objective.hvp(optimum, v, ids),
            w0 - optimum,
            self.options.krylov_steps,
            gd_propagator(lrs),
        )
        return optimum + offset, ritz

    def _original_correction(
        self,
        run: Run,
        W: torch.Tensor,
        G: torch.Tensor,
        V: torch.Tensor,
        w0: torch.Tensor,
        h0: Callable[[torch.Tensor], torch.Tensor] | None,
    ) -> tuple[torch.Tensor, bool]:
        """Return (w_T - predicted endpoint of the original run, whether it came from the
        cache in RUN_DIR/cache/)."""
        o = self.options
        # the correction depends on the solver's settings too: key the cache on all of them
        key = hashlib.sha256(
            repr(
                (
                    o.krylov_steps,
                    o.rtol,
                    o.atol,
                    o.max_steps,
                    o.memory,
                    o.armijo,
                    o.max_backtracks,
                    o.use_history_pairs,
                    h0 is not None,
                    str(W.dtype),
                )
            ).encode()
        ).hexdigest()[:16]

        def compute() -> torch.Tensor:
            optimum = self._optimum(run.objective, None, W, G, V.to(W.dtype), h0).w
            predicted, _ = self._propagate(run.objective, None, optimum, w0, run.plan.lrs)
            return W[0] - predicted

        return cached(
            run.path / "cache" / f"trajectory-correction-{key}.safetensors",
            load=lambda path: load_file(str(path))["correction"].to(W.device, W.dtype),
            compute=compute,
            save=lambda value, tmp: save_tensors({"correction": value.contiguous()}, tmp),
            damaged=(SafetensorError, OSError, KeyError),
        )

    def _trajectory(
        self,
        request: UnlearnRequest,
        W: torch.Tensor,
        G: torch.Tensor,
        V: torch.Tensor,
        grad_r: torch.Tensor,
        value_r: torch.Tensor,
        h0: Callable[[torch.Tensor], torch.Tensor] | None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Predict the retrained endpoint along the training trajectory (see module docstring).

        Always predicts from the original run with every forgotten id removed, so a
        sequence of requests gives the same model as their union at once.
        """
        run, objective = request.run, request.run.objective
        w0 = run.initial_params().to(W.dtype)
        evals_before = objective.grad_evals
        correction, cached = self._original_correction(run, W, G, V, w0, h0)
        evals_original = objective.grad_evals - evals_before
        optimum = self._optimum(objective, request.retain_ids, W, grad_r, value_r, h0)
        predicted, ritz = self._propagate(objective, request.retain_ids, optimum.w, w0, run.plan.lrs)
        return predicted + correction, {
            "optimum_steps": len(optimum.step_sizes),
            "exact_retain_passes": optimum.passes + 2 * len(ritz),
            "optimum_converged": optimum.converged,
            "grad_norm_final": optimum.grad_norms[-1],
            "krylov_steps": int(len(ritz)),
            "ritz_min": float(ritz.min()),
            "ritz_max": float(ritz.max()),
            "original_correction_cached": cached,
            "original_correction_grad_evals": int(evals_original),
            "original_correction_norm": float(correction.norm()),
        }

    def _response(
        self, request: UnlearnRequest, history: MiniHistory
    ) -> tuple[torch.Tensor, int, dict[str, Any]]:
        """Linear response along the stored trajectory (see ``methods/response.py``). Returns
        (parameters, history bytes read, diagnostics). Always predicts from the original run."""
        opts = self.options
        run, objective = request.run, request.run.objective
        rows = _response_rows(history)
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
            per_batch=ratio < opts.response_per_batch_below,
            hvp_samples=opts.response_hvp_samples,
            slope_samples=opts.response_slope_samples,
            seed=opts.seed,
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

    def _rewind(
        self, request: UnlearnRequest, history: MiniHistory
    ) -> tuple[torch.Tensor, int, dict[str, Any]]:
        """Rewind to an early checkpoint, correct it by the gradient identity, replay on the
        retain set (see module docstring). Returns (parameters, history bytes read, diagnostics).

        Always starts from the original run, so a sequence of requests gives the same model as
        their union at once."""
        opts = self.options
        run, objective = request.run, request.run.objective
        t0, w, read = rewind_point(request, history, opts.rewind_fraction, correct=opts.correct_rewind)
        correction_norm = 0.0
        if opts.correct_rewind:
            uncorrected = rewind_point(request, history, opts.rewind_fraction, correct=False)[1]
            correction_norm = float((w - uncorrected).norm())
        retain = request.retain_ids
        batch = run.config.batch_size if 0 < run.config.batch_size < retain.size else retain.size
        steps = max(1, math.ceil(opts.replay_fraction * run.config.epochs * retain.size / batch))
        peak = opts.replay_lr_scale * run.config.lr
        # the original run's final training objective: retraining fits the retain set about as well
        target = float(history.values[0]) if opts.match_loss else -math.inf
        restarts = 0
        while True:
            replay = replay_retain(
                objective, w, retain, batch, steps, peak, opts.replay_momentum, target, opts.seed
            )
            if replay.stop != "diverged" or restarts == MAX_REPLAY_RESTARTS:
                break
            restarts, peak = restarts + 1, peak / 2  # the rate was too high for this model: halve it
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
            },
        )


MAX_REPLAY_RESTARTS = 4


@dataclass
class _Replay:
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
) -> _Replay:
    """Run heavy-ball SGD on seeded ``retain`` batches of size ``batch`` from ``w`` for ``steps``
    steps at rate ``peak`` cosine-decayed to zero; stop early when the mean batch objective
    over the last pass is at most ``target``. ``stop="diverged"`` (the caller retries at a
    lower rate) when the objective turns non-finite or rises above ten times its start, or
    when the replay ends with a mean batch objective over its last pass no lower than over
    its first (a network collapsed to a constant prediction sits at log(classes) without
    ever blowing up)."""
    batches = seeded_batches(retain, batch, seed)
    velocity = torch.zeros_like(w)
    per_pass = math.ceil(retain.size / batch)
    window: deque[float] = deque(maxlen=per_pass)
    first_pass: list[float] = []
    for step in range(steps):
        value, grad = objective.value_and_grad(w, next(batches))
        value = float(value)
        if len(first_pass) < per_pass:
            first_pass.append(value)
        if not math.isfinite(value) or value > 10 * first_pass[0]:
            return _Replay(w, step, "diverged")
        window.append(value)
        if len(window) == per_pass and sum(window) / per_pass <= target:
            return _Replay(w, step, "loss")
        velocity = momentum * velocity + grad
        w = w - peak * 0.5 * (1.0 + math.cos(math.pi * step / steps)) * velocity
    if steps > per_pass and sum(window) / len(window) >= sum(first_pass) / len(first_pass):
        return _Replay(w, steps, "diverged")
    return _Replay(w, steps, "budget")


def _response_rows(history: MiniHistory) -> list[int] | None:
    """Rows of the response mode's checkpoints (the RESPONSE_FRACTIONS steps and the end),
    in ascending step order, or None when the history lacks one of them."""
    total = int(history.steps[0])
    wanted = sorted(fraction_steps(total, RESPONSE_FRACTIONS) | {total})
    where = {int(step): row for row, step in enumerate(history.steps)}
    if any(step not in where for step in wanted):
        return None
    return [where[step] for step in wanted]


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
