"""``miniunlearn audit``: write the audit report of one deletion request."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...errors import MiniUnlearnError
from .attacks import check_attacks, population, ulira, ulira_pool


def cmd_audit(args: argparse.Namespace) -> int:
    """Write the audit report (self-contained HTML + JSON) of one request."""
    import numpy as np

    from ...audit import write_audit
    from ...deletion import load_version_params, open_session
    from ...experiment.assess import assess, split_by_model
    from ...training import cached_retrain, open_run

    check_attacks(args)
    run = open_run(args.run_dir, device=args.device)
    if args.with_metrics:
        ulira_pool(run, args)  # refuse a pool the run cannot give before any work
    with open_session(run, write=False) as session:  # read-only: the ledger, pointer and versions agree
        entry = session.ledger.get(args.request)
        if entry is None:
            raise MiniUnlearnError(
                f"no request {args.request!r} in {run.path}; list them with `miniunlearn ledger {run.path}`"
            )
        done = session.ledger.entries("done")
        if entry.state == "done":
            version = session.version_of(entry)  # an audit never vouches for an altered model
            done = [e for e in done if (e.done_seq or 0) <= (entry.done_seq or 0)]
        served_with = (entry.request_id, entry.batch)  # a batch member: its batch served its ids too
        earlier = [e.ids for e in done if e.request_id not in served_with]
    previously = np.unique(np.concatenate(earlier)) if earlier else np.zeros(0, np.int64)
    metrics = retrain_metrics = counts = None
    if args.with_metrics and entry.state == "done":
        forgotten = np.unique(np.concatenate([e.ids for e in done]))
        params = load_version_params(run, version)
        progress = not args.quiet
        retrained = cached_retrain(run, forgotten, progress=progress)
        assessed = assess(
            run, params, retrained, forgotten, attacks=population(args), seed=args.seed, progress=progress
        )
        per_example = ulira(run, entry, forgotten, args, progress=progress)
        metrics, retrain_metrics = split_by_model(assessed | per_example)
        n_test = len(run.dataset.y_test)
        counts = {"forget": int(forgotten.size), "retain": run.n_train - int(forgotten.size), "test": n_test}
    files = write_audit(
        entry,
        Path(args.out or run.path / "audit"),
        metrics=metrics,
        retrain_metrics=retrain_metrics,
        previously_forgotten=previously,
        counts=counts,
        tolerance=args.tolerance,
    )
    print(f"audit written: {files.html}\n               {files.json}")
    return 0
