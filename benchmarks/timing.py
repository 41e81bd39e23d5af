"""Timing shared by the benchmarks that time one piece of work alone."""

from __future__ import annotations

import time
from collections.abc import Callable


def mean_seconds(work: Callable[[], object], repeats: int = 5) -> float:
    """Mean seconds of ``work()`` over ``repeats`` calls, after one call to warm up."""
    work()
    started = time.perf_counter()
    for _ in range(repeats):
        work()
    return (time.perf_counter() - started) / repeats
