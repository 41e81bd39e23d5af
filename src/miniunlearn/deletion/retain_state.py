"""The retain objective's exact value and gradient at a served model, kept for the next request.

A served request's certificate measures F_R and grad F_R at the new model in float64 (one
pass over the retain set). The next request starts from that model: with these two
numbers the gradient identity gives its own retain gradient from the ids it removes
alone, so it needs no pass before its first step. They are kept as a cache entry of the
run (``cache/retain-state-<model sha256>.safetensors``) bound to the run, the model
version's sha256 and every id forgotten so far; an entry that does not match is ignored,
and losing it costs one pass, never a wrong answer.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ..bound_cache import cache_binding, cached_bound_tensor
from ..errors import RunDirError
from ..training.rundir import Run

CACHE_DIR = "cache"


class _Absent(Exception):
    """No usable entry: nothing is computed on a miss."""


def _entry(run: Run, model_sha256: str, forgotten: np.ndarray) -> tuple[object, dict[str, str]]:
    """The entry's path and the binding it must carry."""
    binding = cache_binding(run, "retain-state", {"model_sha256": model_sha256}, ids=forgotten)
    path = run.subdir(CACHE_DIR, create=True) / f"retain-state-{model_sha256[:16]}.safetensors"
    return path, binding


def save_retain_state(
    run: Run, model_sha256: str, forgotten: np.ndarray, value: torch.Tensor, grad: torch.Tensor
) -> None:
    """Keep F_R (``value``) and grad F_R (``grad``) at the model with ``model_sha256``, the
    retain set being every training id but ``forgotten``. A write that fails only loses
    the entry (a warning says so)."""
    state = torch.cat([value.reshape(1), grad]).to(torch.float64).cpu()
    try:
        path, binding = _entry(run, model_sha256, forgotten)
        if path.exists():
            path.unlink()  # a stale entry of the same model is replaced
        cached_bound_tensor(path, binding, lambda: state, name="state", device="cpu")
    except (OSError, RunDirError) as exc:  # the request is done either way: only the entry is lost
        warnings.warn(f"the retain state of model {model_sha256[:12]} was not kept ({exc})", stacklevel=2)


def load_retain_state(
    run: Run, model_sha256: str, forgotten: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Return (F_R, grad F_R) in float64 at the model with ``model_sha256`` when an entry bound
    to it and to ``forgotten`` exists, else None."""

    def absent() -> torch.Tensor:
        raise _Absent

    try:
        path, binding = _entry(run, model_sha256, forgotten)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a foreign entry is just not used
            state, _ = cached_bound_tensor(path, binding, absent, name="state", device=run.device)
    except (_Absent, OSError, RunDirError):  # no usable entry (a cache folder that is not a real one too)
        return None
    state = state.to(torch.float64)
    if state.numel() != run.objective.dim + 1 or not torch.isfinite(state).all():
        return None
    return state[0], state[1:]
