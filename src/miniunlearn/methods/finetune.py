"""Fine-tuning on the retain set: keep training the current model on R only.

The simplest approximate-unlearning baseline: from the current model, run a budget of
gradient steps of the run's own kind (full batch, or mini-batches of the run's batch
size drawn from seeded permutations of R) at the run's base learning rate. Since the
forget set is never visited again, its influence decays with the contraction of the
retain-set training map; the budget trades cost against how far it decays.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from ..training.rundir import Run
from .base import UnlearningMethod, UnlearnRequest, register


def step_budget(run: Run, fraction: float, steps: int | None) -> int:
    """Return the number of steps: ``steps`` when given, else ceil(``fraction`` * the run's steps)."""
    if steps is not None:
        return int(steps)
    return max(1, math.ceil(fraction * run.total_steps))


def batch_size_for(run: Run, batch_size: int | None) -> int:
    """Return the batch size to use: ``batch_size`` when given, else the run's (0 = full batch)."""
    return int(run.config.batch_size if batch_size is None else batch_size)


def seeded_batches(ids: np.ndarray, batch_size: int, seed: int) -> Iterator[np.ndarray]:
    """Yield batches of ``ids`` forever: each pass is a seeded permutation cut into ``batch_size`` pieces.

    ``batch_size`` 0 (or >= len(ids)) yields all of ``ids`` in their given order every time.
    """
    if batch_size <= 0 or batch_size >= ids.size:
        while True:
            yield ids
    gen = torch.Generator().manual_seed(int(seed))
    while True:
        perm = ids[torch.randperm(ids.size, generator=gen, device="cpu").numpy()]
        for start in range(0, perm.size, batch_size):
            yield perm[start : start + batch_size]


def check_budget_options(
    name: str, steps_fraction: float, steps: int | None, lr_scale: float, batch_size: int | None
) -> None:
    """Raise ConfigError when a step-budget option of method ``name`` is out of range."""
    if not steps_fraction > 0:
        raise ConfigError(f"{name}: steps_fraction must be positive, got {steps_fraction}")
    if steps is not None and steps < 1:
        raise ConfigError(f"{name}: steps must be at least 1, got {steps}")
    if not lr_scale > 0:
        raise ConfigError(f"{name}: lr_scale must be positive, got {lr_scale}")
    if batch_size is not None and batch_size < 0:
        raise ConfigError(f"{name}: batch_size must be >= 0 (0 = full batch), got {batch_size}")


@register
class FineTune(UnlearningMethod):
    """Continue training the current model on the retain set only, for a step budget."""

    name = "finetune"
    summary = "continue training on the retain set only (no history needed)"

    @dataclass(frozen=True)
    class Options:
        """steps_fraction: budget as a fraction of the original run's steps (default 10 %); steps:
        an absolute budget that overrides it; lr_scale: multiple of the run's base learning rate
        (constant); batch_size: None = the run's (0 = full batch); seed: retain-batch order.
        Defaults measured on converged digits logistic regression (full-batch GD, 300 steps):
        10 % of the steps at the run's rate closes 60-65 % of the distance to retraining (1 %
        deletion: 0.044 -> 0.017; 10 %: 0.142 -> 0.052), 20 % closes 85 %. On mini-batch SGD the
        new batch order's noise can leave it farther from the retrained endpoint than the original
        model (measured at 1 %: 0.043 -> 0.086; lr_scale 0.3 / 0.1 gave 0.049 / 0.043): an
        SGD endpoint's distance has a floor set by the batch-order noise."""

        steps_fraction: float = 0.1
        steps: int | None = None
        lr_scale: float = 1.0
        batch_size: int | None = None
        seed: int = 0

        def __post_init__(self) -> None:
            check_budget_options("finetune", self.steps_fraction, self.steps, self.lr_scale, self.batch_size)

    def _unlearn(self, request: UnlearnRequest) -> tuple[torch.Tensor, int, dict[str, Any]]:
        opts = self.options
        run, objective = request.run, request.run.objective
        steps = step_budget(run, opts.steps_fraction, opts.steps)
        lr = opts.lr_scale * run.config.lr
        batches = seeded_batches(request.retain_ids, batch_size_for(run, opts.batch_size), opts.seed)
        w = request.start_params()
        for _ in range(steps):
            _, grad = objective.value_and_grad(w, next(batches))
            w = w - lr * grad
        return w, 0, {"steps": steps, "lr": lr}
