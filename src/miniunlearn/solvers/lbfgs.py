"""Limited-memory BFGS curvature: a bounded store of secant pairs and the two-loop product.

Shared by Mini-Unlearning and the retain-optimum solver (inverse-Hessian products) and by
DeltaGrad (which builds its compact-form Hessian from the same pairs).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import torch


class SecantPairs:
    """The last ``memory`` secant pairs (s, y) that satisfy the curvature condition.

    A pair is kept only when s.y > ``eps`` * |s| * |y| (positive curvature along s),
    which keeps the implied Hessian approximation positive definite for non-convex
    objectives too. ``h0``, when given, is the initial inverse Hessian (a preconditioner,
    e.g. from a curvature sketch) in place of the scalar s.y / y.y.
    """

    def __init__(
        self, memory: int, eps: float = 1e-8, h0: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> None:
        self.memory = int(memory)
        self.eps = float(eps)
        self.h0 = h0
        self.pairs: deque[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = deque(maxlen=self.memory)
        self.rejected = 0

    def __len__(self) -> int:
        return len(self.pairs)

    def add(self, s: torch.Tensor, y: torch.Tensor) -> bool:
        """Append (s, y) if it passes the curvature test; return whether it was kept."""
        sy = torch.dot(s, y)
        if not torch.isfinite(sy) or sy <= self.eps * s.norm() * y.norm() or sy <= 0:
            self.rejected += 1
            return False
        self.pairs.append((s.clone(), y.clone(), 1.0 / sy))
        return True

    def drop_oldest(self) -> None:
        """Remove the oldest pair (no-op when empty)."""
        if self.pairs:
            self.pairs.popleft()

    def gamma(self) -> float:
        """Initial inverse-Hessian scale s.y / y.y of the newest pair (1.0 without pairs)."""
        if not self.pairs:
            return 1.0
        s, y, rho = self.pairs[-1]
        return float(1.0 / (rho * torch.dot(y, y)))

    def inverse_hessian_product(self, g: torch.Tensor) -> torch.Tensor:
        """Return H g with H the L-BFGS inverse-Hessian approximation (two-loop recursion,
        seeded with ``h0`` when given)."""
        q = g.clone()
        alphas = []
        for s, y, rho in reversed(self.pairs):
            alpha = rho * torch.dot(s, q)
            q -= alpha * y
            alphas.append(alpha)
        r = self.h0(q) if self.h0 is not None else self.gamma() * q
        for (s, y, rho), alpha in zip(self.pairs, reversed(alphas), strict=True):
            beta = rho * torch.dot(y, r)
            r += (alpha - beta) * s
        return r
