"""The retrain oracle: the same training with the forget set removed, cached per forget set."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import RunDirError
from ..fileio import cached
from ..ids import ids_digest, validate_forget_ids
from .rundir import Run, load_params, save_params
from .trainer import train_loop

RETRAIN_DIR = "retrain"


def retrain(run: Run, forget_ids: np.ndarray, *, progress: bool = False) -> torch.Tensor:
    """Retrain ``run`` without ``forget_ids``: same init, seed, batch order and schedule.

    Each original batch loses its forgotten ids and keeps its order; a batch left empty
    is skipped. Returns the final flat parameters.
    """
    ids = validate_forget_ids(forget_ids, run.n_train, allow_empty=True)
    mask = np.zeros(run.n_train, dtype=bool)
    mask[ids] = True
    return train_loop(
        run.objective, run.initial_params(), run.plan, forget_mask=mask, progress=progress, desc="retrain"
    )


def cached_retrain(run: Run, forget_ids: np.ndarray, *, progress: bool = False) -> torch.Tensor:
    """Return the retrained parameters for ``forget_ids``, computing and caching them once.

    The cache file is RUN_DIR/retrain/<sha256 of the sorted ids>.safetensors, so every
    method compared on the same run and forget set meets the same retrained model.
    """
    ids = validate_forget_ids(forget_ids, run.n_train, allow_empty=True)
    # built first: a run whose data changed is refused here, not mistaken for a damaged entry
    objective = run.objective
    params, _ = cached(
        run.path / RETRAIN_DIR / f"{ids_digest(ids)}.safetensors",
        load=lambda path: load_params(path, objective),
        compute=lambda: retrain(run, ids, progress=progress),
        save=lambda w, tmp: save_params(
            tmp, objective, w, {"format": "miniunlearn-model", "version": "retrain"}
        ),
        damaged=(RunDirError,),
    )
    return params
