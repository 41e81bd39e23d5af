"""The float64 retain optimum of a convex run: the point every fixed-point method aims at.

Retraining stops where its schedule ends, not at the optimum (1,000 gradient-descent
steps leave MNIST logistic regression 0.011 from it), so records report the distance
to both. The optimum is a function of the retain set alone; it is solved once per
forget set in float64 to a relative gradient of 1e-9 and cached under
RUN_DIR/optimum/.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..fileio import cached, save_tensors
from ..ids import ids_digest
from ..methods.lbfgs import SecantPairs
from ..methods.mini import contract
from ..training.config import CONVEX_MODELS
from ..training.rundir import Run, model_for, objective_for

OPTIMUM_DIR = "optimum"


def retain_optimum(run: Run, forget_ids: np.ndarray, *, rtol: float = 1e-9) -> torch.Tensor | None:
    """Return the float64 minimiser of the retain objective after removing ``forget_ids``
    (cached per forget set), or None for a non-convex model, whose optimum is not unique.

    Solved from the trained model by L-BFGS preconditioned with the run's curvature
    sketch when it has one.
    """
    if run.config.model not in CONVEX_MODELS:
        return None
    ids = np.asarray(forget_ids, dtype=np.int64)

    def compute() -> torch.Tensor:
        config = dataclasses.replace(run.config, dtype="float64")
        objective = objective_for(config, run.dataset, model_for(config, run.dataset, run.device))
        retain = np.setdiff1d(np.arange(run.n_train), ids)
        w = run.load_model_params().to(torch.float64)
        sketch = run.curvature_sketch()
        h0 = sketch.inverse_hessian_product if sketch is not None else None
        f, g = objective.value_and_grad(w, retain)
        zero = torch.zeros_like(w)
        solve = contract(
            objective,
            retain,
            w,
            f,
            g,
            SecantPairs(20, h0=h0),
            zero,
            max_steps=1000,
            rtol=rtol,
            atol=0.0,
            armijo=1e-4,
            max_backtracks=20,
        )
        return solve.w

    value, _ = cached(
        run.path / OPTIMUM_DIR / f"{ids_digest(ids)}.safetensors",
        load=lambda path: load_file(str(path))["optimum"].to(run.objective.device),
        compute=compute,
        save=lambda w, tmp: save_tensors({"optimum": w.contiguous()}, tmp),
        damaged=(SafetensorError, OSError, KeyError),
    )
    return value
