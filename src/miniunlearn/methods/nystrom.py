"""Sketch-on-request: ``mini``'s preconditioned solver with a curvature sketch made when asked.

The history-free peer of ``mini``'s fixed-point mode. ``mini`` reads a curvature sketch
recorded at the end of training; this method records no curvature. When a request arrives it

1. takes c = g_D(w_T), the full-data gradient at the trained model (``match_residual``,
   default, as ``mini`` and ``warmstart`` aim; else c = 0 and the target is the retain
   optimum): read from the minimal history's final checkpoint when the run has one, as
   ``warmstart`` does (its recording, one pass at the end of training, is charged to it in
   benchmarks), else computed by one pass over all the data;
2. draws ``rows`` retain samples (without replacement, from ``seed``; all of them when the
   retain set is smaller) and sketches their mean data Hessian at the current model: a
   rank-``rank`` randomised Nyström approximation with ``iters`` blocks of Hessian-vector
   products (``training/curvature.py``'s :func:`sketch_hessian`, the same routine that
   records ``mini``'s sketch), costing 2 ``rank`` ``iters`` ``rows`` per-sample evaluations;
3. runs exactly ``mini``'s contraction (``solvers/retain_lbfgs.py``): L-BFGS on
   F_R(w) - c.w from the current model, its store seeded with the sketch's Nyström inverse,
   Armijo backtracking, exact retain gradients, the same stopping rules and defaults.

So it differs from ``mini`` only in where the curvature and c come from: computed on the
request (counted in the record's ``grad_evals``) instead of read from the stored history.

With ``basis`` > 0 (logistic regression) step 2 forms instead the structure ``mini`` records
(``training/input_subspace.py``) on the request: the top ``basis`` principal directions of
the sampled retain rows' inputs, the retain Hessian projected on them over those rows, and
its complement's largest curvature by ``iters`` power iterations; the strongest history-free
peer measured on MNIST (docs/results.md).

The sketch costs 2 ``rank`` ``iters`` ``rows`` / |R| retain passes whatever the data's size,
so it pays off on large data and not on small (see :class:`NystromUnlearning` for the
measurements behind the defaults).

Convex models only: the Nyström sketch needs a positive semi-definite Hessian (its Cholesky
factor fails or its preconditioner misleads on a network's indefinite one), so a run of a
non-convex model is refused with a ConfigError before any work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..solvers.lbfgs import SecantPairs
from ..solvers.retain_lbfgs import contract
from ..training.curvature import Curvature, curvature_kind, sketch_hessian
from ..training.history import FINAL_ROLE
from ..training.input_subspace import input_subspace_curvature
from ..training.rundir import Run
from .base import UnlearningMethod, UnlearnRequest, register, require_convex_model
from .mini.fixed_point import solve_kwargs
from .mini.options import MiniOptions
from .options import option
from .residual import StoppingRules, aimed_residual

_MINI = MiniOptions()  # the solver's defaults are mini's own


def sketch_rows(retain: np.ndarray, rows: int, seed: int) -> np.ndarray:
    """Return the sorted ids of the Hessian's subsample: ``rows`` of ``retain`` drawn without
    replacement by a generator seeded with ``seed`` (all of ``retain`` when it has no more)."""
    if rows >= retain.size:
        return retain
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(retain, size=rows, replace=False))


@register
class NystromUnlearning(UnlearningMethod):
    """``mini``'s sketch-preconditioned L-BFGS contraction, the sketch made on the request.

    Defaults chosen on float32 logistic regression (presets, seed 0): 512 rows and two
    blocks measured best on MNIST (2048 rows cost more for nothing; a second block cut the
    steps from 19-21 to 12). Measured with c read from the stored final gradient (3 seeds,
    docs/results.md): MNIST 14.4 / 16.4 / 33.8 passes at 10 / 50 / 90 % (mini 4.1 / 5.0 /
    6.0; with ``basis=64 rows=2048`` 9.8 / 12.1 / 32.3, with ``basis=32 rows=512`` 11.9 /
    12.1 / 16.6), Adult 12.1 / 15.1 / 47.6 (mini 2.1 / 3.0 / 4.0; with ``basis=64 rows=512`` 8.6
    / 9.2 / 18.3, with ``basis=32 rows=256`` 10.1 / 10.5 / 13.3), landing where mini lands. On small
    data the sketch's fixed cost dominates: digits (1,437 samples) takes about 100-190
    passes with the defaults, 17-24 with ``rank=32 rows=64 iters=1``.
    """

    name = "nystrom"
    summary = (
        "request-time peer of mini: Nystrom sketch of the retain Hessian on a subsample, made "
        "on the request, then mini's preconditioned L-BFGS contraction (convex models)"
    )

    @dataclass(frozen=True)
    class Options(StoppingRules):
        """The sketch (rank, rows, blocks, seed), the point aimed at and mini's solver settings."""

        rank: int = option(64, "eigenpairs kept in the Nystrom sketch (capped at the parameter count)", ge=1)
        rows: int = option(512, "retain samples the sketched Hessian averages over (all when fewer)", ge=1)
        iters: int = option(2, "blocks of Hessian-vector products (iters - 1 subspace iterations)", ge=1)
        seed: int = option(0, "seed of the subsample and of the sketch's random directions", ge=0)
        basis: int = option(
            0,
            "instead of the sketch, the retain Hessian on this many principal input directions per "
            "class, formed over the same rows (logistic regression; iters = power iterations of its "
            "complement's curvature); 0 = the Nystrom sketch",
            ge=0,
        )
        match_residual: bool = option(
            True,
            "aim at g_R(w) = g_D(w_T) as mini does, g_D read from the final checkpoint or by one pass "
            "(False: the retain optimum)",
        )
        max_steps: int = option(_MINI.max_steps, "step budget of the L-BFGS contraction", ge=0)
        memory: int = option(_MINI.memory, "L-BFGS pairs kept", ge=1)

    def history_read(self) -> tuple[str, ...]:
        """The minimal history's last gradient when matching the residual (as warmstart)."""
        return (FINAL_ROLE,) if self.options.match_residual else ()

    def check_run(self, run: Run) -> None:
        """Refuse, before anything is computed, a run of a non-convex model (ConfigError): the
        Nyström sketch needs a positive semi-definite Hessian."""
        super().check_run(run)
        require_convex_model(self.name, run, "sketches the Hessian by Nystrom")

    def _unlearn(self, request: UnlearnRequest) -> tuple[torch.Tensor, int, dict[str, Any]]:
        opts = self.options
        run = request.run
        objective = run.objective
        retain = request.retain_ids
        c, history_bytes = aimed_residual(run, objective, opts.match_residual)

        w = request.start_params()
        ids = sketch_rows(retain, opts.rows, opts.seed)
        before = objective.grad_evals
        sketch: Curvature
        if opts.basis:  # the structure mini records, formed on the request from the subsample
            sketch = input_subspace_curvature(
                objective, w, opts.basis, ids, opts.seed, core_rows=ids, tail_iters=opts.iters
            )
        else:
            sketch = sketch_hessian(objective, w, opts.rank, opts.iters, opts.seed, ids=ids)
        sketch_evals = objective.grad_evals - before

        f, g = objective.value_and_grad(w, retain)  # a request always leaves some samples
        f, g = f - torch.dot(c, w), g - c
        pairs = SecantPairs(opts.memory, h0=sketch.inverse_hessian_product)
        solve = contract(objective, retain, w, f, g, pairs, c, **solve_kwargs(opts), step_when_within=True)
        return (
            solve.w,
            history_bytes,
            {
                "sketch_rank": sketch.rank,
                "sketch_rows": int(ids.size),
                "sketch_passes": sketch_evals / retain.size,
                "sketch_kind": curvature_kind(sketch),
                "sketch_top_eigenvalue": None if opts.basis else float(sketch.values[0]),
                "steps": len(solve.step_sizes),
                "exact_retain_passes": 1 + solve.passes,
                "grad_norm_start": solve.grad_norms[0],
                "grad_norm_final": solve.grad_norms[-1],
                "grad_norms": solve.grad_norms,
                "step_sizes": solve.step_sizes,
                "pairs_rejected": pairs.rejected,
                "converged": solve.converged,
                "stop_reason": solve.stop_reason,
                "last_step_unverified": solve.last_step_unverified,
                "residual_norm": float(c.norm()),
            },
        )
