"""Streams of requests through the workflow: each request starts from the retain state its
predecessor's certificate measured (no pass before its first step), and a stream ends where
the union would."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import CONVEX
from miniunlearn.certificate import certify_state
from miniunlearn.deletion import current_version, forget, load_version_params
from miniunlearn.deletion.retain_state import load_retain_state
from miniunlearn.errors import ConfigError
from miniunlearn.experiment.optimum import retain_optimum
from miniunlearn.experiment.stream import (
    StreamSpec,
    fixed_point_bound,
    fixed_point_distances,
    float32_resolution,
    run_stream,
    stream_ids,
    stream_table,
)
from miniunlearn.ids import retained_ids
from miniunlearn.methods import UnlearnRequest, get_method
from miniunlearn.training import open_run, retrain, train_run


def test_the_next_request_starts_from_the_certified_state(convex_run, tmp_path: Path) -> None:
    run_dir = Path(shutil.copytree(convex_run.path, tmp_path / "run"))
    first = forget(run_dir, np.array([3]), request_id="a")
    run = open_run(run_dir)
    state = load_retain_state(run, first.version.sha256, np.array([3]))
    assert state is not None
    value, grad = state
    params = load_version_params(run, first.version)
    retain = np.setdiff1d(np.arange(run.n_train), [3])
    exact_value, exact_grad = run.objective.value_and_grad(params.double(), retain)
    assert torch.allclose(grad, exact_grad, rtol=0, atol=1e-12) and abs(float(value - exact_value)) < 1e-12
    # bound to the model and the ids: another set of ids finds nothing
    assert load_retain_state(run, first.version.sha256, np.array([4])) is None
    second = forget(run_dir, np.array([7]), request_id="b")
    diag = second.record["diagnostics"]
    # the identity from the stored state replaces the pass a later request used to start with
    assert diag["exact_retain_passes"] == diag["steps"] - int(diag["last_step_unverified"])
    union = get_method("mini").unlearn(UnlearnRequest(run, np.array([3, 7]))).params
    now = load_version_params(open_run(run_dir), current_version(open_run(run_dir)))
    # both stop at the solver's tolerance (rtol 1e-4): measured 7e-5 of the move apart
    assert float((now - union).norm()) < 1e-3 * float((union - run.load_model_params()).norm())


def test_stream_ids_are_disjoint_and_seeded() -> None:
    fixed = stream_ids(1000, StreamSpec(30, request_size=3))
    assert all(ids.size == 3 for ids in fixed)
    assert np.unique(np.concatenate(fixed)).size == 90
    mixed = stream_ids(1000, StreamSpec(30, mixed=True, seed=4))
    sizes = [ids.size for ids in mixed]
    assert min(sizes) >= 1 and max(sizes) <= 10 and len(set(sizes)) > 1
    assert all(
        np.array_equal(a, b)
        for a, b in zip(mixed, stream_ids(1000, StreamSpec(30, mixed=True, seed=4)), strict=True)
    )
    with pytest.raises(ConfigError, match="whole training set"):
        stream_ids(100, StreamSpec(50, request_size=2))
    with pytest.raises(ConfigError, match="--stream"):
        StreamSpec(0)
    # --stream-seed: another draw of the same stream, and a seed out of range refused
    other = stream_ids(1000, StreamSpec(30, request_size=3, seed=1))
    assert np.unique(np.concatenate(other)).size == 90
    assert not np.array_equal(np.concatenate(other), np.concatenate(fixed))
    with pytest.raises(ConfigError, match="--stream-seed"):
        StreamSpec(3, seed=-1)


def test_the_cli_refuses_a_stream_seed_without_a_stream(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from miniunlearn.cli import main

    args = ["bench", "--dataset", "digits", "--model", "logreg", "--stream-seed", "2"]
    assert main([*args, "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "give --stream as well" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_stream_ends_where_the_union_does(convex_run, tmp_path: Path) -> None:
    records, summary = run_stream(convex_run, StreamSpec(8, request_size=2), workdir=tmp_path, progress=False)
    assert [r["index"] for r in records] == list(range(8)) and summary["n_ids"] == 16
    assert all(r["method"] == "mini" and r["certified_distance"] is not None for r in records)
    # each request: the solver's passes plus the certificate's one, none when its last measured
    # step is the certificate (a small request's quasi-Newton steps)
    assert all(r["passes_with_certificate"] - r["passes"] in (0.0, 1.0) for r in records)
    # the passes' histogram counts every request once, by its passes rounded
    counts = summary["passes_counts"]
    assert sum(counts.values()) == 8
    assert counts == {
        str(k): sum(round(r["passes_with_certificate"]) == k for r in records) for k in map(int, counts)
    }
    # a small request's trace: |g_R - c| at the start and after each measured step; it ends
    # below the tolerance, or the safeguarded solve took over with steps of its own
    small = [r for r in records if r["step_tol"] is not None]
    assert small and all(
        r["step_grad_norms"][-1] <= r["step_tol"] or r["steps"] > len(r["step_grad_norms"]) - 1 for r in small
    )
    assert all(r["steps"] >= len(r["step_grad_norms"]) - 1 >= 1 for r in small)
    every = np.sort(np.concatenate(stream_ids(convex_run.n_train, StreamSpec(8, request_size=2))))
    original = float((convex_run.load_model_params() - retrain(convex_run, every)).norm())
    # measured: 1.2e-6 after the stream, 3.2e-6 for the union at once, the original model 0.047
    assert summary["final_dist_to_retrain"] < 1e-3 * original
    assert summary["final_dist_to_retrain"] <= 2 * summary["union_dist_to_retrain"] + 1e-9
    assert summary["final_dist_to_union"] < 1e-3 * original
    assert summary["final_certified_distance"] >= 0
    # the final certificate checked against the float64 retain optimum, as reported; the
    # optimum differs from the fixed point by what training left, and the two distances by no more
    apart = float(
        (retain_optimum(convex_run, every) - retain_optimum(convex_run, every, match_residual=True)).norm()
    )
    assert abs(summary["final_dist_to_optimum"] - summary["final_dist_to_fixed_point"]) <= apart + 1e-12
    assert summary["final_dist_to_optimum"] <= summary["final_certified_distance"]
    assert summary["final_certificate_holds"] is True
    assert "(held)" in stream_table(summary)
    assert summary["certified_requests"] == 8 and "(8 requests certified)" in stream_table(summary)
    assert "latency median / p95" in stream_table(summary)
    assert "distance to the union served at once" in stream_table(summary)
    assert not (tmp_path / "run").exists()  # the copy is removed


def test_float32_resolution_is_half_a_spacing_per_parameter() -> None:
    # spacing(1.0) = 2^-23 and spacing(2.0) = 2^-22 in float32: half of each, as a norm
    w = torch.tensor([1.0, -1.0, 2.0, 0.0], dtype=torch.float64)
    expected = np.sqrt(2 * 2.0**-48 + 2.0**-46 + (np.spacing(np.float32(0)) / 2) ** 2)
    assert float32_resolution(w) == pytest.approx(expected, rel=1e-12)


def test_a_stream_reports_distances_to_the_exact_fixed_point(exact_run, tmp_path: Path) -> None:
    spec = StreamSpec(4, request_size=2)
    _, summary = run_stream(exact_run, spec, workdir=tmp_path, progress=False)
    every = np.sort(np.concatenate(stream_ids(exact_run.n_train, spec)))
    point = retain_optimum(exact_run, every, match_residual=True)
    retrained = retrain(exact_run, every)
    assert summary["retrain_dist_to_fixed_point"] == pytest.approx(float((retrained.double() - point).norm()))
    # the stream aims at the residual-matched point, not at the retain optimum
    apart = float((retain_optimum(exact_run, every) - point).norm())
    # measured: 2.6e-6 (stream) and 7.9e-7 (union) from it, against 0.0030 between the two points
    assert max(summary["final_dist_to_fixed_point"], summary["union_dist_to_fixed_point"]) < 0.05 * apart
    assert "distance to the float64 fixed point" in stream_table(summary)
    # the final model's own residual bounds its distance to that point, and the bound is not vacuous
    assert summary["final_fixed_point_bound_holds"] is True and "its bound" in stream_table(summary)
    assert summary["final_dist_to_fixed_point"] <= summary["final_fixed_point_bound"] < 0.05 * apart


def test_the_fixed_point_bound_holds_anywhere_and_its_check_can_fail(exact_run) -> None:
    every = np.arange(0, exact_run.n_train, 7)
    point = retain_optimum(exact_run, every, match_residual=True)
    gen = torch.Generator().manual_seed(3)
    for scale in (0.0, 1e-4, 1e-2, 1.0):  # the trained model, and points ever farther from it
        w = exact_run.load_model_params().double() + scale * torch.randn(
            point.shape, generator=gen, dtype=torch.float64
        )
        distance = float((w - point).norm())
        certificate, _, grad = certify_state(exact_run, w, retained_ids(exact_run.n_train, every))
        out = fixed_point_bound(exact_run, certificate, grad, distance)
        assert out["final_fixed_point_bound_holds"] is True
        assert distance <= out["final_fixed_point_bound"] <= 100 * max(distance, 1e-12)
    assert (
        fixed_point_bound(exact_run, certificate, grad, 2 * out["final_fixed_point_bound"])[
            "final_fixed_point_bound_holds"
        ]
        is False
    )


def test_no_fixed_point_without_a_convex_model_and_its_minimal_history(mlp_run, tmp_path: Path) -> None:
    assert fixed_point_distances(mlp_run, np.array([1, 2]), {"final": torch.zeros(3)}) == {}
    bare = train_run(dataclasses.replace(CONVEX, epochs=5, history="none"), tmp_path / "bare", progress=False)
    assert fixed_point_distances(bare, np.array([1, 2]), {"final": bare.load_model_params()}) == {}
