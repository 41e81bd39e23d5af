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
    _print_summary(run)
    keys = run.sample_keys()
    print(
        f"  keys: {keys.train.shape[0]:,d} training, {keys.test.shape[0]:,d} in the test split; the "
        f"{keys.source} (`miniunlearn ids {run.path}` lists them)"
    )
    return 0


def _print_summary(run: Any) -> None:
    """Print the trained model's accuracy, loss, gradient, convergence and mini's mode."""
    from ...experiment.summary import run_summary

    s = run_summary(run)
    converged = {True: "converged", False: "stopped before convergence", None: "convergence unknown"}
    print(
        f"  train accuracy {s['train_acc']:.4f}, test accuracy {s['test_acc']:.4f}, loss {s['loss']:.4g}, "
        f"gradient norm {s['grad_norm']:.3g} ({s['grad_ratio']:.3g} of the first step's: "
        f"{converged[s['converged']]})"
    )
    if s["mini_mode"]:
        print(f"  mini will serve requests on this run in its {s['mini_mode']} mode (docs/method.md)")
    if run.config.certify is not None:
        from ...training.certified import removal_budget

        epsilon, delta, noise = run.config.certify
        print(
            f"  certified removal: epsilon {epsilon:g}, delta {delta:g}, noise {noise:g}; every served "
            f"model's gradient residual is held to {removal_budget(run.config):.3g} (training ended at "
            f"{s['grad_norm'] * run.n_train:.3g}); past it a request is served by retraining"
        )
