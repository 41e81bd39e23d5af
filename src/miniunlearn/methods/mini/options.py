"""Mini-Unlearning's options: one flat set (``-o mini:max_steps=10``), each declaring the
modes it applies to, and the check that refuses an option the chosen mode would ignore."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from math import inf
from typing import Any

from ...errors import ConfigError
from ..options import option

AUTO = "auto"
FIXED_POINT = "fixed-point"
TRAJECTORY = "trajectory"
REWIND = "rewind"
RESPONSE = "response"
MODES = (AUTO, FIXED_POINT, TRAJECTORY, REWIND, RESPONSE)
"""Values of the ``mode`` option: ``auto`` (see :func:`.choose.choose_mode`) or one mode."""

SERVING_MODES = (FIXED_POINT, TRAJECTORY, RESPONSE, REWIND)
_SOLVER = (FIXED_POINT, TRAJECTORY)  # the modes that run the L-BFGS contraction


def _option(default: Any, modes: tuple[str, ...], help: str, **constraints: Any) -> Any:
    """An option with ``default``, a one-line ``help`` and declared ``constraints`` (see
    :func:`~miniunlearn.methods.options.option`) that applies to ``modes`` (``auto``: to the
    choice of mode=auto itself)."""
    return option(default, help, metadata={"modes": modes}, **constraints)


@dataclass(frozen=True)
class MiniOptions:
    """Mini-Unlearning's options. Each applies to the modes in its field's
    ``metadata["modes"]``; given for another mode it is refused (see
    :func:`check_options_apply`)."""

    max_steps: int = _option(50, _SOLVER, "step budget of the L-BFGS contraction", ge=0)
    rtol: float = _option(
        1e-4, _SOLVER, "stop when the retain gradient falls to rtol times its start", ge=0, lt=inf
    )
    xtol: float = _option(
        1e-3,
        (FIXED_POINT,),
        "or when a step moves less than xtol times the distance travelled (0: off)",
        ge=0,
        lt=inf,
    )
    atol: float = _option(0.0, _SOLVER, "or when the retain gradient norm falls to atol", ge=0, lt=inf)
    exact_rtol: float = _option(
        1e-2,
        (FIXED_POINT,),
        "with the exact Hessian recorded, stop at this relative gradient instead (when looser than "
        "rtol) and take one more Newton step unmeasured: on Adult the same distance to retraining "
        "for one pass fewer at 50 and 90 %",
        ge=0,
        lt=inf,
    )
    memory: int = _option(10, _SOLVER, "L-BFGS pairs kept", ge=1)
    armijo: float = _option(1e-4, _SOLVER, "sufficient-decrease constant of the line search", ge=0, lt=inf)
    max_backtracks: int = _option(10, _SOLVER, "step halvings tried per step", ge=0)
    small_request_below: float = _option(
        0.01,
        (FIXED_POINT,),
        "a request removing at most this share of the retain set, from a model whose exact retain "
        "gradient is known, takes (quasi-)Newton steps with the run's curvature, each measured by one "
        "pass (in float64 when it is the exact Hessian's or expected to land: its certificate; else "
        "in the run's precision, then once in float64), and solves on only if 3 (exact Hessian) or 8 "
        "(other curvature) miss small_request_tol (0: never)",
        ge=0,
        le=1,
    )
    small_request_tol: float = _option(
        0.003,
        (FIXED_POINT,),
        "a small request's Newton step is kept when |g_R - c| <= this times |g_D(w_T)|, training's own "
        "residual (or rtol times its start, or atol, when looser); 0.003 ends an MNIST stream as close "
        "to retraining as the union's solve, 0.01 saves a pass a request and ends 16 % farther",
        ge=0,
        lt=inf,
    )
    use_history_pairs: bool = _option(
        False, _SOLVER, "also seed curvature with secant pairs between stored checkpoints (costs passes)"
    )
    match_residual: bool = _option(
        True,
        (FIXED_POINT,),
        "solve g_R(w) = g_D(w_T) rather than g_R(w) = 0 (the same when training converged)",
    )
    precondition: bool = _option(
        True, _SOLVER, "start L-BFGS from the run's curvature sketch when it has one"
    )
    mode: str = _option(
        AUTO, SERVING_MODES, "auto, fixed-point, trajectory, response or rewind", choices=MODES
    )
    krylov_steps: int = _option(20, (TRAJECTORY,), "Lanczos steps of the trajectory mode", ge=1)
    converged_tol: float = _option(
        1e-3, (AUTO,), "auto treats training as converged when |g_D(w_T)| <= converged_tol |g(w_0)|", ge=0
    )
    rewind_fraction: float = _option(
        1 / 16,
        (REWIND,),
        "rewind to the latest stored checkpoint at or before this fraction of training",
        ge=0,
        lt=1,
    )
    correct_rewind: bool = _option(False, (REWIND,), "move the rewound checkpoint by the gradient identity")
    replay_fraction: float = _option(
        0.4, (REWIND,), "replay budget as a fraction of the original run's passes", gt=0, lt=inf
    )
    replay_momentum: float = _option(0.9, (REWIND,), "heavy-ball momentum of the replay", ge=0, lt=1)
    replay_lr_scale: float = _option(
        1.5, (REWIND,), "peak replay rate, times the run's base rate", gt=0, lt=inf
    )
    replay_sharpness_cap: bool = _option(
        False,
        (REWIND,),
        "cap the peak rate at (1 + momentum) / the batch Hessian's largest eigenvalue at the rewind "
        "point (half heavy-ball's stability limit; 3 batches x 10 Hessian-vector products)",
    )
    match_loss: bool = _option(
        True, (REWIND,), "stop the replay once the last pass's mean objective reaches F_D(w_T)"
    )
    seed: int = _option(
        0, (REWIND, RESPONSE), "retain-batch order of the replay, and the response subsamples", ge=0
    )
    response_hvp_samples: int = _option(
        1024, (RESPONSE,), "retain samples of each batch in its Hessian-vector product", ge=1
    )
    response_slope_samples: int = _option(
        16384, (RESPONSE,), "samples in the product giving the mean gradient's slope at a checkpoint", ge=1
    )
    retrain_when_cheaper: bool = _option(
        True,
        (AUTO,),
        "mode=auto serves by retraining when that costs no more passes than the mode's budget",
    )
    response_per_batch_below: float = _option(
        0.3, (RESPONSE,), "forget sets below this share of the data are read batch by batch", ge=0, le=1
    )


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
