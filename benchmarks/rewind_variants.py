"""Variants of mini's rewind mode on a leaky network, against retraining.

For each seed (the bench's trained run of that seed) and forget ratio (the bench's forget
set of that seed and ratio, so retrained models come from the run's cache), retrains once
and runs every variant of ``mini`` and the do-nothing reference. Prints one row per
variant, seed and ratio (average gap to retraining in points over retain, forget and test
accuracy and MIA efficacy; the accuracy gaps; passes over the retain set), then the means
over seeds. Usage::

    python benchmarks/rewind_variants.py --ratios 0.1,0.3,0.5 --seeds 3 --threads 1 \
        > docs/results/rewind-variants.md

``--dataset``, ``--model`` and ``--preset`` pick another leaky run (``--retrain-batches
refill``: its reference retrained afresh in the recipe's batches), ``--variants`` the
variants (names of ``VARIANTS``; the default list is the MLP's). ``--noise-floor`` adds a
row for retraining itself run with another batch order (the same recipe, initial weights and
forget set; the plan of seed + 1000): how far two retrainings land from each other, the
floor below which no method's gap to retraining means anything.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from miniunlearn.experiment.assess import assess, reference
from miniunlearn.experiment.bench import BenchSpec, cell_forget_ids, trained_run
from miniunlearn.methods import UnlearnRequest, get_method
from miniunlearn.training import retrain

VARIANTS: dict[str, tuple[str, dict[str, object]]] = {
    "default": ("default (1/16, not corrected, rate 1.5x, at most 40 % of the passes)", {}),
    "budget-15": ("15 % of the passes (the default before the momentum presets)", {"replay_fraction": 0.15}),
    "corrected": ("identity-corrected rewind point", {"correct_rewind": True}),
    "rate-1": ("rate 1x", {"replay_lr_scale": 1.0}),
    "budget-10": ("10 % of the passes", {"replay_fraction": 0.1}),
    "rewind-8": ("rewind to 1/8", {"rewind_fraction": 0.13}),
    "scratch": ("from the initial weights (fast retraining)", {"rewind_fraction": 0.0}),
    "momentum-0.8": ("momentum 0.8", {"replay_momentum": 0.8}),
    "rate-0.5": ("rate 0.5x", {"replay_lr_scale": 0.5}),
    "rate-0.15": ("rate 0.15x (momentum 0.9 makes it the run's plain rate x 1.5)", {"replay_lr_scale": 0.15}),
    "budget-60": ("60 % of the passes", {"replay_fraction": 0.6}),
    "budget-60-rate-0.5": ("60 % of the passes, rate 0.5x", {"replay_fraction": 0.6, "replay_lr_scale": 0.5}),
    "budget-80-rate-0.5": ("80 % of the passes, rate 0.5x", {"replay_fraction": 0.8, "replay_lr_scale": 0.5}),
    "scratch-60-rate-0.5": (
        "from the initial weights, 60 % of the passes, rate 0.5x",
        {"rewind_fraction": 0.0, "replay_fraction": 0.6, "replay_lr_scale": 0.5},
    ),
    "scratch-80-rate-0.5": (
        "from the initial weights, 80 % of the passes, rate 0.5x",
        {"rewind_fraction": 0.0, "replay_fraction": 0.8, "replay_lr_scale": 0.5},
    ),
    "sharpness-cap": (
        "peak rate capped at (1 + momentum) / batch sharpness",
        {"replay_sharpness_cap": True},
    ),
    "scratch-sharpness-cap": (
        "from the initial weights, peak rate capped at (1 + momentum) / batch sharpness",
        {"rewind_fraction": 0.0, "replay_sharpness_cap": True},
    ),
    "scratch-0.15": (
        "from the initial weights, rate 0.15x",
        {"rewind_fraction": 0.0, "replay_lr_scale": 0.15},
    ),
}
MLP_VARIANTS = "default,budget-15,corrected,rate-1,budget-10,rewind-8,scratch,momentum-0.8"


NOISE_FLOOR = "retraining with another batch order (noise floor)"


def main() -> None:
    """Parse arguments, run the variants and print markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--ratios", default="0.1,0.3,0.5")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--runs-dir", default="runs/leaky")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--preset", default="leaky")
    parser.add_argument("--variants", default=MLP_VARIANTS, help=f"comma list of {', '.join(VARIANTS)}")
    parser.add_argument("--noise-floor", action="store_true", help="add retraining with another batch order")
    parser.add_argument(
        "--retrain-batches",
        default="keep",
        choices=("keep", "refill"),
        help="the reference retraining's batches (the runs' --retrain-batches)",
    )
    args = parser.parse_args()
    chosen = {VARIANTS[name][0]: VARIANTS[name][1] for name in args.variants.split(",")}
    torch.set_num_threads(args.threads)
    ratios = [float(r) for r in args.ratios.split(",")]
    spec = BenchSpec(
        args.dataset,
        args.model,
        ratios,
        ["mini"],
        seeds=args.seeds,
        preset=args.preset,
        runs_dir=Path(args.runs_dir),
        train_overrides={} if args.retrain_batches == "keep" else {"retrain_batches": args.retrain_batches},
    )
    print(
        f"# Rewind variants: {args.dataset} {args.model}, {args.preset} preset, seeds 0-{args.seeds - 1}, "
        f"retraining with {args.retrain_batches} batches\n"
    )
    print(
        "| seed | ratio | variant | avg gap | retain acc gap | forget acc gap | test acc gap "
        "| MIA efficacy (retrain) | passes |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    rows = [("none", "none", {})] + [(name, "mini", opts) for name, opts in chosen.items()]
    summary: dict[tuple[float, str], list[tuple[float, float, float]]] = defaultdict(list)
    for seed in range(args.seeds):
        run = trained_run(spec.config(seed), spec.runs_dir, progress=False)
        for index, ratio in enumerate(ratios):
            forget = cell_forget_ids(run.n_train, ratio, seed, index)
            started = time.perf_counter()
            ref = reference(run, retrain(run, forget), forget)
            retrain_s = time.perf_counter() - started
            served = list(rows)
            if args.noise_floor:
                served.append((NOISE_FLOOR, "retrain-reordered", {}))  # batch order of seed + 1000
            for name, method, opts in served:
                result = get_method(method, **opts).unlearn(UnlearnRequest(run, forget))
                passes = result.record.grad_evals / (run.n_train - forget.size)
                m = assess(run, result.params, ref, forget)
                acc_gap = 100 * float(np.mean([abs(m[f"{k}_acc_gap"]) for k in ("retain", "forget", "test")]))
                summary[(ratio, name)].append((m["avg_gap"], acc_gap, passes))
                print(
                    f"| {seed} | {ratio:.0%} | {name} | {m['avg_gap']:.2f} | "
                    f"{100 * m['retain_acc_gap']:+.2f} | "
                    f"{100 * m['forget_acc_gap']:+.2f} | {100 * m['test_acc_gap']:+.2f} | "
                    f"{m['mia_efficacy']:.3f} ({m['retrain_mia_efficacy']:.3f}) | {passes:.2f} |",
                    flush=True,
                )
            print(
                f"| {seed} | {ratio:.0%} | retrain ({retrain_s:.0f} s, may be cached) | 0 | 0 | 0 | 0 "
                "| – | "
                f"{run.config.epochs} |"
            )
    print("\n## Means over seeds\n")
    print("| ratio | variant | avg gap | accuracy gap (mean of the three) | passes |")
    print("|---|---|---:|---:|---:|")
    for (ratio, name), values in summary.items():
        avg, acc, passes = np.mean(values, axis=0)
        print(f"| {ratio:.0%} | {name} | {avg:.2f} | {acc:.2f} | {passes:.2f} |")
    print("\nOptions of each variant: " + json.dumps(chosen))


if __name__ == "__main__":
    main()
