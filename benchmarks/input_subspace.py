"""How well each recordable curvature preconditions the retain problem, against the exact Hessian.

On the bench's MNIST logistic regression (seed 0) the exact regularised Hessian at w_T is
formed from the loss's structure (7,850 x 7,850, float64) and each preconditioner P is
judged on it:

- ``one step``: |g - H P^-1 g| / |g|, what one preconditioned Newton step leaves of the
  gradient, for the retain-gradient change of 20 single-sample removals (median and worst)
  and of a 10 % removal;
- ``PCG``: preconditioned conjugate-gradient iterations on H to a 1e-4 relative residual
  (median over 5 single samples; the 10 % removal);
- ``bytes`` stored and ``passes`` counted to form it (over the training set).

Rows: the Nyström sketch (rank 128 on 2,048 rows, the former default), the input-subspace
Hessian with k principal input directions per class (core over every row, as recorded; over
2,048 rows, as the request-time peer forms it), and no preconditioner. Prints a table:

    python benchmarks/input_subspace.py > docs/results/input-subspace.md
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from miniunlearn.experiment.bench import BenchSpec, trained_run
from miniunlearn.training.curvature import Curvature, sketch_hessian, softmax_regression_hessian
from miniunlearn.training.input_subspace import input_subspace_curvature
from miniunlearn.training.recording import curvature_rows

torch.set_num_threads(1)
Apply = Callable[[torch.Tensor], torch.Tensor]


def pcg_iterations(hessian: torch.Tensor, apply: Apply, b: torch.Tensor, tol: float = 1e-4) -> int:
    """Preconditioned CG iterations on ``hessian`` x = ``b`` until |r| <= tol |b| (at most 300)."""
    x, r = torch.zeros_like(b), b.clone()
    z = apply(r)
    p, rz = z.clone(), r @ z
    for i in range(1, 301):
        hp = hessian @ p
        a = rz / (p @ hp)
        x, r = x + a * p, r - a * hp
        if r.norm() <= tol * b.norm():
            return i
        z = apply(r)
        rz, rz_old = r @ z, rz
        p = z + (rz / rz_old) * p
    return 300


def main() -> None:
    spec = BenchSpec(dataset="mnist", model="logreg", ratios=(0.1,), methods=("mini",))
    run = trained_run(spec.config(0), spec.runs_dir, progress=False)
    objective = run.objective
    w = run.load_model_params()
    n, lam = objective.n, objective.lam
    print(f"exact Hessian of {objective.dim} parameters over {n} rows...", file=sys.stderr)
    hessian = softmax_regression_hessian(objective, w, None)
    o64 = objective.cast(torch.float64)
    w64 = w.to(torch.float64)
    _, full = o64.value_and_grad(w64)
    rng = np.random.default_rng(0)
    singles = [full - o64.value_and_grad(w64, np.array([j]))[1] for j in rng.choice(n, 20, replace=False)]
    forget = np.sort(rng.choice(n, n // 10, replace=False))
    tenth = o64.value_and_grad(w64, np.setdiff1d(np.arange(n), forget))[1] - full

    rows = curvature_rows(run.config, n)
    candidates: list[tuple[str, Callable[[], Curvature]]] = [
        ("Nyström sketch, rank 128, 2,048 rows", lambda: sketch_hessian(objective, w, 128, 2, 0, ids=rows)),
    ]
    for k in (32, 64, 96):
        candidates.append(
            (
                f"input subspace k={k}, core over every row",
                lambda k=k: input_subspace_curvature(objective, w, k, rows, 0),
            )
        )
        candidates.append(
            (
                f"input subspace k={k}, core over 2,048 rows",
                lambda k=k: input_subspace_curvature(objective, w, k, rows, 0, core_rows=rows),
            )
        )
    print(
        "| preconditioner | bytes | passes to form | seconds | one step: single median / worst "
        "| one step: 10 % | PCG: single / 10 % |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")

    def row(name: str, nbytes: int, passes: float, seconds: float, apply: Apply) -> None:
        steps = [float((g - hessian @ apply(g)).norm() / g.norm()) for g in singles]
        step10 = float((tenth - hessian @ apply(tenth)).norm() / tenth.norm())
        pcg = int(np.median([pcg_iterations(hessian, apply, g) for g in singles[:5]]))
        print(
            f"| {name} | {nbytes:,} | {passes:.1f} | {seconds:.2f} "
            f"| {np.median(steps):.3f} / {max(steps):.3f} | {step10:.3f} "
            f"| {pcg} / {pcg_iterations(hessian, apply, tenth)} |",
            flush=True,
        )

    row("none (1 / (1 + lam))", 0, 0.0, 0.0, lambda g: g / (1.0 + lam))
    for name, build in candidates:
        before, started = objective.grad_evals, time.perf_counter()
        curvature = build()
        seconds = time.perf_counter() - started
        passes = (objective.grad_evals - before) / n

        row(name, curvature.nbytes, passes, seconds, curvature.inverse_hessian_product)
    print(f"\nMNIST logistic regression, seed 0 ({objective.dim} parameters, lam {lam}).")


if __name__ == "__main__":
    main()
