"""What information an unlearner needs in DeltaGrad's regime: a linear-response study.

On an SGD run stopped well before convergence (``--preset deltagrad-paper``), the retrained
parameters v_T differ from the original w_T by d_T, which to first order obeys

    d_{t+1} = d_t - lr_t (H_t d_t + e_t),   e_t = grad F_{R_t}(w_t) - grad F_{B_t}(w_t),

with H_t a Hessian at w_t and e_t the change of the step-t batch gradient when the forget
set leaves the batch (R_t = B_t minus the forgotten ids). This script runs that recursion
with the run's *full* history (every w_t and batch gradient: an oracle no minimal history
has) and then takes information away, one piece at a time, to show which pieces the
distance to retraining depends on:

* ``e``: "batch" = exact e_t (forget part of batch t at w_t, batch mean from the stored
  batch gradient); "forget-part" = exact forget part of batch t, full-data mean in place of
  the batch mean; "mean" = the full-data e(w_t) (no batch structure); "checkpoints" = the
  full-data e interpolated linearly between the minimal history's checkpoints.
* ``H``: "batch" = Hessian of batch t at w_t; "sub-4096" = of a fixed 4,096-sample subset
  at w_t; "final" = of the whole training set at w_T.

Prints a markdown table of distances to the retrained parameters, next to the original
model's. Usage (after the bench has trained and cached the run, or it trains it)::

    python benchmarks/linear_response.py --ratios 0.01,0.2,0.5 --threads 1 \
        > docs/results/linear-response.md
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from arguments import ratio_list, seed_run_parser
from miniunlearn.experiment.bench import BenchSpec, cell_forget_ids, trained_run
from miniunlearn.training import cached_retrain

VARIANTS = (
    ("batch", "batch"),
    ("forget-part", "batch"),
    ("mean", "batch"),
    ("checkpoints", "batch"),
    ("forget-part", "sub-4096"),
    ("forget-part", "final"),
)


def main() -> None:
    """Parse arguments, run the recursion variants and print a markdown table."""
    args = seed_run_parser(__doc__, "0.01,0.2,0.5").parse_args()
    torch.set_num_threads(args.threads)
    ratios = ratio_list(args.ratios)
    spec = BenchSpec(
        args.dataset,
        "logreg",
        ratios,
        ["retrain", "deltagrad"],
        seeds=1,
        runs_dir=Path(args.runs_dir),
        preset="deltagrad-paper",
    )
    run = trained_run(spec.config(args.seed), spec.runs_dir, progress=False)
    objective, plan, n = run.objective, run.plan, run.n_train
    history = run.full_history()
    w_final = run.load_model_params()
    W = torch.cat([torch.from_numpy(np.array(history.params)), w_final[None]])
    batch_grads = torch.from_numpy(np.array(history.grads))
    steps = plan.total_steps
    _, data_sums = objective.loss_grad_sum_many(W, None)
    mean_grads = data_sums / n  # full-data mean loss gradient at every w_t
    checkpoints = sorted({int(s) for s in run.mini_history().steps})
    subset = np.random.default_rng(0).choice(n, 4096, replace=False)

    title = f"{args.dataset} logistic regression, deltagrad-paper preset, seed {args.seed}"
    print(f"# Linear response on {title}\n")
    print(f"{steps} steps of {plan.batch_size}; minimal-history checkpoints at steps {checkpoints}\n")
    print("| ratio | e | H | distance to retrained | original model | seconds |")
    print("|---|---|---|---:|---:|---:|")
    for r_index, ratio in enumerate(ratios):
        # the bench's forget set of this seed and ratio, so the retrained model is cached
        forget = cell_forget_ids(n, ratio, args.seed, r_index)
        mask = np.zeros(n, dtype=bool)
        mask[forget] = True
        target = cached_retrain(run, forget)
        original = float((w_final - target).norm())
        _, forget_sums = objective.loss_grad_sum_many(W, forget)
        mean_e = (data_sums - forget_sums) / (n - forget.size) - mean_grads
        interpolated = torch.stack([_interpolate(mean_e, checkpoints, t) for t in range(steps)])
        for e_kind, h_kind in VARIANTS:
            started = time.perf_counter()
            d = torch.zeros_like(w_final)
            for t in range(steps):
                batch = plan.batch_ids(t)
                forget_t = batch[mask[batch]]
                share = forget_t.size / (batch.size - forget_t.size)
                w_t = W[t]
                if e_kind in ("batch", "forget-part"):
                    forget_mean = objective.loss_grad_sum(w_t, forget_t)[1] / max(forget_t.size, 1)
                    batch_mean = batch_grads[t] - objective.lam * w_t if e_kind == "batch" else mean_grads[t]
                    e = share * (batch_mean - forget_mean)
                else:
                    e = mean_e[t] if e_kind == "mean" else interpolated[t]
                if h_kind == "batch":
                    hd = objective.hvp(w_t, d, batch)
                elif h_kind == "sub-4096":
                    hd = objective.hvp(w_t, d, subset)
                else:
                    hd = objective.hvp(w_final, d, None)
                d = d - plan.lrs[t] * (hd + e)
            distance = float((w_final + d - target).norm())
            seconds = time.perf_counter() - started
            cells = f"{ratio:.0%} | {e_kind} | {h_kind} | {distance:.5f} | {original:.5f} | {seconds:.0f}"
            print(f"| {cells} |", flush=True)


def _interpolate(values: torch.Tensor, checkpoints: list[int], t: int) -> torch.Tensor:
    """Linear interpolation in the step number between the stored checkpoints around step ``t``."""
    before = max(c for c in checkpoints if c <= t)
    after = min(c for c in checkpoints if c >= t)
    weight = 0.0 if after == before else (t - before) / (after - before)
    return (1 - weight) * values[before] + weight * values[after]


if __name__ == "__main__":
    main()
