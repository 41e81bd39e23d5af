"""Guo et al.'s certified Newton removal and its data-dependent residual bound, for
multinomial logistic regression: the yardstick for how many requests a bound that is never
measured lets a certified run serve.

Guo et al. (ICML 2020) remove samples U from a model w by one Newton step on the
perturbed sum objective L_b(w; S) = sum_{i in S} l_i(w) + lam |S| |w|^2 / 2 + b.w of the
set S that remains,

    w- = w + H^-1 Delta,   Delta = sum_{j in U} (lam w + grad l_j(w)),   H = Hessian of L_b(.; S) at w,

and never measure the gradient residual |grad L_b(w-; S)|: they bound it, and the bounds of
successive removals add up (a removal cancels the change of gradient to first order and
leaves its predecessor's residual where it was) until the sum passes the budget and the run
is retrained. Their data-dependent bound (Corollary 2) is for binary logistic regression.
For softmax cross-entropy on linear logits z_i = W x_i + c the same argument gives:

* the residual is sum_i (x_i, 1) (x) r_i with r_i = grad CE(z_i + d_i) - grad CE(z_i) -
  Hess CE(z_i) d_i and d_i the step's change of sample i's logits (the regulariser and b
  are quadratic and linear, so their Taylor remainders vanish);
* |r_i| <= (gamma / 2) |d_i|^2, where gamma bounds how fast the Hessian of CE in the logits,
  diag(p) - p p^T, changes: its directional derivative along a unit u is the third central
  moment of u under p, at most max |u_k - E u| * Var(u) <= sqrt(2) * 1/2 (a unit vector's
  entries span at most sqrt(2), and a variance is at most a quarter of the span squared);
* so |sum_i (x_i, 1) (x) r_i| <= |X~|_2 |R|_F <= (gamma / 2) |X~|_2 sqrt(sum_i |d_i|^4),

with X~ the inputs with a column of ones. One pass computes the d_i. Guo et al.'s binary form,
gamma |X| |H^-1 Delta| |X H^-1 Delta|, is this bound loosened by |d_i| <= |x_i| |step|.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError
from ..models import LogisticRegression
from ..objective import Objective

SOFTMAX_HESSIAN_LIPSCHITZ = math.sqrt(2.0) / 2.0
"""gamma: |Hess CE(z') - Hess CE(z)|_2 <= gamma |z' - z| for softmax cross-entropy in the logits."""

Preconditioner = Callable[[torch.Tensor], torch.Tensor]


def augmented_spectral_norm(x: torch.Tensor, block: int = 65536) -> float:
    """Return |[X, 1]|_2, the largest singular value of the inputs ``x`` (rows: samples, any
    shape flattened per row) with a column of ones, from their Gram matrix in float64."""
    flat = x.reshape(x.shape[0], -1)
    gram = torch.zeros(flat.shape[1] + 1, flat.shape[1] + 1, dtype=torch.float64)
    for i in range(0, flat.shape[0], block):
        rows = flat[i : i + block].to(torch.float64)
        rows = torch.cat([rows, torch.ones(rows.shape[0], 1, dtype=torch.float64)], dim=1)
        gram += rows.T @ rows
    return math.sqrt(float(torch.linalg.eigvalsh(gram)[-1]))


def newton_residual_bound(
    objective: Objective, w: torch.Tensor, step: torch.Tensor, ids: np.ndarray, spectral_norm: float
) -> float:
    """Return the bound (gamma / 2) |X~|_2 sqrt(sum_i |d_i|^4) on the gradient residual, in sum
    scale, that the step ``step`` from ``w`` adds on the samples ``ids`` (see the module
    docstring); ``spectral_norm`` is |X~|_2 of a superset of ``ids`` (the training set). One
    pass over ``ids`` in float64, counted on ``objective``. Linear logits only: ConfigError for
    any other model."""
    if not isinstance(objective.model, LogisticRegression):
        raise ConfigError(
            f"the Newton residual bound needs logits linear in the parameters (logistic regression); "
            f"got a {type(objective.model).__name__}"
        )
    w64, s64 = w.to(torch.float64), step.to(torch.float64)
    cast = objective.cast(torch.float64)
    quartic = 0.0
    for rows in objective.input_blocks(ids):
        change = cast.logits(w64 + s64, rows) - cast.logits(w64, rows)
        quartic += float(((change * change).sum(dim=1) ** 2).sum())
    cast.count(len(ids))
    return 0.5 * SOFTMAX_HESSIAN_LIPSCHITZ * spectral_norm * math.sqrt(quartic)


@dataclass(frozen=True)
class NewtonRemoval:
    """One Newton removal: the ``step`` (float64), the conjugate-gradient iterations its solve
    took and the relative residual it reached."""

    step: torch.Tensor
    cg_iterations: int
    cg_relative_residual: float


def newton_removal_step(
    objective: Objective,
    w: torch.Tensor,
    removed: np.ndarray,
    retain: np.ndarray,
    *,
    preconditioner: Preconditioner | None = None,
    rtol: float = 1e-10,
    max_iterations: int = 200,
) -> NewtonRemoval:
    """Return Guo et al.'s Newton step H^-1 Delta removing the ids ``removed`` from model ``w``
    (the module docstring), H the Hessian of the sum objective on ``retain`` at ``w``, solved
    in float64 by conjugate gradients with Hessian-vector products (counted on ``objective``),
    preconditioned by ``preconditioner`` (an approximate inverse of the mean Hessian) when
    given, to a relative residual of ``rtol``."""
    cast = objective.cast(torch.float64)
    w64 = w.to(torch.float64)
    delta = cast.loss_grad_sum(w64, removed)[1] + removed.size * cast.lam * w64
    scale = float(retain.size)  # the sum objective's Hessian is |S| times the mean one

    def hessian(v: torch.Tensor) -> torch.Tensor:
        return scale * cast.hvp(w64, v, retain)

    def precondition(v: torch.Tensor) -> torch.Tensor:
        if preconditioner is None:
            return v / scale
        return preconditioner(v).to(torch.float64) / scale

    x = torch.zeros_like(delta)
    r = delta.clone()
    z = precondition(r)
    p = z.clone()
    rz = torch.dot(r, z)
    norm0 = float(delta.norm())
    iterations = 0
    while iterations < max_iterations and float(r.norm()) > rtol * norm0:
        hp = hessian(p)
        alpha = rz / torch.dot(p, hp)
        x, r = x + alpha * p, r - alpha * hp
        z = precondition(r)
        rz_next = torch.dot(r, z)
        p, rz = z + (rz_next / rz) * p, rz_next
        iterations += 1
    return NewtonRemoval(x, iterations, float(r.norm()) / max(norm0, 1e-300))
