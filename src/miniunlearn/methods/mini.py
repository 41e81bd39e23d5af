"""Mini-Unlearning: minimal gradient history plus contraction iterations on the retain objective.

1. Read the k+1 stored checkpoints (w_t, full-data gradient g_t, objective value).
2. Exact retain-set information from the gradient identity
   n (g_D - lam w) = (n - r)(g_R - lam w) + r (g_U - lam w):
   the forget set's gradients at all checkpoints come from one vectorised pass, which
   gives the retain gradient and objective at every checkpoint without touching R.
   Secant pairs s_j = w_T - w_tj, y_j = g_R(w_T) - g_R(w_tj) seed an L-BFGS matrix.
3. Contraction iterations from the current model: w <- w - a H g_R(w), with H the
   L-BFGS inverse Hessian (new pairs appended as the iterate moves) and the step a
   from Armijo backtracking on the retain objective, so every accepted step contracts.
   g_R is exact at the start (identity) and after each step (one retain pass).
4. Stop when |g_R| <= rtol * |g_R(start)| (or atol), or after ``max_steps``.

The fixed point is the minimiser of the retain objective F_R: the retrained model
when training converges. Diagnostics report per-step contraction factors
|w_{j+1} - w_j| / |w_j - w_{j-1}|, the retain-gradient norms and the exact gradients used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .base import UnlearningMethod, UnlearnRequest, register
from .lbfgs import SecantPairs


@register
class MiniUnlearning(UnlearningMethod):
    """Minimal-history, contraction-mapping unlearning (the flagship method)."""

    name = "mini"
    summary = "k+1 stored checkpoints, exact retain gradients by the gradient identity, L-BFGS contraction"

    @dataclass(frozen=True)
    class Options:
        """max_steps: step budget; rtol/atol: stop when |g_R| <= max(rtol*|g_R(start)|, atol);
        memory: L-BFGS pairs kept; armijo: sufficient-decrease constant; max_backtracks: halvings
        tried per step; use_history_pairs: seed curvature from the stored checkpoints;
        match_residual: solve g_R(w) = g_D(w_T) instead of g_R(w) = 0, i.e. keep the residual
        gradient the original training stopped at (identical when training converged)."""

        max_steps: int = 50
        rtol: float = 1e-4
        atol: float = 0.0
        memory: int = 10
        armijo: float = 1e-4
        max_backtracks: int = 10
        use_history_pairs: bool = True
        match_residual: bool = True

    def _unlearn(self, request: UnlearnRequest) -> tuple[torch.Tensor, int, dict[str, Any]]:
        opts = self.options
        run, objective = request.run, request.run.objective
        history = run.mini_history()
        n, lam = history.n, history.lam
        forget = request.all_forgotten
        retain = request.retain_ids
        r = forget.size
        W, G, V = history.params.to(objective.dtype), history.grads.to(objective.dtype), history.values
        # Forget-set loss sums and gradient sums at every checkpoint, in one vectorised pass.
        loss_u, grad_u = objective.loss_grad_sum_many(W, forget)
        sq = (W * W).sum(dim=1)
        grad_r = (n * (G - lam * W) - grad_u) / (n - r) + lam * W
        value_r = (n * (V.to(objective.dtype) - 0.5 * lam * sq) - loss_u) / (n - r) + 0.5 * lam * sq

        pairs = SecantPairs(opts.memory)
        if opts.use_history_pairs:
            # farthest checkpoint first so the most local pair ends up newest
            for j in range(W.shape[0] - 1, 0, -1):
                pairs.add(W[0] - W[j], grad_r[0] - grad_r[j])
        history_pairs = len(pairs)

        # Training that stopped early leaves a residual gradient g_D(w_T); a retrained run stops with
        # about the same residual, so the target is the point where g_R equals it (tilted objective
        # F_R(w) - c.w). With converged training c ~ 0 and this is the retain optimum.
        c = G[0].clone() if opts.match_residual else torch.zeros_like(G[0])
        grad_r = grad_r - c
        value_r = value_r - W @ c

        start = request.start_params()
        if request.base_params is None or torch.equal(start, W[0]):
            w, g, f = W[0].clone(), grad_r[0].clone(), value_r[0].clone()
            exact_passes = 0
        else:
            f, g = objective.value_and_grad(start, retain)
            f, g = f - torch.dot(c, start), g - c
            w, exact_passes = start, 1

        g0_norm = float(g.norm())
        tol = max(opts.rtol * g0_norm, opts.atol)
        grad_norms, factors, step_sizes = [g0_norm], [], []
        prev_move: float | None = None
        steps = 0
        while steps < opts.max_steps and grad_norms[-1] > tol:
            direction = -pairs.inverse_hessian_product(g)
            slope = torch.dot(g, direction)
            if not slope < 0:  # not a descent direction: fall back to scaled steepest descent
                direction = -pairs.gamma() * g
                slope = torch.dot(g, direction)
            a = 1.0
            for _ in range(opts.max_backtracks + 1):
                w_new = w + a * direction
                f_new, g_new = objective.value_and_grad(w_new, retain)
                f_new, g_new = f_new - torch.dot(c, w_new), g_new - c
                exact_passes += 1
                if f_new <= f + opts.armijo * a * slope:
                    break
                # Near the optimum f changes less than its rounding error; then a step that
                # does not raise f beyond that noise and shrinks the gradient is progress.
                noise = 16 * torch.finfo(f.dtype).eps * abs(float(f))
                if float(f_new - f) <= noise and g_new.norm() < g.norm():
                    break
                a *= 0.5
            else:
                break  # no decrease found: the iterate sits at the precision floor
            move = float((w_new - w).norm())
            if prev_move:
                factors.append(move / prev_move)
            prev_move = move
            pairs.add(w_new - w, g_new - g)
            w, g, f = w_new, g_new, f_new
            grad_norms.append(float(g.norm()))
            step_sizes.append(a)
            steps += 1

        diagnostics = {
            "steps": steps,
            "exact_retain_passes": exact_passes,
            "grad_norm_start": g0_norm,
            "grad_norm_final": grad_norms[-1],
            "grad_norms": grad_norms,
            "contraction_factors": factors,
            "step_sizes": step_sizes,
            "history_pairs_kept": history_pairs,
            "pairs_rejected": pairs.rejected,
            "checkpoints": int(W.shape[0]),
            "converged": grad_norms[-1] <= tol,
            "residual_norm": float(c.norm()),
        }
        return w, history.nbytes, diagnostics
