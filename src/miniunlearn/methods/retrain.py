"""Retraining from scratch on the retain set: the gold standard every method is judged against."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..training.retrain import cached_retrain, retrain
from .base import UnlearningMethod, UnlearnRequest, register


@register
class Retrain(UnlearningMethod):
    """Same init, seed, batch order and schedule as the original run, minus every forgotten id."""

    name = "retrain"
    summary = "retrain from scratch without the forgotten samples (the oracle)"

    @dataclass(frozen=True)
    class Options:
        """use_cache: reuse (and store) the retrained model in RUN_DIR/retrain/ keyed by the ids' hash.
        Timing comparisons must run with use_cache=False."""

        use_cache: bool = False

    def _unlearn(self, request: UnlearnRequest) -> tuple[torch.Tensor, int, dict[str, Any]]:
        ids = request.all_forgotten
        if self.options.use_cache:
            return cached_retrain(request.run, ids), 0, {"cached": True}
        return retrain(request.run, ids), 0, {"steps": request.run.total_steps}
