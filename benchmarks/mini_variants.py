"""Compare Mini-Unlearning variants against retraining (and DeltaGrad) on several training regimes.

Prints one Markdown table: for each setting and ratio, the distance to the retrained
parameters, the test-accuracy gap, and the cost (exact retain passes / wall time).

    python benchmarks/mini_variants.py                # digits settings, a few minutes
    python benchmarks/mini_variants.py --only-mnist --ratios 0.1,0.5   # MNIST stopped early
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from miniunlearn.ids import random_forget_ids
from miniunlearn.methods import UnlearnRequest, get_method
from miniunlearn.training import TrainConfig, retrain, train_run

SETTINGS = {
    "digits logreg, converged (lam=0.01, 1000 GD steps)": TrainConfig(
        dataset="digits", epochs=1000, lr=1.0, lam=0.01, history="both", dtype="float64"
    ),
    "digits logreg, not converged (lam=0.001, 1000 GD steps)": TrainConfig(
        dataset="digits", epochs=1000, lr=0.5, lam=0.001, history="both", dtype="float64"
    ),
    "digits logreg, mini-batch SGD (20 epochs, batch 256)": TrainConfig(
        dataset="digits", epochs=20, batch_size=256, lr=0.3, lam=0.01, history="both", dtype="float64"
    ),
    "digits MLP 64, GD (500 steps)": TrainConfig(
        dataset="digits",
        model="mlp",
        hidden=(64,),
        epochs=500,
        lr=0.3,
        lam=0.005,
        history="both",
        dtype="float64",
    ),
}
# The converged MNIST preset is covered by the main sweep (docs/results/mnist-logreg.md).
MNIST = {
    "MNIST logreg, stopped early (lam=0.001, 300 GD steps, float32)": TrainConfig(
        dataset="mnist", epochs=300, lr=0.5, lam=0.001, history="both"
    ),
}
VARIANTS = {
    "mini (default: auto)": ("mini", {}),
    "mini fixed-point, residual matching": ("mini", {"mode": "fixed-point"}),
    "mini fixed-point, retain optimum": ("mini", {"mode": "fixed-point", "match_residual": False}),
    "mini trajectory": ("mini", {"mode": "trajectory"}),
    "mini fixed-point, no history pairs": ("mini", {"mode": "fixed-point", "use_history_pairs": False}),
    "mini fixed-point, rtol 1e-3": ("mini", {"mode": "fixed-point", "rtol": 1e-3}),
    "deltagrad": ("deltagrad", {"b0": "yy/sy"}),  # the scale the committed tables were measured with
}


def main() -> None:
    """Run every setting x ratio x variant and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only-mnist", action="store_true", help="run the MNIST settings instead")
    parser.add_argument("--ratios", default="0.1,0.3,0.5")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = MNIST if args.only_mnist else SETTINGS
    ratios = [float(r) for r in args.ratios.split(",")]
    print("| setting | ratio | variant | dist to retrain | test acc gap (pts) | exact passes | time (s) |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for s_index, (label, config) in enumerate(settings.items()):
            run = train_run(config, Path(tmp) / f"run{s_index}", progress=False)
            x, y = torch.from_numpy(run.dataset.x_test), torch.from_numpy(run.dataset.y_test)

            def acc(w: torch.Tensor, run=run, x=x, y=y) -> float:
                return float((run.objective.logits(w, x).argmax(1) == y).double().mean())

            for ratio in ratios:
                forget = random_forget_ids(run.n_train, ratio, seed=0)
                target = retrain(run, forget)
                original = float((run.load_model_params() - target).norm())
                print(
                    f"| {label} | {ratio:.0%} | original model | {original:.4g} | "
                    f"{100 * (acc(run.load_model_params()) - acc(target)):+.2f} | 0 | 0 |"
                )
                for name, (method, options) in VARIANTS.items():
                    result = get_method(method, **options).unlearn(UnlearnRequest(run, forget))
                    diag = result.record.diagnostics
                    passes = diag.get("exact_retain_passes", diag.get("exact_steps", ""))
                    if "mode" in diag and name.startswith("mini (default"):
                        name = f"{name} -> {diag['mode']}"
                    print(
                        f"| {label} | {ratio:.0%} | {name} | {float((result.params - target).norm()):.4g} | "
                        f"{100 * (acc(result.params) - acc(target)):+.2f} | {passes} | "
                        f"{result.record.time_s:.2f} |",
                        flush=True,
                    )


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
