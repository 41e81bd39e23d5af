"""What recording a history costs training is counted, charged to the methods that read it,
and weighed against cheaper requests (the break-even count)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from miniunlearn.evaluation.breakeven import break_even, break_even_table
from miniunlearn.methods import get_method
from miniunlearn.training.schedule import checkpoint_steps


def test_full_batch_run_records_its_costs(convex_run) -> None:
    manifest = convex_run.manifest
    n, steps = convex_run.n_train, convex_run.total_steps
    # training's own passes: one full-batch gradient a step
    assert manifest["train_grad_evals"] == steps * n and manifest["train_passes"] == steps
    recording = manifest["recording"]
    # full batch: every checkpoint's gradient is the step's own, except the final one (one pass)
    assert recording["history-mini"]["grad_evals"] == 0
    assert recording["history-final"]["grad_evals"] == n
    curvature = manifest["curvature"]
    assert recording["history-curvature"]["grad_evals"] == 2 * curvature["rank"] * curvature["iters"] * n
    assert recording["history-full"]["grad_evals"] == 0 and recording["history-full"]["seconds"] > 0
    mini = convex_run.recording_cost(get_method("mini").history_read())
    assert mini["grad_evals"] == n + 2 * curvature["rank"] * curvature["iters"] * n
    assert math.isclose(mini["passes"], mini["grad_evals"] / n)
    assert convex_run.recording_cost(get_method("deltagrad").history_read())["grad_evals"] == 0
    assert convex_run.recording_cost(get_method("newton").history_read()) == {
        "grad_evals": 0,
        "passes": 0.0,
        "seconds": 0.0,
    }
    assert get_method("warmstart", match_residual=False).history_read() == ()


def test_sgd_run_charges_the_checkpoint_gradients_to_the_minimal_history(sgd_run) -> None:
    n, config = sgd_run.n_train, sgd_run.config
    from miniunlearn.training.recording import early_fractions

    checkpoints = checkpoint_steps(sgd_run.total_steps, config.checkpoints, early_fractions(config))
    # a mini-batch step's gradient is not the full one: each checkpoint costs a pass (the last,
    # at the end of training, is what a method reading only the final gradient is charged)
    recording = sgd_run.manifest["recording"]
    assert recording["history-mini"]["grad_evals"] == (len(checkpoints) - 1) * n
    assert recording["history-final"]["grad_evals"] == n
    assert sgd_run.recording_cost(get_method("warmstart").history_read())["grad_evals"] == n
    batch_evals = sgd_run.manifest["train_grad_evals"]
    assert batch_evals == config.epochs * n  # every sample once an epoch


def _record(method: str, evals: float, time_s: float, rec_evals: float, rec_s: float, seed: int = 0) -> dict:
    return {
        "dataset": "d",
        "model": "m",
        "ratio": 0.1,
        "seed": seed,
        "method": method,
        "grad_evals": evals,
        "time_s": time_s,
        "passes": evals / 90,
        "recording_grad_evals": rec_evals,
        "recording_passes": rec_evals / 100,
        "recording_s": rec_s,
    }


@settings(max_examples=50, deadline=None)
@given(
    st.floats(1, 1e6),
    st.floats(1, 1e6),
    st.floats(0, 1e7, allow_subnormal=False),
    st.floats(0.01, 100),
    st.floats(0.01, 100),
    st.floats(0, 1e3, allow_subnormal=False),
)
def test_at_the_break_even_count_both_costs_are_equal(c_m, c_p, rec, t_m, t_p, rec_s) -> None:
    rows = break_even([_record("mini", c_m, t_m, rec, rec_s), _record("peer", c_p, t_p, 0.0, 0.0)])
    (row,) = rows
    n = row["requests_evals"]
    if rec == 0:
        assert n == 0
    elif c_p <= c_m:
        assert n is None
    else:
        assert math.isclose(rec + n * c_m, n * c_p, rel_tol=1e-9)
    s = row["requests_seconds"]
    if rec_s > 0 and t_p > t_m:
        assert math.isclose(rec_s + s * t_m, s * t_p, rel_tol=1e-9)


def test_break_even_averages_seeds_and_renders() -> None:
    records = [
        _record("mini", 10, 1.0, 500, 5.0, seed=0),
        _record("mini", 14, 1.4, 500, 5.0, seed=1),
        _record("nystrom", 32, 2.2, 0, 0.0, seed=0),
        _record("nystrom", 28, 1.8, 0, 0.0, seed=1),
        _record("retrain", 1000, 50.0, 0, 0.0),
        {**_record("broken", 1, 1, 0, 0), "recording_grad_evals": None},
    ]
    rows = {r["peer"]: r for r in break_even(records)}
    assert set(rows) == {"nystrom", "retrain"}  # records without recording fields are skipped
    assert rows["nystrom"]["requests_evals"] == 500 / (30 - 12)
    assert math.isclose(rows["nystrom"]["requests_seconds"], 5.0 / (2.0 - 1.2))
    table = break_even_table(list(rows.values()))
    assert "| 10% | nystrom |" in table and "| 28 | 7 |" in table
    slower = break_even([_record("mini", 40, 3.0, 500, 5.0), _record("nystrom", 30, 2.0, 0, 0.0)])
    assert "| never | never |" in break_even_table(slower)
    assert break_even_table([]) == "" and break_even(records, method="absent") == []
    assert np.isfinite(rows["retrain"]["requests_evals"])


def test_the_sketch_is_recorded_on_a_seeded_subsample(tmp_path) -> None:
    import dataclasses

    from conftest import CONVEX
    from miniunlearn.training import TrainConfig, train_run
    from miniunlearn.training.recording import curvature_rows

    config = dataclasses.replace(CONVEX, curvature_rows=500, history="mini")
    run = train_run(config, tmp_path / "run", progress=False)
    curvature = run.manifest["curvature"]
    assert curvature["rows"] == 500
    assert curvature["grad_evals"] == 2 * curvature["rank"] * curvature["iters"] * 500
    rows = curvature_rows(config, run.n_train)
    assert rows.size == 500 and np.unique(rows).size == 500
    assert np.array_equal(rows, curvature_rows(config, run.n_train))  # seeded
    assert curvature_rows(dataclasses.replace(config, curvature_rows=None), run.n_train) is None
    assert curvature_rows(dataclasses.replace(config, curvature_rows=10**6), run.n_train) is None
    # a config stored before the option existed sketched every row
    stored = {k: v for k, v in config.to_dict().items() if k != "curvature_rows"}
    assert TrainConfig.from_dict(stored).curvature_rows is None
    # mini still serves it well (measured: 2.2e-5 in 4.2 passes, as with every row; original model 0.22)
    from miniunlearn.experiment.optimum import retain_optimum
    from miniunlearn.ids import random_forget_ids
    from miniunlearn.methods import UnlearnRequest

    forget = random_forget_ids(run.n_train, 0.2, seed=1)
    result = get_method("mini").unlearn(UnlearnRequest(run, forget))
    optimum = retain_optimum(run, forget)
    original = float((run.load_model_params() - optimum).norm())
    assert float((result.params - optimum).norm()) < 1e-3 * original
