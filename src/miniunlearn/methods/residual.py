"""What ``mini``'s peers share with it: the point they aim at and the rules that stop them.

``mini`` and its peers (``warmstart``, ``nystrom``, ``exact-newton``) solve
g_R(w) = c with c = g_D(w_T), the full-data gradient at the trained model (the residual
matched target, see docs/method.md); with c = 0 they aim at the retain optimum instead.
``nystrom`` and ``exact-newton`` also stop by ``mini``'s rules, with its defaults
(:class:`StoppingRules`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import HistoryError
from ..objective import Objective
from ..training.rundir import Run
from .mini.options import MiniOptions
from .options import option

_MINI = MiniOptions()


def trained_residual(run: Run, objective: Objective) -> tuple[torch.Tensor, int]:
    """Return (c, bytes read): c = g_D(w_T) in ``objective``'s precision, read from the minimal
    history's final checkpoint when the run has one (its size in bytes), else computed by one
    pass over the training data (0 bytes read; the pass is counted on ``objective``)."""
    try:
        final_grad = run.mini_history().grads[0]
        return final_grad.to(objective.dtype), int(final_grad.nbytes)
    except HistoryError:
        return objective.value_and_grad(run.load_model_params().to(objective.dtype))[1], 0


def aimed_residual(run: Run, objective: Objective, match_residual: bool) -> tuple[torch.Tensor, int]:
    """Return (c, bytes read): :func:`trained_residual` when ``match_residual``, else zeros
    (the retain optimum is aimed at; nothing read)."""
    if match_residual:
        return trained_residual(run, objective)
    return torch.zeros(objective.dim, dtype=objective.dtype, device=objective.device), 0


@dataclass(frozen=True)
class StoppingRules:
    """``mini``'s stopping rules and line search, with its defaults: the options part of a
    peer's ``Options`` that runs them (a method's ``Options`` inherits it)."""

    rtol: float = option(
        _MINI.rtol, "stop when the retain gradient falls to rtol times its start", ge=0, lt=float("inf")
    )
    xtol: float = option(
        _MINI.xtol,
        "or when a step moves less than xtol times the distance travelled (0: off)",
        ge=0,
        lt=float("inf"),
    )
    atol: float = option(_MINI.atol, "or when the retain gradient norm falls to atol", ge=0, lt=float("inf"))
    armijo: float = option(
        _MINI.armijo, "sufficient-decrease constant of the line search", ge=0, lt=float("inf")
    )
    max_backtracks: int = option(_MINI.max_backtracks, "step halvings tried per step", ge=0)
