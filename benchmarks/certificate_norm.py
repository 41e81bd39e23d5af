"""What the certificate's largest input norm costs a served request, before and after it was
summed in the inputs' own precision.

Every certificate on a convex run bounds its rounding allowance and its logit bound with
max_i |(x_i, 1)| over the training inputs. It was read in float64 (a cast of every input on
every request); ``miniunlearn.certificate.max_input_norm`` sums the squares in the inputs'
precision and raises the sum by its worst rounding. On the bench's MNIST logistic regression
(seed 0) this serves single-sample requests through ``miniunlearn.deletion.forget`` on a copy
of the run, alternating the two ways request by request (so both see the same machine), and
times each way alone over the run's inputs. Prints a table:

    python benchmarks/certificate_norm.py > docs/results/certificate-norm.md
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import miniunlearn.certificate as certificate
from miniunlearn.deletion import forget
from miniunlearn.experiment.bench import BenchSpec, trained_run
from timing import mean_seconds

torch.set_num_threads(1)


def float64_norm(x: torch.Tensor) -> float:
    """The largest |(x_i, 1)| read in float64, 65,536 rows at a time: the way the certificate
    read it before (a reference, not an upper bound on rounding's side)."""
    largest = 0.0
    for start in range(0, x.shape[0], 65536):
        rows = x[start : start + 65536].to(torch.float64)
        largest = max(largest, float(torch.sqrt((rows * rows).sum(dim=1) + 1.0).max()))
    return largest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=40, help="requests served, half each way")
    args = parser.parse_args()
    spec = BenchSpec(dataset="mnist", model="logreg", ratios=(0.1,), methods=("mini",))
    run = trained_run(spec.config(0), spec.runs_dir, progress=False)
    ways = {"float64 read (before)": float64_norm, "float32 sum, raised (now)": certificate.max_input_norm}
    ids = np.random.default_rng(7).permutation(run.n_train)[: args.requests + 1]
    latency: dict[str, list[float]] = {name: [] for name in ways}
    with tempfile.TemporaryDirectory(prefix="miniunlearn-norm-") as tmp:
        copy = Path(shutil.copytree(run.path, Path(tmp) / "run"))
        forget(copy, ids[:1], method="mini", request_id="warm-up")  # the first request reads the checkpoints
        names = list(ways)
        for i in range(1, args.requests + 1):
            name = names[i % 2]
            certificate.max_input_norm = ways[name]  # type: ignore[assignment]
            started = time.perf_counter()
            forget(copy, ids[i : i + 1], method="mini", request_id=f"request-{i}")
            latency[name].append(time.perf_counter() - started)
    certificate.max_input_norm = ways["float32 sum, raised (now)"]  # type: ignore[assignment]
    x = run.objective.x
    exact = float64_norm(x)
    print("| largest input norm | value | seconds alone | request latency: median / mean (s) | requests |")
    print("|---|---:|---:|---:|---:|")
    for name, norm in ways.items():
        times = latency[name]
        print(
            f"| {name} | {norm(x):.9f} | {mean_seconds(lambda norm=norm: norm(x)):.3f} "
            f"| {np.median(times):.3f} / {np.mean(times):.3f} | {len(times)} |"
        )
    print(
        f"\nMNIST logistic regression, seed 0: single-sample `mini` requests, each with its certificate, "
        f"alternating the two ways on one copy of the run; the float32 sum's bound is "
        f"{certificate.max_input_norm(x) / exact - 1:.1e} above the float64 value (relative)."
    )


if __name__ == "__main__":
    main()
