"""Variants of mini's rewind mode on a leaky network, against retraining.

For each forget ratio (one random forget set of seed 0), retrains once and runs every
variant of ``mini`` (and the do-nothing reference), printing the average gap to
retraining in points (retain, forget and test accuracy and MIA efficacy), the gaps
themselves and the passes over the retain set. Usage::

    python benchmarks/rewind_variants.py --ratios 0.1,0.3,0.5 --threads 1 > docs/results/rewind-variants.md
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from miniunlearn.experiment.assess import assess, reference
from miniunlearn.experiment.bench import BenchSpec, trained_run
from miniunlearn.ids import random_forget_ids
from miniunlearn.methods import UnlearnRequest, get_method
from miniunlearn.training import retrain

VARIANTS = {
    "default (1/16, not corrected, rate 1.5x, 15 % of the passes)": {},
    "identity-corrected rewind point": {"correct_rewind": True},
    "rate 1x": {"replay_lr_scale": 1.0},
    "10 % of the passes": {"replay_fraction": 0.1},
    "rewind to 1/8": {"rewind_fraction": 0.13},
    "from the initial weights (fast retraining)": {"rewind_fraction": 0.0},
    "momentum 0.8": {"replay_momentum": 0.8},
}


def main() -> None:
    """Parse arguments, run the variants and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--ratios", default="0.1,0.3,0.5")
    parser.add_argument("--runs-dir", default="runs/leaky")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = BenchSpec(
        args.dataset, args.model, [0.5], ["mini"], seeds=1, preset="leaky", runs_dir=Path(args.runs_dir)
    )
    run = trained_run(spec.config(0), spec.runs_dir, progress=False)
    print(f"# Rewind variants: {args.dataset} {args.model}, leaky preset, seed 0\n")
    print(
        "| ratio | variant | avg gap | retain acc gap | forget acc gap | test acc gap "
        "| MIA efficacy (retrain) | passes |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for index, ratio in enumerate(float(r) for r in args.ratios.split(",")):
        forget = random_forget_ids(run.n_train, ratio, seed=index)
        started = time.perf_counter()
        ref = reference(run, retrain(run, forget), forget)
        retrain_s = time.perf_counter() - started
        rows = [("none", "none", {})] + [(name, "mini", opts) for name, opts in VARIANTS.items()]
        for name, method, opts in rows:
            result = get_method(method, **opts).unlearn(UnlearnRequest(run, forget))
            m = assess(run, result.params, ref, forget)
            passes = result.record.grad_evals / (run.n_train - forget.size)
            print(
                f"| {ratio:.0%} | {name} | {m['avg_gap']:.2f} | {100 * m['retain_acc_gap']:+.2f} | "
                f"{100 * m['forget_acc_gap']:+.2f} | {100 * m['test_acc_gap']:+.2f} | "
                f"{m['mia_efficacy']:.3f} ({m['retrain_mia_efficacy']:.3f}) | {passes:.2f} |",
                flush=True,
            )
        print(f"| {ratio:.0%} | retrain ({retrain_s:.0f} s) | 0 | 0 | 0 | 0 | – | {run.config.epochs} |")
    print("\nOptions of each variant: " + json.dumps(VARIANTS))


if __name__ == "__main__":
    main()
