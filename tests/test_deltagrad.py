"""DeltaGrad: exact replay equals retraining, approximate replay lands near it, errors are clear."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from miniunlearn.errors import ConfigError, HistoryError
from miniunlearn.ids import random_forget_ids
from miniunlearn.methods import UnlearnRequest, get_method
from miniunlearn.methods.deltagrad import SIGMA_FLOOR, CompactHessian, compact_hessian_product
from miniunlearn.methods.lbfgs import SecantPairs
from miniunlearn.presets import preset
from miniunlearn.training import Run, TrainConfig, cached_retrain, train_run
from miniunlearn.training.schedule import make_plan


def dist(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm())


def emptying_forget_set(run: Run) -> np.ndarray:
    """Every id of the SGD run's step-5 batch (so that step is skipped) plus 2 % random ids."""
    return np.union1d(run.plan.batch_ids(5), random_forget_ids(run.n_train, 0.02, seed=7))


def test_exact_replay_equals_retraining_full_batch(convex_run) -> None:
    forget = random_forget_ids(convex_run.n_train, 0.01, seed=11)
    result = get_method("deltagrad", T0=1).unlearn(UnlearnRequest(convex_run, forget))
    target = cached_retrain(convex_run, forget)
    assert float((result.params - target).abs().max()) <= 1e-12
    diag = result.record.diagnostics
    assert diag["exact_steps"] == convex_run.total_steps and diag["approximate_steps"] == 0
    assert result.record.history_bytes == convex_run.full_history().nbytes


def test_exact_replay_equals_retraining_sgd_with_an_emptied_batch(sgd_run) -> None:
    forget = emptying_forget_set(sgd_run)
    result = get_method("deltagrad", T0=1).unlearn(UnlearnRequest(sgd_run, forget))
    assert result.record.diagnostics["skipped_steps"] >= 1
    assert float((result.params - cached_retrain(sgd_run, forget)).abs().max()) <= 1e-12


def test_default_deltagrad_on_sgd_with_an_emptied_batch(sgd_run) -> None:
    forget = emptying_forget_set(sgd_run)
    target = cached_retrain(sgd_run, forget)
    result = get_method("deltagrad").unlearn(UnlearnRequest(sgd_run, forget))
    diag = result.record.diagnostics
    assert diag["skipped_steps"] >= 1 and diag["approximate_steps"] > 0
    # measured: 0.024 against the original model's 0.186
    assert dist(result.params, target) < 0.3 * dist(sgd_run.load_model_params(), target)


def test_implausible_estimates_fall_back_to_exact_steps(sgd_run) -> None:
    # a curvature cap far below any real curvature rejects every estimate: all steps exact
    forget = random_forget_ids(sgd_run.n_train, 0.05, seed=3)
    result = get_method("deltagrad", fallback_ratio=1e-9).unlearn(UnlearnRequest(sgd_run, forget))
    diag = result.record.diagnostics
    assert diag["approximate_steps"] == 0 and diag["fallbacks"] > 0
    assert diag["exact_steps"] + diag["fallbacks"] == sgd_run.total_steps
    assert float((result.params - cached_retrain(sgd_run, forget)).abs().max()) <= 1e-12


@pytest.mark.parametrize(("ratio", "bound"), [(0.01, 0.2), (0.1, 0.25)])
def test_textbook_scale_is_much_closer_to_retraining_at_a_large_rate(
    convex_run, ratio: float, bound: float
) -> None:
    forget = random_forget_ids(convex_run.n_train, ratio, seed=11)
    target = cached_retrain(convex_run, forget)
    result = get_method("deltagrad", b0="yy/sy").unlearn(UnlearnRequest(convex_run, forget))
    diag = result.record.diagnostics
    # T0 = 5, j0 = 20 on 300 steps: 20 burn-in steps + 56 periodic exact steps
    assert diag["exact_steps"] + diag["fallbacks"] == 76
    assert diag["approximate_steps"] + diag["fallbacks"] == 224
    assert not diag["safeguard"] and diag["j0"] == 20
    # measured ratios: 0.16 at 1 % and 0.22 at 10 % (the authors' s.y/s.s: 0.77 and 0.94)
    assert dist(result.params, target) < bound * dist(convex_run.load_model_params(), target)
    # the retain set is passed over at exact steps only: far fewer gradients than retraining
    retrain_evals = convex_run.total_steps * (convex_run.n_train - forget.size)
    assert result.record.grad_evals < 0.5 * retrain_evals


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_authors_scale_is_the_default_and_does_not_diverge_at_ten_percent(convex_run, seed: int) -> None:
    """Guards the default initial scale (the authors' s.y/s.s) and that its replay stays
    bounded at a moderate ratio, where the textbook y.y/s.y lands much closer.

    Why the margins hold on any CPU: at 10 % the replay is not chaotic. Measured over
    seeds 11-20, with one and two threads and on a float32 copy of this run (a perturbation
    of 1e-7, far above any CPU's float64 rounding), s.y/s.s gives 0.83-1.03 of the original
    model's distance and y.y/s.y 0.13-0.31, identical to three digits in every variant. At
    30 % neither is stable (s.y/s.s 0.48-48x, y.y/s.y 0.21-855x over seeds 11-16), so no
    verdict is drawn there.
    """
    forget = random_forget_ids(convex_run.n_train, 0.1, seed=seed)
    target = cached_retrain(convex_run, forget)
    original = dist(convex_run.load_model_params(), target)
    default = get_method("deltagrad").unlearn(UnlearnRequest(convex_run, forget))
    textbook = get_method("deltagrad", b0="yy/sy").unlearn(UnlearnRequest(convex_run, forget))
    assert default.record.options["b0"] == "sy/ss"
    assert dist(default.params, target) < 1.25 * original
    assert dist(textbook.params, target) < 0.4 * original
    assert dist(textbook.params, target) < 0.5 * dist(default.params, target)


def _sgd_mlp(tmp_path) -> Run:
    config = TrainConfig(
        dataset="digits",
        model="mlp",
        hidden=(32,),
        epochs=20,
        batch_size=256,
        lr=0.5,
        lam=0.001,
        dtype="float64",
        history="full",
        seed=3,
    )
    return train_run(config, tmp_path / "mlp", progress=False)


def test_network_safeguard_fires_and_keeps_the_replay_from_diverging(tmp_path) -> None:
    run = _sgd_mlp(tmp_path)
    forget = random_forget_ids(run.n_train, 0.1, seed=11)
    target = cached_retrain(run, forget)
    original = dist(run.load_model_params(), target)
    guarded = get_method("deltagrad", j0=10).unlearn(UnlearnRequest(run, forget))
    unguarded = get_method("deltagrad", j0=10, safeguard="off").unlearn(UnlearnRequest(run, forget))
    diag = guarded.record.diagnostics
    assert diag["safeguard"] and diag["fallbacks"] > 0  # measured: 9 steps redone exactly
    assert unguarded.record.diagnostics["fallbacks"] == 0
    # measured: 0.72 of the original model's distance with the safeguard, 221x without
    assert dist(guarded.params, target) < original
    assert dist(unguarded.params, target) > 10 * original
    # networks default to the authors' network burn-in
    assert get_method("deltagrad").unlearn(UnlearnRequest(run, forget)).record.diagnostics["j0"] == 80


def test_replay_starts_at_the_first_batch_holding_a_forgotten_sample(sgd_run) -> None:
    forget = sgd_run.plan.batch_ids(3)[:5]  # batches 0-2 of the first epoch hold none of them
    result = get_method("deltagrad", T0=1).unlearn(UnlearnRequest(sgd_run, forget))
    assert result.record.diagnostics["start_step"] == 3
    assert float((result.params - cached_retrain(sgd_run, forget)).abs().max()) <= 1e-12


def test_float64_replay_of_a_float32_run(tmp_path) -> None:
    config = TrainConfig(
        dataset="digits", model="logreg", epochs=60, lr=0.5, lam=0.01, history="full", seed=0
    )
    run = train_run(config, tmp_path / "f32", progress=False)
    forget = random_forget_ids(run.n_train, 0.1, seed=2)
    target = cached_retrain(run, forget)
    single = get_method("deltagrad", T0=1).unlearn(UnlearnRequest(run, forget))
    double = get_method("deltagrad", T0=1, float64=True).unlearn(UnlearnRequest(run, forget))
    assert double.params.dtype == torch.float32 and torch.equal(single.params, target)
    assert not torch.equal(double.params, target)  # computed in another precision ...
    assert dist(double.params, target) < 1e-4 * float(target.norm())  # ... to the same model
    assert double.record.grad_evals == single.record.grad_evals > 0


def test_missing_full_history_raises_history_error(tmp_path) -> None:
    config = TrainConfig(
        dataset="digits",
        model="logreg",
        epochs=3,
        lr=0.5,
        lam=0.05,
        dtype="float64",
        history="mini",
        checkpoints=1,
        seed=0,
    )
    run = train_run(config, tmp_path / "run", progress=False)
    with pytest.raises(HistoryError, match="full history"):
        get_method("deltagrad").unlearn(UnlearnRequest(run, np.array([1, 2, 3])))


def test_empty_forget_set_returns_the_start_model(convex_run) -> None:
    result = get_method("deltagrad").unlearn(UnlearnRequest(convex_run, np.zeros(0, np.int64)))
    assert torch.equal(result.params, convex_run.load_model_params())
    assert result.record.diagnostics == {"empty_request": True}


@pytest.mark.parametrize(
    "options",
    [
        {"T1": 3},
        {"T0": 0},
        {"j0": -1},
        {"m": 0},
        {"b0": "identity"},
        {"safeguard": "yes"},
        {"fallback_ratio": float("nan")},
    ],
)
def test_invalid_options_raise_config_error(options: dict) -> None:
    with pytest.raises(ConfigError):
        get_method("deltagrad", **options)


@pytest.mark.parametrize("b0", ["yy/sy", "sy/ss"])
def test_compact_hessian_product_satisfies_the_newest_secant_equation(b0: str) -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(6, 6, generator=gen, dtype=torch.float64)
    hess = a @ a.T + torch.eye(6, dtype=torch.float64)
    pairs = SecantPairs(2)
    for _ in range(3):
        s = torch.randn(6, generator=gen, dtype=torch.float64)
        pairs.add(s, hess @ s)
    s_new, y_new, _ = pairs.pairs[-1]
    assert torch.allclose(compact_hessian_product(pairs, s_new, b0), y_new, atol=1e-10)
    assert torch.equal(compact_hessian_product(SecantPairs(2), s_new, b0), s_new)


def test_authors_scale_is_floored() -> None:
    pairs = SecantPairs(2)
    s = torch.ones(4, dtype=torch.float64)
    pairs.add(s, 1e-6 * s)  # curvature 1e-6 along s
    assert float(CompactHessian(pairs, "sy/ss").sigma) == SIGMA_FLOOR
    assert float(CompactHessian(pairs, "yy/sy").sigma) == pytest.approx(1e-6)


PAPER_ROWS = [("mnist", 60_000), ("fashion-mnist", 60_000), ("adult", 32_561)]


@pytest.mark.parametrize(("dataset", "rows"), PAPER_ROWS)
def test_deltagrad_paper_preset_is_the_authors_regime(dataset: str, rows: int) -> None:
    config = TrainConfig(dataset=dataset, model="logreg", **preset(dataset, "logreg", "deltagrad-paper"))
    plan = make_plan(config, rows)
    assert plan.total_steps == 128 and plan.batch_size == 16_384
    assert (config.lr, config.lam, config.dtype, config.lr_schedule) == (0.1, 0.005, "float64", "constant")


def test_deltagrad_paper_preset_refuses_other_pairs() -> None:
    with pytest.raises(ConfigError, match="deltagrad-paper preset exists for"):
        preset("mnist", "mlp", "deltagrad-paper")
