"""Cheaper recording and fewer passes per request for `mini`: prototypes, measured.

For each seed of the bench preset and each ratio (the forget sets `miniunlearn bench`
draws), builds curvature sketches in several ways (the recorded one: rank-128 Nyström
with 2 blocks over all rows; and Nyström sketches of the data Hessian at w_T on a random
subsample of the training rows, whose cost is 2 * rank * blocks * rows / n passes), then
serves the request with several solvers on each sketch:

* ``mini``: the library's method, default options, with the sketch in place of the recorded one;
* ``lean``: the same L-BFGS contraction from w_T, seeded with the sketch, but with a stopping
  rule that never spends a pass only to confirm convergence: at an iterate with exact
  retain gradient g, the step d = -H g is computed; when |d| <= xtol * |w + d - w_T| the
  solve returns w + d without evaluating it (and it also stops at ``max_steps``);
* ``cv``: control-variate inner solves: at a reference point with exact tilted retain
  gradient g_ref, minimise the surrogate whose gradient is g_ref + g_S(w) - g_S(w_ref)
  over a retain subsample S by L-BFGS (each inner gradient costs |S| / |R| passes), then
  one exact pass at the result; then the ``lean`` iteration continues from there;
* ``sn``: subsampled Newton: at a reference point with exact gradient, solve
  (H_S + lam) d = -g by conjugate gradients preconditioned with the sketch, Hessian-vector
  products on a retain subsample S (each costs 2 |S| / |R| passes); then ``lean`` continues.

Every per-sample gradient evaluation is counted (``objective.grad_evals``; a Hessian-vector
product counts two). Prints one Markdown table: recording passes (share of training's
passes), per-request passes, seconds, distance to the retrained model and the test
accuracy gap to it (points), means over seeds.

    python benchmarks/request_passes.py --dataset mnist --seeds 0,1,2 --threads 1
    python benchmarks/request_passes.py --dataset adult --seeds 0,1,2 --threads 1

(their tables are in docs/results/request-passes.md).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from miniunlearn.experiment.bench import BenchSpec, cell_forget_ids, trained_run
from miniunlearn.methods import UnlearnRequest, get_method
from miniunlearn.methods.mini.identity import retain_at_checkpoints
from miniunlearn.objective import Objective
from miniunlearn.solvers.lbfgs import SecantPairs
from miniunlearn.training import cached_retrain
from miniunlearn.training.config import SKETCH_OVERRIDES
from miniunlearn.training.curvature import CurvatureSketch, sketch_hessian
from miniunlearn.training.rundir import Run

Vector = torch.Tensor


# -- recording --------------------------------------------------------------------------
def subsample_sketch(
    objective: Objective, w: Vector, rows: int | None, rank: int, blocks: int, seed: int
) -> tuple[CurvatureSketch, int]:
    """Nyström sketch of the data Hessian at ``w`` from ``rows`` random training rows (all
    when None): the eigenpairs of (1/rows) sum_{i in S} Hess l_i(w), an estimate of
    (1/n) sum_i Hess l_i(w). Stored like the recorded one (float16 vectors, re-orthonormalised).
    Returns (sketch, per-sample evaluations spent)."""
    if rows is None or rows >= objective.n:
        sub = objective
    else:
        gen = np.random.default_rng(seed)
        ids = torch.as_tensor(np.sort(gen.choice(objective.n, rows, replace=False)), device=objective.device)
        sub = Objective(
            objective.model, objective.x[ids], objective.y[ids], objective.lam, objective.chunk_size
        )
    before = sub.grad_evals
    sketch = sketch_hessian(sub, w, rank, blocks, seed=seed)
    evals = sub.grad_evals - before
    vectors = torch.linalg.qr(sketch.vectors.to(torch.float16).to(torch.float32).T)[0].T.contiguous()
    return CurvatureSketch(vectors, sketch.values.to(torch.float32), sketch.lam), evals


# -- solvers ----------------------------------------------------------------------------
@dataclass
class Problem:
    """One request: objective, retain ids, tilt c, start w0 with exact tilted value/gradient."""

    objective: Objective
    retain: np.ndarray
    c: Vector
    w0: Vector
    f0: Vector
    g0: Vector

    def value_grad(self, w: Vector, ids: np.ndarray | None = None) -> tuple[Vector, Vector]:
        """Tilted value and gradient on the retain set (or on ``ids``)."""
        f, g = self.objective.value_and_grad(w, self.retain if ids is None else ids)
        return f - torch.dot(self.c, w), g - self.c


def problem_for(run: Run, forget: np.ndarray) -> Problem:
    """The request's tilted retain problem at w_T, its gradient from the identity."""
    objective, history = run.objective, run.mini_history()
    request = UnlearnRequest(run, forget)
    W, G = history.params[:1].to(objective.dtype), history.grads[:1].to(objective.dtype)
    value, grad = retain_at_checkpoints(objective, history.n, history.lam, W, G, history.values[:1], request)
    c = G[0].clone()
    return Problem(objective, request.retain_ids, c, W[0].clone(), value[0] - torch.dot(c, W[0]), grad[0] - c)


def lbfgs_lean(
    p: Problem,
    w: Vector,
    f: Vector,
    g: Vector,
    pairs: SecantPairs,
    *,
    xtol: float,
    max_steps: int,
    ids: np.ndarray | None = None,
    gtol: float = 0.0,
    armijo: float = 1e-4,
    extrapolate: bool = False,
) -> Vector:
    """L-BFGS on the tilted objective (on ``ids``: a surrogate; see ``cv``) from ``w`` with
    value ``f`` and gradient ``g``. At each iterate the step d = -H g is formed; the solve
    returns w + d unevaluated when |d| <= xtol * |w + d - p.w0| or the step budget is spent,
    and w when |g| <= gtol."""
    for step in range(max_steps + 1):
        if float(g.norm()) <= gtol:
            return w
        d = -pairs.inverse_hessian_product(g)
        slope = torch.dot(g, d)
        if not slope < 0:
            d = -pairs.gamma() * g
            slope = torch.dot(g, d)
        if step == max_steps or float(d.norm()) <= xtol * float((w + d - p.w0).norm()):
            return w + d
        a = 1.0
        for _ in range(11):
            w_new = w + a * d
            f_new, g_new = p.value_grad(w_new, ids)
            if f_new <= f + armijo * a * slope:
                break
            noise = 16 * torch.finfo(f.dtype).eps * abs(float(f))
            if float(f_new - f) <= noise and g_new.norm() < g.norm():
                break
            a *= 0.5
        else:
            return w
        if extrapolate and a == 1.0:
            # secant minimiser along d; move there on the linear model of the gradient
            y = g_new - g
            curv = float(torch.dot(y, d))
            best = -float(slope) / curv if curv > 0 else 1.0
            if 0.25 <= best <= 4.0 and abs(best - 1.0) > 0.05:
                f_new = f + best * slope + 0.5 * best * best * curv
                w_new, g_new = w + best * d, g + best * y
        pairs.add(w_new - w, g_new - g)
        w, f, g = w_new, f_new, g_new
    return w


class Surrogate(Problem):
    """Control-variate surrogate of the tilted retain objective around ``w_ref``: value
    F_S(w) - F_S(w_ref) + (g_ref - g_S(w_ref)).(w - w_ref), gradient
    g_ref + g_S(w) - g_S(w_ref) (g_S untilted, on the retain subsample ``sample``)."""

    def __init__(self, p: Problem, sample: np.ndarray, w_ref: Vector, g_ref: Vector) -> None:
        super().__init__(p.objective, p.retain, p.c, p.w0, p.f0, p.g0)
        self.sample, self.w_ref = sample, w_ref
        self.fs_ref, gs_ref = p.objective.value_and_grad(w_ref, sample)
        self.shift = g_ref - gs_ref

    def value_grad(self, w: Vector, ids: np.ndarray | None = None) -> tuple[Vector, Vector]:
        f, g = self.objective.value_and_grad(w, self.sample)
        return f - self.fs_ref + torch.dot(self.shift, w - self.w_ref), g + self.shift


def solve(
    p: Problem,
    sketch: CurvatureSketch | None,
    solver: str,
    *,
    xtol: float = 1e-3,
    max_steps: int = 50,
    sample_size: int = 4096,
    inner: int = 10,
    rounds: int = 1,
    seed: int = 0,
    memory: int = 10,
    extrapolate: bool = False,
) -> Vector:
    """Serve the request with ``solver`` (``lean``, ``cv`` or ``sn``; see the module
    docstring) from w_T; return the parameters."""
    h0 = sketch.inverse_hessian_product if sketch is not None else None
    pairs = SecantPairs(memory, h0=h0)
    w, f, g = p.w0.clone(), p.f0, p.g0
    gen = np.random.default_rng(seed)
    for _ in range(rounds if solver in ("cv", "sn") else 0):
        sample = np.sort(gen.choice(p.retain, min(sample_size, p.retain.size), replace=False))
        if solver == "cv":
            surrogate = Surrogate(p, sample, w, g)
            inner_pairs = SecantPairs(10, h0=h0)
            w_new = lbfgs_lean(surrogate, w, f, g, inner_pairs, xtol=0.0, max_steps=inner)
        else:
            w_new = w + newton_cg(p, sample, w, g, h0, inner)
        f_new, g_new = p.value_grad(w_new)
        pairs.add(w_new - w, g_new - g)
        w, f, g = w_new, f_new, g_new
    return lbfgs_lean(p, w, f, g, pairs, xtol=xtol, max_steps=max_steps, extrapolate=extrapolate)


def newton_cg(
    p: Problem, sample: np.ndarray, w: Vector, g: Vector, h0: Callable[[Vector], Vector] | None, iters: int
) -> Vector:
    """``iters`` steps of conjugate gradients on (H_S(w) + lam) d = -g, preconditioned by ``h0``."""
    d = torch.zeros_like(g)
    r = -g.clone()
    z = h0(r) if h0 is not None else r.clone()
    q = z.clone()
    rz = torch.dot(r, z)
    for _ in range(iters):
        hq = p.objective.hvp(w, q, sample)
        alpha = rz / torch.dot(q, hq)
        d += alpha * q
        r -= alpha * hq
        z = h0(r) if h0 is not None else r.clone()
        rz_new = torch.dot(r, z)
        q = z + (rz_new / rz) * q
        rz = rz_new
    return d


# -- the sweep --------------------------------------------------------------------------
# (label, training rows sketched (None: all), rank, blocks); "recorded" reads the run's own sketch
SKETCHES: dict[str, dict[str, list[tuple[str, int | None, int, int]]]] = {
    "mnist": {
        "full": [("recorded (all rows, rank 128, 2 blocks)", None, 128, 2)],
        "sub": [
            ("2048 rows, rank 256, 2 blocks", 2048, 256, 2),
            ("2048 rows, rank 512, 1 block", 2048, 512, 1),
            ("1024 rows, rank 128, 2 blocks", 1024, 128, 2),
        ],
    },
    "adult": {
        "full": [("recorded (all rows, rank 128, 2 blocks)", None, 128, 2)],
        "sub": [
            ("4096 rows, rank 128, 1 block", 4096, 128, 1),
            ("2048 rows, rank 128, 1 block", 2048, 128, 1),
            ("1024 rows, rank 64, 1 block", 1024, 64, 1),
        ],
    },
}
# (label, solver, options); "mini" is the library's method with default options
SOLVERS: list[tuple[str, str, dict[str, object]]] = [
    ("mini (library default)", "mini", {}),
    ("lean, xtol 1e-3", "lean", {"xtol": 1e-3}),
    ("lean, xtol 3e-3", "lean", {"xtol": 3e-3}),
    ("lean + secant extrapolation, xtol 3e-3", "lean", {"xtol": 3e-3, "extrapolate": True}),
    (
        "cv (2048-row surrogate, 2 inner steps), xtol 3e-3",
        "cv",
        {"sample_size": 2048, "inner": 2, "xtol": 3e-3},
    ),
    ("sn (2048-row Hessian, 4 CG steps), xtol 3e-3", "sn", {"sample_size": 2048, "inner": 4, "xtol": 3e-3}),
]


def main() -> None:
    """Measure every (sketch, solver) pair and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist", choices=sorted(SKETCHES))
    parser.add_argument("--ratios", default="0.1,0.5,0.9")
    parser.add_argument("--seeds", default="0", help="comma list of seeds")
    parser.add_argument("--runs-dir", default="runs/bench")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ratios = [float(r) for r in args.ratios.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    spec = BenchSpec(args.dataset, "logreg", [0.5], ["retrain", "mini"], 1, train_overrides=SKETCH_OVERRIDES)
    sketch_specs = SKETCHES[args.dataset]["full"] + SKETCHES[args.dataset]["sub"]
    # (sketch label, solver label) -> ratio -> list of (passes, seconds, dist, acc gap); sketch -> passes
    cells: dict[tuple[str, str], dict[float, list[tuple[float, float, float, float]]]] = {}
    recording: dict[str, list[float]] = {}
    train_passes = 0.0
    for seed in seeds:
        run = trained_run(spec.config(seed), Path(args.runs_dir), progress=False)
        objective = run.objective
        train_passes = float(run.total_steps)  # full-batch: one pass a step
        w_T = run.mini_history().params[0].to(objective.dtype)
        x_test, y_test = torch.from_numpy(run.dataset.x_test), torch.from_numpy(run.dataset.y_test)

        def accuracy(w: Vector, run: Run = run, x_test: Vector = x_test, y_test: Vector = y_test) -> float:
            return float((run.objective.logits(w, x_test).argmax(1) == y_test).double().mean())

        sketches: dict[str, CurvatureSketch] = {}
        for label, rows, rank, blocks in sketch_specs:
            if rows is None:
                sketch, evals = run.curvature_sketch(), 2 * rank * blocks * run.n_train
            else:
                sketch, evals = subsample_sketch(objective, w_T, rows, rank, blocks, seed=seed)
            sketches[label] = sketch
            recording.setdefault(label, []).append(evals / run.n_train)
        for r_index, ratio in enumerate(ratios):
            forget = cell_forget_ids(run.n_train, ratio, seed, r_index)
            retrained = cached_retrain(run, forget)
            reference = accuracy(retrained)
            retain_size = run.n_train - forget.size
            for sketch_label, sketch in sketches.items():
                for solver_label, solver, options in SOLVERS:
                    before, started = objective.grad_evals, time.perf_counter()
                    if solver == "mini":
                        run.curvature_sketch = lambda sketch=sketch: sketch  # type: ignore[method-assign]
                        w = get_method("mini").unlearn(UnlearnRequest(run, forget)).params
                        del run.curvature_sketch
                    else:
                        w = solve(problem_for(run, forget), sketch, solver, seed=seed, **options)  # type: ignore[arg-type]
                    seconds = time.perf_counter() - started
                    passes = (objective.grad_evals - before) / retain_size
                    gap = 100 * (accuracy(w) - reference)
                    cell = cells.setdefault((sketch_label, solver_label), {})
                    cell.setdefault(ratio, []).append(
                        (passes, seconds, float((w.double() - retrained.double()).norm()), gap)
                    )
    header = "| recording | rec. passes (share of training) | solver |"
    header += "".join(f" {r:.0%}: passes / s / dist / acc gap |" for r in ratios)
    print(f"{args.dataset} logreg, seeds {args.seeds}; means over seeds (acc gap in points vs retrained)\n")
    print(header)
    print("|---|---:|---|" + "---:|" * len(ratios))
    for (sketch_label, solver_label), by_ratio in cells.items():
        rec = float(np.mean(recording[sketch_label]))
        line = f"| {sketch_label} | {rec:.0f} ({rec / train_passes:.1%}) | {solver_label} |"
        for ratio in ratios:
            m = np.mean(np.array(by_ratio[ratio]), axis=0)
            line += f" {m[0]:.2f} / {m[1]:.2f} / {m[2]:.2g} / {m[3]:+.2f} |"
        print(line, flush=True)


if __name__ == "__main__":
    main()
