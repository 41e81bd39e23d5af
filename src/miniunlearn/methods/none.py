"""The null method: return the current model unchanged.

Not a way to unlearn, a reference point: every table shows next to the real methods what
the model leaks and how far it sits from retraining when nothing is done.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .base import UnlearningMethod, UnlearnRequest, register


@register
class NoUnlearning(UnlearningMethod):
    """Keep the current model as it is (the do-nothing reference)."""

    name = "none"
    summary = "return the model unchanged (reference: what the original model leaks)"

    @dataclass(frozen=True)
    class Options:
        """No options."""

    def _unlearn(self, request: UnlearnRequest) -> tuple[torch.Tensor, int, dict[str, Any]]:
        return request.start_params(), 0, {}
