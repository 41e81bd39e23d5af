"""Random labelling (RL): fine-tune with the forget set relabelled at random.

From the current model, each step takes a retain batch R_b with its true labels and a forget
batch U_b whose labels are replaced by fresh, seeded, uniformly drawn wrong labels, and takes a
gradient step on the weighted mean cross-entropy over the union of the two batches plus the
run's L2 term:

    (sum_{R_b} CE(x_i, y_i) + beta sum_{U_b} CE(x_i, y~_i)) / (|R_b| + beta |U_b|) + (lam/2) |w|^2.

Fitting labels that change at every visit drives the forget samples' predictions towards
chance, descent on R keeps the model useful; a mean (not a sum) of the two losses keeps the
step as stable as the run's own. :func:`random_label_steps` is shared with ``salun``, which
restricts the same update to a weight-saliency mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .base import UnlearningMethod, UnlearnRequest, register
from .deep_losses import cross_entropy_sum, logits_loss_grad_sum, random_wrong_labels
from .options import option
from .step_budget import StepBudgetOptions, seeded_batches


def random_label_steps(
    request: UnlearnRequest,
    w: torch.Tensor,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    beta: float,
    seed: int,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Return ``w`` after ``steps`` random-label steps (only entries where ``mask`` is True move).

    Retain batches come from seed ``seed``, forget batches (of all forgotten ids) from
    ``seed + 1``, the random labels from ``seed + 2``. Entries outside ``mask`` are returned
    bit for bit as given.
    """
    objective = request.run.objective
    n_classes = int(request.run.dataset.n_classes)
    retain_batches = seeded_batches(request.retain_ids, batch_size, seed)
    forget_batches = seeded_batches(request.all_forgotten, batch_size, seed + 1)
    labels_gen = torch.Generator().manual_seed(int(seed) + 2)
    for _ in range(steps):
        retain_b, forget_b = next(retain_batches), next(forget_batches)
        _, grad_r = objective.loss_grad_sum(w, retain_b)
        wrong = random_wrong_labels(
            objective.y[torch.as_tensor(forget_b, device=objective.device)], n_classes, labels_gen
        )
        _, grad_u = logits_loss_grad_sum(
            objective, w, forget_b, lambda logits, _y, target: cross_entropy_sum(logits, target), (wrong,)
        )
        weight = retain_b.size + beta * forget_b.size
        step = lr * ((grad_r + beta * grad_u) / weight + objective.lam * w)
        w = w - step if mask is None else torch.where(mask, w - step, w)
    return w


@register
class RandomLabels(UnlearningMethod):
    """Descent on the retain set plus fitting seeded random wrong labels on the forget set.

    Random labelling (Golatkar et al., CVPR 2020; the RL baseline of SalUn, Fan et al., ICLR
    2024), adapted to plain gradient steps at a constant rate, one retain and one forget batch
    per step, wrong labels only; the forget set is every forgotten id. Sources, adaptation and
    measurements: docs/method.md, "Baselines".
    """

    name = "rl"
    summary = "fine-tune on retain plus forget set with random wrong labels (RL; no history needed)"

    @dataclass(frozen=True)
    class Options(StepBudgetOptions):
        """The shared step budget (seed: also the random labels, seed + 2) plus the forget weight."""

        beta: float = option(1.0, "weight of a forget sample (random label) against a retain sample", ge=0)

    def _unlearn(self, request: UnlearnRequest) -> tuple[torch.Tensor, int, dict[str, Any]]:
        opts = self.options
        run = request.run
        steps, lr = opts.budget(run), opts.lr(run)
        w = random_label_steps(
            request,
            request.start_params(),
            steps=steps,
            lr=lr,
            batch_size=opts.batch(run),
            beta=opts.beta,
            seed=opts.seed,
        )
        return w, 0, {"steps": steps, "lr": lr, "beta": opts.beta}
