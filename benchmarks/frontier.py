"""Cost/accuracy frontier: distance to retraining against passes over the retain set.

For one seed of a bench preset and each ratio, runs every method at several budgets
(stopping tolerances, CG iterations, fine-tuning steps, shorter retraining from
scratch; the request-time peers, ``nystrom`` with its sketch and with the input-subspace
Hessian at its two measured settings, and ``exact-newton`` where the model is small enough)
next to the original model and full retraining, on the run the defaults record (its
curvature included), and records passes
(per-sample gradient evaluations / retain size; a Hessian-vector product counts two),
wall time, distance to the retrained model and to the float64 retain optimum, the
test-accuracy gap, and what recording the history the method reads cost training (passes
over the training data, from the run's manifest). Prints a Markdown table, writes the
records as JSON and one plot with a panel per ratio.

    python benchmarks/frontier.py --dataset mnist --threads 1 --out docs/results/frontier-mnist
    python benchmarks/frontier.py --dataset adult --threads 1 --out docs/results/frontier-adult
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from miniunlearn.errors import ConfigError
from miniunlearn.experiment.bench import BenchSpec, cell_forget_ids, trained_run
from miniunlearn.experiment.optimum import retain_optimum
from miniunlearn.methods import UnlearnRequest, get_method
from miniunlearn.training import cached_retrain, make_plan
from miniunlearn.training.trainer import train_loop

TOLERANCES = (3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4)
# (label, method, options) per budget; `mini`'s budgets use its gradient rule alone (xtol 0).
VARIANTS: list[tuple[str, str, dict[str, Any]]] = [
    ("mini (default)", "mini", {}),
    # on a run with its exact Hessian the gradient tolerance is exact_rtol (when looser than rtol)
    *[("mini", "mini", {"rtol": t, "exact_rtol": t, "xtol": 0.0}) for t in TOLERANCES],
    *[
        ("mini without curvature", "mini", {"rtol": t, "xtol": 0.0, "precondition": False})
        for t in (1e-2, 1e-3, 1e-4)
    ],
    ("warmstart (default)", "warmstart", {}),
    *[("warmstart", "warmstart", {"rtol": t}) for t in TOLERANCES],
    ("warmstart float32", "warmstart", {"precision": "float32"}),
    ("nystrom (default)", "nystrom", {}),
    *[("nystrom", "nystrom", {"rtol": t, "xtol": 0.0}) for t in (1e-2, 1e-3, 1e-4)],
    # the history-free version of mini's own curvature, formed at request time (MNIST's two best
    # settings, docs/results.md); a model too small for a basis refuses it and is skipped
    *[
        (f"nystrom subspace {k}/{rows}", "nystrom", {"basis": k, "rows": rows, **tolerance})
        for k, rows in ((64, 2048), (32, 512))
        for tolerance in ({}, *({"rtol": t, "xtol": 0.0} for t in (1e-2, 1e-3)))
    ],
    ("exact-newton", "exact-newton", {}),
    *[("newton", "newton", {"cg_iters": i}) for i in (5, 10, 20, 40, 100)],
    *[("finetune", "finetune", {"steps": s}) for s in (10, 50, 200)],
    ("deltagrad", "deltagrad", {"b0": "yy/sy"}),  # the scale the committed frontier was measured with
]
SHORT_RETRAIN_STEPS = (50, 200, 500)


def distance(a: torch.Tensor, b: torch.Tensor | None) -> float | None:
    """L2 distance, None when ``b`` is None."""
    return None if b is None else float((a.double() - b.double()).norm())


def main() -> None:
    """Run the frontier for one dataset and write table, records and plot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--model", default="logreg")
    parser.add_argument("--ratios", default="0.1,0.5,0.9")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs-dir", default="runs/bench")
    parser.add_argument("--no-deltagrad", action="store_true", help="skip DeltaGrad (needs the full history)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--out", required=True, help="path prefix of the .md, .json and .png written")
    parser.add_argument("--replot", action="store_true", help="only redraw the plot from OUT.json")
    parser.add_argument(
        "--only",
        help="comma list of variant labels to (re)run; their records replace those in OUT.json, "
        "the original model and the retraining rows are kept",
    )
    args = parser.parse_args()
    if args.replot:
        records = json.loads(Path(args.out).with_suffix(".json").read_text())
        ratios = sorted({r["ratio"] for r in records})
        plot(
            records,
            ratios,
            Path(args.out).with_suffix(".png"),
            f"{args.dataset} {args.model}, seed {args.seed}",
        )
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = [v for v in VARIANTS if not (args.no_deltagrad and v[1] == "deltagrad")]
    only = set(args.only.split(",")) if args.only else None
    if only is not None:
        variants = [v for v in variants if v[0] in only]
    methods = sorted({m for _, m, _ in variants} | {"retrain"})
    spec = BenchSpec(
        args.dataset,
        args.model,
        ratios=[0.5],
        methods=methods,
        seeds=1,
        runs_dir=Path(args.runs_dir),
    )
    run = trained_run(spec.config(args.seed), spec.runs_dir)
    x_test, y_test = torch.from_numpy(run.dataset.x_test), torch.from_numpy(run.dataset.y_test)

    def test_acc(w: torch.Tensor) -> float:
        return float((run.objective.logits(w, x_test).argmax(1) == y_test).double().mean())

    records: list[dict[str, Any]] = []
    ratios = [float(r) for r in args.ratios.split(",")]
    references = 0 if only is not None else len(SHORT_RETRAIN_STEPS) + 2
    bar = tqdm(total=len(ratios) * (len(variants) + references), desc="frontier")
    for r_index, ratio in enumerate(ratios):
        # the same forget sets as `miniunlearn bench` draws for this seed and ratio position
        forget = cell_forget_ids(run.n_train, ratio, args.seed, r_index)
        retain_size = run.n_train - forget.size
        retrained = cached_retrain(run, forget)
        optimum = retain_optimum(run, forget)
        reference_acc = test_acc(retrained)

        def record(
            label: str,
            options: dict[str, Any],
            w: torch.Tensor,
            evals: int,
            seconds: float,
            recording: dict[str, Any] | None = None,
            *,
            ratio: float = ratio,
            retain_size: int = retain_size,
            retrained: torch.Tensor = retrained,
            optimum: torch.Tensor | None = optimum,
            reference_acc: float = reference_acc,
        ) -> None:
            records.append(
                {
                    "dataset": args.dataset,
                    "ratio": ratio,
                    "method": label,
                    "options": options,
                    "passes": evals / retain_size,
                    "time_s": seconds,
                    "dist_to_retrain": distance(w, retrained),
                    "dist_to_optimum": distance(w, optimum),
                    "test_acc_gap_pts": 100 * (test_acc(w) - reference_acc),
                    "recording_passes": (recording or {}).get("passes", 0.0),
                    "recording_s": (recording or {}).get("seconds", 0.0),
                }
            )
            bar.update()

        mask = np.zeros(run.n_train, dtype=bool)
        mask[forget] = True
        if only is None:
            record("original model", {}, run.load_model_params(), 0, 0.0)
        for steps in (*SHORT_RETRAIN_STEPS, run.total_steps) if only is None else ():
            plan = make_plan(dataclasses.replace(run.config, epochs=steps), run.n_train)
            started, before = time.perf_counter(), run.objective.grad_evals
            w = train_loop(run.objective, run.initial_params(), plan, forget_mask=mask)
            label = "retrain" if steps == run.total_steps else "shorter retrain"
            evals, seconds = run.objective.grad_evals - before, time.perf_counter() - started
            record(label, {"steps": steps}, w, evals, seconds)
        for label, method, options in variants:
            unlearner = get_method(method, **options)
            recording = run.recording_cost(unlearner.history_read())
            try:
                result = unlearner.unlearn(UnlearnRequest(run, forget))
            except ConfigError as refused:  # exact-newton on a large model, a basis on a small one
                tqdm.write(f"{label} {options}: skipped ({refused})")
                bar.update()
                continue
            seconds = result.record.time_s
            record(label, options, result.params, result.record.grad_evals, seconds, recording)
    bar.close()

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if only is not None:
        kept = json.loads(out.with_suffix(".json").read_text())
        records = [r for r in kept if r["method"] not in only] + records
        records.sort(key=lambda r: r["ratio"])
    out.with_suffix(".json").write_text(json.dumps(records, indent=1) + "\n")
    lines = [
        "| ratio | method | options | passes | time (s) | dist to retrain | dist to optimum "
        "| test acc gap (pts) | recording (training passes) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for rec in records:
        opt = ", ".join(f"{k}={v}" for k, v in rec["options"].items()) or "default"
        to_opt = "–" if rec["dist_to_optimum"] is None else f"{rec['dist_to_optimum']:.2g}"
        lines.append(
            f"| {rec['ratio']:.0%} | {rec['method']} | {opt} | {rec['passes']:.1f} | {rec['time_s']:.2f} | "
            f"{rec['dist_to_retrain']:.2g} | {to_opt} | {rec['test_acc_gap_pts']:+.2f} "
            f"| {rec.get('recording_passes', 0.0):.1f} |"
        )
    table = "\n".join(lines)
    out.with_suffix(".md").write_text(table + "\n")
    print(table)
    plot(records, ratios, out.with_suffix(".png"), f"{args.dataset} {args.model}, seed {args.seed}")


def plot(records: list[dict[str, Any]], ratios: list[float], path: Path, title: str) -> None:
    """One panel per ratio: distance to retraining (log) against passes (log), a line per method."""
    fig = Figure(figsize=(5 * len(ratios) + 2, 4.2), layout="constrained")
    styles = {
        "mini": ("C0", "o-"),
        "mini (default)": ("C0", "D"),
        "warmstart (default)": ("C1", "D"),
        "mini without curvature": ("C0", "o:"),
        "warmstart": ("C1", "s-"),
        "warmstart float32": ("C1", "x"),
        "nystrom (default)": ("C6", "D"),
        "nystrom": ("C6", "p-"),
        "nystrom subspace 64/2048": ("C8", "h-"),
        "nystrom subspace 32/512": ("C9", "h--"),
        "exact-newton": ("C7", "P"),
        "newton": ("C2", "^-"),
        "finetune": ("C4", "v-"),
        "shorter retrain": ("C5", "d-"),
        "deltagrad": ("C3", "*"),
    }
    for i, ratio in enumerate(ratios):
        ax = fig.add_subplot(1, len(ratios), i + 1)
        for rec in records:
            if rec["ratio"] == ratio and rec["method"] == "original model":
                ax.axhline(rec["dist_to_retrain"], color="k", ls="--", lw=1, label="original model")
            if rec["ratio"] == ratio and rec["method"] == "retrain":
                ax.axvline(rec["passes"], color="k", ls=":", lw=1, label="retraining (distance 0)")
        for label, (color, style) in styles.items():
            pts = [r for r in records if r["ratio"] == ratio and r["method"] == label]
            if not pts:
                continue
            xs = [r["passes"] for r in pts]
            ys = [r["dist_to_retrain"] for r in pts]
            default = label.endswith("(default)")
            ax.plot(
                xs,
                ys,
                style,
                color=color,
                label=label,
                markersize=10 if default else 6,
                markeredgecolor="k" if default else color,
                zorder=5 if default else 2,
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("passes over the retain set")
        ax.set_ylabel("distance to retrained model")
        ax.set_title(f"{title}: {ratio:.0%} forgotten")
        ax.grid(True, which="both", alpha=0.3)
    fig.legend(*fig.axes[0].get_legend_handles_labels(), loc="outside right upper", fontsize=8)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
