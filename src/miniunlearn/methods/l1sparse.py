"""l1-sparse unlearning: fine-tuning on the retain set with a decaying l1 penalty.

From the current model, step t of T moves w <- w - lr (grad F_{R_b}(w) + alpha_t sign(w)) with
alpha_t = alpha (1 - t / T): the subgradient of alpha_t |w|_1 added to the retain objective
(which keeps the run's L2 term), the weight of the penalty falling linearly to zero over the
budget. Sparsity pulls the model towards a simpler one in which the forget set's imprint is
smaller; the decay hands the last steps back to plain fine-tuning. Same batch order as
``finetune`` for the same seed, so ``alpha = 0`` reproduces it exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from .base import UnlearningMethod, UnlearnRequest, register
from .options import option
from .step_budget import StepBudgetOptions, seeded_batches


@register
class L1Sparse(UnlearningMethod):
    """Fine-tune on the retain set with an l1 penalty whose weight decays linearly to zero.

    Sparsity-aware unlearning (Jia et al., NeurIPS 2023) with the decay per step instead of per
    epoch: alpha_t = alpha (1 - t / T) weighs |w|_1 added to the mean retain loss. Sources,
    adaptation and measurements: docs/method.md, "Baselines".
    """

    name = "l1sparse"
    summary = "fine-tune on retain with a linearly decaying l1 penalty (l1-sparse; no history needed)"

    @dataclass(frozen=True)
    class Options(StepBudgetOptions):
        """The shared step budget (seed: retain-batch order, as finetune's) plus the l1 weight."""

        alpha: float = option(
            5e-4, "starting weight of the l1 penalty, decaying linearly to 0", ge=0, lt=math.inf
        )

    def _unlearn(self, request: UnlearnRequest) -> tuple[torch.Tensor, int, dict[str, Any]]:
        opts = self.options
        run, objective = request.run, request.run.objective
        steps, lr = opts.budget(run), opts.lr(run)
        batches = seeded_batches(request.retain_ids, opts.batch(run), opts.seed)
        w = request.start_params()
        for t in range(steps):
            _, grad = objective.value_and_grad(w, next(batches))
            w = w - lr * (grad + opts.alpha * (1 - t / steps) * torch.sign(w))
        return w, 0, {"steps": steps, "lr": lr, "alpha": opts.alpha, "l1_norm": float(w.abs().sum())}
