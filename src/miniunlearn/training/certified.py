"""Certified removal (Guo et al., ICML 2020): the loss perturbation, training to its optimum,
and the gradient-residual budget every served model is held to.

A run trained with ``certify=(epsilon, delta, noise)`` minimises, on any training set S,

    L_b(w; S) = sum_{i in S} l_i(w) + lam |S| |w|^2 / 2 + b.w,     b ~ N(0, noise^2 I),

that is F_S(w) + b.w / |S| per sample (the objective's ``perturbation``). Guo et al.'s
Theorem 1: a model w released once samples are removed, whose gradient residual on the set
S' that remains is |grad L_b(w; S')| <= eps', is (epsilon, delta)-indistinguishable from the
exact minimiser of L_b(.; S') when noise = c eps' / epsilon, c = sqrt(2 log(1.5 / delta)).
The proof uses only the released model's residual, so a run's **removal budget** is

    eps' = noise * epsilon / c,

and each served model's residual, measured by the certificate's pass over the retain set
(|S'| |grad F_S'(w)| plus its rounding allowance, an upper bound), is checked against it; a
model past the budget is discarded and the request served by retraining.

Guo et al. bound the residual of one Newton step from above without measuring it, and the
bounds of successive removals add up until a retraining resets them; that is why their noise
must be large. Measuring the residual of every served model is exact, so nothing accumulates,
and the solvers that aim at the retain objective run to an absolute gradient tolerance of a
fraction of the budget: a small noise suffices, and costs little accuracy.

b is drawn from the run's seed, so that retraining minimises the same objective; keep a
certified run's config as private as its data. Training and retraining end with a float64
L-BFGS polish to the perturbed optimum (a residual of at most a tenth of the budget), so that
the original model and every retrained one satisfy the budget themselves.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import ConfigError
from ..objective import Objective
from ..progress import progress_bar
from .config import TrainConfig

NOISE_STREAM = 0xCE27  # the perturbation's generator: numpy default_rng([seed, NOISE_STREAM])
POLISH_FRACTION = 0.1  # training and retraining end at a residual of at most this share of the budget
SOLVE_FRACTION = 0.5  # an approximate method aims at a residual of at most this share of the budget
POLISH_MAX_STEPS = 2000


def removal_constant(delta: float) -> float:
    """c = sqrt(2 log(1.5 / delta)) of Guo et al.'s Theorem 1."""
    return math.sqrt(2.0 * math.log(1.5 / delta))


def removal_budget(config: TrainConfig) -> float | None:
    """The run's removal budget eps' = noise * epsilon / c: the largest gradient residual
    |grad L_b(w; S')| (sum scale) a served model may have; None for a run not certified."""
    if config.certify is None:
        return None
    epsilon, delta, noise = config.certify
    return noise * epsilon / removal_constant(delta)


def perturbation(config: TrainConfig, dim: int) -> torch.Tensor | None:
    """The run's b ~ N(0, noise^2 I) (float64, ``dim`` entries), drawn from its seed; None for
    a run not certified."""
    if config.certify is None:
        return None
    rng = np.random.default_rng([config.seed, NOISE_STREAM])
    return torch.from_numpy(rng.standard_normal(dim) * config.certify[2])


def polish(
    objective: Objective, w: torch.Tensor, ids: np.ndarray | None, budget: float, *, progress: bool = False
) -> torch.Tensor:
    """Run float64 L-BFGS on F_ids (all samples when None) from ``w`` until the residual
    |ids| |grad F_ids(w)| is at most ``POLISH_FRACTION`` times ``budget``; return the model
    (``progress``: a bar counting its passes). Raises ConfigError when it cannot get there
    (the residual would break the guarantee)."""
    count = objective.n if ids is None else len(ids)
    tol = POLISH_FRACTION * budget / count
    point = torch.nn.Parameter(w.detach().to(torch.float64).clone())
    bar = progress_bar(desc="polish to the perturbed optimum", enabled=progress, unit="pass")

    def closure() -> torch.Tensor:
        value, grad = objective.value_and_grad(point.detach(), ids)
        point.grad = grad.clone()
        bar.update()
        return value

    optimizer = torch.optim.LBFGS(
        [point],
        lr=1.0,
        max_iter=POLISH_MAX_STEPS,
        tolerance_grad=tol / math.sqrt(objective.dim),  # torch stops on the largest entry
        tolerance_change=0.0,
        history_size=50,
        line_search_fn="strong_wolfe",
    )
    optimizer.step(closure)
    bar.close()
    final = point.detach().to(w.dtype)
    norm = float(objective.value_and_grad(final, ids)[1].norm())
    if norm > tol:
        raise ConfigError(
            f"training for certified removal stopped at a residual of {norm * count:.3g}, above a tenth of "
            f"the removal budget {budget:.3g}: the perturbed optimum was not reached. Raise --certify-noise "
            "(a larger budget) or lam"
        )
    return final


def removal_fields(
    config: TrainConfig, n_retain: int, grad_norm: float, allowance: float
) -> dict[str, float | bool]:
    """A certified run's removal check of one model: epsilon, delta, noise, the ``budget``, the
    measured ``residual`` n_retain (|grad F_R(w)| + rounding allowance) and whether it holds."""
    budget = removal_budget(config)
    assert budget is not None and config.certify is not None
    epsilon, delta, noise = config.certify
    residual = n_retain * (grad_norm + allowance)
    return {
        "epsilon": epsilon,
        "delta": delta,
        "noise": noise,
        "budget": budget,
        "residual": residual,
        "certified": residual <= budget,
    }
