"""Which curvature sketch should the minimal history keep? Rank, blocks, where it is
recorded and the preconditioner's form, measured by what `mini` then costs.

For seed 0 of the bench preset, sketches the data Hessian in several ways, then runs
`mini` (default options unless the variant names one) with each in place of the
recorded one on random forget sets (the same ones `miniunlearn bench` draws) and on a
class-like forget set (every sample of one class). Prints one Markdown table: the
sketch's recording cost (seconds, passes over the training data, share of the run's
training time), the minimal history's bytes as a share of a full per-step history, and
per forget set the passes `mini` needs and its distance to the retrained model.

    python benchmarks/sketch_variants.py --dataset mnist --threads 1 > docs/results/sketch-variants-mnist.md
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from miniunlearn.experiment.bench import BenchSpec, trained_run
from miniunlearn.ids import random_forget_ids
from miniunlearn.methods import UnlearnRequest, get_method
from miniunlearn.training import cached_retrain
from miniunlearn.training.config import SKETCH_OVERRIDES
from miniunlearn.training.curvature import CurvatureSketch, sketch_hessian


@dataclass(frozen=True)
class ChebyshevTail(CurvatureSketch):
    """The sketch with the unsketched directions scaled by 2 / (smallest kept + 2 lam), the
    optimal Richardson step for curvature in [lam, smallest kept + lam], instead of the
    never-overshooting 1 / (smallest kept + lam)."""

    def inverse_hessian_product(self, g: torch.Tensor) -> torch.Tensor:
        """P^(-1) g with the Chebyshev-optimal tail scale."""
        coords = self.vectors @ g
        inside = self.vectors.T @ (coords / (self.values + self.lam))
        return inside + 2.0 / (float(self.values[-1]) + 2 * self.lam) * (g - self.vectors.T @ coords)


# label -> (rank, blocks of Hessian-vector products, checkpoint row it is recorded at,
# preconditioner form, options of `mini`)
VARIANTS: dict[str, tuple[int, int, int, str, dict[str, Any]]] = {
    "no sketch, history pairs, rtol 1e-4 (the previous default)": (
        0,
        0,
        0,
        "floor",
        {"use_history_pairs": True, "rtol": 1e-4},
    ),
    "no sketch (rtol 1e-4; the step rule needs a sketch)": (0, 0, 0, "floor", {}),
    "rank 64, 1 block (plain Nyström)": (64, 1, 0, "floor", {}),
    "rank 64, 2 blocks": (64, 2, 0, "floor", {}),
    "rank 128, 1 block (plain Nyström)": (128, 1, 0, "floor", {}),
    "**rank 128, 2 blocks (default)**": (128, 2, 0, "floor", {}),
    "rank 128, 2 blocks, gradient rule only (rtol 1e-4, xtol 0)": (128, 2, 0, "floor", {"xtol": 0.0}),
    "rank 128, 2 blocks, gradient rule only (rtol 1e-3, xtol 0)": (
        128,
        2,
        0,
        "floor",
        {"rtol": 1e-3, "xtol": 0.0},
    ),
    "rank 128, 2 blocks, with history pairs": (128, 2, 0, "floor", {"use_history_pairs": True}),
    "rank 128, 2 blocks, L-BFGS memory 20": (128, 2, 0, "floor", {"memory": 20}),
    "rank 128, 3 blocks": (128, 3, 0, "floor", {}),
    "rank 192, 2 blocks": (192, 2, 0, "floor", {}),
    "rank 128, 2 blocks, Chebyshev tail": (128, 2, 0, "chebyshev", {}),
    "rank 128, 2 blocks, recorded at the oldest checkpoint": (128, 2, -1, "floor", {}),
}


def main() -> None:
    """Measure every sketch variant and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--ratios", default="0.1,0.5,0.9")
    parser.add_argument("--forget-class", type=int, default=3, help="label of the class-like forget set")
    parser.add_argument("--runs-dir", default="runs/bench")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = BenchSpec(args.dataset, "logreg", [0.5], ["retrain", "mini"], 1, train_overrides=SKETCH_OVERRIDES)
    run = trained_run(spec.config(0), Path(args.runs_dir), progress=False)
    objective, history = run.objective, run.mini_history()
    full_bytes = 2 * run.total_steps * objective.dim * objective.x.element_size()
    train_seconds = float(run.manifest.get("train_seconds", float("nan")))
    forget_sets = {
        f"random {float(r):.0%}": random_forget_ids(run.n_train, float(r), seed=i)
        for i, r in enumerate(args.ratios.split(","))
    }
    forget_sets[f"class {args.forget_class}"] = np.flatnonzero(run.dataset.y_train == args.forget_class)
    targets = {name: cached_retrain(run, ids) for name, ids in forget_sets.items()}

    header = "| sketch | record (s) | record passes | vs training | bytes vs full history |"
    header += "".join(f" {name}: passes / dist |" for name in forget_sets)
    print(header)
    print("|---" * (5 + len(forget_sets)) + "|")
    for label, (rank, blocks, row, form, options) in VARIANTS.items():
        sketch, seconds, passes = None, 0.0, 0.0
        if rank:
            w = history.params[row].to(objective.dtype)
            started, evals = time.perf_counter(), objective.grad_evals
            sketch = sketch_hessian(objective, w, rank, blocks, seed=0)
            seconds, passes = time.perf_counter() - started, (objective.grad_evals - evals) / run.n_train
            if form == "chebyshev":
                sketch = ChebyshevTail(sketch.vectors, sketch.values, sketch.lam)
        run.curvature_sketch = lambda sketch=sketch: sketch  # type: ignore[method-assign]
        cells = []
        for name, ids in forget_sets.items():
            result = get_method("mini", **options).unlearn(UnlearnRequest(run, ids))
            cost = result.record.grad_evals / (run.n_train - ids.size)
            cells.append(f" {cost:.1f} / {float((result.params - targets[name]).norm()):.2g} |")
        stored = (2 * sketch.vectors.numel() + 4 * sketch.rank) if sketch is not None else 0
        print(
            f"| {label} | {seconds:.1f} | {passes:.0f} | {seconds / train_seconds:.0%} | "
            f"{(stored + history.nbytes) / full_bytes:.1%} |" + "".join(cells),
            flush=True,
        )


if __name__ == "__main__":
    main()
