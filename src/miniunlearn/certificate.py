"""A certificate with every served request on a strongly convex run: how far the served
model can be from the model that minimises the objective without the forgotten samples.

For L2-regularised logistic regression the retain objective
F_R(w) = (1/|R|) sum_{i in R} CE(x_i, y_i; w) + (lam/2) |w|^2 is lam-strongly convex, so
for any model w and the retain optimum w*_R:

    |w - w*_R| <= |grad F_R(w)| / lam.

One pass over the retain set computes grad F_R(w); it runs in float64 whatever the run's
precision, and the bound adds an allowance for that sum's rounding error (at most
2 u ((|R| + d) sqrt(2) max_i |(x_i, 1)| + lam |w|) with u = 2^-53; per-sample gradients of
the cross-entropy of linear logits have norm at most sqrt(2) |(x_i, 1)|; the largest input
norm is itself bounded from above, summed in the inputs' precision: :func:`max_input_norm`),
so it holds as printed. Logits are linear in w (z_k = W_k x + b_k), so any sample's logits differ
between w and w*_R by at most |(x, 1)| times that distance: ``logit_bound`` states it
for the largest training input.

The retain optimum is not the retrained model: retraining runs the original schedule and
stops short of it. The trained run's own certificate (:func:`trained_certificate`: the
original model against the full-data optimum) says how short; a served model's bound is
comparable to it, not to zero. Networks (non-convex) and lam = 0 get no certificate.

On a run trained for certified removal (:mod:`miniunlearn.training.certified`) the same pass
measures the gradient residual |R| |grad F_R(w)| of the perturbed objective, and the
certificate says whether it is within the run's (epsilon, delta) budget.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from .errors import HistoryError
from .training.certified import removal_fields
from .training.config import CONVEX_MODELS
from .training.rundir import Run

UNIT_ROUNDOFF = 2.0**-53


@dataclass(frozen=True)
class Certificate:
    """The certificate of one model: ``grad_norm`` |grad F_R(w)| (float64), the
    ``rounding_allowance`` added to it, ``distance_bound`` (|w - w*_R| is at most this),
    ``logit_bound`` (no training sample's logit differs more between w and w*_R),
    ``lam``, the retain samples it read (``n_retain``), the passes over them
    (``passes``) and the seconds it took; on a certified-removal run, ``removal``: the
    measured gradient residual against the run's (epsilon, delta) budget
    (:func:`miniunlearn.training.certified.removal_fields`)."""

    grad_norm: float
    rounding_allowance: float
    distance_bound: float
    logit_bound: float
    lam: float
    n_retain: int
    passes: float
    seconds: float
    removal: dict[str, float | bool] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The certificate as a JSON-ready dict (the ledger and version files store it)."""
        return asdict(self)


def no_certificate_reason(run: Run) -> str | None:
    """Why ``run``'s models get no certificate (a network, or no L2 term), None when they do."""
    if run.config.model not in CONVEX_MODELS:
        return f"no certificate: {run.config.model} is not strongly convex (networks get none)"
    if run.config.lam <= 0:
        return "no certificate: the run was trained with lam = 0, so its objective is not strongly convex"
    return None


NORM_BLOCK_VALUES = 1 << 21
"""Input values per block of :func:`max_input_norm` (2,671 MNIST rows, 74,898 of 28 features):
a block's squares stay in cache (blocks of 8 million values took 1.7-8x as long), and narrow
inputs are not read a few rows at a time."""


def max_input_norm(x: torch.Tensor) -> float:
    """An upper bound on the largest |(x_i, 1)| over the rows of ``x`` (n, F; later dimensions
    flattened into F), tight to about F units of the inputs' rounding (relative 5e-5 for
    MNIST's float32 pixels).

    The squares are summed in the inputs' own precision (float32 for image data: a small
    fraction of a float64 read's time, docs/results/certificate-norm.md), and each row's sum
    s is raised to s / (1 - gamma_F) + F * tiny, with gamma_F = F u / (1 - F u): whatever
    order the sum takes, each of its F terms is rounded at most F times, so the exact sum of
    squares is at most that (tiny covers squares that underflow). Half-precision inputs are
    summed in float32 and integer ones in float64 (both converted exactly); a block whose sum
    overflows is summed again in float64."""
    if x.dtype in (torch.float32, torch.float64):
        dtype = x.dtype
    else:
        dtype = torch.float32 if x.is_floating_point() else torch.float64
    features = math.prod(x.shape[1:])
    info = torch.finfo(dtype)
    unit = info.eps / 2.0
    gamma = features * unit / (1.0 - features * unit)
    block = max(1, NORM_BLOCK_VALUES // max(features, 1))
    largest = 0.0
    for start in range(0, x.shape[0], block):
        rows = x[start : start + block].reshape(-1, features).to(dtype)
        sums = (rows * rows).sum(dim=1)
        top = float(sums.max()) if sums.numel() else 0.0
        if not math.isfinite(top):
            wide = rows.to(torch.float64)
            top = float((wide * wide).sum(dim=1).max())
            if not math.isfinite(top):
                raise HistoryError(
                    "the run's training inputs hold a non-finite value, so no certificate can bound "
                    "their logits; re-fetch the dataset and retrain the run"
                )
        largest = max(largest, top / (1.0 - gamma) + features * info.tiny)
    return math.sqrt(largest + 1.0)


def certify(run: Run, w: torch.Tensor, retain_ids: np.ndarray | None) -> Certificate:
    """Return the :class:`Certificate` of model ``w`` against the optimum of ``run``'s
    objective on ``retain_ids`` (all training samples when None).

    Reads the retain set once in float64 (counted on the run's objective). Raises
    HistoryError for a run that gets no certificate (see :func:`no_certificate_reason`).
    """
    return certify_state(run, w, retain_ids)[0]


def certify_state(
    run: Run,
    w: torch.Tensor,
    retain_ids: np.ndarray | None,
    measured: tuple[torch.Tensor, torch.Tensor] | None = None,
    *,
    n_retain: int | None = None,
) -> tuple[Certificate, torch.Tensor, torch.Tensor]:
    """:func:`certify`, also returning the retain objective's value and gradient at ``w``
    (float64) that the pass measured: the next request from ``w`` may start from them.

    ``measured``: that value and gradient when the method serving ``w`` already computed them
    as this function would (``run.objective`` cast to float64, at exactly ``w``, over
    ``retain_ids``; :attr:`~miniunlearn.methods.base.UnlearnResult.retain_state`): the
    certificate is then built from them without a pass (``passes`` 0), and ``retain_ids`` may
    be None with the retain set's size given as ``n_retain`` (on millions of rows, building
    their ids is work the certificate does not need)."""
    why = no_certificate_reason(run)
    if why is not None:
        raise HistoryError(why)
    started = time.perf_counter()
    objective = run.objective.cast(torch.float64)
    if n_retain is not None and (measured is None or retain_ids is not None):
        raise ValueError("n_retain stands in for retain_ids, and only with the measured state")
    if n_retain is None:
        n_retain = run.n_train if retain_ids is None else int(len(retain_ids))
    if measured is None:
        value, grad = objective.value_and_grad(w.detach().to(objective.device, torch.float64), retain_ids)
    else:
        value, grad = (t.detach().to(objective.device, torch.float64) for t in measured)
    lam = float(run.config.lam)
    x_norm = max_input_norm(run.objective.x)
    w64 = w.detach().to(torch.float64)
    allowance = (
        2.0 * UNIT_ROUNDOFF * ((n_retain + objective.dim) * math.sqrt(2.0) * x_norm + lam * float(w64.norm()))
    )
    if objective.perturbation is not None:  # b / |R|, added once
        allowance += 2.0 * UNIT_ROUNDOFF * float(objective.perturbation.norm()) / n_retain
    grad_norm = float(grad.norm())
    distance = (grad_norm + allowance) / lam
    certificate = Certificate(
        grad_norm=grad_norm,
        rounding_allowance=allowance,
        distance_bound=distance,
        logit_bound=x_norm * distance,
        lam=lam,
        n_retain=n_retain,
        passes=1.0 if measured is None else 0.0,
        seconds=time.perf_counter() - started,
        removal=removal_fields(run.config, n_retain, grad_norm, allowance) if run.config.certify else None,
    )
    return certificate, value, grad


def trained_certificate(run: Run) -> Certificate:
    """The certificate of the run's original model against the full-data optimum: how far
    training itself stopped from the optimum (a served model's bound compares to this)."""
    return certify(run, run.load_model_params(), None)
