"""Fixed-point mode: contraction iterations on the retain objective from the current model.

1. Read the minimal history: the stored checkpoints (w_t, full-data gradient g_t,
   objective value) and, when the run has one, the recorded curvature of the data Hessian
   at w_T: the exact Hessian (small models), the Hessian on the inputs' principal
   directions (larger logistic regressions, ``training/input_subspace.py``) or a Nyström
   sketch of its top eigenpairs (``training/curvature.py``).
2. Exact retain-set information from the gradient identity (``identity.py``), reading
   whichever of the forget and retain sets is smaller, at the final checkpoint (at every
   checkpoint with ``use_history_pairs``, whose secant pairs then seed the L-BFGS store too).
3. Contraction iterations from the current model: w <- w - a H (g_R(w) - c), with H the
   L-BFGS inverse Hessian started from that curvature's preconditioner (new pairs
   appended as the iterate moves) and the step a from Armijo backtracking on
   F_R(w) - c.w, so every accepted step contracts (``solvers/retain_lbfgs.py``). g_R is
   exact at the start (identity) and after each step (one retain pass).
   c = g_D(w_T) ("residual matching", default): a run stopped before convergence leaves
   a residual gradient, and retraining stops with about the same one; with converged
   training c ~ 0 and the fixed point is the retain optimum.
4. Stop when |g_R - c| <= rtol * (its start) (or atol), when a step moves less than
   xtol times the distance travelled, or after ``max_steps``. With the exact Hessian
   recorded the steps are Newton-like: the solve stops at ``exact_rtol`` (when looser) and takes
   one more step unmeasured, which removes most of the error left.

A small request (``small_request_below``) from a model whose exact retain gradient is known
is served by measured steps: the identity gives g_R at the start from the removed samples
alone, the run's curvature the step, and one float64 pass measures g_R at the result. That
pass is also the served model's certificate (handed on as the measured retain state), so a
request that one step serves costs one pass in all; a step that missed ``small_request_tol``
is followed by another, and the safeguarded solve takes over only after
``SMALL_REQUEST_STEPS`` of them (``SKETCHED_SMALL_REQUEST_STEPS`` otherwise), or when a
step made no progress. On a run that recorded its exact Hessian (models of at most
``exact_curvature_dim`` parameters) the step is Newton's, each is measured in float64, and
one or two land; on any other curvature it is a quasi-Newton step (that curvature refined by
the secant pairs of the steps before it), measured in the run's precision, and the point
that lands is measured once more in float64 for its certificate, unless the step was
expected to land (``FIRST_STEP_CONTRACTION``, then the last step's contraction, would take
it within tolerance): that one is measured in float64 at once.

``mode=auto`` serves converged convex runs and networks trained full batch with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ...objective import Objective
from ...solvers.lbfgs import SecantPairs
from ...solvers.retain_lbfgs import contract
from ...training.curvature import EXACT, curvature_kind
from ...training.history import MiniHistory
from ..base import MEASURED_RETAIN_STATE, UnlearnRequest
from .identity import retain_after_removing, retain_at_checkpoints
from .options import MiniOptions

Preconditioner = Callable[[torch.Tensor], torch.Tensor]
SMALL_REQUEST_STEPS = 3
"""Measured Newton steps a small request takes before the safeguarded solve takes over (in the
streams of docs/results.md one or two landed on every request of Adult and synthetic-higgs)."""
SKETCHED_SMALL_REQUEST_STEPS = 8
"""The same on a run with any other curvature, whose quasi-Newton steps contract |g_R - c| less
(MNIST, one step against the exact Hessian: 0.36 of it left with a Nyström sketch, 0.052 with
the input-subspace Hessian; docs/results/input-subspace.md)."""
FIRST_STEP_CONTRACTION = 0.3
"""What a small request's first quasi-Newton step is expected to leave of |g_R - c|: when that
would land it within tolerance the step is measured in float64 at once (its certificate).
Conservative against the input-subspace Hessian's 0.052 (median) to 0.145 (worst) on MNIST."""


@dataclass
class Checkpoints:
    """The stored checkpoints a solve reads: parameters ``W``, full-data gradients ``G`` (both
    in the objective's dtype) and values ``V`` of the history ``rows`` (row 0 = the end of
    training), the sketch's inverse-Hessian product ``h0`` (None without one), its rank,
    the history bytes read, its bytes and its kind (``training.curvature.curvature_kind``)."""

    W: torch.Tensor
    G: torch.Tensor
    V: torch.Tensor
    rows: list[int]
    h0: Preconditioner | None
    curvature_rank: int
    history_bytes: int
    curvature_bytes: int = 0
    curvature_kind: str = "none"

    @property
    def exact_curvature(self) -> bool:
        """Whether the curvature read is the exact Hessian (its inverse is the Newton step)."""
        return self.curvature_kind == EXACT

    def diagnostics(self) -> dict[str, Any]:
        """The record's fields about what was read."""
        return {
            "checkpoints_used": len(self.rows),
            "curvature_rank": self.curvature_rank,
            "exact_curvature": self.exact_curvature,
            "curvature_bytes": self.curvature_bytes,
            "curvature_kind": self.curvature_kind,
        }


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
    sketch_bytes = sketch.nbytes if sketch is not None else 0
    kind = curvature_kind(sketch)
    return Checkpoints(W, G, history.values[rows], rows, h0, rank, history_bytes, sketch_bytes, kind)


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
    if cp.exact_curvature:
        # the recorded exact Hessian (refined by the secant pairs) makes the steps Newton-like: a last
        # one taken unmeasured removes most of the error left, so the solve may stop earlier
        # (``exact_rtol``; tests/test_small_request.py measures that step)
        kwargs["rtol"] = max(options.rtol, options.exact_rtol)
        kwargs["finish_with_step"] = True
    small = (
        passes == 0
        and cp.h0 is not None
        and options.max_steps > 0
        and request.forget_ids.size <= options.small_request_below * request.retain_ids.size
    )
    newton: dict[str, Any] = {}
    if small:
        assert cp.h0 is not None
        norms = [float(g.norm())]
        # within a share of what training itself left, or the full solve's own tolerance when
        # that is looser (a converged run leaves nothing; a certified-removal run's atol)
        tol = max(options.small_request_tol * float(G[0].norm()), options.rtol * norms[0], options.atol)
        # the exact Hessian's inverse is the Newton step; a sketch's, refined by the secant
        # pairs the measured steps add, a quasi-Newton one
        inverse = cp.h0 if cp.exact_curvature else pairs.inverse_hessian_product
        limit = SMALL_REQUEST_STEPS if cp.exact_curvature else SKETCHED_SMALL_REQUEST_STEPS
        contraction, wide = FIRST_STEP_CONTRACTION, 0
        for _ in range(min(limit, options.max_steps)):
            # an exact Hessian's one or two steps are measured in float64, each measurement a
            # certificate; other steps in the run's precision (a float64 pass costs several
            # float32 ones), except one expected to land (the last contraction, or the prior
            # for a first step, would take it within tol), whose measurement is then its certificate
            expected = norms[-1] * contraction <= tol
            precision = torch.float64 if cp.exact_curvature or expected else objective.dtype
            step = measured_newton_step(objective, request.retain_ids, w, g, c, inverse, precision)
            wide += precision == torch.float64
            if step.grad_norm >= norms[-1]:  # no progress: leave it to the safeguarded solve
                passes += 1
                break
            pairs.add(step.w - w, step.g - g)
            w, f, g, passes = step.w, step.f, step.g, passes + 1
            contraction = step.grad_norm / norms[-1]
            norms.append(step.grad_norm)
            if step.grad_norm <= tol and precision != torch.float64:
                step = measure_retain(objective, request.retain_ids, w, c)  # the certificate's pass
                f, g, passes, wide = step.f, step.g, passes + 1, wide + 1
                norms[-1] = step.grad_norm
            if step.grad_norm <= tol:  # landed: its float64 measurement is the result's certificate
                served = step.diagnostics(norms, c, passes)
                return (
                    w,
                    cp.history_bytes,
                    {
                        **cp.diagnostics(),
                        **served,
                        "small_request": True,
                        "newton_tol": tol,
                        "float64_passes": wide,
                    },
                )
        newton = {
            "small_request": True,
            "newton_grad_norms": norms,
            "newton_tol": tol,
            "float64_passes": wide,
        }
        # the solve's tolerance stays relative to the request's start, not to where the steps left it
        kwargs["atol"] = max(options.atol, options.rtol * norms[0])
    solve = contract(objective, request.retain_ids, w, f, g, pairs, c, **kwargs)
    return (
        solve.w,
        cp.history_bytes,
        {
            **cp.diagnostics(),
            "steps": len(newton.get("newton_grad_norms", [0])) - 1 + len(solve.step_sizes),
            "exact_retain_passes": passes + solve.passes,
            "grad_norm_start": newton.get("newton_grad_norms", solve.grad_norms)[0],
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
            **newton,
        },
    )


@dataclass
class MeasuredStep:
    """One Newton step and its measurement: the new parameters ``w`` (the objective's dtype),
    F_R and grad F_R there (``value``, ``grad``, in the measurement's precision: float64 for a
    certificate) and the tilted value ``f`` and gradient ``g`` (objective's dtype) the solver
    continues from."""

    w: torch.Tensor
    value: torch.Tensor
    grad: torch.Tensor
    f: torch.Tensor
    g: torch.Tensor
    grad_norm: float

    def diagnostics(self, norms: list[float], c: torch.Tensor, passes: int) -> dict[str, Any]:
        """The record of a request served by Newton steps ending with this one (``norms``:
        |g_R - c| at the start and after each; ``passes``: the retain passes they took, a
        float64 certificate pass after steps measured in float32 included), with the measured
        retain state for the certificate."""
        return {
            "steps": len(norms) - 1,
            "exact_retain_passes": passes,
            "grad_norm_start": norms[0],
            "grad_norm_final": self.grad_norm,
            "grad_norms": norms,
            "contraction_factors": [],
            "step_sizes": [1.0] * (len(norms) - 1),
            "history_pairs_kept": 0,
            "pairs_rejected": 0,
            "converged": True,
            "stop_reason": "gradient",
            "last_step_unverified": False,
            "residual_norm": float(c.norm()),
            MEASURED_RETAIN_STATE: (self.value, self.grad),
        }


def measured_newton_step(
    objective: Objective,
    retain: np.ndarray,
    w: torch.Tensor,
    g: torch.Tensor,
    c: torch.Tensor,
    inverse_hessian: Preconditioner,
    precision: torch.dtype = torch.float64,
) -> MeasuredStep:
    """Take the (quasi-)Newton step w - H^-1 (g_R - c) (``g`` = g_R(w) - c, known exactly) with
    ``inverse_hessian`` (the run's exact Hessian's inverse, or a sketch's refined by secant
    pairs), and measure F_R and grad F_R at the result over ``retain`` in ``precision``
    (float64: exactly as a certificate does): one pass, counted on ``objective``."""
    step = inverse_hessian(g).to(torch.float64)  # in the run's dtype: a float32 Hessian needs no more
    w_new = (w.to(torch.float64) - step).to(objective.dtype)
    return measure_retain(objective, retain, w_new, c, precision)


def measure_retain(
    objective: Objective,
    retain: np.ndarray,
    w: torch.Tensor,
    c: torch.Tensor,
    precision: torch.dtype = torch.float64,
) -> MeasuredStep:
    """Measure F_R and grad F_R at ``w`` over ``retain`` in ``precision`` (one pass, counted on
    ``objective``) and return them as the :class:`MeasuredStep` that landed there."""
    value, grad = objective.cast(precision).value_and_grad(w.to(precision), retain)
    tilted = grad - c.to(precision)
    f = (value - torch.dot(c.to(precision), w.to(precision))).to(objective.dtype)
    return MeasuredStep(w, value, grad, f, tilted.to(objective.dtype), float(tilted.norm()))
