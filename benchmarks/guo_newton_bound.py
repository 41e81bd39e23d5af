"""Guo et al.'s data-dependent Newton bound on the certified MNIST run: how many single-sample
requests it lets a run serve before a retraining, next to measuring every served model.

Takes the certified run of benchmarks/certified_removal.py at the smallest epsilon (MNIST
logistic regression, float64, delta 1e-5, noise 1: the perturbation is the same at every
epsilon, which scales the budget; this run's polish leaves the smallest residual, which
favours the bound at every epsilon) and the same stream of single-sample requests. Guo et al.'s scheme
removes each by one Newton step (solved to a relative residual of 1e-10 by conjugate
gradients, preconditioned by the exact Hessian at the trained model) and adds the step's
bound (``miniunlearn.training.newton_bound``) to what training left (the trained model's
measured residual); a retraining is forced at the first request whose accumulated bound
passes the budget. Beside it, each Newton-served model's residual is measured (one pass), to
show how much of the budget the bound spends on looseness.

    python benchmarks/guo_newton_bound.py --out docs/results/guo-newton-bound.md

Writes the markdown to ``--out`` (and prints it) and the per-request records as JSON next to it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from certified_removal import EPSILONS, config
from miniunlearn.experiment.parallel import open_or_train
from miniunlearn.experiment.stream import StreamSpec, stream_ids
from miniunlearn.ids import retained_ids
from miniunlearn.progress import progress_bar
from miniunlearn.training import open_run
from miniunlearn.training.certified import removal_budget
from miniunlearn.training.curvature import exact_curvature
from miniunlearn.training.newton_bound import (
    augmented_spectral_norm,
    newton_removal_step,
    newton_residual_bound,
)


def residual(objective, w: torch.Tensor, ids: np.ndarray) -> float:
    """|grad L_b(w; S)| = |S| |grad F_S(w)| of the perturbed objective on ``ids``, float64."""
    return ids.size * float(objective.cast(torch.float64).value_and_grad(w, ids)[1].norm())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", default="runs/certified")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--out", default="docs/results/guo-newton-bound.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    epsilon = EPSILONS[0]
    path = Path(args.runs_dir) / f"mnist-eps{epsilon:g}"
    # the model is all this reads: a run trained before later recording options is reused as it is
    run = open_run(path) if path.is_dir() else open_or_train(config(epsilon), path, progress=True)
    objective = run.objective
    w = run.load_model_params().to(torch.float64)
    every = np.arange(run.n_train)
    started = time.perf_counter()
    hessian = exact_curvature(objective, w)  # Guo et al. form the Hessian; here it preconditions CG
    spectral = augmented_spectral_norm(objective.x)
    setup_s = time.perf_counter() - started
    trained_residual = residual(objective, w, every)
    forgotten = np.empty(0, dtype=np.int64)
    records = []
    for ids in progress_bar(stream_ids(run.n_train, StreamSpec(args.requests)), desc="Newton removals"):
        started = time.perf_counter()
        forgotten = np.union1d(forgotten, ids)
        retain = retained_ids(run.n_train, forgotten)
        removal = newton_removal_step(
            objective, w, ids, retain, preconditioner=hessian.inverse_hessian_product
        )
        bound = newton_residual_bound(objective, w, removal.step, retain, spectral)
        w = w + removal.step
        seconds = time.perf_counter() - started
        records.append(
            {
                "ids": ids.tolist(),
                "bound": bound,
                "measured_residual": residual(objective, w, retain),
                "cg_iterations": removal.cg_iterations,
                "cg_relative_residual": removal.cg_relative_residual,
                "seconds": seconds,
            }
        )
    accumulated = trained_residual + np.cumsum([r["bound"] for r in records])
    measured = np.array([r["measured_residual"] for r in records])
    ours = {}
    ours_path = Path(args.out).with_name("certified-removal.json")
    if ours_path.exists():
        ours = {row["epsilon"]: row for row in json.loads(ours_path.read_text())}
    lines = [
        f"Trained model's residual {trained_residual:.3g}; per-request bound median "
        f"{np.median([r['bound'] for r in records]):.3g}, measured residual of the Newton-served model "
        f"median {np.median(measured):.3g}, largest {measured.max():.3g}; Hessian and |X~|_2 once: "
        f"{setup_s:.0f} s; a removal (CG and bound) median "
        f"{np.median([r['seconds'] for r in records]):.2f} s, "
        f"{int(np.median([r['cg_iterations'] for r in records]))} CG iterations.",
        "",
        "| epsilon | residual budget | requests before Guo et al.'s bound forces a retraining | "
        "requests before a measured Newton residual passes it | measuring every model (mini): "
        "served / forced to retraining |",
        "|---:|---:|---:|---:|---:|",
    ]
    for eps in EPSILONS:
        budget = removal_budget(config(eps))
        by_bound = int(np.argmax(accumulated > budget)) if (accumulated > budget).any() else len(records)
        by_measure = int(np.argmax(measured > budget)) if (measured > budget).any() else len(records)
        at_least = lambda k: f"{k}" if k < len(records) else f">= {len(records)}"  # noqa: E731
        row = ours.get(eps)
        mini = f"{row['requests']} / {row['forced_retrainings']}" if row else "not measured"
        lines.append(f"| {eps:g} | {budget:.3g} | {at_least(by_bound)} | {at_least(by_measure)} | {mini} |")
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.write_text(table + "\n")
    out.with_suffix(".json").write_text(
        json.dumps({"trained_residual": trained_residual, "setup_s": setup_s, "requests": records}, indent=2)
        + "\n"
    )


if __name__ == "__main__":
    main()
