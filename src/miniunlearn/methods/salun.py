"""SalUn: random labelling restricted to the weights most salient for the forget set.

At the starting model, the saliency of each parameter is |grad L_U(w0)|, the magnitude of the
gradient of the forget set's cross-entropy (true labels); the mask keeps the ``mask_ratio``
fraction of parameters with the largest saliency. The random-label update of ``rl`` then
moves only the masked entries; every other entry stays bit for bit at its starting value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .base import UnlearningMethod, UnlearnRequest, register
from .options import option
from .rl import RandomLabels, random_label_steps


def saliency_mask(request: UnlearnRequest, w: torch.Tensor, ratio: float) -> torch.Tensor:
    """Return a boolean mask of the ``max(1, int(ratio * dim))`` entries with the largest |grad L_U(w)|.

    Ties are broken by position (stable sort), so the mask is deterministic. Costs one
    gradient evaluation per forgotten sample.
    """
    objective = request.run.objective
    _, grad_u = objective.loss_grad_sum(w, request.all_forgotten)
    keep = max(1, int(ratio * objective.dim))
    order = torch.argsort(grad_u.abs(), descending=True, stable=True)
    mask = torch.zeros(objective.dim, dtype=torch.bool, device=objective.device)
    mask[order[:keep]] = True
    return mask


@register
class SalUn(UnlearningMethod):
    """Random labelling on a weight-saliency mask computed from the forget-set gradient.

    SalUn (Fan et al., ICLR 2024): the mask keeps the ``mask_ratio`` fraction (at least one) of
    the flat parameter entries with the largest |grad L_U| at the start model; ``rl``'s update
    (same options, defaults and batch orders, L2 term masked too) moves only those, so
    ``mask_ratio`` 1 is exactly ``rl``. Sources, adaptation and measurements: docs/method.md,
    "Baselines".
    """

    name = "salun"
    summary = "random labelling restricted to the forget set's most salient weights (SalUn; no history)"

    @dataclass(frozen=True)
    class Options(RandomLabels.Options):
        """rl's options (the shared step budget and beta) plus the share of weights that may move."""

        mask_ratio: float = option(
            0.5, "fraction of the parameters (largest forget-gradient) that may move", gt=0, le=1
        )

    def _unlearn(self, request: UnlearnRequest) -> tuple[torch.Tensor, int, dict[str, Any]]:
        opts = self.options
        run = request.run
        steps, lr = opts.budget(run), opts.lr(run)
        w0 = request.start_params()
        mask = saliency_mask(request, w0, opts.mask_ratio)
        w = random_label_steps(
            request,
            w0,
            steps=steps,
            lr=lr,
            batch_size=opts.batch(run),
            beta=opts.beta,
            seed=opts.seed,
            mask=mask,
        )
        return w, 0, {"steps": steps, "lr": lr, "beta": opts.beta, "masked_entries": int(mask.sum())}
