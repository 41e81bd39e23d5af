"""Trajectory mode: for convex runs stopped well before convergence.

Gradient descent on a quadratic maps the start offset w_0 - w* to f(H)(w_0 - w*) with
f(x) = prod_t (1 - eta_t x). Mini predicts the retrained endpoint as
w*_R + f(H_R)(w_0 - w*_R) and corrects it by the same prediction's error on the
original run, w_T - [w*_D + f(H_D)(w_0 - w*_D)], which cancels most of what the
quadratic model gets wrong. f(H) v comes from a few Lanczos steps with exact
Hessian-vector products (:func:`lanczos_function_apply`); the optima come from the
contraction of ``solvers/retain_lbfgs.py`` run tight. The original run's correction is
computed once and cached in RUN_DIR/cache/trajectory-correction-<key>.safetensors, bound
to the run and the settings it depends on (``bound_cache.py``). ``mode=auto`` uses it for
convex models whose final gradient is above ``converged_tol`` times the first step's and
that the response mode cannot serve (full batch, or SGD without its checkpoints).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ...bound_cache import cache_binding, cached_bound_tensor
from ...objective import Objective
from ...solvers.retain_lbfgs import Solve, contract
from ...training.history import MiniHistory
from ...training.rundir import Run
from ..base import UnlearnRequest
from .fixed_point import Checkpoints, Preconditioner, history_pairs, read_checkpoints, solve_kwargs
from .identity import retain_at_checkpoints
from .options import MiniOptions

CACHE_DIR = "cache"
OPTIMUM_MIN_STEPS = 100  # the retain optimum is solved with at least this step budget


def lanczos_function_apply(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    v: torch.Tensor,
    steps: int,
    scalar_fn: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (approximation of f(H) v, Ritz values) from ``steps`` Lanczos iterations.

    ``matvec`` computes H u; ``scalar_fn`` evaluates f on a vector of eigenvalues.
    Uses full re-orthogonalisation (the Krylov basis is small) and stops early on an
    invariant subspace.
    """
    beta0 = v.norm()
    if beta0 == 0:
        return torch.zeros_like(v), torch.zeros(0, dtype=v.dtype)
    basis = [v / beta0]
    alphas: list[torch.Tensor] = []
    betas: list[torch.Tensor] = []
    for j in range(steps):
        u = matvec(basis[-1])
        alpha = torch.dot(u, basis[-1])
        alphas.append(alpha)
        V = torch.stack(basis)
        for _ in range(2):  # twice is enough (Kahan)
            u = u - V.T @ (V @ u)
        beta = u.norm()
        if j == steps - 1 or beta <= 1e-10 * beta0:
            break
        betas.append(beta)
        basis.append(u / beta)
    k = len(alphas)
    T = torch.diag(torch.stack(alphas))
    if k > 1:
        off = torch.stack(betas[: k - 1])
        T = T + torch.diag(off, 1) + torch.diag(off, -1)
    ritz, Q = torch.linalg.eigh(T)
    coefficients = Q @ (scalar_fn(ritz) * Q[0, :])
    return beta0 * (torch.stack(basis[:k]).T @ coefficients), ritz


def gd_propagator(lrs: np.ndarray) -> Callable[[torch.Tensor], torch.Tensor]:
    """Return f(x) = prod_t (1 - lr_t x), clipped to [-1, 1], for eigenvalues x.

    Negative curvature (non-convex models) is clipped to x = 0 (no decay), and values
    past the stability limit to |f| <= 1, so the propagator never amplifies.
    """
    rates = torch.from_numpy(np.asarray(lrs, dtype=np.float64))

    def f(x: torch.Tensor) -> torch.Tensor:
        x64 = x.to(torch.float64).clamp(min=0.0)
        factors = 1.0 - rates.to(x.device)[None, :] * x64[:, None]
        log_mag = torch.log(factors.abs().clamp(min=1e-300)).sum(dim=1)
        sign = torch.where((factors < 0).sum(dim=1) % 2 == 1, -1.0, 1.0)
        return (sign * torch.exp(log_mag)).clamp(-1.0, 1.0).to(x.dtype)

    return f


def solve_optimum(
    objective: Objective,
    ids: np.ndarray | None,
    W: torch.Tensor,
    grads: torch.Tensor,
    values: torch.Tensor,
    h0: Preconditioner | None,
    options: MiniOptions,
) -> Solve:
    """Minimise F_ids (``ids`` None: all data) from the final checkpoint ``W[0]``, whose value
    ``values[0]`` and gradient ``grads[0]`` are known exactly; at least 100 steps to a
    relative gradient of at most 1e-6, no step rule. Returns the solve."""
    zero = torch.zeros_like(W[0])
    return contract(
        objective,
        ids,
        W[0].clone(),
        values[0].clone(),
        grads[0].clone(),
        history_pairs(W, grads, h0, options),
        zero,
        **{
            **solve_kwargs(options),
            "rtol": min(options.rtol, 1e-6),
            "xtol": 0.0,
            "max_steps": max(options.max_steps, OPTIMUM_MIN_STEPS),
        },
    )


def propagate(
    objective: Objective,
    ids: np.ndarray | None,
    optimum: torch.Tensor,
    w0: torch.Tensor,
    lrs: np.ndarray,
    steps: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (optimum + f(H)(w0 - optimum), Ritz values) with H the Hessian of F_ids at
    ``optimum``, f the gradient-descent propagator of the rates ``lrs``, from ``steps``
    Lanczos steps."""
    offset, ritz = lanczos_function_apply(
        lambda v: objective.hvp(optimum, v, ids), w0 - optimum, steps, gd_propagator(lrs)
    )
    return optimum + offset, ritz


def _correction_settings(
    options: MiniOptions, h0: Preconditioner | None, dtype: torch.dtype
) -> dict[str, object]:
    """The settings the original run's correction depends on, beyond the run itself."""
    return {
        "krylov_steps": options.krylov_steps,
        "rtol": options.rtol,
        "atol": options.atol,
        "max_steps": options.max_steps,
        "memory": options.memory,
        "armijo": options.armijo,
        "max_backtracks": options.max_backtracks,
        "use_history_pairs": options.use_history_pairs,
        "preconditioned": h0 is not None,
        "dtype": str(dtype),
    }


def original_correction(
    run: Run, cp: Checkpoints, w0: torch.Tensor, options: MiniOptions
) -> tuple[torch.Tensor, bool]:
    """Return (w_T - predicted endpoint of the original run, whether it came from the cache).

    Takes the run, its :class:`Checkpoints`, its initial parameters ``w0`` and the options.
    The cache entry RUN_DIR/cache/trajectory-correction-<key>.safetensors (key: the solver
    settings) is used only when it records this run's binding, its minimal history's
    sha256 and the same settings; otherwise it is recomputed and replaced.
    """
    W, G, V = cp.W, cp.G, cp.V
    settings = _correction_settings(options, cp.h0, W.dtype)
    key = hashlib.sha256(repr(tuple(settings.values())).encode()).hexdigest()[:16]
    history_sha256 = ",".join(sorted(str(f["sha256"]) for f in run.files("history-mini")))
    binding = cache_binding(run, "trajectory-correction", {**settings, "history_sha256": history_sha256})

    def compute() -> torch.Tensor:
        optimum = solve_optimum(run.objective, None, W, G, V.to(W.dtype), cp.h0, options).w
        predicted, _ = propagate(run.objective, None, optimum, w0, run.plan.lrs, options.krylov_steps)
        return W[0] - predicted

    path = run.subdir(CACHE_DIR, create=True) / f"trajectory-correction-{key}.safetensors"
    return cached_bound_tensor(path, binding, compute, name="correction", device=W.device, dtype=W.dtype)


def unlearn_trajectory(
    request: UnlearnRequest, history: MiniHistory, options: MiniOptions
) -> tuple[torch.Tensor, int, dict[str, Any]]:
    """Predict the retrained endpoint along the training trajectory (see the module
    docstring). Takes the request, the run's minimal history and the options; returns
    (parameters, history bytes read, diagnostics).

    Always predicts from the original run with every forgotten id removed, so a sequence
    of requests gives the same model as their union at once.
    """
    run, objective = request.run, request.run.objective
    cp = read_checkpoints(request, history, options)
    value_r, grad_r = retain_at_checkpoints(objective, history.n, history.lam, cp.W, cp.G, cp.V, request)
    w0 = run.initial_params().to(cp.W.dtype)
    evals_before = objective.grad_evals
    correction, cached = original_correction(run, cp, w0, options)
    evals_original = objective.grad_evals - evals_before
    optimum = solve_optimum(objective, request.retain_ids, cp.W, grad_r, value_r, cp.h0, options)
    predicted, ritz = propagate(
        objective, request.retain_ids, optimum.w, w0, run.plan.lrs, options.krylov_steps
    )
    return (
        predicted + correction,
        cp.history_bytes,
        {
            **cp.diagnostics(),
            "optimum_steps": len(optimum.step_sizes),
            "exact_retain_passes": optimum.passes + 2 * len(ritz),
            "optimum_converged": optimum.converged,
            "grad_norm_final": optimum.grad_norms[-1],
            "krylov_steps": int(len(ritz)),
            "ritz_min": float(ritz.min()),
            "ritz_max": float(ritz.max()),
            "original_correction_cached": cached,
            "original_correction_grad_evals": int(evals_original),
            "original_correction_norm": float(correction.norm()),
        },
    )
