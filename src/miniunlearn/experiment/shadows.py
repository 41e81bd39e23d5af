"""Shadow models for the per-example (U-LiRA style) attack, trained as real runs.

Each shadow is a run directory trained on a subset of a pool of training samples
(same recipe as the run under test, ``subset_ids``), so every unlearning method can
be applied to it exactly as to the real model.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..data import Dataset
from ..errors import ConfigError
from ..evaluation.metrics import logit_scaled_confidence
from ..evaluation.ulira import ULiRAResult, member_set_hash, planned_trainings, ulira_attack
from ..methods import UnlearnRequest, get_method
from ..progress import progress_bar
from ..training import Run, TrainConfig
from ..training.rundir import load_training_data
from .parallel import TaskRunner, open_or_train

ATTACK_NAMES = ("population", "ulira")
SHADOWS_DIR = "shadows"
"""The folder of a run that keeps the shadow runs of the per-example attack."""
ULIRA_TARGETS = 4
"""Target models per forget fraction of the per-example attack (``bench``, ``evaluate``, ``audit``)."""


def check_attacks(attacks: Sequence[str], pool: int, shadows: int, targets: int = ULIRA_TARGETS) -> None:
    """Raise ConfigError for an attack name not in ATTACK_NAMES, or, with ``ulira`` asked, a pool,
    shadow count or target count the per-example attack cannot run with."""
    unknown = [a for a in attacks if a not in ATTACK_NAMES]
    if unknown:
        raise ConfigError(f"unknown attack(s) {unknown}; choose from {', '.join(ATTACK_NAMES)}")
    if "ulira" in attacks and (pool < 20 or shadows < 2 or targets < 1):
        raise ConfigError(
            "the per-example attack needs --ulira-pool >= 20, --ulira-shadows >= 2 and "
            "at least one target model"
        )


def shadow_config(config: TrainConfig, pool_ids: np.ndarray, members: np.ndarray, seed: int) -> TrainConfig:
    """The recipe of one shadow: ``config`` trained on pool members ``members`` (sorted local
    indices into ``pool_ids``) with training seed ``seed``."""
    return dataclasses.replace(
        config,
        subset_ids=tuple(int(i) for i in np.asarray(pool_ids, dtype=np.int64)[members]),
        n_train=None,
        seed=int(seed),
    )


def shadow_path(root: Path, config: TrainConfig) -> Path:
    """Where the shadow run of ``config`` (from :func:`shadow_config`) is kept under ``root``."""
    return Path(root) / f"shadow-{hashlib.sha256(config.to_json().encode()).hexdigest()[:16]}"


def build_shadow(
    config: TrainConfig, pool_ids: np.ndarray, root: Path, members: np.ndarray, seed: int
) -> Path:
    """Train (or find already trained) the shadow of ``config`` on pool members ``members`` with
    ``seed``; return its run directory. Safe to call from several processes at once."""
    shadow = shadow_config(config, pool_ids, np.sort(np.asarray(members, dtype=np.int64)), seed)
    path = shadow_path(root, shadow)
    open_or_train(shadow, path, progress=False, verify_hashes=False)
    return path


def shadow_tasks(
    config: TrainConfig, pool_ids: np.ndarray, root: Path, *, n_shadows: int, n_targets: int, seed: int
) -> list[tuple]:
    """Arguments of :func:`build_shadow` for every shadow and target model the per-example
    attack with ``seed`` will ask for: train them as parallel tasks before the attack."""
    plans = planned_trainings(len(pool_ids), n_shadows=n_shadows, n_targets=n_targets, seed=seed)
    return [(config, pool_ids, Path(root), members, train_seed) for members, train_seed in plans]


class ShadowFactory:
    """Trains (and caches on disk) shadow runs on subsets of a fixed pool of samples.

    ``config``: the recipe of the model under attack; ``pool_ids``: ids (in the full
    training split) of the pool; ``root``: where shadow runs are stored.
    """

    def __init__(self, config: TrainConfig, pool_ids: np.ndarray, root: Path) -> None:
        self.config = config
        self.pool_ids = np.asarray(pool_ids, dtype=np.int64)
        self.root = Path(root)

    @cached_property
    def dataset(self) -> Dataset:
        """The full training data of the recipe (loaded on first use)."""
        return load_training_data(dataclasses.replace(self.config, subset_ids=None, n_train=None))

    def train(self, member_ids: np.ndarray, seed: int) -> tuple[Run, np.ndarray]:
        """Return (a run trained on pool members ``member_ids`` with ``seed``, its sorted members).

        Opens the run when it is on disk already; trains it otherwise (safe when another
        process trains the same shadow at the same time).
        """
        members = np.sort(np.asarray(member_ids, dtype=np.int64))
        config = shadow_config(self.config, self.pool_ids, members, seed)
        run = open_or_train(config, shadow_path(self.root, config), progress=False, verify_hashes=False)
        return run, members

    def unlearn(self, method: str, options: dict[str, Any]) -> Any:
        """Return an ``unlearn_fn`` for :func:`ulira_attack` that applies ``method`` to a shadow."""

        def unlearn_fn(
            state: tuple[Run, np.ndarray], forget_ids: np.ndarray, member_ids: np.ndarray, seed: int
        ) -> tuple[Run, Any]:
            run, members = state
            local = np.searchsorted(members, np.asarray(forget_ids, dtype=np.int64))
            result = get_method(method, **options).unlearn(UnlearnRequest(run, local))
            return run, result.params

        return unlearn_fn

    def confidence(self, state: tuple[Run, Any], ids: np.ndarray) -> np.ndarray:
        """Logit-scaled confidence of the true class of pool samples ``ids`` under an unlearned shadow."""
        run, params = state
        rows = self.pool_ids[np.asarray(ids, dtype=np.int64)]
        import torch

        logits = run.objective.logits(params, torch.from_numpy(self.dataset.x_train[rows]))
        return logit_scaled_confidence(logits.cpu().numpy(), self.dataset.y_train[rows])


def run_ulira(
    factory: ShadowFactory,
    method: str,
    options: dict[str, Any],
    *,
    forget_fraction: float,
    n_shadows: int,
    n_targets: int,
    seed: int,
    cache: dict[Any, Any],
    progress: bool = False,
) -> ULiRAResult:
    """Run the per-example attack against ``method`` on shadows from ``factory``.

    ``cache`` is shared across methods so shadow training happens once per seed.
    ``progress``: one bar over the models, labelled ``ulira: scoring METHOD``.
    """
    return ulira_attack(
        factory.pool_ids.size,
        factory.train,
        factory.unlearn(method, options),
        factory.confidence,
        n_shadows=n_shadows,
        n_targets=n_targets,
        forget_fraction=forget_fraction,
        seed=seed,
        cache=cache,
        progress=progress,
        desc=f"ulira: scoring {method}",
    )


def shadow_pool(run: Run | int, pool_size: int, seed: int) -> np.ndarray:
    """Return the sorted ids of the seeded pool the per-example attack draws its shadows from.

    ``run``: the run under attack, or its number of training samples.
    """
    n_train = run if isinstance(run, int) else run.n_train
    rng = np.random.default_rng(10_000 + seed)
    return np.sort(rng.choice(n_train, min(pool_size, n_train), replace=False))


def ulira_metrics(
    run: Run,
    methods: dict[str, tuple[str, dict[str, Any]]],
    *,
    forget_fraction: float,
    pool_size: int,
    n_shadows: int,
    n_targets: int,
    seed: int,
    runner: TaskRunner | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Run the per-example attack against each of ``methods`` ({prefix: (method, options)}) on
    shadows of ``run``'s recipe, stored under RUN_DIR/shadows (a real folder of the run, never a
    symbolic link). The shadow and target models are trained (or found on disk) first: as
    parallel tasks on ``runner`` when given, else in this process; the results are the same.
    ``progress``: a bar for that phase (``ulira: shadow models``), then one per method
    (``ulira: scoring METHOD``).

    Returns ``{prefix + "ulira_auc" | "ulira_bacc" | "ulira_tpr_1pct": value}`` for each prefix.
    """
    root = run.subdir(SHADOWS_DIR, create=True)
    factory = ShadowFactory(run.config, shadow_pool(run, pool_size, seed), root)
    cache: dict[Any, Any] = {}
    _train_shadows(
        factory,
        n_shadows=n_shadows,
        n_targets=n_targets,
        seed=seed,
        runner=runner,
        cache=cache,
        progress=progress,
    )
    out = {}
    for prefix, (method, options) in methods.items():
        result = run_ulira(
            factory,
            method,
            options,
            forget_fraction=forget_fraction,
            n_shadows=n_shadows,
            n_targets=n_targets,
            seed=seed,
            cache=cache,
            progress=progress,
        )
        out |= {
            f"{prefix}ulira_auc": result.auc,
            f"{prefix}ulira_bacc": result.balanced_accuracy,
            f"{prefix}ulira_tpr_1pct": result.tpr_at_1pct_fpr,
        }
    return out


def _train_shadows(
    factory: ShadowFactory,
    *,
    n_shadows: int,
    n_targets: int,
    seed: int,
    runner: TaskRunner | None,
    cache: dict[Any, Any],
    progress: bool,
) -> None:
    """Train (or open) every shadow and target model the attack with ``seed`` asks for, before
    it runs: as tasks on ``runner`` (they land on disk, where the attack opens them), or in this
    process straight into ``cache`` (keyed as :func:`ulira_attack` looks them up)."""
    plans = planned_trainings(factory.pool_ids.size, n_shadows=n_shadows, n_targets=n_targets, seed=seed)
    bar = progress_bar(total=len(plans), desc="ulira: shadow models", enabled=progress, unit="model")
    try:
        if runner is not None:
            tasks = shadow_tasks(
                factory.config,
                factory.pool_ids,
                factory.root,
                n_shadows=n_shadows,
                n_targets=n_targets,
                seed=seed,
            )
            for _ in runner.map(build_shadow, tasks):
                bar.update(1)
            return
        for members, train_seed in plans:
            cache[(member_set_hash(members), train_seed)] = factory.train(members, train_seed)
            bar.update(1)
    finally:
        bar.close()
