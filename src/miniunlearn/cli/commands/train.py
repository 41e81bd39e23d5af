"""``miniunlearn fetch`` and ``miniunlearn train``."""

from __future__ import annotations

import argparse
from typing import Any

from ..common import parse_options
from ..training_flags import override_fields


def cmd_fetch(args: argparse.Namespace) -> int:
    """Fetch datasets into the cache."""
    from ...data import FETCHABLE, fetch_dataset

    names = FETCHABLE if args.names == ["all"] else args.names
    for name in names:
        path = fetch_dataset(name, progress=not args.quiet)
        print(f"{name}: cached at {path}")
    return 0


def train_config(args: argparse.Namespace) -> Any:
    """The TrainConfig of ``train``: the preset, the flags that override it, and --data-option."""
    from ...presets import preset
    from ...training import TrainConfig

    fields = preset(args.dataset, args.model, args.preset)
    fields.update(override_fields(args))
    if args.data_option:
        fields["data_options"] = {**fields.get("data_options", {}), **parse_options(args.data_option)}
    return TrainConfig(dataset=args.dataset, model=args.model, seed=args.seed, **fields)


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model with history into a new run directory."""
    from ...training import train_run

    config = train_config(args)
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
