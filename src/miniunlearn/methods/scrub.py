"""SCRUB: a student that stays close to its teacher on the retain set and moves away on the forget set.

The teacher is the starting model w0, the student starts at it. The budget is cut into
epochs; each of the first ``msteps`` epochs begins with one pass over the forget set in
max-steps (ascent on the mean KL(teacher || student) at temperature T), and every epoch then
takes its share of min-steps on retain batches (descent on the mean of gamma * CE + alpha * KL
plus the run's L2 term, at step size lr / (gamma + alpha)). Teacher logits are forward passes
at w0 (not counted as gradient evaluations; reported as ``teacher_forwards``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from .base import UnlearningMethod, UnlearnRequest, register
from .deep_losses import (
    LogitsLoss,
    cross_entropy_sum,
    kl_at_temperature,
    logits_loss_grad_sum,
    teacher_logits,
)
from .options import option
from .step_budget import StepBudgetOptions, seeded_batches


@register
class Scrub(UnlearningMethod):
    """Teacher-student max-min unlearning: diverge from the teacher on U, match it (and the labels) on R.

    SCRUB (Kurmanji et al., NeurIPS 2023) with the defaults of its small-scale setting, adapted
    to plain gradient steps at a constant rate: the step budget counts the min-steps, cut evenly
    into ``epochs`` epochs; each of the first ``msteps`` epochs begins with one pass over the
    forget set; min-steps use lr / (gamma + alpha), so gamma = 1, alpha = 0 is exactly
    finetune. Sources, adaptation and measurements: docs/method.md, "Baselines".
    """

    name = "scrub"
    summary = "SCRUB: KL ascent from the start model on forget, KL + CE descent on retain (no history)"

    @dataclass(frozen=True)
    class Options(StepBudgetOptions):
        """The shared step budget (counting min-steps) plus SCRUB's schedule and loss weights."""

        epochs: int = option(10, "epochs the min-step budget is cut into", ge=1)
        msteps: int = option(3, "first epochs that begin with a pass of max-steps on the forget set", ge=0)
        gamma: float = option(1.0, "weight of the retain cross-entropy in the min-steps", ge=0, lt=math.inf)
        alpha: float = option(
            0.5, "weight of the retain KL to the teacher in the min-steps", ge=0, lt=math.inf
        )
        temperature: float = option(2.0, "softmax temperature of the KL terms", gt=0, lt=math.inf)

        def __post_init__(self) -> None:
            if self.msteps > self.epochs:
                raise ConfigError(f"scrub: msteps must be in [0, epochs={self.epochs}], got {self.msteps}")
            if not self.gamma + self.alpha > 0:
                raise ConfigError(
                    f"scrub: gamma and alpha must not both be 0; got {self.gamma}, {self.alpha}"
                )

    def _unlearn(self, request: UnlearnRequest) -> tuple[torch.Tensor, int, dict[str, Any]]:
        opts = self.options
        run, objective = request.run, request.run.objective
        steps, lr, size = opts.budget(run), opts.lr(run), opts.batch(run)
        forget = request.all_forgotten
        forget_size = size if 0 < size < forget.size else forget.size
        pass_steps = math.ceil(forget.size / forget_size)
        epochs = min(opts.epochs, steps)
        msteps = min(opts.msteps, epochs)
        retain_batches = seeded_batches(request.retain_ids, size, opts.seed)
        forget_batches = seeded_batches(forget, size, opts.seed + 1)
        temp, gamma, alpha = opts.temperature, opts.gamma, opts.alpha

        def away(logits: torch.Tensor, _y: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
            return -kl_at_temperature(logits, teacher, temp)

        def close(logits: torch.Tensor, y: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
            return gamma * cross_entropy_sum(logits, y) + alpha * kl_at_temperature(logits, teacher, temp)

        w0 = request.start_params()
        w = w0.clone()
        forwards = max_steps = 0

        def mean_grad(loss: LogitsLoss, w: torch.Tensor, batch: np.ndarray) -> torch.Tensor:
            """Gradient of the batch mean of ``loss`` at ``w``."""
            _, grad = logits_loss_grad_sum(objective, w, batch, loss, (teacher_logits(objective, w0, batch),))
            return grad / batch.size

        for epoch in range(epochs):
            if epoch < msteps:
                for _ in range(pass_steps):
                    batch = next(forget_batches)
                    w = w - lr * mean_grad(away, w, batch)
                    forwards += batch.size
                    max_steps += 1
            for _ in range(steps * (epoch + 1) // epochs - steps * epoch // epochs):
                batch = next(retain_batches)
                w = w - lr / (gamma + alpha) * (mean_grad(close, w, batch) + objective.lam * w)
                forwards += batch.size
        diagnostics = {
            "steps": steps,
            "max_steps": max_steps,
            "epochs": epochs,
            "msteps": msteps,
            "lr": lr,
            "teacher_forwards": forwards,
        }
        return w, 0, diagnostics
