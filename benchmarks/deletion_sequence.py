"""A scripted sequence of deletion requests on MNIST logistic regression (the ledger workflow).

Four disjoint requests of 5 % of the training set each, the second re-sent with the same
request id, then a fifth request holding an id outside the training set. Prints the
ledger, checks that the refused and re-sent requests changed no model file, and compares
the final model with retraining on the remaining data.

    python benchmarks/deletion_sequence.py [--dataset mnist] [--out runs/deletion-sequence]
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from miniunlearn.deletion import CURRENT_FILE, current_version, forget, load_version_params
from miniunlearn.errors import ForgetRequestError
from miniunlearn.experiment.bench import trained_run
from miniunlearn.fileio import sha256_file
from miniunlearn.ledger import Ledger
from miniunlearn.presets import preset
from miniunlearn.training import TrainConfig, open_run, retrain


def model_files(run_dir: Path) -> dict[str, str]:
    """sha256 of every model file and of the current-version pointer."""
    files = [run_dir / "model.safetensors", run_dir / CURRENT_FILE, *sorted((run_dir / "versions").glob("*"))]
    return {str(f.relative_to(run_dir)): sha256_file(f) for f in files if f.exists()}


def main() -> None:
    """Run the sequence and print a Markdown report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--out", default="runs/deletion-sequence")
    parser.add_argument("--runs-dir", default="runs/bench")
    args = parser.parse_args()

    config = TrainConfig(
        dataset=args.dataset, model="logreg", history="mini", **preset(args.dataset, "logreg")
    )
    base = trained_run(config, Path(args.runs_dir))
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(
        base.path,
        out,
        ignore=shutil.ignore_patterns(
            "ledger.sqlite", "versions", CURRENT_FILE, "retrain", "cache", ".lock*"
        ),
    )
    n = base.n_train
    chunk = n // 20
    order = np.random.default_rng(0).permutation(n)
    requests = [order[i * chunk : (i + 1) * chunk] for i in range(4)]

    print(f"# Deletion-request sequence on {args.dataset} logistic regression ({n} training samples)\n")
    print("| step | request | ids | outcome | model version | time (s) |")
    print("|---|---|---|---|---|---|")
    for i, ids in enumerate(requests, start=1):
        started = time.perf_counter()
        outcome = forget(out, ids, request_id=f"req-{i}")
        print(
            f"| {i} | req-{i} | {ids.size} | {outcome.status} ({outcome.entry.method}) | "
            f"{outcome.version.version} | {time.perf_counter() - started:.1f} |",
            flush=True,
        )
    before = model_files(out)
    outcome = forget(out, requests[1], request_id="req-2")
    unchanged_resend = model_files(out) == before
    print(f"| 5 | req-2 again | {requests[1].size} | {outcome.status} | {outcome.version.version} | - |")
    bad = np.concatenate([order[4 * chunk : 4 * chunk + 10], [n]])
    try:
        forget(out, bad, request_id="req-5")
        refused = "accepted (unexpected)"
    except ForgetRequestError as exc:
        refused = f"refused: {exc}"
    unchanged_refused = model_files(out) == before
    print(f"| 6 | req-5 | {bad.size} (one is {n}) | {refused} | - | - |\n")

    with Ledger.open(out) as ledger:
        entries = ledger.entries()
        forgotten = ledger.forgotten_ids()
    states = {s: sum(e.state == s for e in entries) for s in ("done", "refused", "failed", "received")}
    run = open_run(out)
    final = load_version_params(run, current_version(run))
    started = time.perf_counter()
    target = retrain(run, forgotten)
    retrain_s = time.perf_counter() - started
    x, y = torch.from_numpy(run.dataset.x_test), torch.from_numpy(run.dataset.y_test)

    def acc(w: torch.Tensor) -> float:
        return 100 * float((run.objective.logits(w, x).argmax(1) == y).double().mean())

    print(
        f"- ledger: {states['done']} done, {states['refused']} refused, {states['failed']} failed, "
        f"{states['received']} pending"
    )
    print(
        f"- model files unchanged by the re-sent request: {unchanged_resend}; by the refused one: "
        f"{unchanged_refused}"
    )
    print(f"- forgotten: {forgotten.size} ids ({forgotten.size / n:.0%})")
    print(
        f"- final model test accuracy {acc(final):.2f} %, retrained on the remaining data "
        f"{acc(target):.2f} % (gap {acc(final) - acc(target):+.2f} points); "
        f"parameter distance {float((final - target).norm()):.4g}"
    )
    print(f"- retraining took {retrain_s:.1f} s")


if __name__ == "__main__":
    main()
