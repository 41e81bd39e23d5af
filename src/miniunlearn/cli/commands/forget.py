"""``miniunlearn forget``: serve a deletion request on a run directory."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any

from ...errors import MiniUnlearnError
from ..common import parse_options, print_json


def cmd_forget(args: argparse.Namespace) -> int:
    """Serve a deletion request on a run directory."""
    _one_source(args)
    extra: dict[str, Any] = {}
    if args.keys is not None:
        keyed = _serve_keys(args)
        for message in keyed.messages:
            print(message, file=sys.stderr)
        extra = {"test_keys": keyed.test_keys, "unused_keys": keyed.unused_keys}
        if keyed.outcome is None:
            if args.json:
                print_json({"status": "not-trained", **extra})
            return 0
        outcome = keyed.outcome
    else:
        outcome = _serve(args)
    for message in outcome.messages:
        print(message, file=sys.stderr)
    if args.json:
        print_json(
            {
                "status": outcome.status,
                "request_id": outcome.entry.request_id,
                "method": outcome.entry.method,
                "n_ids": outcome.entry.n_ids,
                "model_version": outcome.version.version,
                "model_sha256": outcome.version.sha256,
                "record": outcome.record,
                **extra,
            }
        )
    else:
        _print_outcome(outcome)
    return 0


def _one_source(args: argparse.Namespace) -> None:
    """Refuse more than one of --ids, --keys and --ratio."""
    flags = (("--ids", args.ids), ("--keys", args.keys), ("--ratio", args.ratio))
    given = [flag for flag, value in flags if value is not None]
    if len(given) > 1:
        raise MiniUnlearnError(
            f"give one of --ids FILE, --keys FILE or --ratio X, not both {' and '.join(given)}"
        )


def _serve_keys(args: argparse.Namespace) -> Any:
    """Run a request that names the users' own keys (--keys FILE)."""
    from ...deletion.idsfile import read_keys_file
    from ...deletion.workflow import forget_keys

    return forget_keys(args.run_dir, read_keys_file(args.keys), **_request_settings(args))


def _serve(args: argparse.Namespace) -> Any:
    """Run the request the flags describe: --ids, --ratio, or --retrain-now alone."""
    from ...deletion import forget, read_ids_file, retrain_all
    from ...ids import random_forget_ids
    from ...training import open_run

    if args.ids is None and args.ratio is None:
        if not args.retrain_now:
            raise MiniUnlearnError(
                "give the ids to forget with --ids FILE (or your own keys with --keys FILE), or --ratio X "
                "(--seed S) for a random set, or --retrain-now alone to retrain on all remaining data"
            )
        return retrain_all(
            args.run_dir, request_id=args.request_id, lock_timeout=args.wait, device=args.device
        )
    if args.ids is not None:
        ids = read_ids_file(args.ids)
    else:
        ids = random_forget_ids(open_run(args.run_dir, verify_hashes=False).n_train, args.ratio, args.seed)
    return forget(args.run_dir, ids, **_request_settings(args))


def _request_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of a request that the flags set (method, options, id, budget ...)."""
    return {
        "method": args.method,
        "options": parse_options(args.option),
        "request_id": args.request_id,
        "retrain_now": args.retrain_now,
        "max_approx_ratio": args.max_approx_ratio,
        "max_certified_distance": args.max_certified_distance,
        "lock_timeout": args.wait,
        "device": args.device,
    }


def _print_outcome(outcome: Any) -> None:
    """The outcome of a request as text: status, version, cost and the solver's mode."""
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
    certificate = outcome.certificate
    if certificate:
        # a small request's Newton step measured the served model already: no pass of its own
        cost = "one retain pass" if certificate.get("passes", 1) else "measured by the method's last step"
        print(
            f"  certified: within {certificate['distance_bound']:.3e} of the retain optimum "
            f"(any training sample's logits within {certificate['logit_bound']:.3e}); {cost}"
        )
        if certificate.get("removal"):
            print(f"  {removal_line(certificate['removal'])}")
    elif rec.get("certificate_note"):
        print(f"  {rec['certificate_note']}")
    diag = rec.get("diagnostics") or {}
    if "mode" in diag:
        print(
            f"  mode {diag['mode']}, {diag.get('exact_retain_passes', 0)} exact retain passes, final "
            f"retain-gradient norm {diag.get('grad_norm_final', float('nan')):.3e}"
        )


def removal_line(removal: Mapping[str, Any]) -> str:
    """One line on a certified-removal run's check of a served model."""
    verdict = "within" if removal["certified"] else "NOT within"
    return (
        f"certified removal ({removal['epsilon']:g}, {removal['delta']:g}): gradient residual "
        f"{removal['residual']:.3e} {verdict} the budget {removal['budget']:.3e}"
    )
