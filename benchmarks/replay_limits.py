"""How close can a short replay bring a leaky CNN to retraining? Replays beyond mini's options.

The momentum Fashion-MNIST CNN (``--preset leaky-momentum``) is the one model on which
``mini``'s rewind mode stays more than a point of accuracy from retraining at 10 and 50 %:
its replay, 40 % of the run's 15 epochs from the checkpoint at 1/16 of training, fits the
retain set 4-6 points less than retraining does (docs/results.md). This benchmark replays
from other starting points and with other optimisers and losses, none of which the library
offers, to find whether any short replay gets within the 1-point target:

* ``default``: ``mini`` as shipped;
* ``batch 256, 80 %``: batches of 256 at 3x the run's rate for 80 % of its passes;
* ``rewind 1/4`` and ``rewind 1/2``: the replay (30 % of the passes) from the parameters at
  1/4 and 1/2 of training, which the run does not store (the run's training is replayed to
  get them, and checked to end bit for bit at the stored model);
* ``distillation``: the default replay on half cross-entropy, half the KL divergence (at
  temperature 2) to the original model's predictions on the same retain batch;
* ``adam``: the default budget and batches stepped by Adam at 1e-3, cosine-decayed.

Each row gives the accuracy gap to retraining (mean |difference| over retain, forget and test
accuracy, points), the three accuracies, the population attack's AUC on the forget set, the
passes over the retain set and the seconds against retraining's. Usage::

    python benchmarks/replay_limits.py --seeds 3 --threads 2 > docs/results/replay-limits-cnn-momentum.md

Retraining is the recipe run afresh on the retain set (``--retrain-batches refill``).
"""

from __future__ import annotations

import argparse
import math
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.func import functional_call

from arguments import ratio_list
from miniunlearn.experiment.assess import assess, reference
from miniunlearn.experiment.bench import BenchSpec, cell_forget_ids, trained_run
from miniunlearn.methods import UnlearnRequest, get_method
from miniunlearn.methods.finetune import seeded_batches
from miniunlearn.methods.mini.options import MiniOptions
from miniunlearn.methods.mini.rewind import replay_budget, replay_with_restarts, rewind_point
from miniunlearn.objective import Objective
from miniunlearn.training import retrain
from miniunlearn.training.rundir import Run
from miniunlearn.training.trainer import train_loop

MINI = MiniOptions()
"""The shipped defaults the variants start from: the rewind point, the replay's budget, rate
multiple and momentum (methods/mini/options.py owns them)."""
LATE_FRACTIONS = (0.25, 0.5)
DISTILL_WEIGHT, DISTILL_TEMPERATURE = 0.5, 2.0
ADAM_RATE = 1e-3


class CheckpointCatcher:
    """A training recorder that keeps the parameters at the chosen steps and nothing else."""

    def __init__(self, steps: dict[int, float]) -> None:
        self.steps = steps
        self.params: dict[float, torch.Tensor] = {}

    def record_step(self, t: int, w: torch.Tensor, grad: torch.Tensor, lr: float) -> None:
        """Keep ``w`` when ``t`` is one of the chosen steps."""
        if t in self.steps:
            self.params[self.steps[t]] = w.detach().clone()

    def needs_full_gradient(self, t: int) -> bool:
        """Never: only parameters are kept."""
        return False


def late_checkpoints(run: Run) -> dict[float, torch.Tensor]:
    """Return {fraction: parameters at that fraction of training} for ``LATE_FRACTIONS``, by
    training ``run`` again along its plan; raises when that training does not end at the stored
    model bit for bit (the checkpoints would not be this run's)."""
    objective, plan = run.objective, run.plan
    catcher = CheckpointCatcher({int(f * plan.total_steps): f for f in LATE_FRACTIONS})
    w0 = run.initial_params().to(objective.dtype)
    final = train_loop(objective, w0, plan, recorder=catcher, momentum=run.config.momentum)
    if not torch.equal(final, run.load_model_params().to(objective.dtype)):
        raise RuntimeError(
            "training again did not reproduce the stored model; the checkpoints would be wrong"
        )
    return catcher.params


def batch_gradient(
    objective: Objective, w: torch.Tensor, ids: np.ndarray, teacher: torch.Tensor | None
) -> torch.Tensor:
    """Gradient at ``w`` of the mean cross-entropy on the batch ``ids`` plus the run's L2 term,
    or with ``teacher`` parameters of the distillation loss (``DISTILL_WEIGHT`` of the
    temperature-scaled KL divergence to the teacher's predictions, the rest cross-entropy)."""
    rows = torch.as_tensor(ids, dtype=torch.long)
    x, y = objective.x[rows].to(objective.dtype), objective.y[rows]
    w = w.detach().requires_grad_()
    logits = functional_call(objective.model, objective.unflatten(w), (x,))
    loss = torch.nn.functional.cross_entropy(logits, y)
    if teacher is not None:
        with torch.no_grad():
            target = functional_call(objective.model, objective.unflatten(teacher), (x,))
        t = DISTILL_TEMPERATURE
        kl = torch.nn.functional.kl_div(
            torch.log_softmax(logits / t, 1),
            torch.log_softmax(target / t, 1),
            log_target=True,
            reduction="batchmean",
        )
        loss = (1 - DISTILL_WEIGHT) * loss + DISTILL_WEIGHT * t * t * kl
    loss = loss + 0.5 * objective.lam * torch.dot(w, w)
    (grad,) = torch.autograd.grad(loss, w)
    return grad


def custom_replay(
    objective: Objective,
    w: torch.Tensor,
    retain: np.ndarray,
    batch: int,
    steps: int,
    *,
    peak: float,
    teacher: torch.Tensor | None = None,
    adam: bool = False,
) -> torch.Tensor:
    """Replay ``steps`` seeded retain batches from ``w`` at a cosine-decayed rate from ``peak``:
    heavy-ball at mini's replay momentum on :func:`batch_gradient`, or Adam (0.9, 0.999) with
    ``adam``."""
    batches = seeded_batches(retain, batch, 0)
    first, second = torch.zeros_like(w), torch.zeros_like(w)
    for step in range(steps):
        grad = batch_gradient(objective, w, next(batches), teacher)
        rate = peak * 0.5 * (1.0 + math.cos(math.pi * step / steps))
        if adam:
            first = 0.9 * first + 0.1 * grad
            second = 0.999 * second + 0.001 * grad * grad
            unbiased = (first / (1 - 0.9 ** (step + 1))) / (
                (second / (1 - 0.999 ** (step + 1))).sqrt() + 1e-8
            )
            w = w - rate * unbiased
        else:
            first = MINI.replay_momentum * first + grad
            w = w - rate * first
    return w.detach()


def variants(run: Run, request: UnlearnRequest, late: dict[float, torch.Tensor]) -> dict[str, Callable]:
    """Return {name: () -> (parameters, passes over the retain set)} for the variants above."""
    objective, retain = run.objective, request.retain_ids
    lr, size = run.config.lr, retain.size
    _, rewound, _ = rewind_point(request, run.mini_history(), MINI.rewind_fraction, correct=False)
    batch, steps = replay_budget(run, retain, MINI.replay_fraction)

    def default() -> tuple[torch.Tensor, float]:
        result = get_method("mini").unlearn(request)
        return result.params, result.record.grad_evals / size

    def sgd(start: torch.Tensor, batch: int, fraction: float, rate: float) -> Callable:
        def go() -> tuple[torch.Tensor, float]:
            steps = math.ceil(fraction * run.config.epochs * size / batch)
            before = objective.grad_evals  # counts every attempt when a replay restarts
            replay, _, _ = replay_with_restarts(
                objective, start, retain, batch, steps, rate * lr, MINI.replay_momentum, -math.inf, 0
            )
            return replay.w, (objective.grad_evals - before) / size

        return go

    def custom(**kwargs: object) -> Callable:
        def go() -> tuple[torch.Tensor, float]:
            return custom_replay(objective, rewound, retain, batch, steps, **kwargs), steps * batch / size

        return go

    teacher = run.load_model_params().to(objective.dtype)
    return {
        "default": default,
        "batch 256, 80 %, rate 3x": sgd(rewound, 256, 0.8, 3.0),
        **{f"rewind {f:g}, 30 %": sgd(late[f], batch, 0.3, MINI.replay_lr_scale) for f in LATE_FRACTIONS},
        "distillation": custom(peak=MINI.replay_lr_scale * lr, teacher=teacher),
        "adam": custom(peak=ADAM_RATE, adam=True),
    }


def main() -> None:
    """Parse arguments, run every variant on every cell and print markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratios", default="0.1,0.5,0.9")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--runs-dir", default="runs/leaky")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ratios = ratio_list(args.ratios)
    spec = BenchSpec(
        "fashion-mnist",
        "cnn",
        ratios,
        ["mini"],
        seeds=args.seeds,
        preset="leaky-momentum",
        runs_dir=Path(args.runs_dir),
        train_overrides={"retrain_batches": "refill"},
    )
    seeds = f"seeds 0-{args.seeds - 1}"
    print(f"# Short replays on the momentum Fashion-MNIST CNN, {seeds}, retraining in full batches\n")
    print(
        "| seed | ratio | variant | accuracy gap | retain acc (retrain) | forget acc (retrain) "
        "| test acc (retrain) | population AUC (retrain) | passes | seconds (retrain) |"
    )
    print("|---|---|---|---:|---|---|---|---|---:|---|")
    summary: dict[tuple[float, str], list[tuple[float, float, float, float]]] = defaultdict(list)
    for seed in range(args.seeds):
        run = trained_run(spec.config(seed), spec.runs_dir, progress=False)
        late = late_checkpoints(run)
        for index, ratio in enumerate(ratios):
            forget = cell_forget_ids(run.n_train, ratio, seed, index)
            started = time.perf_counter()
            retrained = retrain(run, forget)
            retrain_s = time.perf_counter() - started
            ref = reference(run, retrained, forget)
            r = ref.metrics
            request = UnlearnRequest(run, forget)
            for name, replay in variants(run, request, late).items():
                started = time.perf_counter()
                params, passes = replay()
                seconds = time.perf_counter() - started
                m = assess(run, params, ref, forget)
                gap = 100 * float(np.mean([abs(m[f"{k}_acc_gap"]) for k in ("retain", "forget", "test")]))
                auc = m["mia_auc"] - r["mia_auc"]
                summary[(ratio, name)].append((gap, auc, passes, retrain_s / seconds))
                accuracies = " | ".join(
                    f"{m[f'{k}_acc']:.3f} ({r[f'{k}_acc']:.3f})" for k in ("retain", "forget", "test")
                )
                print(
                    f"| {seed} | {ratio:.0%} | {name} | {gap:.2f} | {accuracies} | {m['mia_auc']:.3f} "
                    f"({r['mia_auc']:.3f}) | {passes:.1f} | {seconds:.1f} ({retrain_s:.1f}) |",
                    flush=True,
                )
    print("\n## Means over seeds\n")
    print("| ratio | variant | accuracy gap | population AUC minus retraining's | passes | speed-up |")
    print("|---|---|---:|---:|---:|---:|")
    for (ratio, name), rows in summary.items():
        gap, auc, passes, speed = np.mean(rows, axis=0)
        print(f"| {ratio:.0%} | {name} | {gap:.2f} | {auc:+.3f} | {passes:.1f} | {speed:.1f}x |")


if __name__ == "__main__":
    main()
