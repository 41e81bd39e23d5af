"""Kept for imports of ``miniunlearn.methods.lbfgs``: the secant-pair store now lives in
:mod:`miniunlearn.solvers.lbfgs`."""

from __future__ import annotations

from ..solvers.lbfgs import SecantPairs

__all__ = ["SecantPairs"]
