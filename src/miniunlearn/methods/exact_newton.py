"""Exact-Hessian Newton: the history-free peer for convex models whose Hessian is small.

A logistic regression on tabular data has few parameters (Adult: 218, ``synthetic-higgs``:
58), so its whole Hessian fits in memory (d² numbers: 380 kB in float64 for Adult) and the
most direct solver applies. When a request arrives this method

1. takes c = g_D(w_T), the gradient training stopped at (:func:`.residual.trained_residual`:
   read from the final checkpoint when the run has one, as ``warmstart`` and ``nystrom``
   read it, else one pass), so that it aims where ``mini`` aims (``match_residual``);
2. forms the retain Hessian H = (1/|R|) sum_R Hess l_i(w) + lam I at the starting model from
   the logistic regression's structure (the only convex model; ``mini`` records the same
   Hessian of the full data at training for such small models): one weighted Gram matrix
   of the inputs per pair of classes (one for two classes), counted as its multiply-adds
   over a gradient's, about d / 8 per-sample evaluations a retain sample (d / 16 with two
   classes); d Hessian-vector products would cost 2 d, and in the Adult sweep of
   docs/results.md 3-5x the time; on a ``rows`` subsample of R when asked;
3. factors it once (Cholesky, float64) and takes Newton steps w <- w - H^{-1}(g_R(w) - c),
   one exact retain gradient each, backtracking (Armijo) when a step does not decrease
   F_R(w) - c.w. It stops when the gradient falls to ``rtol`` times its start or ``atol``,
   or when a step is below ``xtol`` times the distance travelled: that step is then taken
   without a pass to confirm it, as ``mini``'s contraction does (and a start already within
   tolerance takes one step the same way).

The Hessian is not updated (a chord method): near the trained model it changes little, so
the steps contract quickly. Runs of a non-convex model, or with more than ``max_dim``
parameters (the Hessian would take d² numbers), are refused before any work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ConfigError
from ..training.curvature import softmax_regression_hessian
from ..training.history import FINAL_ROLE
from ..training.rundir import Run
from .base import UnlearningMethod, UnlearnRequest, register, require_convex_model
from .nystrom import sketch_rows
from .options import option
from .residual import StoppingRules, aimed_residual


@register
class ExactNewton(UnlearningMethod):
    """Newton steps with the explicit retain Hessian, formed on the request (small models)."""

    name = "exact-newton"
    summary = (
        "history-free peer for small convex models: the explicit retain Hessian formed on the "
        "request, then Newton steps to g_R(w) = g_D(w_T)"
    )

    @dataclass(frozen=True)
    class Options(StoppingRules):
        """The Hessian (size cap, subsample), the point aimed at and the stopping rules."""

        max_dim: int = option(4096, "refuse models with more parameters (the Hessian holds d² numbers)", ge=1)
        rows: int = option(0, "retain samples the Hessian averages over (0: all of them)", ge=0)
        seed: int = option(0, "seed of the Hessian's subsample", ge=0)
        match_residual: bool = option(
            True, "aim at g_R(w) = g_D(w_T) as mini does (False: the retain optimum)"
        )
        max_steps: int = option(20, "most Newton steps", ge=0)

    def history_read(self) -> tuple[str, ...]:
        """The minimal history's last gradient when matching the residual (as warmstart)."""
        return (FINAL_ROLE,) if self.options.match_residual else ()

    def check_run(self, run: Run) -> None:
        """Refuse (ConfigError) a non-convex model, or one with more than ``max_dim`` parameters."""
        super().check_run(run)
        require_convex_model(self.name, run, "solves with the Hessian")
        if run.objective.dim > self.options.max_dim:
            raise ConfigError(
                f"method {self.name!r} forms the whole Hessian: run {run.path} has {run.objective.dim} "
                f"parameters, above max_dim={self.options.max_dim} ({run.objective.dim**2 * 8 / 1e6:.0f} MB "
                "in float64). Choose mini or nystrom, or raise max_dim"
            )

    def _unlearn(self, request: UnlearnRequest) -> tuple[torch.Tensor, int, dict[str, Any]]:
        opts = self.options
        run = request.run
        objective = run.objective
        retain = request.retain_ids
        c, history_bytes = aimed_residual(run, objective, opts.match_residual)

        start = request.start_params()
        rows = sketch_rows(retain, opts.rows, opts.seed) if opts.rows else retain
        before = objective.grad_evals
        factor = torch.linalg.cholesky(softmax_regression_hessian(objective, start, rows))
        hessian_passes = (objective.grad_evals - before) / retain.size

        def newton_step(g: torch.Tensor) -> torch.Tensor:
            rhs = g.to(torch.float64).unsqueeze(1)
            return -torch.cholesky_solve(rhs, factor).squeeze(1).to(objective.dtype)

        def evaluate(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            f, g = objective.value_and_grad(w, retain)
            return f - torch.dot(c, w), g - c

        w = start
        f, g = evaluate(w)
        norms = [float(g.norm())]
        passes, stop, step_unverified = 1, "max_steps", False
        if opts.max_steps and norms[0] <= max(opts.rtol * norms[0], opts.atol):
            # already within tolerance (a certified-removal run's generous budget): one step
            # all the same, unevaluated, so that the request changes the model
            w, stop, step_unverified = w + newton_step(g), "gradient", True
        for _ in range(0 if step_unverified else opts.max_steps):
            if norms[-1] <= max(opts.rtol * norms[0], opts.atol):
                stop = "gradient"
                break
            d = newton_step(g)
            if opts.xtol and float(d.norm()) <= opts.xtol * float((w + d - start).norm()):
                w, stop, step_unverified = w + d, "xtol", True
                break
            scale = 1.0
            for _ in range(opts.max_backtracks + 1):
                candidate = w + scale * d
                f_new, g_new = evaluate(candidate)
                passes += 1
                if f_new <= f + opts.armijo * scale * torch.dot(g, d):
                    break
                scale *= 0.5
            w, f, g = candidate, f_new, g_new
            norms.append(float(g.norm()))
        else:
            if norms[-1] <= max(opts.rtol * norms[0], opts.atol):
                stop = "gradient"
        return (
            w,
            history_bytes,
            {
                "hessian_rows": int(rows.size),
                "hessian_passes": hessian_passes,
                "exact_retain_passes": passes,
                "newton_steps": len(norms) - 1 + int(step_unverified),
                "grad_norm_start": norms[0],
                "grad_norm_final": norms[-1],
                "grad_norms": norms,
                "converged": stop in ("gradient", "xtol"),
                "stop_reason": stop,
                "last_step_unverified": step_unverified,
                "residual_norm": float(c.norm()),
            },
        )
