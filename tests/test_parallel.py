"""Sweeps and shadow models as parallel tasks: same records for any number of workers or backend,
and safe concurrent building of the same run."""

from __future__ import annotations

import math
import multiprocessing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from miniunlearn.errors import ConfigError, RunDirError
from miniunlearn.evaluation.ulira import planned_trainings, ulira_attack
from miniunlearn.experiment import parallel
from miniunlearn.experiment.bench import BenchSpec, run_bench
from miniunlearn.experiment.parallel import (
    BackendUnavailable,
    ParallelOptions,
    TaskRunner,
    open_or_train,
)
from miniunlearn.experiment.shadows import ShadowFactory, build_shadow, shadow_tasks, ulira_metrics
from miniunlearn.training import TrainConfig, open_run, train_run

# timings, and the memory of whichever process ran the cell: they may differ between runs
VARYING_FIELDS = {
    "time_s",
    "speedup_vs_retrain",
    "retrain_time_s",
    "train_time_s",
    "recording_s",
    "peak_rss_gb",
}
TINY = TrainConfig(dataset="digits", model="logreg", epochs=30, lr=1.0, lam=0.01, history="mini", seed=0)


def _spec(runs_dir: Path, **kw: Any) -> BenchSpec:
    """The tiny sweep of these tests: digits, logreg, 2 seeds x 2 ratios, three methods."""
    fields: dict[str, Any] = {
        "dataset": "digits",
        "model": "logreg",
        "ratios": [0.1, 0.3],
        "methods": ["retrain", "finetune", "mini"],
        "seeds": 2,
        "runs_dir": runs_dir,
        "train_overrides": {"epochs": 30},
        "threads": 1,
    }
    return BenchSpec(**(fields | kw))


def _ulira_spec(runs_dir: Path, **kw: Any) -> BenchSpec:
    """The tiny sweep with the per-example attack: one seed, 4 shadows and 2 targets."""
    return _spec(
        runs_dir,
        seeds=1,
        methods=["retrain", "finetune"],
        attacks=("population", "ulira"),
        ulira_pool=40,
        ulira_shadows=4,
        ulira_targets=2,
        **kw,
    )


def _same(a: Any, b: Any) -> bool:
    """Equal values, NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def assert_same_records(left: list[dict[str, Any]], right: list[dict[str, Any]]) -> None:
    """Same records in the same order: same keys (in order), same values but for VARYING_FIELDS."""
    assert len(left) == len(right)
    for a, b in zip(left, right, strict=True):
        assert list(a) == list(b)
        diff = {k: (a[k], b[k]) for k in a if k not in VARYING_FIELDS and not _same(a[k], b[k])}
        assert not diff, f"{a['method']} @ {a['ratio']} seed {a['seed']}: {diff}"


@pytest.fixture(scope="module")
def serial(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Records of the tiny sweep run one cell after another in this process."""
    records, _ = run_bench(_spec(tmp_path_factory.mktemp("serial"), jobs=1), progress=False)
    return records


@pytest.fixture(scope="module")
def serial_ulira(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Records of the tiny per-example-attack sweep run in this process."""
    records, _ = run_bench(_ulira_spec(tmp_path_factory.mktemp("serial-ulira"), jobs=1), progress=False)
    return records


def test_two_jobs_give_the_serial_records(serial: list[dict[str, Any]], tmp_path: Path) -> None:
    records, extras = run_bench(_spec(tmp_path, jobs=2), progress=False)
    assert_same_records(serial, records)
    assert [(r["seed"], r["ratio"], r["method"]) for r in records] == [
        (s, r, m) for s in (0, 1) for r in (0.1, 0.3) for m in ("retrain", "finetune", "mini")
    ]
    assert extras["machine"]["jobs"] == 2 and extras["machine"]["torch_threads"] == 1


def test_parallel_shadows_give_the_serial_attack(serial_ulira: list[dict[str, Any]], tmp_path: Path) -> None:
    records, _ = run_bench(_ulira_spec(tmp_path, jobs=2), progress=False)
    assert_same_records(serial_ulira, records)
    assert all(isinstance(r["ulira_auc"], float) for r in records)
    assert len(list((tmp_path / "shadows").glob("shadow-*"))) == 6  # 4 shadows + 2 targets, each once


def test_the_average_gap_reads_the_per_example_attack(serial_ulira: list[dict[str, Any]]) -> None:
    """With the per-example attack, avg_gap's privacy terms are its AUC and TPR at 1 % FPR as
    differences from the cell's retrained model; the population score keeps MIA efficacy."""
    for record in serial_ulira:
        retrain = next(r for r in serial_ulira if r["method"] == "retrain" and r["ratio"] == record["ratio"])
        assert record["retrain_ulira_auc"] == retrain["ulira_auc"]
        assert record["retrain_ulira_tpr_1pct"] == retrain["ulira_tpr_1pct"]
        gaps = [abs(record[f"{split}_acc_gap"]) for split in ("retain", "forget", "test")]
        gaps += [abs(record[k] - retrain[k]) for k in ("ulira_auc", "ulira_tpr_1pct")]
        assert record["avg_gap"] == pytest.approx(100 * sum(gaps) / 5)
        population = [abs(record["mia_efficacy"] - record["retrain_mia_efficacy"])] + gaps[:3]
        assert record["avg_gap_population"] == pytest.approx(100 * sum(population) / 4)
        if record["method"] == "retrain":
            assert record["avg_gap"] == 0


def test_ulira_metrics_with_a_runner_equal_without(tmp_path: Path) -> None:
    run = train_run(TINY, tmp_path / "run", progress=False)
    kw: dict[str, Any] = {"forget_fraction": 0.2, "pool_size": 40, "n_shadows": 3, "n_targets": 1, "seed": 0}
    methods = {"": ("finetune", {})}
    with TaskRunner(ParallelOptions(jobs=2)) as runner:
        pre_trained = ulira_metrics(run, methods, runner=runner, **kw)
    # the shadows are on disk now: train them again, serially, in a fresh place and compare
    (tmp_path / "run" / "shadows").rename(tmp_path / "first-shadows")
    assert ulira_metrics(run, methods, **kw) == pre_trained


def test_planned_trainings_are_the_models_the_attack_trains() -> None:
    asked: list[tuple[list[int], int]] = []

    def train_fn(members: np.ndarray, seed: int) -> np.ndarray:
        asked.append((members.tolist(), seed))
        return members

    def confidence_fn(state: Any, ids: np.ndarray) -> np.ndarray:
        return np.sin(ids + 0.1 * len(state))

    ulira_attack(30, train_fn, lambda s, *_: s, confidence_fn, n_shadows=5, n_targets=2, forget_fraction=0.3)
    plans = planned_trainings(30, n_shadows=5, n_targets=2, seed=0)
    assert [(m.tolist(), s) for m, s in plans] == asked


def _build_at_barrier(barrier: Any, args: tuple, out: Any) -> None:
    """Child process: wait for the other one, then build the same shadow; report its path."""
    torch.set_num_threads(1)
    barrier.wait()
    out.put(str(build_shadow(*args)))


def test_two_processes_building_one_shadow_get_the_same_valid_run(tmp_path: Path) -> None:
    pool = np.arange(0, 400, 10)
    (args,) = shadow_tasks(TINY, pool, tmp_path, n_shadows=2, n_targets=1, seed=0)[:1]
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_build_at_barrier, args=(barrier, args, out)) for _ in range(2)]
    for p in procs:
        p.start()
    paths = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert paths[0] == paths[1]
    run = open_run(paths[0])  # complete, every hash checks
    assert run.n_train == int(np.asarray(args[3]).size)
    assert [p.name for p in tmp_path.iterdir()] == [Path(paths[0]).name]  # no partial left
    # and the factory opens that same run
    factory_run, _ = ShadowFactory(TINY, pool, tmp_path).train(args[3], args[4])
    assert factory_run.path == Path(paths[0])


def test_the_loser_of_a_race_opens_the_winners_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The directory appears after the loser checked for it: its own rename fails, it opens the run."""
    path = tmp_path / "run"
    real_train_run = parallel.train_run

    def winner_first(config: TrainConfig, out: Path, **kw: Any) -> Any:
        real_train_run(config, out, **kw)  # the other process wins ...
        return real_train_run(config, out, **kw)  # ... so this one raises RunDirError

    monkeypatch.setattr(parallel, "train_run", winner_first)
    run = open_or_train(TINY, path)
    assert run.path == path and run.n_train > 0


def test_open_or_train_reraises_when_no_run_appeared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fails(*args: Any, **kw: Any) -> Any:
        raise RunDirError("cannot write")

    monkeypatch.setattr(parallel, "train_run", fails)
    with pytest.raises(RunDirError, match="cannot write"):
        open_or_train(TINY, tmp_path / "run")


def test_task_results_come_back_in_order_with_pinned_threads() -> None:
    with TaskRunner(ParallelOptions(jobs=2, threads=1)) as runner:
        results = list(runner.map(_square_and_threads, [(i,) for i in range(6)]))
    assert results == [(i * i, 1) for i in range(6)]


def _square_and_threads(i: int) -> tuple[int, int]:
    return i * i, torch.get_num_threads()


def test_a_task_error_is_raised_as_its_own_type() -> None:
    with TaskRunner(ParallelOptions(jobs=2)) as runner, pytest.raises(ConfigError, match="task 3"):
        list(runner.map(_fail_on_three, [(i,) for i in range(5)]))


def _fail_on_three(i: int) -> int:
    if i == 3:
        raise ConfigError("task 3 failed")
    return i


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"jobs": 0}, "--jobs"),
        ({"threads": 0}, "--threads"),
        ({"backend": "dask"}, "unknown backend"),
        ({"address": "auto"}, "--backend ray"),
    ],
)
def test_bad_parallel_options_are_config_errors(kw: dict[str, Any], message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        _spec(tmp_path, **kw)


def test_ray_backend_without_ray_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(BackendUnavailable, match=r"pip install 'miniunlearn\[cluster\]'"):
        TaskRunner(ParallelOptions(backend="ray", jobs=2)).__enter__()


def test_cli_bench_ray_without_ray_is_a_plain_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    from miniunlearn.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)
    argv = ["bench", "--dataset", "digits", "--ratios", "0.1", "--methods", "retrain", "--seeds", "1"]
    code = main([*argv, "--runs-dir", str(tmp_path), "--backend", "ray", "--jobs", "2", "--epochs", "5"])
    err = capsys.readouterr().err
    assert code != 0 and "pip install" in err and "Traceback" not in err


@pytest.mark.slow
def test_ray_backend_gives_the_joblib_records(serial_ulira: list[dict[str, Any]], tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    records, extras = run_bench(_ulira_spec(tmp_path, jobs=2, backend="ray"), progress=False)
    assert not ray.is_initialized()  # the runtime it started is shut down
    assert_same_records(serial_ulira, records)
    assert extras["machine"]["backend"] == "ray"


def test_a_run_folder_holding_another_recipe_is_refused_not_reused(tmp_path: Path) -> None:
    """A shadow or bench run copied or renamed into the place of another recipe's is never
    reused: the stored config must be the one asked for."""
    from dataclasses import replace

    config = TrainConfig(dataset="digits", epochs=5, lr=1.0, lam=0.02, history="none", seed=0)
    train_run(config, tmp_path / "run", progress=False)
    assert parallel.open_or_train(config, tmp_path / "run").config == config
    with pytest.raises(RunDirError, match="another recipe .*seed 0 \\(wanted 1\\)"):
        parallel.open_or_train(replace(config, seed=1), tmp_path / "run")
