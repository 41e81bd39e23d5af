"""The error budget: how much approximate unlearning a run may take between exact retrainings.

A small object apart from the maths (as privacy accountants are): it says what a
request costs and whether the run can afford it. An exact method (retraining) costs
nothing and resets the count; an approximate one costs the fraction of the training
set it removes. Past ``limit`` a request is served by retraining instead.

On convex runs a second limit may be set in the units of the certificate every served
request carries (``max_certified_distance``: the most the served model may be from the
retain optimum, see :mod:`miniunlearn.certificate`); an approximate result certified
farther than that is discarded and the request served by retraining.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError

DEFAULT_MAX_APPROX_RATIO = 0.5


@dataclass(frozen=True)
class ErrorBudget:
    """``limit``: the fraction of the training set approximate methods may remove between
    exact retrainings, in [0, 1]; ``max_certified_distance``: the largest certified
    distance to the retain optimum an approximate result may have (None: no such limit)."""

    limit: float = DEFAULT_MAX_APPROX_RATIO
    max_certified_distance: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.limit <= 1.0:
            raise ConfigError(f"--max-approx-ratio must be in [0, 1], got {self.limit}")
        bound = self.max_certified_distance
        if bound is not None and not (math.isfinite(bound) and bound > 0):
            raise ConfigError(f"--max-certified-distance must be a positive number, got {bound}")

    @staticmethod
    def cost(*, exact: bool, n_new: int, n_train: int) -> float:
        """The budget a request spends: 0 for an exact method, else the fraction it removes."""
        return 0.0 if exact else n_new / n_train

    def exceeded(self, spent: float, cost: float) -> str | None:
        """Why ``spent`` (since the last retraining) plus ``cost`` is over the limit, or None."""
        total = spent + cost
        if total <= self.limit:
            return None
        return (
            f"error budget exceeded: {total:.3f} of the training set removed approximately "
            f"since the last retraining > {self.limit}"
        )

    def certificate_exceeded(self, distance_bound: float) -> str | None:
        """Why an approximate result certified within ``distance_bound`` of the retain optimum
        is over ``max_certified_distance``, or None (also when no such limit is set)."""
        if self.max_certified_distance is None or distance_bound <= self.max_certified_distance:
            return None
        return (
            f"certified distance {distance_bound:.3g} to the retain optimum > --max-certified-distance "
            f"{self.max_certified_distance:g}"
        )
