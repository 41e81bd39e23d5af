"""A third-party-style method written WITHOUT ``from __future__ import annotations``.

Its ``Options`` annotations are real types, not strings: the option checks must still see
them. Not registered on import; tests/test_method_contract.py registers it for its tests.
"""

from dataclasses import dataclass
from typing import Any, Literal

import torch

from miniunlearn.methods.base import UnlearningMethod, UnlearnRequest
from miniunlearn.methods.options import option


class GradientStepsPlugin(UnlearningMethod):
    """A few full-batch gradient steps on the retain set (a plugin for the contract tests)."""

    name = "gradient-steps-plugin"
    summary = "full-batch gradient steps on the retain set (test plugin without future annotations)"

    @dataclass(frozen=True)
    class Options:
        """Declared options of every checked kind, and one plain dataclass field."""

        rate: float = option(0.1, "step size of each gradient step", gt=0)
        steps: int = option(2, "number of gradient steps", ge=1)
        limit: int | None = option(None, "ignored; an optional int with a bound", ge=0)
        verbose: bool = option(False, "ignored; a bool option")
        kind: str = option("plain", "ignored; a str option with choices", choices=("plain", "fancy"))
        level: Literal["low", "high"] = option("low", "ignored; a Literal option")
        tag: str = "t"  # a plain field: type-checked, described with an empty help

    def _unlearn(self, request: UnlearnRequest) -> tuple[torch.Tensor, int, dict[str, Any]]:
        opts = self.options
        objective = request.run.objective
        w = request.start_params()
        for _ in range(opts.steps):
            _, grad = objective.value_and_grad(w, request.retain_ids)
            w = w - opts.rate * grad
        return w, 0, {"steps": opts.steps}
