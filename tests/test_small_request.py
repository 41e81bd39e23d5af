"""Small models record their exact Hessian, and a small request on them is one Newton step whose
single float64 pass is also its certificate."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from miniunlearn.certificate import certify
from miniunlearn.deletion import forget, load_version_params
from miniunlearn.deletion.retain_state import load_retain_state
from miniunlearn.experiment.optimum import retain_optimum
from miniunlearn.experiment.stream import StreamSpec, run_stream
from miniunlearn.ids import retained_ids
from miniunlearn.methods import UnlearnRequest, get_method
from miniunlearn.methods.mini.options import MiniOptions
from miniunlearn.training import Run, TrainConfig, open_run, retrain, train_run
from miniunlearn.training.curvature import softmax_regression_hessian


def test_a_small_model_records_its_exact_hessian(exact_run: Run) -> None:
    curvature = exact_run.manifest["curvature"]
    dim = exact_run.objective.dim
    assert curvature["exact"] and curvature["rank"] == dim and curvature["rows"] == exact_run.n_train
    sketch = exact_run.curvature_sketch()
    assert sketch is not None and sketch.exact and sketch.vectors.dtype == torch.float32
    assert sketch.nbytes == 4 * dim * dim + 4 * dim
    # the preconditioner is the Newton step: (H_D(w_T) + lam I)^-1 g, up to float32 eigenvectors
    w = exact_run.load_model_params()
    hessian = softmax_regression_hessian(exact_run.objective, w, None)
    g = torch.randn(dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    exact = torch.linalg.solve(hessian, g)
    assert float((sketch.inverse_hessian_product(g) - exact).norm()) < 1e-4 * float(exact.norm())


def test_a_rank_or_a_zero_cap_records_a_sketch_and_old_runs_read_as_sketched(tmp_path: Path) -> None:
    from conftest import EXACT

    capped = train_run(
        dataclasses.replace(EXACT, epochs=300, exact_curvature_dim=0), tmp_path / "a", progress=False
    )
    ranked = train_run(dataclasses.replace(EXACT, curvature_rank=16), tmp_path / "b", progress=False)
    for run in (capped, ranked):
        sketch = run.curvature_sketch()
        assert sketch is not None and not sketch.exact and sketch.rank < run.objective.dim
        assert not run.manifest["curvature"]["exact"]
    old = EXACT.to_dict()
    del old["exact_curvature_dim"]  # a run recorded before the option
    assert TrainConfig.from_dict(old).exact_curvature_dim == 0
    with pytest.raises(Exception, match="exact-curvature-dim"):
        dataclasses.replace(EXACT, exact_curvature_dim=-1)


def test_the_two_class_hessian_is_the_objectives_own(tmp_path: Path) -> None:
    config = TrainConfig(
        dataset="breast-cancer", epochs=20, lr=0.5, lam=0.01, dtype="float64", history="mini"
    )
    run = train_run(config, tmp_path / "run", progress=False)
    objective, w = run.objective, run.load_model_params()
    ids = np.arange(0, run.n_train, 2)
    before = objective.grad_evals
    structured = softmax_regression_hessian(objective, w, ids)
    # one Gram matrix of 31 x 31 a row, formed on and above its diagonal in bands of 16 columns
    # (16 x 31 + 15 x 15 = 721 multiply-adds), over a gradient's 2 d = 124: 6 evaluations
    assert objective.grad_evals - before == 6 * ids.size
    generic = objective.hvp_sum_many(w, torch.eye(objective.dim, dtype=torch.float64), ids)
    generic = generic.double() / ids.size + objective.lam * torch.eye(objective.dim, dtype=torch.float64)
    assert torch.allclose(structured, generic, rtol=1e-9, atol=1e-12)


def _copy(run: Run, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run.path, tmp_path / "run"))


def test_a_small_request_is_served_by_measured_newton_steps_alone(exact_run: Run, tmp_path: Path) -> None:
    run_dir = _copy(exact_run, tmp_path)
    outcome = forget(run_dir, np.array([11]), request_id="a")
    run = open_run(run_dir)
    diag = outcome.record["diagnostics"]
    # one sample of digits' 1,437 moves the model far: each Newton step (the Hessian is w_T's)
    # shrinks |g_R - c| about a hundredfold, and two land (on Adult's 32,561 rows one does)
    assert diag["small_request"] and diag["steps"] == diag["exact_retain_passes"] == 2
    assert diag["grad_norms"][2] < 1e-3 * diag["grad_norms"][0]
    retain = retained_ids(run.n_train, np.array([11]))
    # a pass over the retain set a step, plus the removed sample's gradient; the certificate adds none
    assert outcome.record["grad_evals"] == 2 * retain.size + 1
    assert outcome.certificate is not None and outcome.certificate["passes"] == 0
    params = load_version_params(run, outcome.version)
    # the certificate built from the method's measurement is the one a pass of its own gives
    fresh = certify(run, params, retain)
    assert outcome.certificate["grad_norm"] == fresh.grad_norm
    assert outcome.certificate["distance_bound"] == fresh.distance_bound
    # and the state kept for the next request is that measurement
    value, grad = load_retain_state(run, outcome.version.sha256, np.array([11]))
    exact_value, exact_grad = run.objective.value_and_grad(params.double(), retain)
    assert torch.equal(grad, exact_grad) and torch.equal(value, exact_value)
    # the steps landed within the tolerance: a share of training's own residual
    c = run.mini_history().grads[0]
    assert float((exact_grad - c).norm()) <= MiniOptions().small_request_tol * float(c.norm())
    # and it is as close to the retrained model as the full solve (measured: equal to 3 digits)
    target = retrain(run, np.array([11]))
    full = get_method("mini", small_request_below=0.0).unlearn(UnlearnRequest(run, np.array([11])))
    assert full.record.diagnostics["exact_retain_passes"] > 1
    original = float((run.load_model_params() - target).norm())
    assert float((params - target).norm()) <= 1.1 * float((full.params - target).norm()) + 1e-3 * original


def test_a_step_that_misses_its_tolerance_solves_on_and_is_certified_by_a_pass(
    exact_run: Run, tmp_path: Path
) -> None:
    run_dir = _copy(exact_run, tmp_path)
    # a tolerance no step reaches: the Newton steps, then the safeguarded solve
    outcome = forget(
        run_dir, np.array([5]), options={"small_request_tol": 0.0, "rtol": 1e-14}, request_id="a"
    )
    diag = outcome.record["diagnostics"]
    assert diag["small_request"] and len(diag["newton_grad_norms"]) >= 2
    assert diag["exact_retain_passes"] > len(diag["newton_grad_norms"]) - 1
    assert outcome.certificate["passes"] == 1  # the solve's last point is certified by its own pass
    run = open_run(run_dir)
    params = load_version_params(run, outcome.version)
    optimum = retain_optimum(run, np.array([5]))
    assert float((params.double() - optimum).norm()) <= outcome.certificate["distance_bound"]


def test_a_sketched_run_serves_a_small_request_by_measured_quasi_newton_steps(
    convex_run: Run, tmp_path: Path
) -> None:
    run_dir = _copy(convex_run, tmp_path)
    assert not open_run(run_dir).curvature_sketch().exact
    outcome = forget(run_dir, np.array([11]), request_id="a")
    diag = outcome.record["diagnostics"]
    assert diag["small_request"] and diag["grad_norms"][-1] < diag["grad_norms"][0]
    run = open_run(run_dir)
    params = load_version_params(run, outcome.version)
    # certified by its last step's measurement, and the bound holds
    assert outcome.certificate["passes"] == 0
    assert (
        float((params.double() - retain_optimum(run, np.array([11]))).norm())
        <= (outcome.certificate["distance_bound"])
    )
    # no more passes than the full solve and its certificate, and as close to retraining
    full = get_method("mini", small_request_below=0.0).unlearn(UnlearnRequest(run, np.array([11])))
    assert diag["exact_retain_passes"] <= full.record.diagnostics["exact_retain_passes"] + 1
    target = retrain(run, np.array([11]))
    original = float((run.load_model_params() - target).norm())
    assert float((params - target).norm()) <= 1.1 * float((full.params - target).norm()) + 1e-3 * original


def test_a_stream_of_small_requests_needs_no_certificate_pass_and_ends_where_the_full_solve_does(
    exact_run: Run, tmp_path: Path
) -> None:
    records, summary = run_stream(exact_run, StreamSpec(10), workdir=tmp_path, progress=False)
    assert all(r["passes_with_certificate"] == pytest.approx(r["passes"]) for r in records)
    assert summary["passes_median"] <= 2.01  # two Newton steps on digits (see above), no certificate pass
    # the yardstick is mini's full solve of the union (the one-step path is not used for it)
    every = np.sort(np.concatenate([np.atleast_1d(r) for r in _stream_ids(exact_run)]))
    original = float((exact_run.load_model_params() - retrain(exact_run, every)).norm())
    assert summary["final_dist_to_retrain"] <= 1.5 * summary["union_dist_to_retrain"] + 1e-4 * original


def _stream_ids(run: Run) -> list[np.ndarray]:
    from miniunlearn.experiment.stream import stream_ids

    return stream_ids(run.n_train, StreamSpec(10))


def test_a_plugin_cannot_hand_over_a_certificate_state(
    exact_run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A method defined outside the package gets a certificate pass of its own, whatever state
    it hands over: a certificate rests on that state."""
    from miniunlearn.methods import base
    from miniunlearn.methods.base import MEASURED_RETAIN_STATE, UnlearningMethod, register

    class Liar(UnlearningMethod):
        name = "liar"

        def _unlearn(self, request):
            params, history_bytes, diagnostics = get_method("mini")._unlearn(request)
            zero = torch.zeros(request.run.objective.dim, dtype=torch.float64)
            return params, history_bytes, {**diagnostics, MEASURED_RETAIN_STATE: (torch.tensor(0.0), zero)}

    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    register(Liar)
    outcome = forget(_copy(exact_run, tmp_path), np.array([11]), method="liar", request_id="a")
    assert outcome.certificate["passes"] == 1 and outcome.certificate["grad_norm"] > 0


def test_forget_says_the_certificate_cost_no_pass_of_its_own(
    exact_run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from miniunlearn.cli import main

    ids = tmp_path / "ids.txt"
    ids.write_text("11\n")
    assert main(["forget", str(_copy(exact_run, tmp_path)), "--ids", str(ids)]) == 0
    assert "measured by the method's last step" in capsys.readouterr().out


@pytest.mark.parametrize("expect_landing", [False, True])
def test_a_float32_sketched_run_measures_its_steps_in_float32_and_certifies_in_float64(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, expect_landing: bool
) -> None:
    from conftest import EXACT
    from miniunlearn.methods.mini import fixed_point

    # every step expected to land (measured in float64 at once), or none until one has been measured
    monkeypatch.setattr(fixed_point, "FIRST_STEP_CONTRACTION", 0.0 if expect_landing else 1e9)
    config = dataclasses.replace(EXACT, dtype="float32", exact_curvature_dim=0, curvature_rank=16)
    run = train_run(config, tmp_path / "run", progress=False)
    assert not run.curvature_sketch().exact
    outcome = forget(run.path, np.array([11]), request_id="a")
    diag = outcome.record["diagnostics"]
    assert diag["small_request"] and diag["steps"] >= 1
    # steps expected to land are measured in float64 (all of them here when expect_landing),
    # the others in float32, and the served point's float64 measurement is its certificate
    assert 1 <= diag["float64_passes"] <= diag["exact_retain_passes"]
    assert outcome.certificate["passes"] == 0
    run = open_run(run.path)
    params = load_version_params(run, outcome.version)
    retain = retained_ids(run.n_train, np.array([11]))
    fresh = certify(run, params, retain)
    assert outcome.certificate["grad_norm"] == fresh.grad_norm
    assert outcome.certificate["distance_bound"] == fresh.distance_bound
    c = run.mini_history().grads[0].double()
    _, grad = run.objective.cast(torch.float64).value_and_grad(params.double(), retain)
    assert float((grad - c).norm()) <= diag["newton_tol"]


def test_with_the_exact_hessian_a_solve_ends_with_an_unmeasured_newton_step(exact_run: Run) -> None:
    """A large request on a run with its exact Hessian stops at ``exact_rtol`` and takes one more
    Newton step unmeasured: that step must remove at least nine tenths of the error it started
    from (measured against the same solve run tight; 0.054 of it was left here), so the pass it
    saves costs no accuracy."""
    forget = np.arange(0, exact_run.n_train, 3)  # a third: far beyond a small request
    served = get_method("mini").unlearn(UnlearnRequest(exact_run, forget))
    diag = served.record.diagnostics
    assert diag["stop_reason"] == "gradient" and diag["converged"] and diag["last_step_unverified"]
    measured = len(diag["grad_norms"]) - 1
    # the same measured steps, the unmeasured one left out by the step budget
    stopped = get_method("mini", exact_rtol=0.0, rtol=1e-2, xtol=0.0, max_steps=measured).unlearn(
        UnlearnRequest(exact_run, forget)
    )
    assert stopped.record.grad_evals == served.record.grad_evals
    tight = get_method("mini", exact_rtol=0.0, rtol=1e-10, xtol=0.0)
    tight = tight.unlearn(UnlearnRequest(exact_run, forget))
    assert served.record.grad_evals < tight.record.grad_evals
    before = float((stopped.params.double() - tight.params.double()).norm())
    after = float((served.params.double() - tight.params.double()).norm())
    assert after <= 0.1 * before, (after, before)
