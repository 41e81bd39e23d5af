"""Deep-unlearning baselines (rl, salun, scrub, l1sparse) and their shared losses: shapes,
determinism, exact gradient-evaluation counts, option checks, and that each does what it
claims on the MLP fixture."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from miniunlearn.errors import ConfigError
from miniunlearn.ids import random_forget_ids
from miniunlearn.methods import UnlearnRequest, get_method
from miniunlearn.methods.deep_losses import (
    cross_entropy_sum,
    kl_at_temperature,
    logits_loss_grad_sum,
    random_wrong_labels,
)
from miniunlearn.methods.salun import saliency_mask

METHODS = ("rl", "salun", "scrub", "l1sparse")


@pytest.fixture(scope="module")
def forget(mlp_run) -> np.ndarray:
    """A 10 % forget set of the MLP run."""
    return random_forget_ids(mlp_run.n_train, 0.1, seed=11)


@pytest.fixture(scope="module")
def request_(mlp_run, forget) -> UnlearnRequest:
    return UnlearnRequest(mlp_run, forget)


@pytest.fixture(scope="module")
def defaults(request_) -> dict:
    """Each method (and finetune) run once with default options."""
    return {name: get_method(name).unlearn(request_) for name in (*METHODS, "finetune")}


def forget_ce(run, w: torch.Tensor, ids: np.ndarray) -> float:
    return float(run.objective.loss_sum(w, ids)) / ids.size


def accuracy(run, w: torch.Tensor, ids: np.ndarray) -> float:
    objective = run.objective
    idx = torch.as_tensor(ids)
    return float((objective.logits(w, objective.x[idx]).argmax(1) == objective.y[idx]).double().mean())


@pytest.mark.parametrize("method", METHODS)
def test_result_is_finite_deterministic_and_reads_no_history(mlp_run, request_, defaults, method) -> None:
    result = defaults[method]
    assert result.params.shape == (mlp_run.objective.dim,) and torch.isfinite(result.params).all()
    assert not torch.equal(result.params, mlp_run.load_model_params())
    assert result.record.history_bytes == 0 and result.record.grad_evals > 0
    again = get_method(method).unlearn(request_)
    assert torch.equal(result.params, again.params)
    assert again.record.grad_evals == result.record.grad_evals
    other_seed = get_method(method, seed=1, batch_size=64, steps=3).unlearn(request_)
    same_seed = get_method(method, seed=1, batch_size=64, steps=3).unlearn(request_)
    assert torch.equal(other_seed.params, same_seed.params)


def test_grad_evals_count_the_work_done(mlp_run, request_, defaults) -> None:
    n, n_forget = mlp_run.n_train, request_.forget_ids.size
    n_retain = n - n_forget
    steps = 30  # ceil(10 % of 300 full-batch steps)
    # full batch: every step reads the whole retain set (plus the whole forget set for rl / salun)
    assert defaults["l1sparse"].record.grad_evals == steps * n_retain
    assert defaults["rl"].record.grad_evals == steps * n
    assert defaults["salun"].record.grad_evals == n_forget + steps * n  # + the saliency gradient
    scrub = defaults["scrub"].record
    assert scrub.diagnostics["max_steps"] == 3  # one full-batch forget pass in each of 3 epochs
    assert scrub.grad_evals == steps * n_retain + 3 * n_forget
    # mini-batches of 64: rl takes a retain and a forget batch per step; each pass over the 144
    # forget ids is cut into batches of 64, 64, 16
    assert n_forget == 144
    assert get_method("rl", steps=5, batch_size=64).unlearn(request_).record.grad_evals == 5 * 64 + 144 + 128
    assert get_method("l1sparse", steps=5, batch_size=64).unlearn(request_).record.grad_evals == 5 * 64
    # scrub: 20 min-steps in 5 epochs; epochs 1 and 2 start with a pass over the forget ids
    # (3 batches: 64, 64, 16)
    mini = get_method("scrub", steps=20, batch_size=64, epochs=5, msteps=2).unlearn(request_).record
    assert mini.diagnostics["max_steps"] == 6 and mini.diagnostics["forget_pass_steps"] == 3
    assert mini.grad_evals == 20 * 64 + 2 * n_forget
    # 10 min-steps in 5 epochs: each ascent is cut to its epoch's 2 min-steps, never outweighing them
    # (the batches run on: 64, 64, then 16, 64)
    cut = get_method("scrub", steps=10, batch_size=64, epochs=5, msteps=2).unlearn(request_).record
    assert cut.diagnostics["max_steps"] == 4
    assert cut.grad_evals == 10 * 64 + 64 + 64 + 16 + 64
    # a budget smaller than the epochs caps both
    tiny = get_method("scrub", steps=2).unlearn(request_).record
    assert (tiny.diagnostics["epochs"], tiny.diagnostics["msteps"]) == (2, 2)
    assert tiny.grad_evals == 2 * n_retain + 2 * n_forget


@pytest.mark.parametrize("method", ["rl", "salun", "scrub"])
def test_forget_loss_rises_and_retain_accuracy_holds(mlp_run, request_, defaults, method) -> None:
    start = mlp_run.load_model_params()
    w = defaults[method].params
    forget, retain = request_.forget_ids, request_.retain_ids
    assert forget_ce(mlp_run, w, forget) > forget_ce(mlp_run, start, forget)
    assert accuracy(mlp_run, w, retain) > accuracy(mlp_run, start, retain) - 0.1


def test_rl_weights_and_seeds_its_random_labels(request_, defaults) -> None:
    # beta = 0 drops the forget batch: fine-tuning with the same retain batches
    assert torch.equal(get_method("rl", beta=0.0).unlearn(request_).params, defaults["finetune"].params)
    # full batches: the seed changes only the random labels
    assert not torch.equal(get_method("rl", seed=1).unlearn(request_).params, defaults["rl"].params)


@pytest.mark.parametrize("method", ["rl", "salun"])
def test_random_labels_raise_the_forget_loss_beyond_fine_tuning(mlp_run, request_, defaults, method) -> None:
    forget = request_.forget_ids
    # measured: start 0.250, finetune 0.255, rl 0.365, salun 0.361
    assert forget_ce(mlp_run, defaults[method].params, forget) > 1.2 * forget_ce(
        mlp_run, defaults["finetune"].params, forget
    )


def test_scrub_max_steps_push_the_forget_set_away(mlp_run, request_) -> None:
    # Full-batch students hardly leave the teacher, so the KL ascent needs mini-batches to act;
    # with batches of 32 (150 min-steps, 3 max passes of 5 steps) the forget-set cross-entropy
    # measured 0.3118 against 0.2528 without max-steps (seeds 0-3: +0.04 ... +0.21), retain
    # accuracy 0.947 (start 0.968). The min-steps see the same retain batches in both runs.
    start = mlp_run.load_model_params()
    forget, retain = request_.forget_ids, request_.retain_ids
    options = {"batch_size": 32, "steps": 150, "seed": 2, "optimizer": "sgd"}
    with_ascent = get_method("scrub", **options).unlearn(request_)
    without = get_method("scrub", msteps=0, **options).unlearn(request_)
    assert with_ascent.record.diagnostics["max_steps"] == 15 and without.record.diagnostics["max_steps"] == 0
    assert forget_ce(mlp_run, with_ascent.params, forget) > forget_ce(mlp_run, without.params, forget) + 0.03
    assert accuracy(mlp_run, with_ascent.params, retain) > accuracy(mlp_run, start, retain) - 0.1


def test_scrub_without_ascent_or_distillation_is_fine_tuning(request_, defaults) -> None:
    finetune = defaults["finetune"].params
    plain = get_method("scrub", msteps=0, alpha=0.0, optimizer="sgd").unlearn(request_)
    assert torch.allclose(plain.params, finetune, rtol=0, atol=1e-13)
    # a min-step is lr / (gamma + alpha) * (gradient of gamma * mean CE + alpha * mean KL + L2 term)
    run = request_.run
    start, retain, lam, lr = run.load_model_params(), request_.retain_ids, run.objective.lam, run.config.lr
    _, grad_ce = run.objective.loss_grad_sum(start, retain)
    doubled = get_method("scrub", msteps=0, alpha=0.0, gamma=2.0, steps=1, optimizer="sgd").unlearn(request_)
    expected = start - lr / 2.0 * (2.0 * grad_ce / retain.size + lam * start)
    assert torch.allclose(doubled.params, expected, rtol=0, atol=1e-15)


def test_scrub_steps_at_the_teacher(mlp_run, request_) -> None:
    objective, start = mlp_run.objective, mlp_run.load_model_params()
    lr = mlp_run.config.lr
    # a max-step at the teacher does not move the student (zero KL gradient, no L2 term)
    one = {"steps": 1, "epochs": 1, "optimizer": "sgd"}
    with_max = get_method("scrub", msteps=1, **one).unlearn(request_)
    without = get_method("scrub", msteps=0, **one).unlearn(request_)
    assert with_max.record.grad_evals == without.record.grad_evals + request_.forget_ids.size
    assert torch.allclose(with_max.params, without.params, rtol=0, atol=1e-15)
    # pure distillation at the teacher: only the L2 term moves (KL gradient to the teacher is 0)
    distil = get_method("scrub", msteps=0, gamma=0.0, alpha=1.0, **one).unlearn(request_)
    assert torch.allclose(distil.params, start - lr * objective.lam * start, rtol=0, atol=1e-15)


def test_salun_moves_only_the_most_salient_entries(mlp_run, request_, defaults) -> None:
    start = mlp_run.load_model_params()
    mask = saliency_mask(request_, start, 0.5)
    dim = mlp_run.objective.dim
    assert int(mask.sum()) == dim // 2 == defaults["salun"].record.diagnostics["masked_entries"]
    _, grad_u = mlp_run.objective.loss_grad_sum(start, request_.forget_ids)
    assert float(grad_u.abs()[mask].min()) >= float(grad_u.abs()[~mask].max())
    w = defaults["salun"].params
    assert torch.equal(w[~mask], start[~mask])
    assert int((w[mask] != start[mask]).sum()) > 0.9 * int(mask.sum())
    # a full mask is rl itself
    full = get_method("salun", mask_ratio=1.0).unlearn(request_)
    assert torch.equal(full.params, defaults["rl"].params)
    assert full.record.diagnostics["masked_entries"] == dim


def test_l1sparse_shrinks_the_l1_norm_and_is_fine_tuning_without_it(mlp_run, request_, defaults) -> None:
    finetune = defaults["finetune"].params
    strong = get_method("l1sparse", alpha=1e-2).unlearn(request_).params
    # measured |w|_1: start 246.8, finetune 245.0, alpha 5e-4 240.2, alpha 1e-2 176.2
    assert float(defaults["l1sparse"].params.abs().sum()) < float(finetune.abs().sum())
    assert float(strong.abs().sum()) < 0.8 * float(finetune.abs().sum())
    assert (
        accuracy(mlp_run, strong, request_.retain_ids)
        > accuracy(mlp_run, finetune, request_.retain_ids) - 0.02
    )
    zero = get_method("l1sparse", alpha=0.0).unlearn(request_)
    assert torch.equal(zero.params, finetune)


def test_l1sparse_penalty_decays_linearly_over_the_budget(mlp_run, request_) -> None:
    objective, retain = mlp_run.objective, request_.retain_ids
    lr, alpha = mlp_run.config.lr, 0.05
    w = mlp_run.load_model_params()
    for weight in (alpha, alpha * 2 / 3, alpha / 3):  # alpha (1 - t / 3), t = 0, 1, 2
        w = w - lr * (objective.value_and_grad(w, retain)[1] + weight * torch.sign(w))
    result = get_method("l1sparse", alpha=alpha, steps=3).unlearn(request_)
    assert torch.allclose(result.params, w, rtol=0, atol=1e-14)


def test_empty_forget_set_returns_the_start_model(mlp_run) -> None:
    start = mlp_run.load_model_params() + 0.01
    for method in METHODS:
        result = get_method(method).unlearn(UnlearnRequest(mlp_run, np.zeros(0, np.int64), base_params=start))
        assert torch.equal(result.params, start)


@pytest.mark.parametrize(
    ("method", "options"),
    [
        *[(m, {"steps_fraction": 0.0}) for m in METHODS],
        *[(m, {"steps": -1}) for m in METHODS],
        *[(m, {"lr_scale": -1.0}) for m in METHODS],
        *[(m, {"batch_size": -2}) for m in METHODS],
        *[(m, {"unknown": 1}) for m in METHODS],
        ("rl", {"beta": -0.5}),
        ("rl", {"beta": float("nan")}),
        ("salun", {"mask_ratio": 0.0}),
        ("salun", {"mask_ratio": 1.5}),
        ("salun", {"beta": -1.0}),
        ("scrub", {"epochs": 0}),
        ("scrub", {"msteps": -1}),
        ("scrub", {"msteps": 11}),
        ("scrub", {"gamma": -1.0}),
        ("scrub", {"alpha": -0.5}),
        ("scrub", {"gamma": 0.0, "alpha": 0.0}),
        ("scrub", {"temperature": 0.0}),
        ("scrub", {"temperature": float("inf")}),
        ("l1sparse", {"alpha": -1e-3}),
        ("l1sparse", {"alpha": float("inf")}),
        ("l1sparse", {"alpha": "big"}),
    ],
)
def test_invalid_options_raise_config_error(method: str, options: dict) -> None:
    with pytest.raises(ConfigError):
        get_method(method, **options)


def test_random_wrong_labels_are_wrong_uniform_and_seeded() -> None:
    labels = torch.arange(10).repeat(2000)
    wrong = random_wrong_labels(labels, 10, torch.Generator().manual_seed(3))
    assert not (wrong == labels).any()
    counts = torch.bincount(wrong[labels == 4], minlength=10)
    assert counts[4] == 0 and int(counts.min().item()) == 0 and int((counts > 150).sum()) == 9  # ~222 each
    assert torch.equal(wrong, random_wrong_labels(labels, 10, torch.Generator().manual_seed(3)))
    assert not torch.equal(wrong, random_wrong_labels(labels, 10, torch.Generator().manual_seed(4)))
    with pytest.raises(ValueError):
        random_wrong_labels(labels, 1, torch.Generator())


def test_kl_at_temperature_matches_the_definition() -> None:
    gen = torch.Generator().manual_seed(0)
    s, t = (
        torch.randn(5, 4, generator=gen, dtype=torch.float64),
        torch.randn(5, 4, generator=gen, dtype=torch.float64),
    )
    assert float(kl_at_temperature(t, t, 2.0)) == pytest.approx(0.0, abs=1e-15)
    p_t, p_s = torch.softmax(t / 3.0, 1), torch.softmax(s / 3.0, 1)
    expected = 9.0 * float((p_t * (p_t.log() - p_s.log())).sum())
    assert float(kl_at_temperature(s, t, 3.0)) == pytest.approx(expected, rel=1e-12)
    assert float(kl_at_temperature(s, t, 3.0)) > 0


def test_logits_loss_grad_sum_matches_the_objective_and_counts(mlp_run, forget) -> None:
    objective = mlp_run.objective
    w = mlp_run.load_model_params()
    before = objective.grad_evals
    value, grad = logits_loss_grad_sum(objective, w, forget, cross_entropy_sum)
    assert objective.grad_evals - before == forget.size
    ref_value, ref_grad = objective.loss_grad_sum(w, forget)
    assert torch.allclose(value, ref_value, rtol=1e-13) and torch.allclose(grad, ref_grad, rtol=0, atol=1e-13)
    # chunking does not change the result; auxiliaries are cut with the samples
    targets = (objective.y[torch.as_tensor(forget)] + 1) % 10

    def wrong_ce(logits: torch.Tensor, _y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return cross_entropy_sum(logits, target)

    whole = logits_loss_grad_sum(objective, w, forget, wrong_ce, (targets,))
    chunk_size = objective.chunk_size
    try:
        objective.chunk_size = 50
        chunked = logits_loss_grad_sum(objective, w, forget, wrong_ce, (targets,))
    finally:
        objective.chunk_size = chunk_size
    assert torch.allclose(whole[1], chunked[1], rtol=0, atol=1e-12)
    assert float(whole[0]) > float(value)  # wrong targets cost more than the true labels
    with pytest.raises(ValueError):
        logits_loss_grad_sum(objective, w, forget, cross_entropy_sum, (targets[:-1],))


def test_scrub_steps_by_the_authors_adam(mlp_run, request_) -> None:
    """The default optimiser is the authors' Adam at 5e-4: its first step moves no entry by
    more than the rate (m / sqrt(v) = +-1 where the gradient is not tiny against eps),
    whatever the loss's scale."""
    start = mlp_run.load_model_params()
    first = get_method("scrub", msteps=0, steps=1, epochs=1).unlearn(request_)
    moved = (first.params - start).abs()
    assert first.record.diagnostics["optimizer"] == "adam" and first.record.diagnostics["lr"] == 5e-4
    assert float(moved.max()) == pytest.approx(5e-4, rel=1e-3)
    scaled = get_method("scrub", msteps=0, steps=1, epochs=1, gamma=7.0).unlearn(request_)
    # blind to the loss's scale: a 7x heavier cross-entropy moves no entry farther
    assert float((scaled.params - start).abs().max()) == pytest.approx(5e-4, rel=1e-3)
