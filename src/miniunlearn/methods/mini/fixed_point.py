"""Fixed-point mode: contraction iterations on the retain objective from the current model.

1. Read the minimal history: the stored checkpoints (w_t, full-data gradient g_t,
   objective value) and, when the run has one, the curvature sketch (top eigenpairs of
   the data Hessian at w_T; see ``training/curvature.py``).
2. Exact retain-set information from the gradient identity (``identity.py``), reading
   whichever of the forget and retain sets is smaller, at the final checkpoint (at every
   checkpoint with ``use_history_pairs``, whose secant pairs then seed the L-BFGS store too).
3. Contraction iterations from the current model: w <- w - a H (g_R(w) - c), with H the
   L-BFGS inverse Hessian started from the sketch's Nyström preconditioner (new pairs
   appended as the iterate moves) and the step a from Armijo backtracking on
   F_R(w) - c.w, so every accepted step contracts (``solvers/retain_lbfgs.py``). g_R is
   exact at the start (identity) and after each step (one retain pass).
   c = g_D(w_T) ("residual matching", default): a run stopped before convergence leaves
   a residual gradient, and retraining stops with about the same one; with converged
   training c ~ 0 and the fixed point is the retain optimum.
4. Stop when |g_R - c| <= rtol * (its start) (or atol), when a step moves less than
   xtol times the distance travelled, or after ``max_steps``.

``mode=auto`` serves converged convex runs and networks trained full batch with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ...solvers.lbfgs import SecantPairs
from ...solvers.retain_lbfgs import contract
from ...training.history import MiniHistory
from ..base import UnlearnRequest
from .identity import retain_after_removing, retain_at_checkpoints
from .options import MiniOptions

Preconditioner = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Checkpoints:
    """The stored checkpoints a solve reads: parameters ``W``, full-data gradients ``G`` (both
    in the objective's dtype) and values ``V`` of the history ``rows`` (row 0 = the end of
    training), the sketch's inverse-Hessian product ``h0`` (None without one), its rank,
    and the history bytes read."""

    W: torch.Tensor
    G: torch.Tensor
    V: torch.Tensor
    rows: list[int]
    h0: Preconditioner | None
    curvature_rank: int
    history_bytes: int

    def diagnostics(self) -> dict[str, Any]:
        """The record's fields about what was read."""
        return {"checkpoints_used": len(self.rows), "curvature_rank": self.curvature_rank}


def read_checkpoints(request: UnlearnRequest, history: MiniHistory, options: MiniOptions) -> Checkpoints:
    """Return the :class:`Checkpoints` the solver modes use: the sketch when ``precondition``
    and the run has one; every checkpoint with ``use_history_pairs``, else the last one."""
    run, objective = request.run, request.run.objective
    sketch = run.curvature_sketch() if options.precondition else None
    h0 = sketch.inverse_hessian_product if sketch is not None else None
    history_bytes = history.nbytes + (sketch.nbytes if sketch is not None else 0)
    rows = list(range(history.params.shape[0])) if options.use_history_pairs else [0]
    W, G = history.params[rows].to(objective.dtype), history.grads[rows].to(objective.dtype)
    rank = sketch.rank if sketch is not None else 0
    return Checkpoints(W, G, history.values[rows], rows, h0, rank, history_bytes)


def history_pairs(
    W: torch.Tensor, grads: torch.Tensor | None, h0: Preconditioner | None, options: MiniOptions
) -> SecantPairs:
    """Return the L-BFGS store a contraction starts with: seeded with the curvature sketch
    ``h0`` when given, and with secant pairs between the final checkpoint and each earlier
    one (rows of ``W`` and retain gradients ``grads``) when ``use_history_pairs``, farthest
    first, so the most local pair is the newest."""
    pairs = SecantPairs(options.memory, h0=h0)
    if options.use_history_pairs and grads is not None:
        for j in range(W.shape[0] - 1, 0, -1):
            pairs.add(W[0] - W[j], grads[0] - grads[j])
    return pairs


def solve_kwargs(options: MiniOptions) -> dict[str, Any]:
    """Return the keyword arguments of :func:`contract` that the options set."""
    return {
        "max_steps": options.max_steps,
        "rtol": options.rtol,
        "xtol": options.xtol,
        "atol": options.atol,
        "armijo": options.armijo,
        "max_backtracks": options.max_backtracks,
    }


def unlearn_fixed_point(
    request: UnlearnRequest, history: MiniHistory, options: MiniOptions
) -> tuple[torch.Tensor, int, dict[str, Any]]:
    """Contract onto the retain set from the current model (see the module docstring).

    Takes the request, the run's minimal history and the options; returns (parameters,
    history bytes read, diagnostics). A first request starts from the final checkpoint,
    whose retain value and gradient the identity gives exactly; a later one from its
    ``base_params`` with one retain pass.
    """
    objective = request.run.objective
    cp = read_checkpoints(request, history, options)
    W, G = cp.W, cp.G
    first_request = request.base_params is None or torch.equal(request.start_params(), W[0])
    value_r = grad_r = None
    if first_request or options.use_history_pairs:
        value_r, grad_r = retain_at_checkpoints(objective, history.n, history.lam, W, G, cp.V, request)
    # Fixed point of F_R(w) - c.w from the current model.
    c = G[0].clone() if options.match_residual else torch.zeros_like(G[0])
    pairs = history_pairs(W, grad_r, cp.h0, options)
    n_history_pairs = len(pairs)
    if first_request:
        w, f, g, passes = W[0].clone(), value_r[0] - torch.dot(c, W[0]), grad_r[0] - c, 0
    elif request.base_retain_state is not None:  # measured by the base's certificate: no pass
        start = request.start_params()
        n_before = history.n - request.previously_forgotten.size
        value, grad = request.base_retain_state
        f, g = retain_after_removing(objective, history.lam, start, value, grad, n_before, request.forget_ids)
        w, f, g, passes = start, f - torch.dot(c, start), g - c, 0
    else:
        start = request.start_params()
        f, g = objective.value_and_grad(start, request.retain_ids)
        w, f, g, passes = start, f - torch.dot(c, start), g - c, 1
    # a small request from an exactly known start stops once it is well within what training
    # itself left (the residual c), taking at least one step; its certificate measures it
    small = passes == 0 and request.forget_ids.size <= options.small_request_below * request.retain_ids.size
    # A step is a fair estimate of the remaining error only when the sketch makes the
    # steps Newton-like; unpreconditioned L-BFGS takes small steps long before it
    # converges (measured: 3x farther from retraining), so xtol needs the sketch.
    # a start already within tolerance (a certified-removal run's generous budget, a small
    # request) still takes one step: a request must change the model, and its certificate
    # measures the result
    kwargs = {
        **solve_kwargs(options),
        "xtol": options.xtol if cp.h0 is not None else 0.0,
        "step_when_within": True,
    }
    if small:
        kwargs["atol"] = max(options.atol, options.small_request_tol * float(c.norm()))
    solve = contract(objective, request.retain_ids, w, f, g, pairs, c, **kwargs)
    return (
        solve.w,
        cp.history_bytes,
        {
            **cp.diagnostics(),
            "steps": len(solve.step_sizes),
            "exact_retain_passes": passes + solve.passes,
            "grad_norm_start": solve.grad_norms[0],
            "grad_norm_final": solve.grad_norms[-1],
            "grad_norms": solve.grad_norms,
            "contraction_factors": solve.factors,
            "step_sizes": solve.step_sizes,
            "history_pairs_kept": n_history_pairs,
            "pairs_rejected": pairs.rejected,
            "converged": solve.converged,
            "stop_reason": solve.stop_reason,
            "last_step_unverified": solve.last_step_unverified,
            "residual_norm": float(c.norm()),
        },
    )
