"""``miniunlearn submit`` and ``miniunlearn serve``: queue deletion requests, then serve them."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from ..common import parse_options, print_json


def cmd_submit(args: argparse.Namespace) -> int:
    """Queue a deletion request and return at once (never waits for the run's lock)."""
    from ...deletion import read_ids_file
    from ...deletion.queue import submit

    outcome = submit(
        args.run_dir,
        read_ids_file(args.ids),
        request_id=args.request_id,
        method=args.method,
        options=parse_options(args.option),
    )
    for message in outcome.messages:
        print(message, file=sys.stderr)
    n_ids = int(outcome.request.ids.size) if outcome.request is not None else None
    if args.json:
        print_json({"status": outcome.status, "request_id": outcome.request_id, "n_ids": n_ids})
    else:
        shown = f" ({n_ids} ids)" if n_ids is not None else ""
        print(f"{outcome.status}: request {outcome.request_id}{shown}; `miniunlearn serve` serves the queue")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve every queued request (new ones with the same method and options as one batch,
    unless --one-by-one); with --watch, keep serving new ones."""
    from ...deletion.queue import serve

    def report(served: Any) -> None:
        if served.outcome is not None:
            outcome = served.outcome
            certificate = outcome.certificate
            bound = f", certified within {certificate['distance_bound']:.3e}" if certificate else ""
            batch = f" in batch {outcome.entry.batch}" if outcome.entry.batch else ""
            line = (
                f"{outcome.status}: request {outcome.entry.request_id} ({outcome.entry.n_ids} ids, method "
                f"{outcome.entry.method}{batch}) -> model version {outcome.version.version}{bound}"
            )
        else:
            line = f"not served: request {served.request.request_id}: {served.error}"
        if args.json:
            print_json(
                {
                    "request_id": served.request.request_id,
                    "status": served.outcome.status if served.outcome is not None else "not-served",
                    "error": served.error,
                    "model_version": served.outcome.version.version if served.outcome is not None else None,
                    "batch": served.outcome.entry.batch if served.outcome is not None else None,
                }
            )
        else:
            print(line)

    settings = {
        "lock_timeout": args.wait,
        "device": args.device,
        "max_approx_ratio": args.max_approx_ratio,
        "max_certified_distance": args.max_certified_distance,
        "on_served": report,
        "batch": not args.one_by_one,
    }
    failed = False
    while True:
        served = serve(args.run_dir, **settings)
        failed = failed or any(s.outcome is None for s in served)
        if args.watch is None:
            if not served and not args.json:
                print("the queue is empty")
            break
        time.sleep(args.watch)
    return 2 if failed else 0
