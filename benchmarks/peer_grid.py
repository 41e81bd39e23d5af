"""The request-time input-subspace peer's settings, tuned as well as ``mini``'s own.

``nystrom -o basis=K -o rows=R`` forms the input-subspace Hessian (K principal input
directions per class) on R retain rows when a request arrives, then runs ``mini``'s solver.
For one seed of the bench's logistic regression and each ratio (the bench's forget sets),
runs every (K, R) of the grid and prints passes over the retain set (the formation
included) and distance to the retrained model, marking the fewest passes per ratio among
settings no farther from retraining than ``mini``'s default plus 5 %. The committed peer
sweeps use the settings this table picks::

    python benchmarks/peer_grid.py --dataset mnist --threads 1 > docs/results/peer-grid-mnist.md
    python benchmarks/peer_grid.py --dataset adult --threads 1 > docs/results/peer-grid-adult.md
"""

from __future__ import annotations

from pathlib import Path

import torch

from arguments import ratio_list, seed_run_parser
from miniunlearn.experiment.bench import BenchSpec, cell_forget_ids, trained_run
from miniunlearn.methods import UnlearnRequest, get_method
from miniunlearn.training import cached_retrain

BASES = (16, 32, 64, 96)
ROWS = (256, 512, 2048, 4096)
SLACK = 1.05
"""A setting counts when it lands within this factor of ``mini``'s distance to retraining."""


def serve(
    request: UnlearnRequest, retrained: torch.Tensor, method: str, **options: int
) -> tuple[float, float]:
    """Serve ``request`` with ``method``; return (passes over the retain set, distance to ``retrained``)."""
    result = get_method(method, **options).unlearn(request)
    distance = float((result.params.double() - retrained).norm())
    return result.record.grad_evals / request.retain_ids.size, distance


def main() -> None:
    """Run the grid for one dataset and print a Markdown table."""
    args = seed_run_parser(__doc__, "0.1,0.5,0.9").parse_args()
    torch.set_num_threads(args.threads)
    ratios = ratio_list(args.ratios)
    spec = BenchSpec(args.dataset, "logreg", ratios, ["mini"], runs_dir=Path(args.runs_dir))
    run = trained_run(spec.config(args.seed), spec.runs_dir, progress=False)
    print(f"# The input-subspace peer's settings: {args.dataset} logistic regression, seed {args.seed}\n")
    print("| ratio | method | directions per class | retain rows | passes | distance to retraining |")
    print("|---|---|---:|---:|---:|---:|")
    for index, ratio in enumerate(ratios):
        forget = cell_forget_ids(run.n_train, ratio, args.seed, index)
        retrained = cached_retrain(run, forget).double()
        request = UnlearnRequest(run, forget)
        mini_passes, mini_distance = serve(request, retrained, "mini")
        cells = {
            (k, rows): serve(request, retrained, "nystrom", basis=k, rows=rows)
            for k in BASES
            for rows in ROWS
        }
        fair = {key: cell for key, cell in cells.items() if cell[1] <= SLACK * mini_distance}
        best = min(fair, key=lambda key: fair[key][0]) if fair else None
        print(f"| {ratio:.0%} | mini (default) | – | – | {mini_passes:.2f} | {mini_distance:.3g} |")
        for (k, rows), (passes, distance) in cells.items():
            mark = "**" if (k, rows) == best else ""
            cell = f"{mark}{passes:.2f}{mark}"
            print(f"| {ratio:.0%} | nystrom | {k} | {rows} | {cell} | {distance:.3g} |", flush=True)
    print(
        f"\nBold: the fewest passes per ratio among settings within {SLACK:.2f}x of `mini`'s distance. "
        "Passes count the formation (its Hessian products) and the solve."
    )


if __name__ == "__main__":
    main()
