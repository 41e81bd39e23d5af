"""``miniunlearn ids``: the users' keys of a run and the sample ids they map to."""

from __future__ import annotations

import argparse
import csv
import io
import sys
from typing import Any

from ..common import print_json

HEADER = ("key", "sample_id", "split")


def mapping_csv(rows: list[tuple[str, int | None, str]]) -> str:
    """The mapping as CSV text: a ``key,sample_id,split`` header, then one row per key (the
    sample id empty for keys never trained on)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows((key, "" if sid is None else sid, split) for key, sid, split in rows)
    return out.getvalue()


def _summary(run: Any, keys: Any) -> dict[str, Any]:
    """How many keys fall where, and what the keys are."""
    return {
        "run": str(run.path),
        "keys": keys.source,
        "n_train": int(keys.train.shape[0]),
        "n_test": int(keys.test.shape[0]),
        "n_unused": int(keys.unused.shape[0]),
    }


def _summary_line(summary: dict[str, Any]) -> str:
    unused = f", {summary['n_unused']:,d} left out of the training subset" if summary["n_unused"] else ""
    return (
        f"{summary['n_train']:,d} training keys (sample ids 0..{summary['n_train'] - 1}), "
        f"{summary['n_test']:,d} test-split keys{unused}; keys are the {summary['keys']}"
    )


def cmd_ids(args: argparse.Namespace) -> int:
    """Print (or write with --out) the mapping between the users' keys and the sample ids."""
    from ...fileio import atomic_write_bytes
    from ...training import open_run

    run = open_run(args.run_dir, verify_hashes=False)
    keys = run.sample_keys()
    rows = keys.rows()
    summary = _summary(run, keys)
    if args.out is not None:
        atomic_write_bytes(args.out, mapping_csv(rows).encode())
        if args.json:
            print_json({**summary, "out": str(args.out)})
        else:
            print(f"wrote {len(rows):,d} keys to {args.out}: {_summary_line(summary)}")
        return 0
    if args.json:
        fields = [{"key": k, "sample_id": sid, "split": split} for k, sid, split in rows]
        print_json({**summary, "mapping": fields})
        return 0
    sys.stdout.write(mapping_csv(rows))
    print(_summary_line(summary), file=sys.stderr)
    return 0
