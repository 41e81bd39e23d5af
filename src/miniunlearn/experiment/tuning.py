"""Choose a gradient-step baseline's rate and step budget without the retrained model.

The rule (docs/method.md, "Tuning the baselines"): every configuration of a small grid
around the method's defaults unlearns the same request; each result is scored on data a
deployer holds, never on a retrained model:

- the forget set U against *unseen* rows V, rows of the training split the run never
  trained on (it trained on a subset): a model retrained without U treats U as it treats
  any unseen row, so |acc(U) - acc(V)| and |AUC(loss on U against loss on V) - 0.5|;
- a validation split of the retain set (a seeded sample of it): retained rows should stay
  learnt, so the drop of its accuracy below the starting model's, if any.

The score is their sum in points; the lowest wins, fewer passes break ties. A run trained on
its whole training split has no unseen rows and cannot be tuned this way (ConfigError).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from ..errors import ConfigError
from ..evaluation.metrics import accuracy, per_sample_loss
from ..methods import available_methods, get_method, method_class
from ..methods.base import UnlearnRequest, UnlearnResult
from ..methods.step_budget import StepBudgetOptions
from ..training.rundir import Run, load_training_data
from .assess import model_logits

TUNING_ROWS = 2_000
"""Unseen rows, and rows of the retain set's validation split, the score reads (at most)."""

BUDGET_GRID = (0.05, 0.1, 0.2)
"""``steps_fraction`` values tried: half, once and twice the baselines' default 10 %."""

RATE_GRID = (0.5, 1.0, 2.0)
"""Multiples of the method's default rate tried (``lr_scale``; ``adam_lr`` for SCRUB's Adam)."""


def tunable(method: str) -> bool:
    """Whether ``method`` (a registered name) is a gradient-step baseline this module tunes."""
    return issubclass(method_class(method).Options, StepBudgetOptions)


def tunable_methods() -> str:
    """The registered methods :func:`tunable` accepts, as a comma list for messages."""
    return ", ".join(m for m in available_methods() if tunable(m))


def tuning_grid(method: str, fixed: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the option sets tried for ``method``: its given options ``fixed`` plus every
    combination of budget and rate (an option given in ``fixed`` is not varied).

    Takes a tunable method's name and its user options; returns a list of option dicts,
    the method's defaults first among the rates and budgets. ConfigError when not tunable.
    """
    if not tunable(method):
        raise ConfigError(
            f"{method} has no step budget and rate to tune; tuning applies to the gradient-step "
            f"baselines ({tunable_methods()})"
        )
    defaults = method_class(method).Options()
    adam = getattr(defaults, "optimizer", None) == "adam" and fixed.get("optimizer", "adam") == "adam"
    rate_key = "adam_lr" if adam else "lr_scale"
    base_rate = float(getattr(defaults, rate_key))
    axes: dict[str, tuple[Any, ...]] = {}
    if "steps" not in fixed and "steps_fraction" not in fixed:
        axes["steps_fraction"] = BUDGET_GRID
    if rate_key not in fixed:
        axes[rate_key] = tuple(base_rate * m for m in RATE_GRID)
    names = list(axes)
    return [
        dict(fixed, **dict(zip(names, values, strict=True))) for values in itertools.product(*axes.values())
    ]


@dataclass(frozen=True)
class TuningData:
    """What the score reads: the unseen rows (features, labels), the retain set's validation
    ids and the forget ids of the request, all of one run."""

    unseen_x: np.ndarray
    unseen_y: np.ndarray
    retain_val_ids: np.ndarray
    forget_ids: np.ndarray


def tuning_data(run: Run, forget_ids: np.ndarray, seed: int, rows: int = TUNING_ROWS) -> TuningData:
    """Return the :class:`TuningData` of a request on ``run``: up to ``rows`` seeded unseen rows
    (training-split rows outside the run's subset) and as many retain ids.

    ConfigError when the run trained on its whole training split (no unseen rows).
    """
    config = run.config
    full = load_training_data(dataclasses.replace(config, n_train=None, subset_ids=None))
    if config.subset_ids is not None:
        kept = np.asarray(config.subset_ids, dtype=np.int64)
    elif config.n_train is not None and config.n_train < full.n_train:
        kept = full.subset_indices(config.n_train, config.seed)
    else:
        raise ConfigError(
            "tuning a baseline needs rows the run never trained on, and this run trained on its "
            "whole training split; train on a subset (--n-train, as the leaky presets do) or "
            "leave out --tune-baselines"
        )
    unseen = np.setdiff1d(np.arange(full.n_train), kept)
    rng = np.random.default_rng([int(seed), 7])
    unseen = np.sort(rng.choice(unseen, min(rows, unseen.size), replace=False))
    retain = np.setdiff1d(np.arange(run.n_train), forget_ids)
    retain_val = np.sort(rng.choice(retain, min(rows, retain.size), replace=False))
    return TuningData(full.x_train[unseen], full.y_train[unseen], retain_val, np.asarray(forget_ids))


def tuning_score(
    run: Run, params: torch.Tensor, data: TuningData, start_retain_acc: float
) -> dict[str, float]:
    """Score ``params`` by the rule of this module; returns the three terms and their sum
    (``score``), in points. ``start_retain_acc``: the starting model's accuracy on the retain
    set's validation split."""
    x, y = run.dataset.x_train, run.dataset.y_train
    forget_logits, unseen_logits = (
        model_logits(run, params, x, data.forget_ids),
        model_logits(run, params, data.unseen_x),
    )
    forget_y = y[data.forget_ids]
    losses = np.concatenate(
        [per_sample_loss(forget_logits, forget_y), per_sample_loss(unseen_logits, data.unseen_y)]
    )
    members = np.r_[np.ones(data.forget_ids.size), np.zeros(data.unseen_y.size)]
    auc = float(roc_auc_score(members, -losses)) if np.isfinite(losses).all() else 1.0
    retain_acc = accuracy(model_logits(run, params, x, data.retain_val_ids), y[data.retain_val_ids])
    terms = {
        "forget_unseen_acc_gap": 100
        * abs(accuracy(forget_logits, forget_y) - accuracy(unseen_logits, data.unseen_y)),
        "forget_unseen_auc_gap": 100 * abs(auc - 0.5),
        "retain_val_drop": 100 * max(0.0, start_retain_acc - retain_acc),
    }
    return {**terms, "score": sum(terms.values())}


@dataclass
class TunedResult:
    """The chosen configuration's result and options (``chosen``: the values picked for the
    varied options only), its score terms, and what the whole
    grid cost (``grid_evals`` per-sample gradient evaluations, ``grid_s`` seconds, every
    configuration included)."""

    result: UnlearnResult
    options: dict[str, Any]
    chosen: dict[str, float]
    score: dict[str, float]
    configurations: int
    grid_evals: int
    grid_s: float


def tune(method: str, fixed: dict[str, Any], request: UnlearnRequest, data: TuningData) -> TunedResult:
    """Unlearn ``request`` with every configuration of ``tuning_grid(method, fixed)`` and
    return the best by :func:`tuning_score` (a diverged configuration scores infinity; when
    every one diverges, the first is returned)."""
    run = request.run
    start = request.start_params()
    x, y = run.dataset.x_train, run.dataset.y_train
    start_acc = accuracy(model_logits(run, start, x, data.retain_val_ids), y[data.retain_val_ids])
    best: tuple[tuple[float, int], UnlearnResult, dict[str, Any], dict[str, float]] | None = None
    grid, evals, began = tuning_grid(method, fixed), 0, time.perf_counter()
    for options in grid:
        result = get_method(method, **options).unlearn(request)
        evals += result.record.grad_evals
        if torch.isfinite(result.params).all():
            score = tuning_score(run, result.params, data, start_acc)
        else:
            score = {"score": float("inf")}
        key = (score["score"], result.record.grad_evals)
        if best is None or key < best[0]:
            best = (key, result, options, score)
    assert best is not None  # the grid is never empty
    _, result, options, score = best
    chosen = {k: float(v) for k, v in options.items() if k not in fixed}
    return TunedResult(result, options, chosen, score, len(grid), evals, time.perf_counter() - began)


def tuning_table(records: list[dict[str, Any]]) -> str:
    """Return a markdown table of the tuned baselines of a sweep's ``records``: per method and
    ratio, the values each seed chose, the mean score of the chosen model and what the grid
    cost in passes (over the retain set); "" when no record was tuned."""
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for record in records:
        if record.get("tuned_options"):
            groups.setdefault((record["method"], record["ratio"]), []).append(record)
    if not groups:
        return ""
    lines = [
        "| method | ratio | chosen per seed | score (pts) | grid passes | chosen passes |",
        "|---|---|---|---:|---:|---:|",
    ]
    for (method, ratio), rows in sorted(groups.items(), key=lambda g: (g[0][1], g[0][0])):
        rows = sorted(rows, key=lambda r: r["seed"])
        chosen = "; ".join(
            ", ".join(f"{k} {v:g}" for k, v in json.loads(r["tuned_options"]).items()) for r in rows
        )
        score = np.mean([r["tuning_score"] for r in rows])
        grid = np.mean([r["tuning_passes"] for r in rows])
        own = np.mean([r["passes"] for r in rows])
        lines.append(f"| {method} | {ratio:.0%} | {chosen} | {score:.2f} | {grid:.1f} | {own:.1f} |")
    return "\n".join(lines)
