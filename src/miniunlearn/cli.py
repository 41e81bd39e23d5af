"""The ``miniunlearn`` command line: fetch, train, forget, evaluate, bench, ledger, audit, methods."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import MiniUnlearnError

# Only the standard library is imported before main() runs: the console script imports this
# module outside main's error handling, so a Ctrl-C there would print a traceback. Everything
# else is imported inside main (numpy on first use, through this stand-in).
if TYPE_CHECKING:
    import numpy as np
else:

    class _LazyModule:
        """A module imported on first attribute access."""

        def __init__(self, name: str) -> None:
            self._name = name

        def __getattr__(self, attr: str) -> Any:
            return getattr(importlib.import_module(self._name), attr)

    np = _LazyModule("numpy")

EXIT_INTERNAL_ERROR = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
DEBUG_ENV = "MINIUNLEARN_DEBUG"


def _parse_value(text: str) -> Any:
    """Turn an option value from the command line into int, float, bool, None or str."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """Parse ``key=value`` method options."""
    options = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise MiniUnlearnError(f"option {pair!r} must look like key=value (e.g. max_steps=30)")
        options[key.replace("-", "_")] = _parse_value(value)
    return options


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _seconds(text: str) -> float:
    """A waiting time: a number of seconds >= 0 (``inf`` waits for ever; NaN is refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _print_json(obj: Any) -> None:
    print(
        json.dumps(
            obj, indent=2, sort_keys=True, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)
        )
    )


def cmd_fetch(args: argparse.Namespace) -> int:
    """Fetch datasets into the cache."""
    from .data import FETCHABLE, fetch_dataset

    names = FETCHABLE if args.names == ["all"] else args.names
    for name in names:
        path = fetch_dataset(name, progress=not args.quiet)
        print(f"{name}: cached at {path}")
    return 0


TRAIN_OVERRIDES = (
    "epochs",
    "lr",
    "lam",
    "batch_size",
    "lr_schedule",
    "activation",
    "dtype",
    "history",
    "checkpoints",
    "curvature_rank",
    "n_train",
    "data_path",
)
BENCH_OVERRIDES = (
    "epochs",
    "lr",
    "lam",
    "batch_size",
    "n_train",
    "checkpoints",
    "curvature_rank",
    "dtype",
    "data_path",
)


def _overrides(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """TrainConfig fields given on the command line (``names`` and ``--hidden``)."""
    fields = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    for name, example in (("hidden", "128,64"), ("channels", "16,32"), ("head", "256")):
        text = getattr(args, name, None)
        if text is None:
            continue
        try:
            fields[name] = tuple(int(h) for h in text.split(",") if h.strip())
        except ValueError:
            raise MiniUnlearnError(
                f"--{name} must be comma-separated integers like {example}, got {text!r}"
            ) from None
    return fields


def _train_config(args: argparse.Namespace) -> Any:
    from .presets import preset
    from .training import TrainConfig

    fields = preset(args.dataset, args.model, args.preset)
    fields.update(_overrides(args, TRAIN_OVERRIDES))
    if args.data_option:
        fields["data_options"] = {**fields.get("data_options", {}), **_parse_options(args.data_option)}
    return TrainConfig(dataset=args.dataset, model=args.model, seed=args.seed, **fields)


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model with history into a new run directory."""
    from .training import train_run

    config = _train_config(args)
    run = train_run(config, args.out, progress=not args.quiet, device=args.device)
    print(
        f"trained {config.model} on {config.dataset} ({run.n_train} samples, "
        f"{run.total_steps} steps) -> {run.path}"
    )
    for role in ("model", "history-mini", "history-curvature", "history-full", "schedule"):
        size = run.history_bytes(role)
        if size:
            print(f"  {role:17s} {size:>12,d} bytes")
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    """Serve a deletion request on a run directory."""
    from .deletion import forget, read_ids_file, retrain_all
    from .ids import random_forget_ids
    from .training import open_run

    if args.ids is not None and args.ratio is not None:
        raise MiniUnlearnError("give either --ids FILE or --ratio X, not both")
    if args.ids is None and args.ratio is None:
        if not args.retrain_now:
            raise MiniUnlearnError(
                "give the ids to forget with --ids FILE, or --ratio X (--seed S) for a "
                "random set, or --retrain-now alone to retrain on all remaining data"
            )
        outcome = retrain_all(
            args.run_dir, request_id=args.request_id, lock_timeout=args.wait, device=args.device
        )
    else:
        if args.ids is not None:
            ids = read_ids_file(args.ids)
        else:
            ids = random_forget_ids(
                open_run(args.run_dir, verify_hashes=False).n_train, args.ratio, args.seed
            )
        outcome = forget(
            args.run_dir,
            ids,
            method=args.method,
            options=_parse_options(args.option),
            request_id=args.request_id,
            retrain_now=args.retrain_now,
            max_approx_ratio=args.max_approx_ratio,
            lock_timeout=args.wait,
            device=args.device,
        )
    for message in outcome.messages:
        print(message, file=sys.stderr)
    summary = {
        "status": outcome.status,
        "request_id": outcome.entry.request_id,
        "method": outcome.entry.method,
        "n_ids": outcome.entry.n_ids,
        "model_version": outcome.version.version,
        "model_sha256": outcome.version.sha256,
        "record": outcome.record,
    }
    if args.json:
        _print_json(summary)
    else:
        rec = outcome.record or {}
        print(
            f"{outcome.status}: request {outcome.entry.request_id} ({outcome.entry.n_ids} ids, "
            f"method {outcome.entry.method}) -> model version {outcome.version.version}"
        )
        if "time_s" in rec:
            print(
                f"  time {rec['time_s']:.2f} s, {rec.get('grad_evals', 0):,d} per-sample gradients, "
                f"{rec.get('history_bytes', 0):,d} history bytes read"
            )
        diag = rec.get("diagnostics") or {}
        if "mode" in diag:
            print(
                f"  mode {diag['mode']}, {diag.get('exact_retain_passes', 0)} exact retain passes, final "
                f"retain-gradient norm {diag.get('grad_norm_final', float('nan')):.3e}"
            )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Compare the current model version with retraining on everything forgotten so far."""
    from .deletion import open_session
    from .evaluation.report import markdown_table
    from .experiment.assess import assess, split_by_model
    from .training import cached_retrain, open_run

    _check_attacks(args)
    run = open_run(args.run_dir, device=args.device)
    _ulira_pool(run, args)  # refuse a pool the run cannot give before any work
    # under the lock, after settling interrupted requests, the ledger and the current
    # version agree: the model is compared with retraining on exactly what it forgot
    with open_session(run, write=True, lock_timeout=args.wait) as session:
        for message in session.messages:
            print(message, file=sys.stderr)
        version = session.current
        forgotten = session.forgotten_ids()
        params = session.current_params()
        producer = session.ledger.get(version.request_id) if version.request_id else None
    if forgotten.size == 0 or producer is None:
        raise MiniUnlearnError("nothing has been forgotten on this run yet; there is nothing to evaluate")
    retrained = cached_retrain(run, forgotten, progress=not args.quiet)
    metrics = assess(run, params, retrained, forgotten, attacks=_population(args), seed=args.seed)
    metrics |= _ulira(run, producer, forgotten, args)
    metrics |= {"model_version": version.version, "n_forgotten": int(forgotten.size)}
    if args.json:
        _print_json(metrics)
        return 0
    mine, theirs = split_by_model(metrics)
    rows = [
        {
            "dataset": run.config.dataset,
            "model": run.config.model,
            "method": name,
            "ratio": forgotten.size / run.n_train,
            **{f"{k}_mean": v for k, v in values.items()},
        }
        for name, values in ((f"current (v{version.version})", mine), ("retrain", theirs))
    ]
    print(
        markdown_table(
            rows,
            metrics=[
                m
                for m in (
                    "test_acc",
                    "retain_acc",
                    "forget_acc",
                    "mia_auc",
                    "mia_tpr_1pct",
                    "retain_exposure_auc",
                    "ulira_auc",
                    "ulira_tpr_1pct",
                )
                if f"{m}_mean" in rows[0]
            ],
        )
    )
    print(
        f"\ndistance to retrained parameters {metrics['dist_to_retrain']:.4g}, "
        f"mean KL on test {metrics['kl_to_retrain']:.3g}"
    )
    return 0


def _check_attacks(args: argparse.Namespace) -> None:
    """Refuse unknown attack names and per-example attack settings it cannot run with."""
    from .experiment.bench import check_ulira

    check_ulira(args.attacks, args.ulira_pool, args.ulira_shadows)


def _ulira_pool(run: Any, args: argparse.Namespace) -> int | None:
    """The per-example attack's pool size on ``run`` (None without ``ulira``); ConfigError when
    --ulira-pool is larger than the run's training set."""
    if "ulira" not in args.attacks:
        return None
    from .experiment.bench import ulira_pool_size

    return ulira_pool_size(args.ulira_pool, run.n_train)


def _population(args: argparse.Namespace) -> list[str]:
    return [a for a in args.attacks if a == "population"]


def _ulira(run: Any, producer: Any, forgotten: np.ndarray, args: argparse.Namespace) -> dict[str, float]:
    """With ``ulira`` asked: the per-example attack against the method of the request that made
    the model (``producer``) and against retraining, at the fraction forgotten so far."""
    if "ulira" not in args.attacks:
        return {}
    from .experiment.shadows import ULIRA_TARGETS, ulira_metrics

    options = {k: v for k, v in producer.options.items() if k not in ("instead_of", "reason", "use_cache")}
    return ulira_metrics(
        run,
        {"": (producer.method, options), "retrain_": ("retrain", {})},
        forget_fraction=forgotten.size / run.n_train,
        pool_size=_ulira_pool(run, args),
        n_shadows=args.ulira_shadows,
        n_targets=ULIRA_TARGETS,
        seed=args.seed,
    )


def cmd_bench(args: argparse.Namespace) -> int:
    """Sweep methods over unlearning ratios against retraining; print a table, write JSON and plots."""
    from .evaluation.report import markdown_table, summarise
    from .experiment.bench import BenchSpec, run_bench

    method_options: dict[str, dict[str, Any]] = {}
    for pair in args.option or ():
        method, sep, rest = pair.partition(":")
        if not sep:
            raise MiniUnlearnError(f"bench option {pair!r} must look like METHOD:key=value")
        method_options.setdefault(method, {}).update(_parse_options([rest]))
    overrides = _overrides(args, BENCH_OVERRIDES)
    _check_output(args.json, "--json", directory=False)
    _check_output(args.plots, "--plots", directory=True)
    spec = BenchSpec(
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
        ulira_pool=args.ulira_pool,
        ulira_shadows=args.ulira_shadows,
        jobs=args.jobs,
        threads=args.threads,
        backend=args.backend,
        address=args.address,
        device=args.device,
        data_options=_parse_options(args.data_option),
    )
    records, extras = run_bench(spec, progress=not args.quiet)
    metrics = [
        "test_acc",
        "retain_acc",
        "forget_acc",
        "dist_to_retrain",
        "dist_to_optimum",
        "mia_auc",
        "mia_efficacy",
        "avg_gap",
        "time_s",
        "speedup_vs_retrain",
        "passes",
        "history_bytes",
    ]
    if "ulira" in args.attacks:
        metrics.insert(metrics.index("mia_auc") + 1, "ulira_auc")
    print(markdown_table(summarise(records), metrics=metrics))
    if args.json:
        from .fileio import atomic_write_json

        atomic_write_json(args.json, records)
        print(f"records written to {args.json}")
    if args.plots:
        from .evaluation.plots import plot_all, plot_roc

        paths = plot_all(records, Path(args.plots))
        if extras["roc"]:
            paths.append(plot_roc(extras["roc"], Path(args.plots) / "roc.png"))
        print("plots: " + ", ".join(str(p) for p in paths))
    return 0


def _check_output(path: str | None, flag: str, *, directory: bool) -> None:
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


def cmd_ledger(args: argparse.Namespace) -> int:
    """List the deletion requests of a run, check them, or repair current.json or a lost ledger."""
    from .deletion import open_session, restore_current
    from .errors import CurrentModelLost, RunDirError
    from .runlock import run_lock
    from .training import open_run
    from .versions import open_ledger, rebuild_ledger

    if sum(map(bool, (args.restore_current, args.rebuild_from_versions, args.verify))) > 1:
        raise MiniUnlearnError("give one of --restore-current, --rebuild-from-versions and --verify")
    run = open_run(args.run_dir)
    if args.rebuild_from_versions:
        with run_lock(run.path, timeout=args.wait):
            for line in rebuild_ledger(run):
                print(line)
        return 0
    if args.restore_current:
        version = restore_current(run, lock_timeout=args.wait)
        print(f"current.json now names model version {version.version} ({version.path})")
        return 0
    if args.verify:
        with open_session(run, write=False, allow_lost_model=True) as session:
            problems = session.verify()
            n = len(session.ledger.entries())
        for problem in problems:
            print(f"problem: {problem}")
        verdict = f"{len(problems)} problem(s)" if problems else "sound"
        print(f"{run.path}: {n} request(s) checked; {verdict}")
        return EXIT_USER_ERROR if problems else 0
    warning = None
    try:
        with open_session(run, write=False):
            pass
    except (RunDirError, CurrentModelLost) as exc:
        warning = exc  # still list the records: that is how the problem is diagnosed
    with open_ledger(run) as ledger:
        records = ledger.to_json_records()
    if args.json:
        _print_json(records)
    else:
        print(f"{'request_id':34s} {'state':9s} {'method':9s} {'n_ids':>7s} {'version':>7s}  received_at")
        for r in records:
            shown = r["model_version"] if r.get("model_version") is not None else "-"
            print(
                f"{r['request_id']:34s} {r['state']:9s} {r['method']:9s} {r['n_ids']:>7d} {shown!s:>7s}  "
                f"{r['received_at']}" + (f"  ({r['reason']})" if r.get("reason") else "")
            )
    if warning is not None:
        print(f"warning: these records disagree with the run's model versions: {warning}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """Write the audit report (Markdown + PNG) of one request."""
    from .audit import write_audit
    from .deletion import load_version_params, open_session
    from .experiment.assess import assess, split_by_model
    from .training import cached_retrain, open_run

    _check_attacks(args)
    run = open_run(args.run_dir, device=args.device)
    if args.with_metrics:
        _ulira_pool(run, args)  # refuse a pool the run cannot give before any work
    with open_session(run, write=False) as session:  # read-only: the ledger, pointer and versions agree
        entry = session.ledger.get(args.request)
        if entry is None:
            raise MiniUnlearnError(
                f"no request {args.request!r} in {run.path}; list them with `miniunlearn ledger {run.path}`"
            )
        if entry.state == "done":
            version = session.version_of(entry)  # an audit never vouches for an altered model
            done = [e for e in session.ledger.entries("done") if (e.done_seq or 0) <= (entry.done_seq or 0)]
    metrics = retrain_metrics = None
    if args.with_metrics and entry.state == "done":
        forgotten = np.unique(np.concatenate([e.ids for e in done]))
        params = load_version_params(run, version)
        assessed = assess(
            run, params, cached_retrain(run, forgotten), forgotten, attacks=_population(args), seed=args.seed
        )
        metrics, retrain_metrics = split_by_model(assessed | _ulira(run, entry, forgotten, args))
    md, png = write_audit(
        entry, Path(args.out or run.path / "audit"), metrics=metrics, retrain_metrics=retrain_metrics
    )
    print(f"audit written: {md}\n               {png}")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    """List unlearning methods and their options."""
    from .methods import registry

    for name, cls in sorted(registry().items()):
        print(f"{name}: {cls.summary}")
        for f in dataclasses.fields(cls.Options):
            print(f"    {f.name} = {f.default!r}")
    return 0


# -- parser --------------------------------------------------------------------
def _attack_arguments(p: argparse.ArgumentParser) -> None:
    """--attacks and the per-example attack's settings, shared by evaluate, audit and bench."""
    p.add_argument(
        "--attacks",
        type=_names,
        default=["population"],
        help="comma list of population (confidence/loss attacks on the model) and ulira (per-example "
        "attack on the method, with shadow models of the run's recipe; slow)",
    )
    p.add_argument(
        "--ulira-pool",
        type=int,
        help="pool size of the per-example attack: 20 up to the training set size "
        "(default 1000, or the whole training set when smaller)",
    )
    p.add_argument(
        "--ulira-shadows", type=int, default=16, help="shadow models of the per-example attack, 2..1000"
    )


def _data_arguments(p: argparse.ArgumentParser) -> None:
    """--data-path and --data-option, shared by train and bench."""
    p.add_argument("--data-path", help="data file for the libsvm and csv datasets")
    p.add_argument(
        "--data-option",
        action="append",
        help="dataset option key=value (repeatable): label_column=0, header=false, standardize=true, "
        "test_path=FILE (csv, libsvm); seed=N, rows=N, standardize=true (synthetic-*); "
        "the data file itself is --data-path",
    )


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``miniunlearn`` command."""
    from .data import DATASET_NAMES
    from .models import MODEL_NAMES
    from .presets import PRESET_NAMES
    from .training.config import DTYPES, HISTORY_MODES, LR_SCHEDULES

    preset_help = (
        "training recipe family: default; leaky (models that memorise their training data); "
        "deltagrad-paper (DeltaGrad's own regime: logistic regression, SGD with batches of 16,384, "
        "128 steps, lr 0.1, lam 0.005, float64)"
    )

    parser = argparse.ArgumentParser(
        prog="miniunlearn",
        description="Remove chosen training samples from a trained PyTorch model "
        "and measure it against retraining.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_parser = sub.add_parser

    def add_parser(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return _add_parser(name, parents=[common], **kwargs)

    sub.add_parser = add_parser  # type: ignore[method-assign]

    p = sub.add_parser(
        "fetch", help="fetch real datasets into the local cache ($MINIUNLEARN_CACHE or ./.cache)"
    )
    p.add_argument("names", nargs="+", help="mnist, fashion-mnist, adult, or all")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("train", help="train a model, recording the history unlearning needs")
    p.add_argument("--dataset", required=True, choices=DATASET_NAMES)
    p.add_argument("--model", default="logreg", choices=MODEL_NAMES)
    p.add_argument(
        "--preset",
        default="default",
        choices=PRESET_NAMES,
        help=preset_help,
    )
    p.add_argument("--out", required=True, help="new run directory to create")
    p.add_argument("--epochs", type=int, help="epochs (full batch: steps); default from the preset")
    p.add_argument("--lr", type=float, help="learning rate")
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES)
    p.add_argument("--batch-size", type=int, help="0 = full-batch gradient descent")
    p.add_argument("--lam", type=float, help="L2 regularisation strength")
    p.add_argument("--hidden", help="MLP hidden sizes, e.g. 128,64")
    p.add_argument("--channels", help="the CNN's two conv widths, e.g. 16,32")
    p.add_argument("--head", help="hidden widths of the CNN's fully connected head, e.g. 256")
    p.add_argument("--activation", choices=("relu", "tanh", "softplus", "gelu"))
    p.add_argument("--dtype", choices=tuple(DTYPES))
    p.add_argument("--history", choices=HISTORY_MODES, help="mini (default), full, both or none")
    p.add_argument(
        "--checkpoints", type=int, help="k: the minimal history keeps k+1 checkpoints (default 10)"
    )
    p.add_argument(
        "--curvature-rank",
        type=int,
        help="eigenpairs of the Hessian sketched at the end of training for mini's preconditioner "
        "(default: up to 128 for logreg with the minimal history, within 5 %% of a full history; 0 = none)",
    )
    p.add_argument("--n-train", type=int, help="train on a seeded random subset of this size")
    _data_arguments(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--device",
        default="cpu",
        help="where to compute: cpu (default; the reference, bit-reproducible), cuda, cuda:N or auto",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("forget", help="serve a deletion request: unlearn ids and write a new model version")
    p.add_argument("run_dir")
    p.add_argument("--ids", help="file with one integer sample id per line")
    p.add_argument("--ratio", type=float, help="forget a random fraction of the training set instead")
    p.add_argument("--seed", type=int, default=0, help="seed of the random forget set (--ratio)")
    p.add_argument("--method", default="mini", help="unlearning method (see `miniunlearn methods`)")
    p.add_argument("--option", "-o", action="append", help="method option key=value (repeatable)")
    p.add_argument("--request-id", help="idempotency key; re-sending a done request changes nothing")
    p.add_argument("--retrain-now", action="store_true", help="serve by retraining from scratch")
    p.add_argument(
        "--max-approx-ratio",
        type=float,
        default=0.5,
        help="error budget: fraction of the data approximate methods may remove before the "
        "next request is served by retraining (default 0.5)",
    )
    p.add_argument("--wait", type=_seconds, default=0.0, help="seconds to wait for another forget on the run")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    p.add_argument(
        "--device",
        default="cpu",
        help="where to compute: cpu (default; the reference, bit-reproducible), cuda, cuda:N or auto",
    )
    p.set_defaults(func=cmd_forget)

    p = sub.add_parser("evaluate", help="compare the current model with retraining on all forgotten ids")
    p.add_argument("run_dir")
    _attack_arguments(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--wait", type=_seconds, default=0.0, help="seconds to wait for a running forget")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--device",
        default="cpu",
        help="where to compute: cpu (default; the reference, bit-reproducible), cuda, cuda:N or auto",
    )
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("bench", help="sweep methods over unlearning ratios against retraining")
    p.add_argument("--dataset", required=True, choices=DATASET_NAMES)
    p.add_argument("--model", default="logreg", choices=MODEL_NAMES)
    p.add_argument(
        "--preset",
        default="default",
        choices=PRESET_NAMES,
        help=preset_help,
    )
    p.add_argument("--ratios", type=_floats, default=[0.01, 0.1, 0.3, 0.5])
    p.add_argument("--methods", type=_names, default=["retrain", "deltagrad", "warmstart", "mini"])
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (0..N-1), 1..1000")
    _attack_arguments(p)
    p.add_argument("--json", help="write the records to this JSON file")
    p.add_argument("--plots", help="write PNG plots into this directory")
    p.add_argument("--runs-dir", default="runs/bench", help="where trained runs are kept and reused")
    p.add_argument("--option", "-o", action="append", help="METHOD:key=value method option (repeatable)")
    _data_arguments(p)
    p.add_argument(
        "--device",
        default="cpu",
        help="where each cell computes: cpu (default; the reference, bit-reproducible), cuda, cuda:N or auto",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads of each task, 1..256 (default: 1 with --jobs > 1, else torch's choice); "
        "results are reproducible for a given thread count",
    )
    p.add_argument(
        "--jobs",
        "-j",
        type=int,
        default=1,
        help="(seed, ratio) cells and shadow models run as this many parallel tasks, 1..256 (default 1); "
        "the records do not change, apart from timings",
    )
    p.add_argument(
        "--backend",
        choices=("joblib", "ray"),
        default="joblib",
        help="run the tasks on local joblib workers, or on Ray (pip install 'miniunlearn[cluster]')",
    )
    p.add_argument(
        "--address",
        help="with --backend ray: join this Ray cluster (e.g. ray://head:10001 or auto) instead of "
        "starting a local runtime with --jobs CPUs; its nodes need miniunlearn and the data",
    )
    for name, kind in (
        ("epochs", int),
        ("lr", float),
        ("lam", float),
        ("batch-size", int),
        ("n-train", int),
        ("checkpoints", int),
        ("curvature-rank", int),
    ):
        p.add_argument(f"--{name}", type=kind, help="override the preset")
    p.add_argument("--hidden", help="override the preset's MLP hidden sizes")
    p.add_argument("--channels", help="override the preset's CNN conv widths")
    p.add_argument("--head", help="override the preset's CNN head widths")
    p.add_argument("--dtype", choices=tuple(DTYPES))
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("ledger", help="list the deletion requests of a run (or repair its records)")
    p.add_argument("run_dir")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--restore-current",
        action="store_true",
        help="point current.json at the model version the ledger records as current "
        "(after current.json was lost or restored from an old backup)",
    )
    p.add_argument(
        "--rebuild-from-versions",
        action="store_true",
        help="rebuild a lost ledger.sqlite from the request records inside the model versions "
        "(exact for every request that produced a model version)",
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="check the whole run: the ledger's integrity and chain of done requests, every model "
        "version's file and the request record inside it, and current.json (exit 2 on any problem)",
    )
    p.add_argument("--wait", type=_seconds, default=0.0, help="seconds to wait for a running forget")
    p.set_defaults(func=cmd_ledger)

    p = sub.add_parser("audit", help="write a report (Markdown + PNG) for one deletion request")
    p.add_argument("run_dir")
    p.add_argument("--request", required=True, help="request id")
    p.add_argument("--out", help="output directory (default RUN_DIR/audit)")
    p.add_argument(
        "--with-metrics",
        action="store_true",
        help="also compare the request's model with retraining (retrains once, cached)",
    )
    _attack_arguments(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--device",
        default="cpu",
        help="where to compute: cpu (default; the reference, bit-reproducible), cuda, cuda:N or auto",
    )
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("methods", help="list unlearning methods and their options")
    p.set_defaults(func=cmd_methods)
    return parser


def _run(argv: Sequence[str] | None) -> int:
    """Build the parser (its imports included), parse ``argv`` and run the command."""
    args = build_parser().parse_args(argv)
    _check_seed(args)
    from .device import device_scope, resolve_device

    with device_scope(resolve_device(getattr(args, "device", "cpu"))):
        return int(args.func(args) or 0)


def _check_seed(args: argparse.Namespace) -> None:
    """Refuse a --seed outside the range the random generators take, before any work."""
    if getattr(args, "seed", None) is not None:
        from .training.config import check_seed

        check_seed(args.seed)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse ``argv``, run the command, print errors plainly; return the exit code.

    Everything but this module's standard-library imports runs inside the error handling, the
    parser's imports included: a Ctrl-C at any point from there on exits 130 without a traceback.
    """
    try:
        return _run(argv)
    except MiniUnlearnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        for note in getattr(exc, "__notes__", ()):
            print(f"  {note}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:  # permissions, a full disk, a path that is a directory ...
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        for note in getattr(exc, "__notes__", ()):
            print(f"  {note}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted: nothing was left half-written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: say so in one line; the traceback only on request
        if os.environ.get(DEBUG_ENV):
            raise
        print(
            f"internal error: {type(exc).__name__}: {exc}. This is a bug in miniunlearn; nothing was left "
            f"half-written. Set {DEBUG_ENV}=1 to see the traceback, and please report it",
            file=sys.stderr,
        )
        return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
