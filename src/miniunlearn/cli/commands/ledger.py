"""``miniunlearn ledger``: list, check or repair the deletion records of a run."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ...errors import MiniUnlearnError
from ..common import EXIT_USER_ERROR, print_json


def cmd_ledger(args: argparse.Namespace) -> int:
    """List the deletion requests of a run, check them, or repair current.json or a lost ledger."""
    from ...deletion import rebuild_ledger_locked, restore_current
    from ...training import open_run

    if sum(map(bool, (args.restore_current, args.rebuild_from_versions, args.verify))) > 1:
        raise MiniUnlearnError("give one of --restore-current, --rebuild-from-versions and --verify")
    run = open_run(args.run_dir)
    if args.rebuild_from_versions:
        for line in rebuild_ledger_locked(run, lock_timeout=args.wait):
            print(line)
        return 0
    if args.restore_current:
        version = restore_current(run, lock_timeout=args.wait)
        print(f"current.json now names model version {version.version} ({version.path})")
        return 0
    if args.verify:
        return _verify(run)
    return _list(run, as_json=args.json)


def _verify(run: Any) -> int:
    """Check the whole run and print each problem; EXIT_USER_ERROR when there is any."""
    from ...deletion import open_session

    with open_session(run, write=False, allow_lost_model=True) as session:
        problems = session.verify()
        n = len(session.ledger.entries())
    for problem in problems:
        print(f"problem: {problem}")
    verdict = f"{len(problems)} problem(s)" if problems else "sound"
    print(f"{run.path}: {n} request(s) checked; {verdict}")
    return EXIT_USER_ERROR if problems else 0


def certified(record: dict[str, Any] | None) -> str:
    """The ledger column of a request's certificate: its distance bound (on a certified-removal
    run followed by ``+`` when its residual is within the (epsilon, delta) budget, ``!`` when
    not), ``none`` for a run that gets none (networks), ``-`` when nothing was recorded (not
    served, or served before certificates were recorded)."""
    record = record or {}
    certificate = record.get("certificate")
    if certificate:
        removal = certificate.get("removal")
        mark = "" if not removal else ("+" if removal["certified"] else "!")
        return f"{certificate['distance_bound']:.2e}{mark}"
    return "none" if record.get("certificate_note") else "-"


def _list(run: Any, *, as_json: bool) -> int:
    """Print the ledger's records (a table, or JSON); EXIT_USER_ERROR, after listing them, when
    they disagree with the run's model versions."""
    from ...deletion import ledger_records

    records, warning = ledger_records(run)
    if as_json:
        print_json(records)
    else:
        columns = f"{'request_id':34s} {'state':9s} {'method':9s} {'n_ids':>7s} {'version':>7s}"
        print(f"{columns} {'certified':>10s}  received_at")
        for r in records:
            shown = r["model_version"] if r.get("model_version") is not None else "-"
            name = f"  {r['request_id']}" if r.get("batch") else r["request_id"]
            print(
                f"{name:34s} {r['state']:9s} {r['method']:9s} {r['n_ids']:>7d} {shown!s:>7s} "
                f"{certified(r.get('metrics')):>10s}  {r['received_at']}"
                + (f"  ({r['reason']})" if r.get("reason") else "")
            )
        if any(r.get("batch") for r in records):
            print("indented: the requests served by the batch above them (one solve, one model version)")
        if any(((r.get("metrics") or {}).get("certificate") or {}).get("removal") for r in records):
            print("+: the served model's gradient residual is within the run's certified-removal budget")
        if any((r.get("metrics") or {}).get("certificate") for r in records):
            print(
                "certified: a true bound on the model's distance to the optimum without the forgotten "
                "samples (|w - w*| <= |grad F_R(w)| / lam); 'none' for networks"
            )
    if warning is not None:
        print(f"warning: these records disagree with the run's model versions: {warning}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0
