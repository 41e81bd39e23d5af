"""Where a single-sample request's seconds go on MNIST, and what forming a Gram matrix costs.

On the bench's MNIST logistic regression (seed 0), one thread, each part a served
single-sample request spends, timed alone (mean of a few repeats after a warm-up):
opening the run and loading its training data, a retain pass in the run's float32 and in
float64 (a certificate's), factoring the recorded input-subspace core, and the certificate's
largest input norm. Then one 8,192-row block of the weighted Gram matrices the curvature forms
(float64, at the recorded core's width and at the inputs' full width, as the exact Hessian
forms them), three ways: band by band on and above the diagonal as
``training/input_subspace.symmetric_gram`` does, the full product, and BLAS's symmetric
rank-k update (``scipy.linalg.blas.dsyrk``, the upper triangle only). Prints two tables:

    python benchmarks/request_time.py > docs/results/request-time.md
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.linalg.blas import dsyrk
from threadpoolctl import threadpool_limits  # installed with scikit-learn

from miniunlearn.certificate import max_input_norm
from miniunlearn.experiment.bench import BenchSpec, trained_run
from miniunlearn.training import open_run
from miniunlearn.training.input_subspace import InputSubspaceCurvature, symmetric_gram
from timing import mean_seconds

torch.set_num_threads(1)


def main() -> None:
    spec = BenchSpec(dataset="mnist", model="logreg", ratios=(0.1,), methods=("mini",))
    run = trained_run(spec.config(0), spec.runs_dir, progress=False)
    objective = run.objective
    w = run.load_model_params()
    retain = np.delete(np.arange(run.n_train), 0)
    o64, w64 = objective.cast(torch.float64), w.to(torch.float64)
    curvature = run.curvature_sketch()
    assert isinstance(curvature, InputSubspaceCurvature)

    def factor() -> None:
        curvature._factor = None  # noqa: SLF001 (a fresh request factors it once)
        curvature.factor()

    parts = [
        ("open the run and load its training data", lambda: open_run(run.path).objective, 3),
        ("a retain pass in float32 (the run's precision)", lambda: objective.value_and_grad(w, retain), 5),
        ("a retain pass in float64 (a certificate's)", lambda: o64.value_and_grad(w64, retain), 5),
        (f"factor the recorded core ({curvature.rank} x {curvature.rank}, float64)", factor, 5),
        ("the certificate's largest input norm", lambda: max_input_norm(objective.x), 5),
    ]
    print("| part of a single-sample MNIST request | seconds |")
    print("|---|---:|")
    for name, work, repeats in parts:
        print(f"| {name} | {mean_seconds(work, repeats):.3f} |", flush=True)

    gen = torch.Generator().manual_seed(0)
    print("\n| Gram matrix, 8,192 rows (float64) | width | band by band (as formed) | full product | dsyrk |")
    print("|---|---:|---:|---:|---:|")
    for label, width in (("the recorded core's", curvature.basis.shape[1]), ("the exact Hessian's", 785)):
        z = torch.randn(8192, width, generator=gen, dtype=torch.float64)
        weights = torch.rand(8192, generator=gen, dtype=torch.float64)
        scaled = np.asfortranarray((z * weights.sqrt()[:, None]).numpy())  # weights >= 0 here
        with threadpool_limits(1):
            band = mean_seconds(lambda z=z, weights=weights: symmetric_gram(z, weights))
            full = mean_seconds(lambda z=z, weights=weights: (z * weights[:, None]).T @ z)
            syrk = mean_seconds(lambda scaled=scaled: dsyrk(1.0, scaled, trans=1))
        print(f"| {label} | {width} | {band:.4f} | {full:.4f} | {syrk:.4f} |", flush=True)
    print(
        "\nOne thread; MNIST logistic regression, seed 0. A retain pass reads the 59,999 rows a "
        "single-sample request keeps."
    )


if __name__ == "__main__":
    main()
