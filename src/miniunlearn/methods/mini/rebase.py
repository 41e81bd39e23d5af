"""Predictions re-based on the run's last exact model.

The trajectory and response modes predict the retrained model from the *original* run.
After a run was retrained (an exact model without the ids F), predicting the retraining
without F and U from the original run carries the prediction error of removing all of F
again, however small U is: one more id after a retraining at 60 % landed hundreds of
times farther from retraining than the retrained model itself. Re-based, the request
predicts only the change:

    w = w_exact(F) + pred(F + U) - pred(F)

The error common to both predictions (most of it: the two share F) cancels, and a
sequence of requests after the retraining still equals their union from it. pred(F) is
the same for every request until the next retraining, so it is cached, bound to the run,
the anchor's ids and the options (``RUN_DIR/cache/anchor-prediction-*.safetensors``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from ...bound_cache import cache_binding, cached_bound_tensor
from ...ids import ids_digest
from ..base import UnlearnRequest
from .options import MiniOptions

CACHE_DIR = "cache"
Predict = Callable[[UnlearnRequest], tuple[torch.Tensor, int, dict[str, Any]]]


def rebased(
    request: UnlearnRequest, mode: str, options: MiniOptions, predict: Predict
) -> tuple[torch.Tensor, int, dict[str, Any]]:
    """Serve ``request`` with ``predict`` (a prediction mode), re-based on the request's
    anchor when it has one. Returns (parameters, history bytes read, diagnostics)."""
    w, read, diagnostics = predict(request)
    if request.anchor_params is None or request.anchor_ids.size == 0:
        return w, read, diagnostics
    run = request.run
    anchor = request.anchor_ids
    settings = {"mode": mode, **{k: v for k, v in dataclasses.asdict(options).items()}}
    binding = cache_binding(run, "anchor-prediction", settings, ids=anchor)
    key = f"{ids_digest(anchor)[:16]}-{mode}"
    path = run.subdir(CACHE_DIR, create=True) / f"anchor-prediction-{key}.safetensors"

    def compute() -> torch.Tensor:
        return predict(UnlearnRequest(run, anchor))[0]

    predicted_anchor, cached = cached_bound_tensor(
        path, binding, compute, name="prediction", device=w.device, dtype=w.dtype
    )
    w = request.anchor_params.to(w) + (w - predicted_anchor)
    return w, read, {**diagnostics, "rebased_on_ids": int(anchor.size), "anchor_prediction_cached": cached}
