"""Ratio sweeps: every method against retraining, over ratios and seeds, in one process."""

from __future__ import annotations

import dataclasses
import hashlib
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..errors import ConfigError, RunDirError
from ..evaluation.metrics import param_distance
from ..ids import random_forget_ids
from ..methods import UnlearnRequest, available_methods, get_method
from ..presets import preset
from ..training import Run, TrainConfig, open_run, retrain, train_run
from .assess import assess, reference
from .optimum import retain_optimum
from .shadows import ShadowFactory, run_ulira, shadow_pool

RECORD_KEYS = (
    "dataset",
    "model",
    "method",
    "ratio",
    "seed",
    "n_train",
    "n_forget",
    "time_s",
    "grad_evals",
    "passes",
    "history_bytes",
    "dist_to_retrain",
    "dist_to_optimum",
    "test_acc",
    "retain_acc",
    "forget_acc",
    "mia_auc",
    "mia_efficacy",
    "avg_gap",
    "ulira_auc",
)
ATTACK_NAMES = ("population", "ulira")


@dataclass
class BenchSpec:
    """A sweep: dataset and model, ratios, methods, seeds, attacks and where to keep runs.

    ``preset`` names the recipe family (one of presets.PRESET_NAMES); ``train_overrides`` replace
    its TrainConfig fields; ``method_options`` maps a
    method name to its options; ``ulira_pool``/``ulira_shadows``/``ulira_targets``
    size the per-example attack.
    """

    dataset: str
    model: str
    ratios: Sequence[float]
    methods: Sequence[str]
    seeds: int = 3
    attacks: Sequence[str] = ("population",)
    runs_dir: Path = Path("runs/bench")
    preset: str = "default"
    train_overrides: dict[str, Any] = field(default_factory=dict)
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    ulira_pool: int = 1000
    ulira_shadows: int = 16
    ulira_targets: int = 4

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in available_methods()]
        if unknown:
            raise ConfigError(f"unknown method(s) {unknown}; available: {', '.join(available_methods())}")
        bad_attacks = [a for a in self.attacks if a not in ATTACK_NAMES]
        if bad_attacks:
            raise ConfigError(f"unknown attack(s) {bad_attacks}; choose from {', '.join(ATTACK_NAMES)}")
        for r in self.ratios:
            if not 0 < r < 1:
                raise ConfigError(f"ratios must be in (0, 1), got {r}")
        if self.seeds < 1:
            raise ConfigError("--seeds must be at least 1")
        if "ulira" in self.attacks and (
            self.ulira_pool < 20 or self.ulira_shadows < 2 or self.ulira_targets < 1
        ):
            raise ConfigError(
                "the per-example attack needs --ulira-pool >= 20, --ulira-shadows >= 2 and "
                "at least one target model"
            )

    def config(self, seed: int) -> TrainConfig:
        """The training recipe for one seed: preset, then overrides, with history for the methods."""
        history = "both" if "deltagrad" in self.methods else "mini"
        fields = {**preset(self.dataset, self.model, self.preset), "history": history, **self.train_overrides}
        return TrainConfig(dataset=self.dataset, model=self.model, seed=seed, **fields)


def trained_run(config: TrainConfig, runs_dir: Path, *, progress: bool = True) -> Run:
    """Return the run of ``config`` under ``runs_dir``, training it on first use."""
    key = hashlib.sha256(config.to_json().encode()).hexdigest()[:12]
    path = Path(runs_dir) / f"{config.dataset}-{config.model}-seed{config.seed}-{key}"
    if path.exists():
        return open_run(path)
    try:
        return train_run(config, path, progress=progress)
    except RunDirError:
        if path.exists():  # a concurrent sweep trained the same recipe first
            return open_run(path)
        raise


# Quality metrics of a method whose parameters are not finite (it diverged).
DIVERGED = {
    "dist_to_retrain": float("nan"),
    "dist_to_optimum": float("nan"),
    "test_acc": float("nan"),
    "retain_acc": float("nan"),
    "forget_acc": float("nan"),
    "mia_auc": float("nan"),
    "mia_efficacy": float("nan"),
    "avg_gap": float("nan"),
    "diverged": True,
}


def machine_info() -> dict[str, Any]:
    """Describe where a sweep ran: CPU, cores, torch threads, versions."""
    import os

    return {
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def run_bench(spec: BenchSpec, *, progress: bool = True) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run the sweep; return (records, extras).

    One record per (method, ratio, seed) with at least ``RECORD_KEYS``; ``passes`` is the
    per-sample gradient evaluations (a Hessian-vector product counts two) divided by the
    retain size, ``dist_to_optimum`` the distance to the float64 retain optimum (convex
    models trained by full-batch gradient descent; None otherwise). Retraining is
    always run (timed) as the reference; methods run in the same process on the same
    machine. ``extras`` holds ROC curves of the last seed and the machine description.
    """
    records: list[dict[str, Any]] = []
    curves: dict[str, Any] = {}
    total = spec.seeds * len(spec.ratios) * len(spec.methods)
    bar = tqdm(total=total, desc=f"bench {spec.dataset}/{spec.model}", disable=not progress)
    for seed in range(spec.seeds):
        config = spec.config(seed)
        run = trained_run(config, spec.runs_dir, progress=progress)
        shadow_cache: dict[Any, Any] = {}
        factory = None
        if "ulira" in spec.attacks:
            factory = ShadowFactory(
                config, shadow_pool(run, spec.ulira_pool, seed), spec.runs_dir / "shadows"
            )
        # what a per-step history (DeltaGrad's: w_t and the batch gradient of every step) takes
        itemsize = torch.finfo(config.torch_dtype).bits // 8
        full_history_bytes = 2 * run.total_steps * run.objective.dim * itemsize
        for r_index, ratio in enumerate(spec.ratios):
            forget = random_forget_ids(run.n_train, ratio, seed=1000 * seed + r_index)
            started = time.perf_counter()
            evals_before = run.objective.grad_evals
            retrained = retrain(run, forget, progress=False)
            retrain_time = time.perf_counter() - started
            retrain_evals = run.objective.grad_evals - evals_before
            ref = reference(run, retrained, forget, attacks=spec.attacks, seed=seed)
            # an SGD run stops wherever its batches leave it: the retain optimum is no reference there
            optimum = retain_optimum(run, forget) if run.plan.batch_size >= run.n_train else None
            retain_size = run.n_train - forget.size
            for method in spec.methods:
                options = spec.method_options.get(method, {})
                if method == "retrain":
                    params, time_s, evals, hist_bytes, diag = retrained, retrain_time, retrain_evals, 0, {}
                else:
                    result = get_method(method, **options).unlearn(UnlearnRequest(run, forget))
                    params, time_s = result.params, result.record.time_s
                    evals, hist_bytes = result.record.grad_evals, result.record.history_bytes
                    diag = result.record.diagnostics
                record = {
                    "dataset": spec.dataset,
                    "model": spec.model,
                    "method": method,
                    "ratio": float(ratio),
                    "seed": seed,
                    "n_train": run.n_train,
                    "n_forget": int(forget.size),
                    "time_s": time_s,
                    "grad_evals": int(evals),
                    "passes": evals / retain_size,
                    "history_bytes": int(hist_bytes),
                    "full_history_bytes": full_history_bytes,
                    "retrain_time_s": retrain_time,
                    "speedup_vs_retrain": retrain_time / max(time_s, 1e-12),
                    "ulira_auc": None,
                    **{f"diag_{k}": v for k, v in diag.items() if isinstance(v, int | float | bool | str)},
                }
                if not torch.isfinite(params).all():  # a diverged method is reported, not fatal
                    records.append({**record, **DIVERGED})
                    bar.update()
                    continue
                metrics = assess(run, params, ref, forget, attacks=spec.attacks, seed=seed, keep_curves=True)
                metrics["dist_to_optimum"] = param_distance(params, optimum) if optimum is not None else None
                roc = metrics.pop("roc", {})
                if roc:
                    curves[f"{method} @ {ratio:.0%}"] = roc["unlearned"]
                    curves[f"retrain @ {ratio:.0%}"] = roc["retrain_"]
                if factory is not None:
                    result_u = run_ulira(
                        factory,
                        method,
                        options,
                        forget_fraction=ratio,
                        n_shadows=spec.ulira_shadows,
                        n_targets=spec.ulira_targets,
                        seed=seed,
                        cache=shadow_cache,
                    )
                    record["ulira_auc"] = result_u.auc
                    metrics["ulira_bacc"] = result_u.balanced_accuracy
                    metrics["ulira_tpr_1pct"] = result_u.tpr_at_1pct_fpr
                records.append({**record, **metrics})
                bar.update()
    bar.close()
    return records, {
        "roc": curves,
        "machine": machine_info(),
        "config": dataclasses.asdict(spec.config(0)) | {"seed": "0.." + str(spec.seeds - 1)},
    }
