"""The step budget shared by the gradient-step baselines (finetune, neggrad, rl, salun, l1sparse, scrub).

:class:`StepBudgetOptions` declares the five options they share (``steps_fraction``,
``steps``, ``lr_scale``, ``batch_size``, ``seed``); each method's ``Options`` subclasses it
and adds its own. The helpers turn them into a number of steps, a learning rate, a batch
size and a seeded stream of batches. No method is registered here.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..training.rundir import Run
from .options import option


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


@dataclass(frozen=True)
class StepBudgetOptions:
    """The options of a budget of plain gradient steps at a constant rate (subclass it, frozen)."""

    steps_fraction: float = option(0.1, "step budget as a fraction of the original run's steps", gt=0)
    steps: int | None = option(None, "absolute step budget, overriding steps_fraction", ge=1)
    lr_scale: float = option(1.0, "constant learning rate as a multiple of the run's base rate", gt=0)
    batch_size: int | None = option(
        None, "batch size: None = the run's, 0 = full batch (forget batches capped at |U|)", ge=0
    )
    seed: int = option(0, "seed of the batch orders (retain: seed, forget: seed + 1)")

    def budget(self, run: Run) -> int:
        """Return the number of steps for ``run`` (see :func:`step_budget`)."""
        return step_budget(run, self.steps_fraction, self.steps)

    def lr(self, run: Run) -> float:
        """Return the learning rate for ``run``: ``lr_scale`` times its base rate."""
        return self.lr_scale * run.config.lr

    def batch(self, run: Run) -> int:
        """Return the batch size for ``run`` (see :func:`batch_size_for`)."""
        return batch_size_for(run, self.batch_size)
