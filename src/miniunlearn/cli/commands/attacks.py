"""The attack flags (--attacks, --ulira-pool, --ulira-shadows) as evaluate and audit use them."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


def check_attacks(args: argparse.Namespace) -> None:
    """Refuse unknown attack names and per-example attack settings it cannot run with."""
    from ...experiment.bench import check_ulira

    check_ulira(args.attacks, args.ulira_pool, args.ulira_shadows)


def ulira_pool(run: Any, args: argparse.Namespace) -> int | None:
    """The per-example attack's pool size on ``run`` (None without ``ulira``); ConfigError when
    --ulira-pool is larger than the run's training set."""
    if "ulira" not in args.attacks:
        return None
    from ...experiment.bench import ulira_pool_size

    return ulira_pool_size(args.ulira_pool, run.n_train)


def population(args: argparse.Namespace) -> list[str]:
    """The population attacks asked for (the per-example one runs separately, in :func:`ulira`)."""
    return [a for a in args.attacks if a == "population"]


def ulira(
    run: Any, producer: Any, forgotten: np.ndarray, args: argparse.Namespace, *, progress: bool = False
) -> dict[str, float]:
    """With ``ulira`` asked: the per-example attack against the method of the request that made
    the model (``producer``) and against retraining, at the fraction forgotten so far;
    ``progress`` shows a bar for its shadow models and one for each method scored."""
    if "ulira" not in args.attacks:
        return {}
    from ...experiment.shadows import ULIRA_TARGETS, ulira_metrics

    options = {k: v for k, v in producer.options.items() if k not in ("instead_of", "reason", "use_cache")}
    return ulira_metrics(
        run,
        {"": (producer.method, options), "retrain_": ("retrain", {})},
        forget_fraction=forgotten.size / run.n_train,
        pool_size=ulira_pool(run, args),
        n_shadows=args.ulira_shadows,
        n_targets=ULIRA_TARGETS,
        seed=args.seed,
        progress=progress,
    )
