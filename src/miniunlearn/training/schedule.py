"""The step plan of a training run: which sample ids and which learning rate at each step.

The plan is a pure function of the config and the number of samples, so the
original run, the retrain oracle and replay methods see the same batches. Batch
order for mini-batch SGD comes from a seeded ``torch.Generator``: one random
permutation per epoch, cut into consecutive batches (the last may be shorter).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError
from .config import TrainConfig


def learning_rate(config: TrainConfig, step: int, total_steps: int) -> float:
    """Return the learning rate at ``step`` (0-based) of ``total_steps`` under the config's schedule."""
    if config.lr_schedule == "constant":
        return config.lr
    if config.lr_schedule == "step":
        factor = 1.0
        if step >= int(0.5 * total_steps):
            factor *= 0.1
        if step >= int(0.75 * total_steps):
            factor *= 0.1
        return config.lr * factor
    return 0.5 * config.lr * (1.0 + math.cos(math.pi * step / total_steps))


@dataclass(frozen=True)
class StepPlan:
    """Batch order and learning rates of a run.

    ``order`` is (epochs, n) int64 permutations for SGD, or None for full batch.
    ``rng_states`` holds the generator state at the start of each epoch (uint8 rows).
    """

    n: int
    steps_per_epoch: int
    batch_size: int
    lrs: np.ndarray
    order: np.ndarray | None
    rng_states: np.ndarray | None

    @property
    def total_steps(self) -> int:
        """Number of gradient steps in the run."""
        return int(self.lrs.shape[0])

    def batch_ids(self, step: int) -> np.ndarray | None:
        """Return the sample ids of ``step``, or None meaning all samples (full batch)."""
        if self.order is None:
            return None
        epoch, within = divmod(step, self.steps_per_epoch)
        return self.order[epoch, within * self.batch_size : (within + 1) * self.batch_size]


MAX_TOTAL_STEPS = 10_000_000
"""Most optimisation steps a run may take (its schedule and history are kept per step)."""


def make_plan(config: TrainConfig, n: int) -> StepPlan:
    """Return the step plan of ``config`` on ``n`` training samples.

    Raises ConfigError, before any work, when epochs x steps per epoch exceeds
    ``MAX_TOTAL_STEPS``.
    """
    per_epoch = 1 if config.full_batch or config.batch_size >= n else math.ceil(n / config.batch_size)
    if config.epochs * per_epoch > MAX_TOTAL_STEPS:
        raise ConfigError(
            f"{config.epochs:,} epochs of {per_epoch:,} steps are {config.epochs * per_epoch:,} steps, more "
            f"than the {MAX_TOTAL_STEPS:,} a run may take (its schedule is stored per step); lower --epochs "
            "or raise --batch-size"
        )
    if config.full_batch or config.batch_size >= n:
        steps_per_epoch, order, states = 1, None, None
        batch_size = n
    else:
        batch_size = config.batch_size
        steps_per_epoch = math.ceil(n / batch_size)
        gen = torch.Generator().manual_seed(config.seed)
        perms, state_rows = [], []
        for _ in range(config.epochs):
            state_rows.append(gen.get_state().numpy().copy())
            perms.append(torch.randperm(n, generator=gen, device="cpu").numpy())
        order = np.stack(perms).astype(np.int64)
        states = np.stack(state_rows)
    total = config.epochs * steps_per_epoch
    lrs = np.array([learning_rate(config, t, total) for t in range(total)], dtype=np.float64)
    return StepPlan(n, steps_per_epoch, batch_size, lrs, order, states)


def refilled_plan(config: TrainConfig, retained: np.ndarray) -> StepPlan:
    """The plan of ``config`` run afresh on the ``retained`` ids (sorted, unique): the batches
    the recipe draws with its seed over that many samples, mapped to those ids, and the rates
    of that many steps (``retrain_batches="refill"``). With every id retained it is the
    original plan; a full-batch recipe keeps its one batch of the retain set."""
    plan = make_plan(config, int(retained.size))
    if plan.order is None:  # one batch: the caller's forget mask leaves the retain set
        return plan
    return dataclasses.replace(plan, order=retained[plan.order])


def without_ids(batch: np.ndarray | None, forget_mask: np.ndarray) -> np.ndarray | None:
    """Return the ids of ``batch`` (None = all) whose ``forget_mask`` entry is False, in order.

    A batch that loses nothing is returned as it is (None stays None), so that the
    computation, and its rounding, is exactly the original one.
    """
    if batch is None:
        return np.flatnonzero(~forget_mask) if forget_mask.any() else None
    hit = forget_mask[batch]
    return batch[~hit] if hit.any() else batch


# Fractions of training at which non-convex runs also keep a checkpoint, the points a
# rewinding unlearner can go back to (see methods/mini/rewind.py).
REWIND_FRACTIONS = (0.0, 1 / 32, 1 / 16, 1 / 8)
# Fractions of training at which convex runs trained by mini-batch SGD also keep a
# checkpoint: the knots of the linear-response unlearner's trajectory (methods/mini/response.py),
# dense early, where the parameters move fastest.
RESPONSE_FRACTIONS = (0.0, 1 / 16, 1 / 8, 1 / 4, 1 / 2)


def fraction_steps(total_steps: int, fractions: tuple[float, ...]) -> set[int]:
    """The steps round(f T) of the given fractions of ``total_steps`` (at most T)."""
    return {min(total_steps, round(f * total_steps)) for f in fractions}


def checkpoint_steps(total_steps: int, k: int, early: tuple[float, ...] = ()) -> np.ndarray:
    """Return the minimal-history steps: T, T-1, T-2, T-4, ..., T-2^(k-1) (>= 0) and, for each
    fraction f in ``early``, step round(f T); distinct and descending.

    Step t means the parameters *before* update t (step T is the final model).
    """
    steps = {total_steps} | {total_steps - 2**j for j in range(k) if total_steps - 2**j >= 0}
    steps |= fraction_steps(total_steps, early)
    return np.array(sorted(steps, reverse=True), dtype=np.int64)
