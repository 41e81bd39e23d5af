"""The float64 retain optimum of a convex run: the point every fixed-point method aims at.

Retraining stops where its schedule ends, not at the optimum (1,000 gradient-descent
steps leave MNIST logistic regression 0.011 from it), so records report the distance
to both. The optimum is a function of the retain set alone; it is solved once per
forget set in float64 to a relative gradient of 1e-9 and cached under
RUN_DIR/optimum/<sha256 of the sorted ids>.safetensors. Each entry records its binding
(``bound_cache.py``): the run's config, original model and data, ``n_train``, the forget
set, the tolerance and the solver; an entry whose binding differs (copied from another
run, renamed from another forget set, solved to another tolerance) is solved again and
replaced, never used.

With ``match_residual`` the same solve finds the *residual-matched fixed point* instead:
the point where the retain gradient equals training's last full-data gradient g_D(w_T)
(what `mini`'s residual matching solves for; the optimum itself when training converged).
Its entries carry ``target = residual-matched`` in their binding.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..bound_cache import cache_binding, cached_bound_tensor
from ..ids import ids_digest, retained_ids
from ..solvers.lbfgs import SecantPairs
from ..solvers.retain_lbfgs import contract
from ..training.config import CONVEX_MODELS
from ..training.rundir import Run, model_for, objective_for

OPTIMUM_DIR = "optimum"
SOLVER = {"solver": "retain-lbfgs", "memory": 20, "max_steps": 1000, "armijo": 1e-4, "max_backtracks": 20}
"""The settings of the solve (recorded in each cache entry's binding)."""


def retain_optimum(
    run: Run, forget_ids: np.ndarray, *, rtol: float = 1e-9, match_residual: bool = False
) -> torch.Tensor | None:
    """Return the float64 minimiser of the retain objective after removing ``forget_ids``
    (cached per forget set), or None for a non-convex model, whose optimum is not unique.
    With ``match_residual``, the float64 point where the retain gradient equals the run's
    stored g_D(w_T) instead (the minimiser of F_R(w) - g_D(w_T).w; needs the minimal history).

    Solved from the trained model by L-BFGS preconditioned with the run's curvature
    sketch when it has one, to a gradient norm of ``rtol`` times the start's.
    """
    if run.config.model not in CONVEX_MODELS:
        return None
    ids = np.asarray(forget_ids, dtype=np.int64)

    def compute() -> torch.Tensor:
        config = dataclasses.replace(run.config, dtype="float64")
        objective = objective_for(config, run.dataset, model_for(config, run.dataset, run.device))
        retain = retained_ids(run.n_train, ids)
        w = run.load_model_params().to(torch.float64)
        sketch = run.curvature_sketch()
        h0 = sketch.inverse_hessian_product if sketch is not None else None
        f, g = objective.value_and_grad(w, retain)
        # read only when solving: a cached entry needs no history
        target = run.mini_history().grads[0].to(w) if match_residual else torch.zeros_like(w)
        solve = contract(
            objective,
            retain,
            w,
            f - torch.dot(target, w),
            g - target,
            SecantPairs(SOLVER["memory"], h0=h0),
            target,
            max_steps=SOLVER["max_steps"],
            rtol=rtol,
            atol=0.0,
            armijo=SOLVER["armijo"],
            max_backtracks=SOLVER["max_backtracks"],
        )
        return solve.w

    history_sha256 = ",".join(sorted(str(f["sha256"]) for f in run.files("history-mini")))
    depends: dict[str, object] = {
        **SOLVER,
        "rtol": rtol,
        "dtype": "float64",
        "history_sha256": history_sha256,
    }
    name = ids_digest(ids)
    if match_residual:  # a key of its own, so the optimum's entries keep theirs
        depends["target"] = "residual-matched"
        name = f"{name}-residual"
    binding = cache_binding(run, "optimum", depends, ids)
    path = run.subdir(OPTIMUM_DIR, create=True) / f"{name}.safetensors"
    value, _ = cached_bound_tensor(path, binding, compute, name="optimum", device=run.objective.device)
    return value
