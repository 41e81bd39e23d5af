"""Ratio sweeps: every method against retraining, over ratios and seeds, as parallel tasks."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..certificate import certify, no_certificate_reason
from ..device import device_scope, resolve_device
from ..errors import ConfigError
from ..evaluation.metrics import param_distance
from ..evaluation.ulira import ULiRAResult
from ..ids import random_forget_ids, retained_ids
from ..methods import UnlearnRequest, available_methods, get_method, method_class
from ..presets import preset
from ..progress import progress_bar
from ..training import Run, TrainConfig, retrain
from ..training.rundir import load_training_data
from .assess import PER_EXAMPLE_GAP_METRICS, add_average_gaps, assess, reference
from .optimum import retain_optimum
from .parallel import ParallelOptions, TaskRunner, open_or_train
from .shadows import (
    ULIRA_TARGETS,
    ShadowFactory,
    build_shadow,
    check_attacks,
    run_ulira,
    shadow_pool,
    shadow_tasks,
)
from .tuning import TunedResult, TuningData, tunable, tunable_methods, tune, tuning_data

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
    "recording_passes",
    "recording_s",
    "history_bytes",
    "dist_to_retrain",
    "dist_to_optimum",
    "test_acc",
    "retain_acc",
    "forget_acc",
    "mia_auc",
    "mia_efficacy",
    "avg_gap",
    "avg_gap_population",
    "ulira_auc",
)


MAX_JOBS = 256
"""The most parallel tasks a sweep runs at once (--jobs), and the most torch threads of each (--threads)."""
MAX_SEEDS = 1000
"""The most seeds a sweep runs (--seeds)."""
ULIRA_POOL = 1000
"""The per-example attack's default pool size (capped at the training set size)."""
MAX_ULIRA_SHADOWS = 1000
"""The most shadow models the per-example attack trains (--ulira-shadows)."""


def check_ulira(attacks: Sequence[str], pool: int | None, shadows: int, targets: int = ULIRA_TARGETS) -> None:
    """Raise ConfigError for an unknown attack name or, with ``ulira`` asked, a pool (None: the
    default), shadow count or target count out of range (the pool's upper bound, the training
    set size, is checked by :func:`ulira_pool_size` once the data is known)."""
    check_attacks(attacks, ULIRA_POOL if pool is None else pool, shadows, targets)
    if "ulira" in attacks and shadows > MAX_ULIRA_SHADOWS:
        raise ConfigError(f"--ulira-shadows must be in 2..{MAX_ULIRA_SHADOWS}, got {shadows}")


def ulira_pool_size(asked: int | None, n_train: int) -> int:
    """The pool size of the per-example attack on ``n_train`` training samples: ``asked``, or
    ``ULIRA_POOL`` capped at ``n_train`` when None. ConfigError when ``asked`` exceeds the
    training set, or the training set is too small for a pool of 20."""
    if asked is not None and asked > n_train:
        raise ConfigError(
            f"--ulira-pool {asked} is larger than the training set ({n_train} samples); "
            f"give --ulira-pool in 20..{n_train}, or leave it out for min({ULIRA_POOL}, {n_train})"
        )
    pool = min(ULIRA_POOL, n_train) if asked is None else asked
    if pool < 20:
        raise ConfigError(
            f"the per-example attack needs a pool of at least 20 samples; the training set has {n_train}"
        )
    return pool


@dataclass
class BenchSpec:
    """A sweep: dataset and model, ratios, methods, seeds, attacks and where to keep runs.

    ``preset`` names the recipe family (one of presets.PRESET_NAMES); ``train_overrides`` replace
    its TrainConfig fields; ``method_options`` maps a method name to its options;
    ``tune_baselines`` chooses each gradient-step baseline's rate and budget per cell by
    :mod:`.tuning`'s rule (its given options stay fixed); ``ulira_pool``/``ulira_shadows``/
    ``ulira_targets`` size the per-example attack. ``jobs``/``backend``/``address``/``threads``
    say how its tasks run (see :class:`.parallel.ParallelOptions`); they do not change the records.
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
    tune_baselines: bool = False
    ulira_pool: int | None = None
    ulira_shadows: int = 16
    ulira_targets: int = ULIRA_TARGETS
    jobs: int = 1
    threads: int | None = None
    backend: str = "joblib"
    address: str | None = None
    device: str = "cpu"
    data_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.parallel_options()  # checks jobs, threads, backend, address
        if self.jobs > MAX_JOBS:
            raise ConfigError(f"--jobs must be in 1..{MAX_JOBS}, got {self.jobs}")
        if self.threads is not None and self.threads > MAX_JOBS:
            raise ConfigError(f"--threads must be in 1..{MAX_JOBS}, got {self.threads}")
        self._check_methods()
        if not self.ratios:
            raise ConfigError("give at least one unlearning ratio in (0, 1), e.g. --ratios 0.01,0.1")
        for r in self.ratios:
            if not 0 < r < 1:
                raise ConfigError(f"ratios must be in (0, 1), got {r}")
        if not 1 <= self.seeds <= MAX_SEEDS:
            raise ConfigError(f"--seeds must be in 1..{MAX_SEEDS}, got {self.seeds}")
        check_ulira(self.attacks, self.ulira_pool, self.ulira_shadows, self.ulira_targets)
        if self.tune_baselines:
            if not any(tunable(m) for m in self.methods):
                raise ConfigError(
                    f"--tune-baselines tunes the gradient-step baselines ({tunable_methods()}), and "
                    "--methods names none of them"
                )
            config = self.config(0)
            if config.n_train is None and config.subset_ids is None:
                raise ConfigError(
                    "--tune-baselines scores the baselines against rows the run never trained on; "
                    "train on a subset (--n-train N, as the leaky presets do) or leave it out"
                )

    def _check_methods(self) -> None:
        """Refuse an empty or unknown method list, and options for methods not in the sweep or
        that the method does not take (before anything is trained)."""
        if not self.methods:
            raise ConfigError(
                "give at least one method, e.g. --methods retrain,mini; "
                f"available: {', '.join(available_methods())}"
            )
        unknown = [m for m in self.methods if m not in available_methods()]
        if unknown:
            raise ConfigError(f"unknown method(s) {unknown}; available: {', '.join(available_methods())}")
        stray = sorted(set(self.method_options) - set(self.methods))
        if stray:
            raise ConfigError(
                f"options given for method(s) {stray} that are not in the sweep ({', '.join(self.methods)}); "
                "add them to --methods or drop their -o METHOD:key=value options"
            )
        for method, options in self.method_options.items():
            get_method(method, **options)  # ConfigError for an option the method does not take

    def parallel_options(self) -> ParallelOptions:
        """How the sweep's tasks run: ``jobs`` workers on ``backend``, ``threads`` torch threads each."""
        return ParallelOptions(
            jobs=self.jobs, backend=self.backend, address=self.address, threads=self.threads
        )

    def config(self, seed: int) -> TrainConfig:
        """The training recipe for one seed: preset, then overrides, with history for the methods."""
        history = recorded_history(self.methods)
        fields = {**preset(self.dataset, self.model, self.preset), "history": history, **self.train_overrides}
        if self.data_options:
            fields["data_options"] = {**fields.get("data_options", {}), **self.data_options}
        return TrainConfig(dataset=self.dataset, model=self.model, seed=seed, **fields)


def recorded_history(methods: Sequence[str]) -> str:
    """Return the TrainConfig ``history`` a sweep over ``methods`` records: ``"both"`` when a
    method's ``needs_history`` names the full history, else ``"mini"``.

    The minimal history is always kept, as the default run keeps it: the sweep's reference
    (the retain optimum) and ``warmstart`` read it when present. ConfigError for an unknown
    method name.
    """
    needs = {role for name in methods for role in method_class(name).needs_history}
    return "both" if "history-full" in needs else "mini"


def trained_run(config: TrainConfig, runs_dir: Path, *, progress: bool = True, device: str = "cpu") -> Run:
    """Return the run of ``config`` under ``runs_dir``, training it on first use (safe when
    concurrent sweeps or workers build the same recipe at once)."""
    key = hashlib.sha256(config.to_json().encode()).hexdigest()[:12]
    path = Path(runs_dir) / f"{config.dataset}-{config.model}-seed{config.seed}-{key}"
    return open_or_train(config, path, progress=progress, device=device)


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
    "avg_gap_population": float("nan"),
    "diverged": True,
}


def machine_info(options: ParallelOptions | None = None) -> dict[str, Any]:
    """Describe where a sweep ran: CPU, cores, torch threads of each task, workers and
    backend (from ``options``; default: one task at a time here), versions."""
    import os

    options = options or ParallelOptions()
    return {
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": options.worker_threads or torch.get_num_threads(),
        "jobs": options.jobs,
        "backend": options.backend,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def run_bench(spec: BenchSpec, *, progress: bool = True) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run the sweep; return (records, extras).

    One record per (method, ratio, seed) with at least ``RECORD_KEYS``; ``passes`` is the
    per-sample gradient evaluations (a Hessian-vector product counts two) divided by the
    retain size, ``dist_to_optimum`` the distance to the float64 retain optimum (convex
    models trained by full-batch gradient descent; None otherwise). Retraining is
    always run (timed) as the reference; the methods of one (seed, ratio) cell run in the
    same process, one after another, so their times compare. ``extras`` holds ROC curves of
    the last seed and the machine description.

    Tasks run on ``spec.jobs`` workers (see :mod:`.parallel`) in two waves: the trained run
    of each seed and every shadow model of the per-example attack, then each (seed, ratio)
    cell and each per-example attack on a (seed, ratio, method); with ``tune_baselines`` the
    attacks wait for a third wave, since each applies the options its cell chose. Records
    are the same, and in the same order, for any number of workers, apart from the timing
    fields.
    """
    options = spec.parallel_options()
    # absolute, so workers started anywhere find the runs
    spec = dataclasses.replace(spec, runs_dir=Path(spec.runs_dir).resolve())
    inner_progress = progress and options.in_process
    ulira = "ulira" in spec.attacks
    seeds = range(spec.seeds)
    pools = {seed: _pool(spec, seed) for seed in seeds} if ulira else {}
    train_tasks: list[tuple] = [(_train_seed, (spec, seed, inner_progress)) for seed in seeds]
    for seed, pool in pools.items():
        shadows = shadow_tasks(
            spec.config(seed),
            pool,
            _shadow_root(spec),
            n_shadows=spec.ulira_shadows,
            n_targets=spec.ulira_targets,
            seed=seed,
        )
        train_tasks += [(build_shadow, args) for args in shadows]
    # the most expensive first: retraining costs more at small ratios
    cells = sorted(
        ((seed, r) for seed in seeds for r in range(len(spec.ratios))), key=lambda c: spec.ratios[c[1]]
    )
    cell_tasks: list[tuple] = [(_bench_cell, (spec, seed, r, inner_progress)) for seed, r in cells]
    attack_cells = [(seed, r, m) for seed, r in cells for m in spec.methods] if ulira else []
    # a tuned baseline's attack needs the options its cell chose: then the attacks wait a wave
    attacks_later = spec.tune_baselines
    if not attacks_later:
        cell_tasks += [_attack_task(spec, key, pools, {}) for key in attack_cells]

    total = len(train_tasks) + len(cells) + len(attack_cells)
    desc = f"bench {spec.dataset}/{spec.model}"
    bar = progress_bar(total=total, desc=desc, enabled=progress, leave=True, unit="task")
    cell_results: dict[tuple[int, int], tuple[list[dict[str, Any]], dict[str, Any]]] = {}
    attacks: dict[tuple[int, int, str], Any] = {}

    def collect(tasks: list[tuple]) -> None:
        for (fn, args), result in zip(tasks, runner.map(_run_task, tasks), strict=True):
            if fn is _bench_cell:
                cell_results[args[1], args[2]] = result
            else:
                attacks[args[1], args[2], args[3]] = result
            bar.update()

    with TaskRunner(options) as runner:
        bar.set_postfix_str("training")
        for _ in runner.map(_run_task, train_tasks):
            bar.update()
        bar.set_postfix_str("cells")
        collect(cell_tasks)
        if attacks_later and attack_cells:
            bar.set_postfix_str("attacks")
            collect([_attack_task(spec, key, pools, cell_results) for key in attack_cells])
    bar.close()

    records: list[dict[str, Any]] = []
    curves: dict[str, Any] = {}
    for seed in seeds:
        for r in range(len(spec.ratios)):
            cell_records, cell_curves = cell_results[seed, r]
            curves |= cell_curves
            for record in cell_records:
                if ulira and not record.get("diverged"):
                    _add_ulira(record, attacks[seed, r, record["method"]])
            if ulira:
                _per_example_gaps(cell_records)
            records.extend(cell_records)
    return records, {
        "roc": curves,
        "machine": machine_info(options),
        "config": dataclasses.asdict(spec.config(0)) | {"seed": "0.." + str(spec.seeds - 1)},
    }


def _run_task(fn: Callable[..., Any], args: tuple) -> Any:
    """Run one task of a wave (the waves mix task kinds): ``fn(*args)``."""
    return fn(*args)


def _pool(spec: BenchSpec, seed: int) -> np.ndarray:
    """The per-example attack's pool of the seed's run (ConfigError when it cannot be drawn)."""
    n_train = _n_train(spec, seed)
    return shadow_pool(n_train, ulira_pool_size(spec.ulira_pool, n_train), seed)


def _n_train(spec: BenchSpec, seed: int) -> int:
    """The number of training samples of the seed's run, without training it."""
    return load_training_data(spec.config(seed)).n_train


def _shadow_root(spec: BenchSpec) -> Path:
    """Where the sweep keeps its shadow runs."""
    return Path(spec.runs_dir) / "shadows"


def _train_seed(spec: BenchSpec, seed: int, progress: bool) -> Path:
    """Task: train (or find) the run of ``seed``; return its directory."""
    return trained_run(spec.config(seed), spec.runs_dir, progress=progress, device=spec.device).path


def cell_forget_ids(n_train: int, ratio: float, seed: int, r_index: int) -> np.ndarray:
    """The forget set of a sweep's (seed, ratio) cell: ``ratio`` of ``n_train`` ids drawn with
    seed 1000 * ``seed`` + ``r_index`` (the ratio's place in the sweep's list), so that a
    benchmark studying a bench cell forgets the same ids."""
    return random_forget_ids(n_train, ratio, seed=1000 * seed + r_index)


def _forget_ids(spec: BenchSpec, run: Run, seed: int, r_index: int) -> np.ndarray:
    """The forget set of a (seed, ratio) cell."""
    return cell_forget_ids(run.n_train, spec.ratios[r_index], seed, r_index)


def _bench_cell(
    spec: BenchSpec, seed: int, r_index: int, progress: bool
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Task: retraining and every method on one (seed, ratio) cell, in this process.

    Returns (one record per method without the per-example attack's fields, ROC curves).
    """
    with device_scope(resolve_device(spec.device)):
        return _cell(spec, seed, r_index, progress)


OPTIMUM_MAX_ROWS = 1_000_000
"""Above this many training rows the float64 retain optimum (``dist_to_optimum``) is not computed:
its solve costs more than the rest of the sweep, and retraining is the reference there."""


def _cell(
    spec: BenchSpec, seed: int, r_index: int, progress: bool
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    config = spec.config(seed)
    run = trained_run(config, spec.runs_dir, progress=progress, device=spec.device)
    ratio = spec.ratios[r_index]
    # what a per-step history (DeltaGrad's: w_t and the batch gradient of every step) takes;
    # also builds the objective (loads the data) before anything is timed
    itemsize = torch.finfo(config.torch_dtype).bits // 8
    full_history_bytes = 2 * run.total_steps * run.objective.dim * itemsize
    forget = _forget_ids(spec, run, seed, r_index)
    # one line per phase of the cell: the retraining, then each method
    phases = progress_bar(total=len(spec.methods), desc=f"cell {ratio:.0%} seed {seed}", enabled=progress)
    phases.set_postfix_str("retraining")
    started = time.perf_counter()
    evals_before = run.objective.grad_evals
    retrained = retrain(run, forget, progress=progress)
    retrain_time = time.perf_counter() - started
    retrain_evals = run.objective.grad_evals - evals_before
    ref = reference(run, retrained, forget, attacks=spec.attacks, seed=seed)
    # an SGD run stops wherever its batches leave it: the retain optimum is no reference there
    full_batch = run.plan.batch_size >= run.n_train
    optimum = retain_optimum(run, forget) if full_batch and run.n_train <= OPTIMUM_MAX_ROWS else None
    retain_size = run.n_train - forget.size
    records: list[dict[str, Any]] = []
    curves: dict[str, Any] = {}
    tuning: TuningData | None = None
    for method in spec.methods:
        phases.set_postfix_str(method)
        options = spec.method_options.get(method, {})
        recording: dict[str, float | int] | None = {"grad_evals": 0, "passes": 0.0, "seconds": 0.0}
        tuned: dict[str, Any] = {}
        if method == "retrain":
            params, time_s, evals, hist_bytes, diag = retrained, retrain_time, retrain_evals, 0, {}
        else:
            unlearner = get_method(method, **options)
            recording = run.recording_cost(unlearner.history_read())
            if spec.tune_baselines and tunable(method):
                tuning = tuning or tuning_data(run, forget, seed)
                choice = tune(method, options, UnlearnRequest(run, forget), tuning)
                result, tuned = choice.result, _tuning_fields(choice, retain_size)
            else:
                result = unlearner.unlearn(UnlearnRequest(run, forget))
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
            # the one-off cost at training of the history the method reads (None: not recorded)
            "recording_grad_evals": None if recording is None else recording["grad_evals"],
            "recording_passes": None if recording is None else recording["passes"],
            "recording_s": None if recording is None else recording["seconds"],
            "train_passes": run.manifest.get("train_passes"),
            "retrain_time_s": retrain_time,
            "speedup_vs_retrain": retrain_time / max(time_s, 1e-12),
            "train_time_s": run.manifest.get("train_seconds"),
            # of this worker process so far: the data, the run and every method of the cell
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "ulira_auc": None,
            **tuned,
            **{f"diag_{k}": v for k, v in diag.items() if isinstance(v, int | float | bool | str)},
        }
        phases.update()
        if not torch.isfinite(params).all():  # a diverged method is reported, not fatal
            records.append({**record, **DIVERGED})
            continue
        metrics = assess(run, params, ref, forget, attacks=spec.attacks, seed=seed, keep_curves=True)
        metrics["dist_to_optimum"] = param_distance(params, optimum) if optimum is not None else None
        if optimum is not None and no_certificate_reason(run) is None:
            # every certificate is checked where the float64 retain optimum is known
            bound = certify(run, params, retained_ids(run.n_train, forget)).distance_bound
            metrics["certified_distance"] = bound
            metrics["certificate_holds"] = metrics["dist_to_optimum"] <= bound
        roc = metrics.pop("roc", {})
        if roc:
            curves[f"{method} @ {ratio:.0%}"] = roc["unlearned"]
            curves[f"retrain @ {ratio:.0%}"] = roc["retrain_"]
        records.append({**record, **metrics})
    phases.close()
    return records, curves


def _tuning_fields(choice: TunedResult, retain_size: int) -> dict[str, Any]:
    """A tuned baseline's record fields: the values chosen (JSON text), the chosen model's score
    and its terms, and what the whole grid cost (``time_s`` and ``passes`` stay the chosen
    configuration's own)."""
    return {
        "tuned_options": json.dumps(choice.chosen, sort_keys=True),
        **{f"tuning_{k}": v for k, v in choice.score.items()},
        "tuning_configurations": choice.configurations,
        "tuning_passes": choice.grid_evals / retain_size,
        "tuning_s": choice.grid_s,
    }


def _attack_task(
    spec: BenchSpec,
    key: tuple[int, int, str],
    pools: dict[int, np.ndarray],
    cell_results: dict[tuple[int, int], tuple[list[dict[str, Any]], dict[str, Any]]],
) -> tuple:
    """The per-example attack task of (seed, ratio index, method): the method's options, with
    what its cell chose when it was tuned (``cell_results`` holds the cells run so far)."""
    seed, r_index, method = key
    options = dict(spec.method_options.get(method, {}))
    for record in cell_results.get((seed, r_index), ([], {}))[0]:
        if record["method"] == method and record.get("tuned_options"):
            options.update(json.loads(record["tuned_options"]))
    return (_ulira_task, (spec, seed, r_index, method, pools[seed], options))


def _ulira_task(
    spec: BenchSpec, seed: int, r_index: int, method: str, pool: np.ndarray, options: dict[str, Any]
) -> ULiRAResult | Exception:
    """Task: the per-example attack against ``method`` with ``options`` at one (seed, ratio), on
    shadows of the seed's ``pool`` trained before. Returns the result, or the exception it
    raised: that is raised when the record is merged, unless the method diverged on the run
    itself (then, as in a serial sweep, the attack is not reported)."""
    factory = ShadowFactory(spec.config(seed), pool, _shadow_root(spec))
    try:
        return run_ulira(
            factory,
            method,
            options,
            forget_fraction=spec.ratios[r_index],
            n_shadows=spec.ulira_shadows,
            n_targets=spec.ulira_targets,
            seed=seed,
            cache={},
        )
    except Exception as exc:  # deferred: raised at merge time, when the record needs it
        return exc


def _per_example_gaps(cell: list[dict[str, Any]]) -> None:
    """Give every record of a cell retraining's per-example attack values (``retrain_ulira_*``,
    from the cell's ``retrain`` row) and recompute its ``avg_gap`` with them; a cell without
    a retrain row, or a diverged record, is left as it is."""
    reference = next((r for r in cell if r["method"] == "retrain" and not r.get("diverged")), None)
    if reference is None:
        return
    for record in cell:
        if record.get("diverged"):
            continue
        for key in PER_EXAMPLE_GAP_METRICS:
            record[f"retrain_{key}"] = reference.get(key)
        add_average_gaps(record)


def _add_ulira(record: dict[str, Any], result: ULiRAResult | Exception) -> None:
    """Put the per-example attack's result into ``record`` (raise the attack's error, if any)."""
    if isinstance(result, Exception):
        raise result
    record["ulira_auc"] = result.auc
    record["ulira_bacc"] = result.balanced_accuracy
    record["ulira_tpr_1pct"] = result.tpr_at_1pct_fpr
