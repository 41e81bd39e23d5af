"""``miniunlearn evaluate``: compare the current model version with retraining."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ...errors import MiniUnlearnError
from ..common import print_json
from .attacks import check_attacks, population, ulira, ulira_pool

TABLE_METRICS = (
    "test_acc",
    "retain_acc",
    "forget_acc",
    "mia_auc",
    "mia_tpr_1pct",
    "retain_exposure_auc",
    "ulira_auc",
    "ulira_tpr_1pct",
)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Compare the current model version with retraining on everything forgotten so far."""
    from ...deletion import open_session
    from ...experiment.assess import add_average_gaps, assess
    from ...training import cached_retrain, open_run

    check_attacks(args)
    run = open_run(args.run_dir, device=args.device)
    ulira_pool(run, args)  # refuse a pool the run cannot give before any work
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
    # a progress line per long phase: the retraining, the population attack, the per-example
    # attack's shadow models, then its scoring of each method; -q silences them all
    progress = not args.quiet
    retrained = cached_retrain(run, forgotten, progress=progress)
    metrics = assess(
        run, params, retrained, forgotten, attacks=population(args), seed=args.seed, progress=progress
    )
    metrics |= ulira(run, producer, forgotten, args, progress=progress)
    add_average_gaps(metrics)  # with the per-example attack's terms when it ran
    metrics |= {"model_version": version.version, "n_forgotten": int(forgotten.size)}
    if args.json:
        print_json(metrics)
    else:
        _print_comparison(run, version, forgotten.size, metrics)
    return 0


def _print_comparison(run: Any, version: Any, n_forgotten: int, metrics: dict[str, Any]) -> None:
    """The current model's metrics and retraining's side by side, then their distance."""
    from ...evaluation.report import markdown_table
    from ...experiment.assess import split_by_model

    mine, theirs = split_by_model(metrics)
    rows = [
        {
            "dataset": run.config.dataset,
            "model": run.config.model,
            "method": name,
            "ratio": n_forgotten / run.n_train,
            **{f"{k}_mean": v for k, v in values.items()},
        }
        for name, values in ((f"current (v{version.version})", mine), ("retrain", theirs))
    ]
    print(markdown_table(rows, metrics=[m for m in TABLE_METRICS if f"{m}_mean" in rows[0]]))
    print(
        f"\ndistance to retrained parameters {metrics['dist_to_retrain']:.4g}, "
        f"mean KL on test {metrics['kl_to_retrain']:.3g}, "
        f"average gap {metrics['avg_gap']:.2f} points (accuracy"
        f"{' and the per-example attack' if 'ulira_auc' in metrics else ''})"
    )
