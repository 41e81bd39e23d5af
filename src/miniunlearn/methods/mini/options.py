"""Mini-Unlearning's options: one flat set (``-o mini:max_steps=10``), each declaring the
modes it applies to, and the check that refuses an option the chosen mode would ignore."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ...errors import ConfigError

AUTO = "auto"
FIXED_POINT = "fixed-point"
TRAJECTORY = "trajectory"
REWIND = "rewind"
RESPONSE = "response"
MODES = (AUTO, FIXED_POINT, TRAJECTORY, REWIND, RESPONSE)
"""Values of the ``mode`` option: ``auto`` (see :func:`.choose.choose_mode`) or one mode."""

SERVING_MODES = (FIXED_POINT, TRAJECTORY, RESPONSE, REWIND)
_SOLVER = (FIXED_POINT, TRAJECTORY)  # the modes that run the L-BFGS contraction


def _option(default: Any, modes: tuple[str, ...]) -> Any:
    """A dataclass field with ``default`` that applies to ``modes`` (``auto``: to the choice
    of mode=auto itself)."""
    return field(default=default, metadata={"modes": modes})


@dataclass(frozen=True)
class MiniOptions:
    """max_steps: step budget; rtol/atol: stop when the gradient norm falls to
    max(rtol * start, atol); xtol: or, when a curvature sketch preconditions the
    iteration, when a step moves less than xtol times the distance travelled (0 = off);
    memory: L-BFGS pairs kept; armijo: sufficient-decrease
    constant; max_backtracks: halvings tried per step; use_history_pairs: also seed
    curvature with secant pairs between the stored checkpoints (measured to cost passes);
    precondition: start L-BFGS from the run's curvature sketch when it has one;
    match_residual: solve g_R(w) = g_D(w_T) rather than g_R(w) = 0 (identical when
    training converged); mode: auto, fixed-point, trajectory, response or rewind;
    krylov_steps: Lanczos steps of the trajectory mode; converged_tol: auto
    mode treats training as converged when |g_D(w_T)| <= converged_tol * |g(w_0)|.
    Rewind mode: rewind_fraction: go back to the latest stored checkpoint at or before this
    fraction of training (0 = the initial weights); correct_rewind: move it by the gradient
    identity; replay_fraction: replay budget as a fraction of the original run's passes over
    the data; replay_momentum, replay_lr_scale: heavy-ball momentum and peak rate (times the
    run's base rate) of the replay; match_loss: stop the replay once the mean batch objective
    over the last pass is at most the original run's final objective F_D(w_T); seed:
    retain-batch order of the replay (and the response mode's subsamples).
    Response mode: response_hvp_samples: retain samples of each batch in its Hessian-vector
    product; response_slope_samples: samples in the Hessian-vector product giving the slope
    of the mean gradient at each checkpoint; response_per_batch_below: forget sets smaller
    than this share of the data are read batch by batch, larger ones interpolated.
    Each option applies to the modes in its field's ``metadata["modes"]``; given for another
    mode it is refused (see :func:`check_options_apply`)."""

    max_steps: int = _option(50, _SOLVER)
    rtol: float = _option(1e-4, _SOLVER)
    xtol: float = _option(1e-3, (FIXED_POINT,))
    atol: float = _option(0.0, _SOLVER)
    memory: int = _option(10, _SOLVER)
    armijo: float = _option(1e-4, _SOLVER)
    max_backtracks: int = _option(10, _SOLVER)
    use_history_pairs: bool = _option(False, _SOLVER)
    match_residual: bool = _option(True, (FIXED_POINT,))
    precondition: bool = _option(True, _SOLVER)
    mode: str = _option(AUTO, SERVING_MODES)
    krylov_steps: int = _option(20, (TRAJECTORY,))
    converged_tol: float = _option(1e-3, (AUTO,))
    rewind_fraction: float = _option(1 / 16, (REWIND,))
    correct_rewind: bool = _option(False, (REWIND,))
    replay_fraction: float = _option(0.15, (REWIND,))
    replay_momentum: float = _option(0.9, (REWIND,))
    replay_lr_scale: float = _option(1.5, (REWIND,))
    match_loss: bool = _option(True, (REWIND,))
    seed: int = _option(0, (REWIND, RESPONSE))
    response_hvp_samples: int = _option(1024, (RESPONSE,))
    response_slope_samples: int = _option(16384, (RESPONSE,))
    response_per_batch_below: float = _option(0.3, (RESPONSE,))

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mini mode must be one of {MODES}, got {self.mode!r}")
        if self.max_steps < 0 or self.krylov_steps < 1 or self.memory < 1:
            raise ConfigError("mini needs max_steps >= 0, krylov_steps >= 1 and memory >= 1")
        for name in ("rtol", "xtol", "atol"):
            value = getattr(self, name)
            if not 0 <= value < float("inf"):  # also refuses NaN
                raise ConfigError(f"mini: {name} must be a finite number >= 0, got {value}")
        self._check_rewind()
        if self.response_hvp_samples < 1 or self.response_slope_samples < 1:
            raise ConfigError("mini: response_hvp_samples and response_slope_samples must be at least 1")
        if not 0 <= self.response_per_batch_below <= 1:
            raise ConfigError(
                f"mini: response_per_batch_below must be in [0, 1], got {self.response_per_batch_below}"
            )

    def _check_rewind(self) -> None:
        """Raise ConfigError for a rewind-mode option out of its range."""
        if not 0 <= self.rewind_fraction < 1:
            raise ConfigError(f"mini: rewind_fraction must be in [0, 1), got {self.rewind_fraction}")
        if not 0 < self.replay_fraction < float("inf"):
            raise ConfigError(f"mini: replay_fraction must be positive, got {self.replay_fraction}")
        if not 0 <= self.replay_momentum < 1:
            raise ConfigError(f"mini: replay_momentum must be in [0, 1), got {self.replay_momentum}")
        if not 0 < self.replay_lr_scale < float("inf"):
            raise ConfigError(f"mini: replay_lr_scale must be positive, got {self.replay_lr_scale}")


def option_modes(name: str) -> tuple[str, ...]:
    """Return the modes option ``name`` applies to (``auto``: the automatic choice itself);
    KeyError for a name that is not an option."""
    for f in dataclasses.fields(MiniOptions):
        if f.name == name:
            return tuple(f.metadata["modes"])
    raise KeyError(name)


def _applies(name: str, requested: str, chosen: str) -> bool:
    """Whether option ``name`` matters to a run served by ``chosen`` after ``mode=requested``."""
    modes = option_modes(name)
    return chosen in modes or (AUTO in modes and requested == AUTO)


def _modes_text(modes: tuple[str, ...]) -> str:
    """'the rewind mode' / 'the fixed-point and trajectory modes'."""
    if len(modes) == 1:
        return f"the {modes[0]} mode"
    return f"the {', '.join(modes[:-1])} and {modes[-1]} modes"


def check_options_apply(given: Iterable[str], requested: str, chosen: str) -> None:
    """Refuse options given explicitly that the chosen mode would ignore.

    Takes the names of the options the user gave (defaults left alone are never refused),
    the ``mode`` option as given (``requested``) and the mode that serves the run after
    ``auto`` is resolved (``chosen``). Returns None, or raises ConfigError naming each such
    option, the modes it applies to and the chosen mode.
    """
    stray = [name for name in given if not _applies(name, requested, chosen)]
    if not stray:
        return
    how = "chosen by mode=auto" if requested == AUTO else f"mode={requested} was given"
    served = f"this run is served by the {chosen} mode ({how})"
    if len(stray) == 1:
        modes = option_modes(stray[0])
        fixes = " or ".join(f"mode={m}" for m in modes)
        raise ConfigError(
            f"mini: option {stray[0]} applies to {_modes_text(modes)}, but {served}; drop it or pass {fixes}"
        )
    listed = ", ".join(f"{name} ({_modes_text(option_modes(name))})" for name in stray)
    raise ConfigError(
        f"mini: options {listed} do not apply to the {chosen} mode; {served}; drop them or pass a mode "
        "they apply to"
    )
