"""Retraining along another batch order: the noise floor of every comparison with retraining.

Two retrainings that differ only in the order SGD draws its batches land apart by SGD's noise
alone; a method whose gap to retraining is no larger is as close as retraining itself can
be. The reference row for researchers asking whether a gap means anything (docs/method.md,
"Retraining's own noise floor"). A full-batch run has no batch order, so it equals
``retrain`` there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..training.retrain import retrain
from .base import UnlearningMethod, UnlearnRequest, register
from .options import option


@register
class RetrainReordered(UnlearningMethod):
    """Same init, schedule and momentum as the original run, minus every forgotten id, with the
    batches the same recipe draws under the run's seed plus ``seed_offset``."""

    name = "retrain-reordered"
    summary = "retrain without the forgotten samples along another batch order (retraining's noise floor)"
    exact = True

    @dataclass(frozen=True)
    class Options:
        """Which other batch order."""

        seed_offset: int = option(1000, "batch order of the run's seed plus this (0: retrain's own)", ge=0)

    def _unlearn(self, request: UnlearnRequest) -> tuple[torch.Tensor, int, dict[str, Any]]:
        run = request.run
        seed = run.config.seed + self.options.seed_offset
        params = retrain(run, request.all_forgotten, batch_order_seed=seed)
        return params, 0, {"steps": run.total_steps, "batch_order_seed": seed}
