"""Lanczos approximation of f(H) v for a symmetric Hessian available only through products.

Used by Mini-Unlearning's trajectory mode to carry the start of training to its end:
gradient descent on a quadratic with Hessian H and rates eta_t maps an initial offset v
to f(H) v with f(x) = prod_t (1 - eta_t x).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


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
