"""``miniunlearn audit``: write the audit report of one deletion request."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...errors import MiniUnlearnError
from .attacks import check_attacks, population, ulira, ulira_pool


def cmd_audit(args: argparse.Namespace) -> int:
    """Write the audit report (Markdown + PNG) of one request."""
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
        if entry.state == "done":
            version = session.version_of(entry)  # an audit never vouches for an altered model
            done = [e for e in session.ledger.entries("done") if (e.done_seq or 0) <= (entry.done_seq or 0)]
    metrics = retrain_metrics = None
    if args.with_metrics and entry.state == "done":
        forgotten = np.unique(np.concatenate([e.ids for e in done]))
        params = load_version_params(run, version)
        assessed = assess(
            run, params, cached_retrain(run, forgotten), forgotten, attacks=population(args), seed=args.seed
        )
        metrics, retrain_metrics = split_by_model(assessed | ulira(run, entry, forgotten, args))
    md, png = write_audit(
        entry, Path(args.out or run.path / "audit"), metrics=metrics, retrain_metrics=retrain_metrics
    )
    print(f"audit written: {md}\n               {png}")
    return 0
