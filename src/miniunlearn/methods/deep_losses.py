"""Pieces shared by the deep-unlearning baselines (``rl``, ``salun``, ``scrub``, ``l1sparse``).

No method is registered here. :func:`logits_loss_grad_sum` evaluates an arbitrary loss of the
model's logits over a set of sample ids at flat parameters ``w`` and its gradient, chunked and
vectorised like :meth:`Objective.loss_grad_sum` (one ``torch.func`` gradient of the summed
loss per chunk, no loop over samples), and counts one per-sample gradient evaluation per
sample on ``objective.grad_evals``. The loss functions here return sums over a chunk, so
that chunking does not change the result: callers divide by the batch size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad_and_value

from ..objective import Objective

# (logits (m, C), true labels (m,), *per-sample auxiliaries (m, ...)) -> summed loss over the m samples
LogitsLoss = Callable[..., torch.Tensor]


def logits_loss_grad_sum(
    objective: Objective,
    w: torch.Tensor,
    ids: np.ndarray,
    loss_fn: LogitsLoss,
    aux: Sequence[torch.Tensor] = (),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (sum of ``loss_fn`` over the chunks of ``ids``, its gradient with respect to ``w``).

    ``loss_fn(logits, labels, *aux_chunk)`` must return the summed loss of one chunk; each tensor
    in ``aux`` has one row per id (in the order of ``ids``) and is cut into the same chunks.
    Adds ``len(ids)`` to ``objective.grad_evals``.
    """
    idx = torch.as_tensor(np.asarray(ids), dtype=torch.long, device=objective.device)
    if any(a.shape[0] != idx.numel() for a in aux):
        raise ValueError("every auxiliary tensor needs one row per sample id")
    total_loss = torch.zeros((), dtype=objective.dtype, device=objective.device)
    total_grad = torch.zeros(objective.dim, dtype=objective.dtype, device=objective.device)
    size = objective.chunk_size
    for start in range(0, idx.numel(), size):
        chunk = idx[start : start + size]
        x, y = objective.x[chunk], objective.y[chunk]
        extra = tuple(a[start : start + size] for a in aux)

        def chunk_loss(w_: torch.Tensor, x=x, y=y, extra=extra) -> torch.Tensor:
            logits = functional_call(objective.model, objective.unflatten(w_), (x,))
            return loss_fn(logits, y, *extra)

        g, v = grad_and_value(chunk_loss)(w)
        total_loss += v.detach()
        total_grad += g.detach()
    objective.count(int(idx.numel()))
    return total_loss, total_grad


def cross_entropy_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Return the summed cross-entropy of ``logits`` against ``labels``."""
    return nn.functional.cross_entropy(logits, labels, reduction="sum")


def kl_at_temperature(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Return sum over rows of KL(p_teacher || p_student) * T^2, with p = softmax(logits / T).

    The T^2 factor keeps gradient magnitudes comparable across temperatures (Hinton et al.
    2015), as in the distillation loss SCRUB uses; divide by the batch size for the mean.
    """
    log_p_s = torch.log_softmax(student / temperature, dim=1)
    log_p_t = torch.log_softmax(teacher / temperature, dim=1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum() * temperature**2


def random_wrong_labels(labels: torch.Tensor, n_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Return labels drawn uniformly from the ``n_classes - 1`` classes other than each true label."""
    if n_classes < 2:
        raise ValueError(f"random wrong labels need at least 2 classes, got {n_classes}")
    offset = torch.randint(1, n_classes, labels.shape, generator=generator, device=generator.device)
    return (labels + offset.to(labels.device)) % n_classes


def teacher_logits(objective: Objective, w: torch.Tensor, ids: np.ndarray) -> torch.Tensor:
    """Return the logits at fixed parameters ``w`` for samples ``ids`` (forward only, not counted)."""
    idx = torch.as_tensor(np.asarray(ids), dtype=torch.long, device=objective.device)
    return objective.logits(w, objective.x[idx])
