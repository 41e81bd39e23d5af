"""Fast retraining: the history-free peer of ``mini``'s rewind mode on networks.

Retrains from the run's initial weights on the retain set with the recipe ``mini``'s
replay uses, not the run's own: heavy-ball SGD (momentum 0.9) on seeded retain batches of
the run's size, a cosine-decayed rate peaking at ``lr_scale`` (1.5) times the run's, a
budget of ``fraction`` (40 %) of the original run's passes, an early stop once the last
pass's mean objective reaches the original model's full-data objective (``match_loss``:
the one number read from the minimal history, as ``mini`` reads it, or one pass to measure
it on a run without one), and a restart at half the rate when the replay diverges or
collapses. It reads no history and starts from data-independent weights; its replay never
sees a forgotten sample, so with ``match_loss`` off it is exact unlearning by construction
(with it, the one scalar it stops at comes from the original model). It is not the model
the run's own recipe would retrain, so it spends the error budget like any approximate
method.

It exists to tell what ``mini``'s stored history adds on networks: measured on the leaky
MNIST MLP, the same replay from the initial weights came as close to retraining as the
rewound one at about the same passes (docs/results/rewind-variants.md), so ``mini``'s
speed against retraining with the run's recipe is a recipe difference; quote it against
this peer too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import HistoryError
from ..training.history import FINAL_ROLE
from .base import UnlearningMethod, UnlearnRequest, register
from .mini.options import MiniOptions
from .mini.rewind import replay_budget, replay_peak, replay_with_restarts
from .options import option

_MINI = MiniOptions()  # the replay's defaults are mini's rewind mode's own


@register
class RetrainFast(UnlearningMethod):
    """Retraining from the initial weights with the efficient replay recipe; no history."""

    name = "retrain-fast"
    summary = (
        "retrain from the initial weights on the retain set with mini's replay recipe (momentum, "
        "cosine rate, matched-loss stop, restart on collapse); no history: the peer of mini on networks"
    )

    @dataclass(frozen=True)
    class Options:
        """The replay's budget, rate, momentum, stop rule and batch order."""

        fraction: float = option(
            _MINI.replay_fraction, "budget as a fraction of the original run's passes", gt=0, le=10
        )
        lr_scale: float = option(_MINI.replay_lr_scale, "peak rate, times the run's base rate", gt=0, lt=1e6)
        momentum: float = option(_MINI.replay_momentum, "heavy-ball momentum", ge=0, lt=1)
        sharpness_cap: bool = option(
            _MINI.replay_sharpness_cap,
            "cap the peak rate at (1 + momentum) / the batch Hessian's largest eigenvalue at the start",
        )
        match_loss: bool = option(
            True,
            "stop once the last pass's mean objective reaches the original model's (stored, or one pass)",
        )
        seed: int = option(0, "retain-batch order", ge=0)

    def history_read(self) -> tuple[str, ...]:
        """The minimal history's final objective value when stopping on it (one number)."""
        return (FINAL_ROLE,) if self.options.match_loss else ()

    def _unlearn(self, request: UnlearnRequest) -> tuple[torch.Tensor, int, dict[str, Any]]:
        opts = self.options
        run, objective = request.run, request.run.objective
        retain = request.retain_ids
        batch, steps = replay_budget(run, retain, opts.fraction)
        w0 = run.initial_params()
        peak, sharpness = replay_peak(
            objective,
            w0,
            retain,
            batch,
            opts.lr_scale * run.config.lr,
            opts.momentum,
            opts.seed,
            sharpness_cap=opts.sharpness_cap,
        )
        target, read = -math.inf, 0
        if (
            opts.match_loss
        ):  # the original run's final objective: stored by its minimal history, else one pass
            try:
                values = run.mini_history().values
                target, read = float(values[0]), int(values[:1].nbytes)
            except HistoryError:
                target = float(objective.value_and_grad(run.load_model_params())[0])
        replay, peak, restarts = replay_with_restarts(
            objective, w0, retain, batch, steps, peak, opts.momentum, target, opts.seed
        )
        return (
            replay.w,
            read,
            {
                "replay_steps": replay.steps,
                "replay_stop": replay.stop,
                "replay_batch": int(batch),
                "replay_peak_lr": peak,
                "replay_restarts": restarts,
                "replay_sharpness": sharpness,
                "budget_steps": steps,
            },
        )
