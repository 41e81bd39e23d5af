"""The batch sharpness at the rewind point of each leaky network, and what it says of the
replay's rate: peak rate times sharpness at the default 1.5x, against heavy-ball's stability
limit 2 (1 + momentum), and the cap ``replay_sharpness_cap`` would set.

For seed 0 of each (dataset, model, preset) below and forget ratios 10 and 90 % (the bench's
forget sets), rewinds as mini does and estimates the largest eigenvalue of the batch Hessian
(``miniunlearn.methods.mini.rewind.batch_sharpness``: median of 3 retain batches of the run's
batch size, 10 power iterations each). Usage::

    python benchmarks/replay_sharpness.py > docs/results/replay-sharpness.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from miniunlearn.experiment.bench import BenchSpec, cell_forget_ids, trained_run
from miniunlearn.methods import UnlearnRequest
from miniunlearn.methods.mini.options import MiniOptions
from miniunlearn.methods.mini.rewind import batch_sharpness, rewind_point, stable_peak

CASES = (
    ("mnist", "mlp", "leaky"),
    ("mnist", "mlp", "leaky-momentum"),
    ("fashion-mnist", "cnn", "leaky"),
    ("fashion-mnist", "cnn", "leaky-momentum"),
)


def main() -> None:
    """Print one row per case and ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", default="runs/leaky")
    args = parser.parse_args()
    torch.set_num_threads(1)
    options = MiniOptions()
    print(
        "| model | preset | ratio | run's rate / momentum | batch sharpness at the rewind point | "
        "peak x sharpness at 1.5x (stability limit 2 (1 + 0.9) = 3.8) | "
        "cap, as a multiple of the run's rate |"
    )
    print("|---|---|---|---|---:|---:|---:|")
    for dataset, model, preset in CASES:
        ratios = [0.1, 0.9]
        spec = BenchSpec(
            dataset, model, ratios, ["mini"], seeds=1, preset=preset, runs_dir=Path(args.runs_dir)
        )
        run = trained_run(spec.config(0), spec.runs_dir, progress=False)
        config = run.config
        for index, ratio in enumerate(ratios):
            forget = cell_forget_ids(run.n_train, ratio, 0, index)
            request = UnlearnRequest(run, forget)
            w = rewind_point(request, run.mini_history(), options.rewind_fraction, correct=False)[1]
            batch = (
                config.batch_size
                if 0 < config.batch_size < request.retain_ids.size
                else request.retain_ids.size
            )
            sharpness = batch_sharpness(run.objective, w, request.retain_ids, batch, options.seed)
            peak = options.replay_lr_scale * config.lr
            cap = stable_peak(sharpness, options.replay_momentum) / config.lr
            print(
                f"| {dataset} {model} | {preset} | {ratio:.0%} | {config.lr:g} / {config.momentum:g} | "
                f"{sharpness:.2f} | {peak * sharpness:.2f} | {cap:.2f}x |",
                flush=True,
            )


if __name__ == "__main__":
    main()
