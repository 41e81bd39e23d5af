"""Mini-Unlearning: minimal gradient history plus contraction onto the retain set.

The run keeps a minimal history (a few checkpoints with their full-data gradients and
objective values, and a curvature sketch). The gradient identity (``identity.py``) turns
them into exact retain-set quantities, and one of four modes serves the request:

* ``fixed-point`` (``fixed_point.py``): sketch-preconditioned L-BFGS contraction on the
  retain objective from the current model; converged convex runs, full-batch networks.
* ``trajectory`` (``trajectory.py``): predicts where gradient descent without the forget
  set stops, by Lanczos propagation around the retain optimum; convex runs stopped
  before convergence.
* ``response`` (``response.py``): linear response along the stored SGD trajectory;
  convex runs trained by mini-batch SGD and stopped before convergence.
* ``rewind`` (``rewind.py``): rewinds to an early checkpoint and replays on the retain
  set; networks trained by mini-batch SGD.

After a retraining, the two prediction modes (trajectory, response) predict the change
from the retrained model rather than the whole retraining (``rebase.py``).

``mode=auto`` (default) picks one per run by the rules of :func:`.choose.choose_mode`.
A request whose retraining costs no more passes than the chosen mode's budget is served by
retraining instead (``cost.py``), and a response prediction that raises the retain
objective above the starting model's is replaced by retraining; the record says so.
Options are flat (``-o mini:max_steps=10``); each applies to the modes its field declares
(``options.py``), and one given explicitly for a mode that does not serve the run is
refused before any work. See docs/method.md for the measurements behind these choices.
"""

from __future__ import annotations

from typing import Any

import torch

from ...training.history import FINAL_ROLE, MiniHistory
from ...training.retrain import retrain
from ...training.rundir import Run
from ..base import UnlearningMethod, UnlearnRequest, register
from .choose import HistoryInfo, choose_mode, history_info
from .cost import retraining_reason
from .fixed_point import unlearn_fixed_point
from .identity import retain_at_checkpoints
from .options import MODES, RESPONSE, REWIND, TRAJECTORY, MiniOptions, check_options_apply
from .rebase import rebased
from .response import unlearn_response
from .rewind import replay_retain, rewind_point, unlearn_rewind
from .trajectory import unlearn_trajectory


@register
class MiniUnlearning(UnlearningMethod):
    """Minimal-history, contraction-mapping unlearning (the flagship method)."""

    name = "mini"
    needs_history = ("history-mini",)
    reads_history = ("history-mini", FINAL_ROLE, "history-curvature")
    summary = (
        "stored checkpoints and curvature sketch; exact retain gradient by the gradient identity; "
        "sketch-preconditioned L-BFGS contraction (networks trained by SGD: rewind to an early "
        "checkpoint and replay on the retain set)"
    )
    Options = MiniOptions

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.given_options = tuple(options)  # the options the caller set (the rest keep defaults)

    def resolve_mode(self, run: Run, info: HistoryInfo) -> str:
        """Return the mode that serves ``run`` (its history summarised by ``info``); ConfigError
        when an option given explicitly does not apply to that mode."""
        mode = choose_mode(run, info, self.options)
        check_options_apply(self.given_options, self.options.mode, mode)
        return mode

    def check_run(self, run: Run) -> None:
        """Refuse, before anything is recorded or computed, a run without the minimal history
        (HistoryError) and options that do not apply to the mode serving it (ConfigError)."""
        super().check_run(run)
        self.resolve_mode(run, history_info(run.mini_history()))

    def retraining_reason(self, run: Run, n_forget: int) -> str | None:
        """Why a request leaving out ``n_forget`` samples in all is served by retraining: the
        mode serving ``run`` may cost as many passes as retraining (see ``cost.py``); None
        when the mode is cheaper."""
        history = run.mini_history()
        info = history_info(history)
        return self._retraining_reason(self.resolve_mode(run, info), run, history, info, n_forget)

    def _retraining_reason(
        self, mode: str, run: Run, history: MiniHistory, info: HistoryInfo, n_forget: int
    ) -> str | None:
        """:meth:`retraining_reason` with the mode and history already read."""
        rows = info.response_rows if mode == RESPONSE and info.response_rows else history.steps
        return retraining_reason(mode, run, self.options, n_forget, len(rows))

    def _unlearn(self, request: UnlearnRequest) -> tuple[torch.Tensor, int, dict[str, Any]]:
        run = request.run
        history = run.mini_history()
        info = history_info(history)
        mode = self.resolve_mode(run, info)
        reason = self._retraining_reason(mode, run, history, info, int(request.all_forgotten.size))
        if reason is None:
            w, read, extra = self._serve(mode, request, history, info)
            if mode == RESPONSE:
                reason = _raised_retain_objective(request, w)
        if reason is not None:  # exact, and no dearer than the mode (or the mode went wrong)
            w, read, extra = retrain(run, request.all_forgotten), 0, {"served_by_retraining": reason}
            return (
                w,
                read,
                {"mode": "retrain", "mode_replaced": mode, "residual_ratio": info.residual_ratio, **extra},
            )
        return w, read, {"mode": mode, "residual_ratio": info.residual_ratio, **extra}

    def _serve(
        self, mode: str, request: UnlearnRequest, history: MiniHistory, info: HistoryInfo
    ) -> tuple[torch.Tensor, int, dict[str, Any]]:
        """Run ``mode`` on the request; return (parameters, history bytes read, its diagnostics)."""
        if mode == REWIND:  # needs neither the sketch nor the final checkpoint's retain gradient
            return unlearn_rewind(request, history, self.options)
        if mode == RESPONSE:
            return rebased(
                request,
                mode,
                self.options,
                lambda r: unlearn_response(r, history, info.response_rows, self.options),
            )
        if mode == TRAJECTORY:
            return rebased(
                request, mode, self.options, lambda r: unlearn_trajectory(r, history, self.options)
            )
        return unlearn_fixed_point(request, history, self.options)


def _raised_retain_objective(request: UnlearnRequest, w: torch.Tensor) -> str | None:
    """Why the predicted ``w`` is rejected: its retain objective is above the starting
    model's (two retain passes), which a retraining's never was in our measurements (a
    linear-response prediction that left its region of validity lands far off); None when
    it is not."""
    objective, retain = request.run.objective, request.retain_ids
    before = float(objective.value_and_grad(request.start_params(), retain)[0])
    after = float(objective.value_and_grad(w, retain)[0])
    if after <= before:
        return None
    return (
        f"the response prediction raised the retain objective from {before:.6g} to {after:.6g}, "
        "so it left the region where linear response holds"
    )


__all__ = [
    "MODES",
    "MiniOptions",
    "MiniUnlearning",
    "choose_mode",
    "replay_retain",
    "retain_at_checkpoints",
    "rewind_point",
]
