"""A Kronecker-factored (KFAC) preconditioner for softmax regression against mini's recorded sketch.

KFAC approximates the data Hessian sum_i (diag p_i - p_i p_i^T) kron x_i x_i^T / n by
G kron A, G = mean(diag p - p p^T) and A = mean(x x^T) over 2,048 training rows at w_T
(``plain``), or with A weighted by each row's curvature tr(diag p - p p^T) (``weighted``);
recording it costs almost nothing and it is full rank. Each preconditions the same lean
L-BFGS contraction as the sketch (``benchmarks/request_passes.py``'s ``lbfgs_lean``) from
w_T on the forget sets ``miniunlearn bench`` draws. Prints passes, distance to the retrained
model and seconds per request:

    python benchmarks/kfac_preconditioner.py mnist 0 > docs/results/kfac-preconditioner.md
"""

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import request_passes as rp  # noqa: E402
from miniunlearn.experiment.bench import BenchSpec, cell_forget_ids, trained_run  # noqa: E402
from miniunlearn.solvers.lbfgs import SecantPairs  # noqa: E402
from miniunlearn.training import cached_retrain  # noqa: E402
from miniunlearn.training.config import SKETCH_OVERRIDES  # noqa: E402

torch.set_num_threads(1)
dataset = sys.argv[1] if len(sys.argv) > 1 else "mnist"
seeds = [int(s) for s in (sys.argv[2] if len(sys.argv) > 2 else "0").split(",")]
spec = BenchSpec(
    dataset=dataset,
    model="logreg",
    ratios=(0.1, 0.5, 0.9),
    methods=("mini",),
    train_overrides=SKETCH_OVERRIDES,
)


class Kfac:
    """(G kron A + lam I)^-1 for flat w = [W (K x D) row-major, b (K)]; x~ = [x, 1]."""

    def __init__(self, objective, w, rows, lam, weighted):
        x = objective.x[rows].to(torch.float64)
        m = x.shape[0]
        xt = torch.cat([x, torch.ones(m, 1, dtype=torch.float64)], dim=1)
        logits = objective.logits(w.to(objective.dtype), objective.x[rows].to(objective.dtype)).to(
            torch.float64
        )
        p = torch.softmax(logits, dim=1)
        k = p.shape[1]
        self.k, self.d = k, xt.shape[1]
        weight = 1.0 - (p * p).sum(1) if weighted else torch.ones(m, dtype=torch.float64)
        a = (xt * weight[:, None]).T @ xt / weight.sum()  # weighted: by tr(diag p - pp^T)
        g = torch.diag(p.mean(0)) - p.T @ p / m
        # KFAC's factor split: put the scale on A; E[(diag p - pp^T)] kron E[x x^T]
        self.sa, self.ua = torch.linalg.eigh(a)
        self.sg, self.ug = torch.linalg.eigh(g)
        self.sa, self.sg = self.sa.clamp(min=0), self.sg.clamp(min=0)
        self.lam = lam

    def __call__(self, v):
        dt = v.dtype
        v = v.to(torch.float64)
        k, d = self.k, self.d
        wpart = v[: k * (d - 1)].reshape(k, d - 1)
        bpart = v[k * (d - 1) :].reshape(k, 1)
        mat = torch.cat([wpart, bpart], dim=1)  # K x D
        t = self.ug.T @ mat @ self.ua
        t = t / (self.sg[:, None] * self.sa[None, :] + self.lam)
        out = self.ug @ t @ self.ua.T
        return torch.cat([out[:, :-1].reshape(-1), out[:, -1]]).to(dt)


rows_out = []
for seed in seeds:
    config = spec.config(seed)
    run = trained_run(config, spec.runs_dir, progress=False)
    obj = run.objective
    wT = run.load_model_params()
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(run.n_train, 2048, replace=False))
    preconditioners = {
        "sketch": run.curvature_sketch().inverse_hessian_product,
        "kfac plain": Kfac(obj, wT, rows, obj.lam, weighted=False),
        "kfac weighted": Kfac(obj, wT, rows, obj.lam, weighted=True),
    }
    for r, ratio in enumerate(spec.ratios):
        forget = cell_forget_ids(run.n_train, ratio, seed, r)
        target = cached_retrain(run, forget)
        p = rp.problem_for(run, forget)
        nr = p.retain.size
        for name, h0 in preconditioners.items():
            for xtol in (1e-3,):
                before = obj.grad_evals
                t0 = time.perf_counter()
                w = rp.lbfgs_lean(
                    p, p.w0.clone(), p.f0, p.g0, SecantPairs(10, h0=h0), xtol=xtol, max_steps=50
                )
                secs = time.perf_counter() - t0
                passes = (obj.grad_evals - before) / nr
                dist = float((w.double() - target.double()).norm())
                rows_out.append((seed, ratio, name, xtol, passes, dist, secs))
print("| seed | ratio | preconditioner | passes | distance to retraining | seconds |")
print("|---:|---:|---|---:|---:|---:|")
for seed, ratio, name, _, passes, dist, secs in rows_out:
    print(f"| {seed} | {ratio:.0%} | {name} | {passes:.2f} | {dist:.6f} | {secs:.2f} |")
