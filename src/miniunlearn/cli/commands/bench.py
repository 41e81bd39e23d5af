"""``miniunlearn bench``: sweep methods over unlearning ratios against retraining."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from ...errors import ConfigError, MiniUnlearnError
from ..common import parse_options
from ..training_flags import override_fields

TABLE_METRICS = (
    "test_acc",
    "retain_acc",
    "forget_acc",
    "dist_to_retrain",
    "dist_to_optimum",
    "mia_auc",
    "mia_efficacy",
    "avg_gap",
    "avg_gap_population",
    "time_s",
    "speedup_vs_retrain",
    "passes",
    "history_bytes",
)


def cmd_bench(args: argparse.Namespace) -> int:
    """Sweep methods over unlearning ratios against retraining; print a table, write JSON and plots."""
    from ...evaluation.breakeven import break_even, break_even_table
    from ...evaluation.report import markdown_table, summarise
    from ...experiment.bench import run_bench

    if args.queue and args.stream is None:
        raise ConfigError("--queue serves the requests of --stream N: give --stream as well")
    if args.stream_seed and args.stream is None:
        raise ConfigError("--stream-seed draws the requests of --stream N: give --stream as well")
    if args.tune_baselines and args.stream is not None:
        raise ConfigError(
            "--tune-baselines tunes the baselines of a ratio sweep, not --stream; give one of them"
        )
    spec = bench_spec(args)
    if args.stream is not None:
        return _stream(args, spec)
    records, extras = run_bench(spec, progress=not args.quiet)
    metrics = list(TABLE_METRICS)
    if "ulira" in args.attacks:
        metrics.insert(metrics.index("mia_auc") + 1, "ulira_auc")
    print(markdown_table(summarise(records), metrics=metrics))
    checked = [r["certificate_holds"] for r in records if r.get("certificate_holds") is not None]
    if checked:
        print(
            f"certificates checked against the float64 retain optimum: {sum(checked)} of {len(checked)} "
            "held (distance to the optimum at most the certified bound)"
        )
    if spec.tune_baselines:
        from ...experiment.tuning import tuning_table

        print("\nBaselines tuned without the retrained model (docs/method.md, 'Tuning the baselines'):\n")
        print(tuning_table(records))
    paid_back = break_even_table(break_even(records))
    if paid_back:
        print("\nWhen mini's recorded history pays for itself (one-off recording at training against")
        print("cheaper requests; passes are over the retain set per request, over the training set")
        print("for recording):\n")
        print(paid_back)
    if args.json:
        from ...fileio import atomic_write_json

        atomic_write_json(args.json, records)
        print(f"records written to {args.json}")
    if args.plots:
        from ...evaluation.plots import plot_all, plot_roc

        paths = plot_all(records, Path(args.plots))
        if extras["roc"]:
            paths.append(plot_roc(extras["roc"], Path(args.plots) / "roc.png"))
        print("plots: " + ", ".join(str(p) for p in paths))
    return 0


def _stream(args: argparse.Namespace, spec: Any) -> int:
    """``bench --stream N``: serve N requests through the workflow on a copy of seed 0's run."""
    from ...experiment.bench import trained_run
    from ...experiment.stream import StreamSpec, plot_stream, run_stream, stream_table

    stream = StreamSpec(
        args.stream,
        request_size=args.request_size,
        mixed=args.mixed_sizes,
        method=args.stream_method,
        options=spec.method_options.get(args.stream_method, {}),
        seed=args.stream_seed,
    )
    run = trained_run(spec.config(0), spec.runs_dir, progress=not args.quiet, device=spec.device)
    if args.queue:
        return _queue(args, run, stream)
    records, summary = run_stream(run, stream, progress=not args.quiet)
    print(stream_table(summary))
    if args.json:
        from ...fileio import atomic_write_json

        atomic_write_json(args.json, {"summary": summary, "requests": records})
        print(f"records written to {args.json}")
    if args.plots:
        title = f"{spec.dataset}/{spec.model}: {summary['n_requests']} requests by {stream.method}"
        print(f"plots: {plot_stream(records, Path(args.plots) / 'stream.png', title)}")
    return 0


def _queue(args: argparse.Namespace, run: Any, stream: Any) -> int:
    """``bench --stream N --queue``: the N requests submitted, then served by one ``serve``."""
    from ...experiment.queued import queue_table, run_queue

    summary = run_queue(run, stream, progress=not args.quiet)
    print(queue_table(summary))
    if args.json:
        from ...fileio import atomic_write_json

        atomic_write_json(args.json, {"summary": summary})
        print(f"records written to {args.json}")
    return 0


def bench_spec(args: argparse.Namespace) -> Any:
    """The BenchSpec the flags describe, after refusing bad method options and output paths."""
    from ...experiment.bench import BenchSpec

    method_options = _method_options(args.option)
    overrides = override_fields(args)
    check_output(args.json, "--json", directory=False)
    check_output(args.plots, "--plots", directory=True)
    return BenchSpec(
        dataset=args.dataset,
        model=args.model,
        ratios=args.ratios,
        methods=args.methods,
        seeds=args.seeds,
        attacks=args.attacks,
        runs_dir=Path(args.runs_dir),
        preset=args.preset,
        train_overrides=overrides,
        method_options=method_options,
        tune_baselines=args.tune_baselines,
        ulira_pool=args.ulira_pool,
        ulira_shadows=args.ulira_shadows,
        jobs=args.jobs,
        threads=args.threads,
        backend=args.backend,
        address=args.address,
        device=args.device,
        data_options=parse_options(args.data_option),
    )


def _method_options(pairs: list[str] | None) -> dict[str, dict[str, Any]]:
    """``METHOD:key=value`` options (--option) grouped by method."""
    method_options: dict[str, dict[str, Any]] = {}
    for pair in pairs or ():
        method, sep, rest = pair.partition(":")
        if not sep:
            raise MiniUnlearnError(f"bench option {pair!r} must look like METHOD:key=value")
        method_options.setdefault(method, {}).update(parse_options([rest]))
    return method_options


def check_output(path: str | None, flag: str, *, directory: bool) -> None:
    """Refuse an output path (a file, or with ``directory`` a folder) that cannot be written, before
    any work: it names a folder (a file) already there, or its nearest existing parent is not a
    writable folder."""
    if path is None:
        return
    target = Path(path)
    kind = "folder" if directory else "file"
    if target.exists() and target.is_dir() != directory:
        raise MiniUnlearnError(
            f"{flag} {path} is {'a file' if directory else 'a folder'}; give the path of a {kind} to write"
        )
    parent = target if target.is_dir() else target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise MiniUnlearnError(
            f"{flag} {path} cannot be written: {parent} is not a writable folder; give a {kind} path "
            "in a folder you can write"
        )
