"""Retraining from scratch on the retain set: the gold standard every method is judged against."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..training.retrain import load_or_retrain, retrain
from .base import UnlearningMethod, UnlearnRequest, register
from .options import option


@register
class Retrain(UnlearningMethod):
    """Same init, seed, batch order and schedule as the original run, minus every forgotten id.

    With ``use_cache``, the retrained model is kept in RUN_DIR/retrain/ keyed by the ids' hash.
    An entry is reused only when this code wrote it for this run and forget set: its
    safetensors metadata must carry the run's config, model and data sha256 and the ids'
    sha256 (see :mod:`miniunlearn.training.retrain`), and it must differ from the original
    model; any other entry is retrained and replaced. The binding is public, so an entry
    forged with a correct binding is only caught by use_cache=False. Timing comparisons
    must run with use_cache=False.
    """

    name = "retrain"
    summary = "retrain from scratch without the forgotten samples (the oracle)"
    exact = True

    @dataclass(frozen=True)
    class Options:
        """Whether to reuse a cached retrained model (see the class docstring)."""

        use_cache: bool = option(
            False, "reuse (and store) the retrained model in RUN_DIR/retrain/ (never for timing)"
        )

    def _unlearn(self, request: UnlearnRequest) -> tuple[torch.Tensor, int, dict[str, Any]]:
        ids = request.all_forgotten
        if self.options.use_cache:
            params, reused = load_or_retrain(request.run, ids)
            steps = {} if reused else {"steps": request.run.total_steps}
            return params, 0, {"cached": reused, **steps}
        return retrain(request.run, ids), 0, {"steps": request.run.total_steps}
