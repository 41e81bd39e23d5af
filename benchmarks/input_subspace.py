"""How well each recordable curvature preconditions the retain problem, against the exact Hessian.

On the bench's MNIST logistic regression (seed 0) the exact regularised Hessian at w_T is
formed from the loss's structure (7,850 x 7,850, float64) and each preconditioner P is
judged on it:

- ``one step``: |g - H P^-1 g| / |g|, what one preconditioned Newton step leaves of the
  gradient, for the retain-gradient change of 20 single-sample removals (median and worst)
  and of a 10 % removal;
- ``two steps``: what two quasi-Newton steps leave, the second refined by the first's secant
  pair as a small request's steps are (L-BFGS seeded with P^-1), for the 20 single samples
  (median and worst): a stream's request is served in two passes when this is below its
  tolerance over its start;
- ``PCG``: preconditioned conjugate-gradient iterations on H to a 1e-4 relative residual
  (median over 5 single samples; the 10 % removal);
- ``bytes`` stored and ``passes`` counted to form it (over the training set).

Rows: the Nyström sketch (rank 128 on 2,048 rows, the former default), the input-subspace
Hessian with k principal input directions per class (core over every row, as recorded; over
2,048 rows, as the request-time peer forms it; k = 32, 64, 96, the run's recorded k, and 160
and 200, above the history budget, for what more directions would buy), the recorded
curvature as read back from the run (its core stored in half precision), no
preconditioner, and two references that cannot be
stored, each taking out one of the recorded preconditioner's two simplifications: the
complement's exact block in place of its scalar (the coupling between basis and complement
still left out), and the exact coupling (the complement's scalar kept, and the scalar at
the middle of the complement's spectrum, which pays only with the coupling). A
closing line says how much of what one step leaves lies on the complement. Prints a table:

    python benchmarks/input_subspace.py > docs/results/input-subspace.md
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from miniunlearn.experiment.bench import BenchSpec, trained_run
from miniunlearn.solvers.lbfgs import SecantPairs
from miniunlearn.training.curvature import Curvature, sketch_hessian, softmax_regression_hessian
from miniunlearn.training.input_subspace import InputSubspaceCurvature, from_blocks, input_subspace_curvature
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


def two_steps(hessian: torch.Tensor, apply: Apply, g: torch.Tensor) -> float:
    """|g| left after two quasi-Newton steps on ``hessian`` from ``g``, relative: the first with
    ``apply``, the second with L-BFGS seeded with it and refined by the first step's secant
    pair, as a small request takes them (``methods/mini/fixed_point.py``)."""
    pairs = SecantPairs(10, h0=apply)
    left = g
    for _ in range(2):
        step = pairs.inverse_hessian_product(left)
        after = left - hessian @ step
        pairs.add(-step, after - left)
        left = after
    return float(left.norm() / g.norm())


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
    recorded_k = int(run.manifest["curvature"]["basis"])
    for k in sorted({32, 64, 96, recorded_k}):  # one row per k, should the run record one of these
        candidates.append(
            (
                f"input subspace k={k}, core over every row" + (" (recorded)" if k == recorded_k else ""),
                lambda k=k: input_subspace_curvature(objective, w, k, rows, 0),
            )
        )
        candidates.append(
            (
                f"input subspace k={k}, core over 2,048 rows",
                lambda k=k: input_subspace_curvature(objective, w, k, rows, 0, core_rows=rows),
            )
        )
    # above the history budget (5 % of DeltaGrad's bytes and of training's passes): what more
    # directions would buy
    for k in (160, 200):
        candidates.append(
            (
                f"input subspace k={k}, core over every row (over budget)",
                lambda k=k: input_subspace_curvature(objective, w, k, rows, 0),
            )
        )
    print(
        "| preconditioner | bytes | passes to form | seconds | one step: single median / worst "
        "| two steps: single median / worst | one step: 10 % | PCG: single / 10 % |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")

    def row(name: str, nbytes: int, passes: float, seconds: float, apply: Apply) -> None:
        steps = [float((g - hessian @ apply(g)).norm() / g.norm()) for g in singles]
        pairs = [two_steps(hessian, apply, g) for g in singles]
        step10 = float((tenth - hessian @ apply(tenth)).norm() / tenth.norm())
        pcg = int(np.median([pcg_iterations(hessian, apply, g) for g in singles[:5]]))
        print(
            f"| {name} | {nbytes:,} | {passes:.1f} | {seconds:.2f} "
            f"| {np.median(steps):.3f} / {max(steps):.3f} | {np.median(pairs):.4f} / {max(pairs):.4f} "
            f"| {step10:.3f} "
            f"| {pcg} / {pcg_iterations(hessian, apply, tenth)} |",
            flush=True,
        )

    row("none (1 / (1 + lam))", 0, 0.0, 0.0, lambda g: g / (1.0 + lam))
    recorded: InputSubspaceCurvature | None = None
    for name, build in candidates:
        before, started = objective.grad_evals, time.perf_counter()
        curvature = build()
        seconds = time.perf_counter() - started
        passes = (objective.grad_evals - before) / n
        if name.endswith("(recorded)"):
            recorded = curvature
        row(name, curvature.nbytes, passes, seconds, curvature.inverse_hessian_product)
    assert isinstance(recorded, InputSubspaceCurvature)
    stored = run.curvature_sketch()
    assert isinstance(stored, InputSubspaceCurvature)
    recording = run.manifest["curvature"]
    row(
        f"k={recorded_k} as the run stored it (half-precision core), recorded at training",
        stored.nbytes,
        recording["grad_evals"] / n,
        recording["seconds"],
        stored.inverse_hessian_product,
    )
    subspace = subspace_matrix(recorded)
    # the complement's exact block in place of its scalar, coupling still left out: a reference
    # that cannot be stored (d - K k columns), to tell the scalar's error from the coupling's
    filler = torch.randn(
        objective.dim,
        objective.dim - subspace.shape[1],
        generator=torch.Generator().manual_seed(0),
        dtype=torch.float64,
    )
    complement = torch.linalg.qr(torch.cat([subspace, filler], 1))[0][:, subspace.shape[1] :]
    on_complement = complement.T @ hessian @ complement
    core_inverse = torch.linalg.inv(subspace.T @ hessian @ subspace)
    complement_inverse = torch.linalg.inv(on_complement)

    def block_diagonal(g: torch.Tensor) -> torch.Tensor:
        return subspace @ (core_inverse @ (subspace.T @ g)) + complement @ (
            complement_inverse @ (complement.T @ g)
        )

    row(
        f"k={recorded_k} with the complement's exact block (reference: not storable)",
        0,
        0.0,
        0.0,
        block_diagonal,
    )
    # the other half: the exact coupling between basis and complement, with the complement's
    # scalar as recorded and at the middle of the complement's spectrum; the 2 x 2 block
    # system is solved through the basis side's Schur complement
    coupling = subspace.T @ hessian @ complement
    spectrum = torch.linalg.eigvalsh(on_complement)
    sigma = recorded.complement_curvature
    middle = float(spectrum[0] + spectrum[-1]) / 2

    def coupled(scalar: float) -> Apply:
        schur_inverse = torch.linalg.inv(subspace.T @ hessian @ subspace - coupling @ coupling.T / scalar)

        def apply(g: torch.Tensor) -> torch.Tensor:
            on_basis, on_complement_g = subspace.T @ g, complement.T @ g
            x = schur_inverse @ (on_basis - coupling @ on_complement_g / scalar)
            return subspace @ x + complement @ ((on_complement_g - coupling.T @ x) / scalar)

        return apply

    row(
        f"k={recorded_k} with the exact coupling, the complement's scalar kept (reference: not storable)",
        0,
        0.0,
        0.0,
        coupled(sigma),
    )
    row(
        f"k={recorded_k} with the exact coupling, the complement's scalar at its spectrum's middle, "
        f"{middle:.4f} (reference: not storable)",
        0,
        0.0,
        0.0,
        coupled(middle),
    )
    left = [g - hessian @ recorded.inverse_hessian_product(g) for g in singles]
    share = np.median(
        [float((left_g - subspace @ (subspace.T @ left_g)).norm() / left_g.norm()) for left_g in left]
    )
    print(f"\nMNIST logistic regression, seed 0 ({objective.dim} parameters, lam {lam}).")
    print(
        f"\nThe recorded k={recorded_k}: on the complement the exact Hessian (lam included) "
        f"ranges over [{float(spectrum[0]):.4f}, {float(spectrum[-1]):.4f}] (median "
        f"{float(spectrum.median()):.4f}) and the preconditioner takes {sigma:.4f} there; after one step "
        f"on a single-sample removal a median {share:.2f} of the gradient left lies on the complement. "
        "The reference rows take out one cause each: the complement's exact block alone, or the "
        "exact coupling between basis and complement alone (which leaves the complement's flat "
        f"directions, curvature about {float(spectrum[0]):.4f}, a step of {float(spectrum[0]) / sigma:.2f} "
        "of Newton's); the last moves the complement's scalar to the middle of its spectrum as well, "
        "which only the coupling makes pay."
    )


def subspace_matrix(curvature: InputSubspaceCurvature) -> torch.Tensor:
    """The orthonormal columns (d, K k) of I_K kron U in the flat parameter layout (float64)."""
    basis = curvature.basis.to(torch.float64)
    classes, (features, k) = curvature.classes, basis.shape
    columns = []
    for a in range(classes):
        blocks = torch.zeros(k, classes, features, dtype=torch.float64)
        blocks[:, a, :] = basis.T
        columns.append(from_blocks(blocks))
    return torch.cat(columns).T


if __name__ == "__main__":
    main()
