"""DeltaGrad (Wu, Dobriban and Davidson, ICML 2020): replay training with cached gradients.

Deletion only; gradient descent and mini-batch SGD. The full history stores, for every
step t of the original run, the parameters w_t and the batch gradient
g_t = grad F_{B_t}(w_t) (regulariser included). DeltaGrad replays the run's own plan
with the forget set U removed from every batch, as retraining would, but computes most
retain gradients without touching the retain part of the batch.

Steps before the first batch that holds a forgotten sample are the original run's own
(the replay starts from the stored w_t there, as the authors' code does); the burn-in
``j0`` counts from that step. At step t with batch B_t, retain part R_t = B_t \\ U and
forget part U_t = B_t & U:

* R_t empty: the step is skipped (as retraining skips it).
* **Exact step**: the retain gradient is computed exactly, with the same call and ids as
  the training loop, so T0 = 1 reproduces retraining bit for bit. The forget part at v_t
  gives the whole-batch gradient grad F_{B_t}(v_t), and the secant pair s = v_t - w_t,
  y = grad F_{B_t}(v_t) - g_t joins the last ``m`` pairs when s.y > 0.
* **Approximate step**: grad F_{B_t}(v_t) ~ g_t + B (v_t - w_t) with B the compact-form
  L-BFGS Hessian of the stored pairs (Byrd, Nocedal and Schnabel 1994); the forget part
  is subtracted exactly:
  grad F_{R_t}(v_t) = (|B_t| (approx - lam v_t) - sum_{i in U_t} grad l_i(v_t)) / |R_t| + lam v_t.

Which steps are exact follows the authors' two loops:

* **Convex models** (their logistic-regression loop): the first ``j0`` steps, then every
  ``T0``-th step counted from j0. An approximate step is redone exactly when there is no
  pair yet, when the estimate is not finite, or (an addition of this port, off with
  ``fallback_ratio=0``) when the curvature it implies is implausible:
  |B d| > ``fallback_ratio`` * max_k(|y_k| / |s_k|) * |d| with d = v_t - w_t.
* **Networks** (their neural-network loop, ``safeguard``; automatic for non-convex
  models): the first ``j0`` steps are exact; an approximate step whose product is not
  smaller than its argument, |B d| >= |d|, is thrown away and redone exactly; after any
  exact step the replay stays exact until the store again holds ``m`` pairs (a pair with
  s.y <= 0 is rejected, and a new pair evicts the oldest one, or, at a scheduled exact
  step when the store was not full, a pair more than two steps old); the period T0
  counts from the last exact step. Without it the default MNIST MLP diverges
  (docs/results.md).

Options and the values the authors used: m = 2 everywhere; logistic regression
(T0, j0) = (5, 20) in their README example, swept over T0 in {1, 2, 5, 10, 20} and j0 in
{10, ..., 50}; their MNIST network scripts use (5, 80) and (3, 40), swept over T0 in
{1, 2, 3, 5} and j0 in {1, 50, 100, 200, 300}. The defaults here: T0 = 5, m = 2, j0 = 20
for convex models and 80 for networks. The initial matrix is B_0 = sigma I; the default,
as in the authors' code, is sigma = s.y / s.s of the newest pair (``b0="sy/ss"``, floored
at ``SIGMA_FLOOR``, which never binds when lam >= 0.001 since a regularised convex
objective has s.y / s.s >= lam); ``b0="yy/sy"`` is the textbook choice (Nocedal and
Wright). docs/results.md reports both: y.y/s.y is closer at large learning rates on
digits, s.y/s.s at small ones and on Fashion-MNIST, where y.y/s.y diverges.

``float64`` replays in double precision (the authors' code runs in float64) when the run
was trained in float32; the result is returned in the run's precision.

Cost: an exact step is one pass over R_t plus one over U_t; an approximate step is one
pass over U_t plus an O(d m) product. Replaying T steps makes about
j0 + (T - j0) / T0 retain passes (plus the safeguard's redone steps).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from ..objective import Objective
from ..training.config import CONVEX_MODELS
from ..training.rundir import Run
from ..training.schedule import StepPlan, without_ids
from .base import UnlearningMethod, UnlearnRequest, register
from .lbfgs import SecantPairs
from .options import option

B0_CHOICES = ("sy/ss", "yy/sy")
SAFEGUARD_CHOICES = ("auto", "on", "off")
SIGMA_FLOOR = 1e-3  # lower bound on the initial scale s.y / s.s
J0_CONVEX, J0_NETWORK = 20, 80  # burn-in defaults: the authors' logistic-regression and MNIST-network scripts
PAIR_MAX_AGE = 2  # the network loop drops a pair more than this many steps old (when the store is not full)


class CompactHessian:
    """The L-BFGS Hessian of a set of secant pairs in compact form (Byrd, Nocedal and Schnabel 1994),
    factorised once so that each product B v costs two thin matrix-vector products.

    Takes a :class:`SecantPairs` (oldest pair first) and the initial-matrix rule ``b0``:
    ``"sy/ss"`` (sigma = s.y / s.s of the newest pair, floored at SIGMA_FLOOR, as DeltaGrad's
    reference code) or ``"yy/sy"`` (sigma = y.y / s.y, the textbook choice). With no pairs
    (or a singular middle matrix) ``empty`` is True and B = I.
    """

    def __init__(self, pairs: SecantPairs, b0: str = "sy/ss") -> None:
        self.empty = len(pairs) == 0
        if self.empty:
            return
        S = torch.stack([p[0] for p in pairs.pairs], dim=1)
        Y = torch.stack([p[1] for p in pairs.pairs], dim=1)
        s_new, y_new = S[:, -1], Y[:, -1]
        sy = torch.dot(s_new, y_new)
        if b0 == "yy/sy":
            self.sigma = torch.dot(y_new, y_new) / sy
        else:
            self.sigma = torch.clamp(sy / torch.dot(s_new, s_new), min=SIGMA_FLOOR)
        StY = S.T @ Y
        L = torch.tril(StY, diagonal=-1)
        D = torch.diag(torch.diagonal(StY))
        middle = torch.cat([torch.cat([self.sigma * S.T @ S, L], dim=1), torch.cat([L.T, -D], dim=1)], dim=0)
        self.left = torch.cat([self.sigma * S, Y], dim=1)  # d x 2m: [sigma S, Y]
        try:
            self.middle_inv = torch.linalg.inv(middle)
        except torch.linalg.LinAlgError:  # degenerate pairs: no usable curvature (callers fall back)
            self.empty = True

    def product(self, v: torch.Tensor) -> torch.Tensor:
        """Return B v for a vector ``v`` of the parameters' shape."""
        if self.empty:
            return v.clone()
        return self.sigma * v - self.left @ (self.middle_inv @ (self.left.T @ v))


def compact_hessian_product(pairs: SecantPairs, v: torch.Tensor, b0: str = "sy/ss") -> torch.Tensor:
    """Return B v for the L-BFGS Hessian B of ``pairs`` in compact form (see :class:`CompactHessian`)."""
    return CompactHessian(pairs, b0).product(v)


def first_affected_step(plan: StepPlan, forget_mask: np.ndarray) -> int:
    """Return the first step of ``plan`` whose batch holds a forgotten sample (``forget_mask``);
    before it the retrained run is the original one."""
    for t in range(plan.total_steps):
        batch = plan.batch_ids(t)
        if batch is None or forget_mask[batch].any():
            return t
    return plan.total_steps


class _PairStore:
    """The secant pairs of the replay, with the step each was formed at (for the age rule)."""

    def __init__(self, m: int) -> None:
        self.pairs = SecantPairs(m)
        self.steps: deque[int] = deque(maxlen=m)
        self.max_curvature = 0.0  # largest |y|/|s| over the pairs kept (convex fallback rule)

    def offer(self, s: torch.Tensor, y: torch.Tensor, step: int, age_rule: bool) -> bool:
        """Add the pair (s, y) formed at ``step`` if s.y > 0; with ``age_rule``, a pair that did not
        evict one (the store was not full) evicts the oldest when that is over PAIR_MAX_AGE steps
        old. Return whether the pair was kept."""
        was_full = len(self.pairs) == self.pairs.memory
        if not self.pairs.add(s, y):
            return False
        self.steps.append(step)
        self.max_curvature = max(self.max_curvature, float(y.norm() / s.norm()))
        if age_rule and not was_full and len(self.steps) > 1 and step - self.steps[0] > PAIR_MAX_AGE:
            self.pairs.drop_oldest()
            self.steps.popleft()
        return True

    @property
    def full(self) -> bool:
        """True when the store holds ``m`` pairs."""
        return len(self.pairs) == self.pairs.memory


@register
class DeltaGrad(UnlearningMethod):
    """DeltaGrad replay of the original training plan without the forget set (needs the full history)."""

    name = "deltagrad"
    needs_history = ("history-full",)
    summary = "replay training from the full history; exact gradients every T0 steps, L-BFGS in between"

    @dataclass(frozen=True)
    class Options:
        """DeltaGrad's period, burn-in, L-BFGS memory and safeguards (see the module docstring)."""

        T0: int = option(5, "exact-step period (1: every step exact, = retraining)", ge=1)
        j0: int | None = option(
            None, "burn-in steps that are all exact (None: 20 for convex models, 80 for networks)", ge=0
        )
        m: int = option(2, "secant pairs kept (L-BFGS memory)", ge=1)
        b0: str = option(
            "sy/ss",
            "initial Hessian scale rule: sy/ss (the authors') or yy/sy (textbook)",
            choices=B0_CHOICES,
        )
        safeguard: str = option(
            "auto",
            "the authors' neural-network rules (auto: on for non-convex models)",
            choices=SAFEGUARD_CHOICES,
        )
        fallback_ratio: float = option(
            10.0,
            "redo a step exactly when its curvature exceeds this multiple of the largest seen (<= 0: off)",
        )
        float64: bool = option(False, "replay in double precision (result in the run's precision)")

    def check_run(self, run: Run) -> None:
        """Refuse (ConfigError) a run trained with momentum: the replay is of plain SGD steps."""
        super().check_run(run)
        if run.config.momentum:
            raise ConfigError(
                f"method {self.name!r} replays plain SGD steps, but run {run.path} was trained with "
                f"momentum {run.config.momentum}; choose mini, retrain-fast or retrain"
            )

    def _unlearn(self, request: UnlearnRequest) -> tuple[torch.Tensor, int, dict[str, Any]]:
        opts = self.options
        run = request.run
        plan = run.plan
        history = run.full_history()  # raises HistoryError when the run has no full history
        convex = run.config.model in CONVEX_MODELS
        safeguard = opts.safeguard == "on" or (opts.safeguard == "auto" and not convex)
        j0 = opts.j0 if opts.j0 is not None else (J0_CONVEX if convex else J0_NETWORK)
        objective = run.objective.cast(torch.float64) if opts.float64 else run.objective
        dtype = objective.dtype
        forget_mask = np.zeros(run.n_train, dtype=bool)
        forget_mask[request.all_forgotten] = True
        all_forgotten = np.flatnonzero(forget_mask)

        start = first_affected_step(plan, forget_mask)
        if start == plan.total_steps:  # no batch held a forgotten sample: the original model stands
            return run.load_model_params(), history.nbytes, {"start_step": start, "total_steps": start}
        store = _PairStore(opts.m)
        hessian = CompactHessian(store.pairs, opts.b0)  # refactorised whenever the pairs change
        exact = approx = fallbacks = skipped = 0
        last_exact, refill = start, False
        w_start = (
            run.initial_params()
            if start == 0
            else torch.from_numpy(np.array(history.params[start])).to(objective.device)
        )
        v = w_start.to(dtype)
        for t in range(start, plan.total_steps):
            batch = plan.batch_ids(t)
            retain_t = without_ids(batch, forget_mask)
            n_retain = run.n_train if retain_t is None else retain_t.size
            if n_retain == 0:
                skipped += 1
                continue
            forget_t = all_forgotten if batch is None else batch[forget_mask[batch]]
            w_t = torch.from_numpy(np.array(history.params[t])).to(objective.device, dtype)
            g_t = torch.from_numpy(np.array(history.grads[t])).to(objective.device, dtype)

            if safeguard:
                scheduled_exact = t - start <= j0 or refill or (t - last_exact) % opts.T0 == 0
            else:
                scheduled_exact = t - start < j0 or (t - start - j0) % opts.T0 == 0
            grad: torch.Tensor | None = None
            if not scheduled_exact:
                grad = self._approximate_retain_grad(
                    objective, hessian, store.max_curvature, v, w_t, g_t, forget_t, n_retain, safeguard
                )
                if grad is None:
                    fallbacks += 1
                else:
                    approx += 1
            if grad is None:
                # Exact step: the same call as the training loop, then the pair at this step
                # (not needed with T0 = 1, where no step is ever approximated).
                _, grad = objective.value_and_grad(v, retain_t)
                exact += int(scheduled_exact)
                last_exact = t
                if opts.T0 > 1:
                    s, y = self._pair(objective, v, w_t, g_t, grad, n_retain, forget_t)
                    kept = store.offer(s, y, t, age_rule=safeguard and scheduled_exact)
                    refill = not (kept and store.full)
                    if kept:
                        hessian = CompactHessian(store.pairs, opts.b0)
            v = v - plan.lrs[t] * grad

        diagnostics = {  # fallbacks are exact steps too, counted apart from the scheduled ones
            "exact_steps": exact,
            "approximate_steps": approx,
            "fallbacks": fallbacks,
            "skipped_steps": skipped,
            "pairs_rejected": store.pairs.rejected,
            "start_step": start,
            "total_steps": plan.total_steps,
            "safeguard": safeguard,
            "j0": j0,
        }
        return v.to(run.objective.dtype), history.nbytes, diagnostics

    @staticmethod
    def _pair(
        objective: Objective,
        v: torch.Tensor,
        w_t: torch.Tensor,
        g_t: torch.Tensor,
        retain_grad: torch.Tensor,
        n_retain: int,
        forget_t: np.ndarray,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the secant pair (v - w_t, grad F_{B_t}(v) - g_t), the whole-batch gradient formed
        from the exact retain gradient and the forget part."""
        lam = objective.lam
        data_sum = n_retain * (retain_grad - lam * v)
        if forget_t.size:
            data_sum = data_sum + objective.loss_grad_sum(v, forget_t)[1]
        batch_grad = data_sum / (n_retain + forget_t.size) + lam * v
        return v - w_t, batch_grad - g_t

    def _approximate_retain_grad(
        self,
        objective: Objective,
        hessian: CompactHessian,
        max_curvature: float,
        v: torch.Tensor,
        w_t: torch.Tensor,
        g_t: torch.Tensor,
        forget_t: np.ndarray,
        n_retain: int,
        safeguard: bool,
    ) -> torch.Tensor | None:
        """Return the L-BFGS estimate of grad F_{R_t}(v), or None when it must be redone exactly."""
        lam = objective.lam
        n_batch = n_retain + forget_t.size
        if hessian.empty:
            return None
        d = v - w_t
        correction = hessian.product(d)
        if not bool(torch.isfinite(correction).all()):
            return None
        size, ratio = float(correction.norm()), self.options.fallback_ratio
        if safeguard and not size < float(d.norm()):  # the authors' network rule: |B d| < |d|
            return None
        if not safeguard and ratio > 0 and size > ratio * max_curvature * float(d.norm()):
            return None
        data_sum = n_batch * (g_t + correction - lam * v)
        if forget_t.size:
            data_sum = data_sum - objective.loss_grad_sum(v, forget_t)[1]
        grad = data_sum / n_retain + lam * v
        return grad if bool(torch.isfinite(grad).all()) else None
