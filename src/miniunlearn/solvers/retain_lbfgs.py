"""Safeguarded L-BFGS contraction on a tilted retain objective F_ids(w) - c.w.

The iteration w <- w + a d, d = -H g with H the L-BFGS inverse Hessian (seeded with a
preconditioner such as a curvature sketch's Nyström inverse), and the step a from Armijo
backtracking, so every accepted step lowers the objective. Mini-Unlearning's fixed-point
and trajectory modes run it from the trained model; the float64 retain optimum that
experiments measure against (``experiment/optimum.py``) is the same solve run tight.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..objective import Objective
from .lbfgs import SecantPairs

STALL_STEPS = 3
"""Steps in a row that change the objective by less than its rounding error and find no smaller
gradient, after which a solve stops at its precision floor."""


@dataclass
class Solve:
    """Result of one contraction solve: the final iterate, retain passes spent, the gradient
    norm at the start and after each step, the ratios of successive step lengths, the
    accepted step sizes, whether it stopped on a tolerance and why (gradient, step, budget,
    precision), and whether the last step was taken without evaluating it (its gradient
    norm is then not in ``grad_norms``)."""

    w: torch.Tensor
    passes: int
    grad_norms: list[float]
    factors: list[float]
    step_sizes: list[float]
    converged: bool
    stop_reason: str
    last_step_unverified: bool = False


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
    stall_steps: int = STALL_STEPS,
    step_when_within: bool = False,
    finish_with_step: bool = False,
) -> Solve:
    """Minimise F_ids(w) - c.w from ``w`` (value ``f`` and gradient ``g`` of that tilted
    objective given) by safeguarded L-BFGS; return the final iterate and diagnostics.

    Stops when the gradient norm falls to max(``rtol`` * its start, ``atol``), or when a
    step moves less than ``xtol`` times the distance travelled from the start (the
    remaining error is then about that small a share of the whole move; 0 disables it);
    a quasi-Newton step already that small is taken without evaluating it. When
    ``stall_steps`` steps in a row change the objective by less than its rounding error
    without lowering the gradient norm below its best, the iterate sits at its precision
    floor (a small request on a float32 run asks for a
    tolerance below it): the solve stops (``precision``) and returns the iterate with the
    smallest gradient norm. With
    ``step_when_within``, a start already within tolerance still takes one quasi-Newton
    step, unevaluated (the caller measures the result anyway, e.g. by a certificate).
    With ``finish_with_step``, a solve stopped by the gradient tolerance takes one more
    quasi-Newton step, unevaluated (for a Newton-like step, which removes most of the error
    left, the caller loosens the tolerance by as much).
    """
    g0_norm = float(g.norm())
    tol = max(rtol * g0_norm, atol)
    grad_norms, factors, step_sizes = [g0_norm], [], []
    prev_move: float | None = None
    passes = 0
    start = w
    settled = unverified = False
    reason = "budget"
    best_w, best_norm, stalled = w, g0_norm, 0
    if step_when_within and g0_norm <= tol and max_steps > 0:
        direction = -pairs.inverse_hessian_product(g)
        if not torch.dot(g, direction) < 0:
            direction = -pairs.gamma() * g
        w, unverified, reason = w + direction, True, "gradient"
        step_sizes.append(1.0)
    while len(step_sizes) < max_steps and grad_norms[-1] > tol and not settled:
        direction = -pairs.inverse_hessian_product(g)
        slope = torch.dot(g, direction)
        quasi_newton = bool(slope < 0)
        if not quasi_newton:  # not a descent direction: fall back to scaled steepest descent
            direction = -pairs.gamma() * g
            slope = torch.dot(g, direction)
        if quasi_newton and xtol and float(direction.norm()) <= xtol * float((w + direction - start).norm()):
            # the quasi-Newton step is a negligible share of the move: take it without paying
            # the pass that would only confirm it (measured: one pass a request saved, same
            # distance to retraining; docs/results/request-passes.md)
            w = w + direction
            step_sizes.append(1.0)
            reason, unverified = "step", True
            break
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
        flat = abs(float(f_new - f)) <= 16 * torch.finfo(f.dtype).eps * abs(float(f))
        move = float((w_new - w).norm())
        settled = move <= xtol * float((w_new - start).norm())
        if prev_move:
            factors.append(move / prev_move)
        prev_move = move
        pairs.add(w_new - w, g_new - g)
        w, g, f = w_new, g_new, f_new
        grad_norms.append(float(g.norm()))
        step_sizes.append(a)
        improved = grad_norms[-1] < best_norm
        if improved:
            best_w, best_norm = w, grad_norms[-1]
        stalled = stalled + 1 if flat and not improved else 0
        if stalled >= stall_steps:
            w, reason = best_w, "precision"
            break
    if finish_with_step and not unverified and grad_norms[-1] <= tol and len(step_sizes) < max_steps:
        direction = -pairs.inverse_hessian_product(g)
        if torch.dot(g, direction) < 0:
            w, unverified, reason = w + direction, True, "gradient"
            step_sizes.append(1.0)
    if grad_norms[-1] <= tol and (not unverified or reason == "gradient"):
        reason = "gradient"
    elif settled:
        reason = "step"
    converged = reason in ("gradient", "step")
    return Solve(w, passes, grad_norms, factors, step_sizes, converged, reason, unverified)
