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

from ..errors import ConfigError
from .base import UnlearningMethod, UnlearnRequest, register
from .deep_losses import cross_entropy_sum, logits_loss_grad_sum, random_wrong_labels
from .finetune import batch_size_for, check_budget_options, seeded_batches, step_budget


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
    """Descent on the retain set plus fitting seeded random wrong labels on the forget set."""

    name = "rl"
    summary = "fine-tune on retain plus forget set with random wrong labels (RL; no history needed)"

    @dataclass(frozen=True)
    class Options:
        """Source: random labelling, a baseline of Golatkar et al. (CVPR 2020) and the RL baseline
        of SalUn (Fan et al., ICLR 2024), whose public code (OPTML-Group/Unlearn-Saliency,
        Classification/unlearn/RL.py and README) runs 10 epochs of SGD (momentum 0.9, weight decay
        5e-4, batch 256) at lr 0.013 on ResNet-18 / CIFAR-10 trained 182 epochs at lr 0.1 decayed
        10x at epochs 91 and 136; each forget sample gets a fresh label drawn uniformly from all
        classes at every visit, and forget and retain batches are either visited one after the
        other (CIFAR-10) or shuffled together into mixed batches (CIFAR-100).

        Adapted here: each step takes one retain batch (true labels) and one forget batch (fresh
        seeded labels drawn uniformly from the *wrong* classes, so no sample keeps its label by
        chance) and descends on their weighted mean loss (see the module docstring); beta (default
        1) weighs a forget sample against a retain sample, so with full batches and beta = 1 this
        is the authors' mixed-batch variant. Plain gradient steps at a constant rate.
        steps_fraction: budget as a fraction of the original run's steps (default 10 %, like
        finetune; the authors' 10 of 182 epochs is 5.5 %); steps: absolute budget overriding it;
        lr_scale: multiple of the run's base learning rate (default 1: the authors' unlearning
        rate is 0.13x their initial and 13x their final training rate, and this library's runs
        mostly keep one constant rate); batch_size: None = the run's (0 = full batch), also the
        forget-batch size (capped at |U|); seed: batch orders (retain: seed, forget: seed + 1) and
        labels (seed + 2). The forget set is every forgotten id (this request's and earlier ones),
        as in neggrad. Measured on the digits MLP fixture (10 % deletion, 30 full-batch steps):
        forget-set cross-entropy 0.250 -> 0.365 (finetune: 0.255, retraining: 0.278), retain
        accuracy 0.968 -> 0.974; summing instead of averaging the two losses diverged on the
        converged logistic regression (lr 1.5; retain accuracy 0.92 -> 0.51)."""

        steps_fraction: float = 0.1
        steps: int | None = None
        beta: float = 1.0
        lr_scale: float = 1.0
        batch_size: int | None = None
        seed: int = 0

        def __post_init__(self) -> None:
            check_budget_options("rl", self.steps_fraction, self.steps, self.lr_scale, self.batch_size)
            if not self.beta >= 0:
                raise ConfigError(f"rl: beta must be >= 0, got {self.beta}")

    def _unlearn(self, request: UnlearnRequest) -> tuple[torch.Tensor, int, dict[str, Any]]:
        opts = self.options
        run = request.run
        steps = step_budget(run, opts.steps_fraction, opts.steps)
        lr = opts.lr_scale * run.config.lr
        w = random_label_steps(
            request,
            request.start_params(),
            steps=steps,
            lr=lr,
            batch_size=batch_size_for(run, opts.batch_size),
            beta=opts.beta,
            seed=opts.seed,
        )
        return w, 0, {"steps": steps, "lr": lr, "beta": opts.beta}
