"""The training flags that override a preset, shared by ``train`` and ``bench``: one table.

The parser adds a flag for every row (``bench`` skips the rows marked ``train_only``), and
:func:`override_fields` reads the same rows back into TrainConfig fields.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import MiniUnlearnError


def _config_choices(name: str) -> Callable[[], tuple[str, ...]]:
    """The names in ``miniunlearn.training.config.<name>``, read when the parser is built
    (that module imports torch, which this one must not do at import time)."""

    def choices() -> tuple[str, ...]:
        return tuple(getattr(importlib.import_module("miniunlearn.training.config"), name))

    return choices


@dataclass(frozen=True)
class TrainingFlag:
    """One preset-overriding flag: its name, type or choices, and one-line help.

    ``example`` marks a comma-separated list of integers (layer widths), shown in the error
    for a malformed value; ``train_only`` keeps the flag off ``bench``; ``metavar`` names
    the value in ``--help``.
    """

    flag: str
    help: str
    type: Callable[[str], Any] | None = None
    choices: Callable[[], Sequence[str]] | None = None
    example: str | None = None
    train_only: bool = False
    metavar: str | None = None

    @property
    def dest(self) -> str:
        """The attribute the parsed value lands in (``--batch-size`` -> ``batch_size``)."""
        return self.flag.removeprefix("--").replace("-", "_")

    def add_to(self, p: argparse.ArgumentParser) -> None:
        """Add this flag to ``p`` (default None: the preset decides)."""
        kwargs: dict[str, Any] = {"help": self.help}
        if self.type is not None:
            kwargs["type"] = self.type
        if self.choices is not None:
            kwargs["choices"] = tuple(self.choices())
        if self.metavar is not None:
            kwargs["metavar"] = self.metavar
        p.add_argument(self.flag, **kwargs)


TRAINING_FLAGS: tuple[TrainingFlag, ...] = (
    TrainingFlag("--epochs", "epochs (full batch: steps); default from the preset", type=int),
    TrainingFlag("--lr", "learning rate; default from the preset", type=float),
    TrainingFlag(
        "--lr-schedule",
        "learning-rate schedule; default from the preset",
        choices=_config_choices("LR_SCHEDULES"),
        train_only=True,
    ),
    TrainingFlag("--batch-size", "0 = full-batch gradient descent; default from the preset", type=int),
    TrainingFlag("--lam", "L2 regularisation strength; default from the preset", type=float),
    TrainingFlag("--hidden", "MLP hidden sizes, e.g. 128,64; default from the preset", example="128,64"),
    TrainingFlag(
        "--channels", "the CNN's two conv widths, e.g. 16,32; default from the preset", example="16,32"
    ),
    TrainingFlag(
        "--head",
        "hidden widths of the CNN's fully connected head, e.g. 256; default from the preset",
        example="256",
    ),
    TrainingFlag(
        "--activation",
        "hidden-layer activation; default from the preset",
        choices=lambda: ("relu", "tanh", "softplus", "gelu"),
        train_only=True,
    ),
    TrainingFlag(
        "--dtype",
        "floating-point type of training; default from the preset",
        choices=_config_choices("DTYPES"),
    ),
    TrainingFlag(
        "--history",
        "training history to record: mini (default), full, both or none",
        choices=_config_choices("HISTORY_MODES"),
        train_only=True,
    ),
    TrainingFlag(
        "--momentum",
        "heavy-ball momentum of training's steps, networks only (default from the preset; 0 = plain SGD)",
        type=float,
    ),
    TrainingFlag(
        "--retrain-batches",
        "how retraining without some samples forms its mini-batches: keep (default: each original "
        "batch loses its forgotten ids, DeltaGrad's reference) or refill (the recipe run afresh on the "
        "retain set in batches of its size, as a practitioner retrains)",
        choices=_config_choices("RETRAIN_BATCHES"),
    ),
    TrainingFlag("--checkpoints", "k: the minimal history keeps k+1 checkpoints (default 10)", type=int),
    TrainingFlag(
        "--curvature-rank",
        "eigenpairs of the Hessian sketched at the end of training for mini's preconditioner "
        "(default: none, since logreg models record the exact Hessian within --exact-curvature-dim and "
        "an input-subspace Hessian above it; with --curvature-basis 0, up to 128 within --history-budget; "
        "0 = no curvature)",
        type=int,
    ),
    TrainingFlag(
        "--curvature-rows",
        "training rows (a seeded random subsample) the curvature sketch averages the Hessian over, "
        "or the input-subspace Hessian takes its principal directions and tail from (default 2048; "
        "more rows cost more recording passes)",
        type=int,
    ),
    TrainingFlag(
        "--exact-curvature-dim",
        "logreg models with at most this many parameters record their exact data Hessian over every "
        "row instead of a sketch (default 1024; 0 = always a sketch)",
        type=int,
    ),
    TrainingFlag(
        "--curvature-basis",
        "larger logreg models record their Hessian exactly on this many principal input directions "
        "per class, over every row (default 160, fewer where --history-budget's share of the full "
        "history's bytes or of training's passes needs it; 0 = a Nyström sketch instead)",
        type=int,
    ),
    TrainingFlag(
        "--history-budget",
        "the minimal history's share of a full per-step history (DeltaGrad's), checkpoints and "
        "curvature together, and recording's share of training's passes (default 0.05); a larger "
        "one resolves more input directions (up to --curvature-basis): fewer passes a request, "
        "more bytes and recording passes",
        type=float,
        metavar="SHARE",
    ),
    TrainingFlag("--n-train", "train on a seeded random subset of this size", type=int),
    TrainingFlag(
        "--certify",
        "train for certified removal (Guo et al. 2020; logreg, float64): perturb the loss by b.w, "
        "train to its optimum, and hold every served model's gradient residual to the (EPS, DELTA) "
        "budget, retraining past it",
        type=str,
        train_only=True,
        metavar="EPS,DELTA",
    ),
    TrainingFlag(
        "--certify-noise",
        "standard deviation of the perturbation b with --certify (default 1.0): a larger one allows "
        "a larger residual and costs more accuracy",
        type=float,
        train_only=True,
        metavar="SIGMA",
    ),
)

DEFAULT_CERTIFY_NOISE = 1.0


def add_training_flags(p: argparse.ArgumentParser, *, train_only: bool) -> None:
    """Add the preset-overriding flags to ``p``; with ``train_only`` False, only those bench shares."""
    for row in TRAINING_FLAGS:
        if train_only or not row.train_only:
            row.add_to(p)


def override_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields given on the command line: every table flag set, and --data-path.

    Layer widths (--hidden, --channels, --head) become tuples of integers; MiniUnlearnError
    names the flag when one is malformed.
    """
    fields: dict[str, Any] = {}
    for row in TRAINING_FLAGS:
        value = getattr(args, row.dest, None)
        if value is None:
            continue
        fields[row.dest] = value if row.example is None else _widths(row, value)
    if getattr(args, "data_path", None) is not None:
        fields["data_path"] = args.data_path
    noise = fields.pop("certify_noise", None)
    if "certify" in fields:
        fields["certify"] = (*_certify(fields["certify"]), DEFAULT_CERTIFY_NOISE if noise is None else noise)
    elif noise is not None:
        raise MiniUnlearnError(
            "--certify-noise sets the noise of --certify EPS,DELTA: give --certify as well"
        )
    return fields


def _certify(text: str) -> tuple[float, float]:
    """``--certify``'s EPS,DELTA as two numbers; MiniUnlearnError when malformed."""
    try:
        epsilon, delta = (float(v) for v in text.split(","))
    except ValueError:
        raise MiniUnlearnError(f"--certify must be two numbers EPS,DELTA like 1,1e-5, got {text!r}") from None
    return epsilon, delta


def _widths(row: TrainingFlag, text: str) -> tuple[int, ...]:
    """``text`` (e.g. ``128,64``) as a tuple of integers; MiniUnlearnError names ``row``'s flag."""
    try:
        return tuple(int(h) for h in text.split(",") if h.strip())
    except ValueError:
        raise MiniUnlearnError(
            f"{row.flag} must be comma-separated integers like {row.example}, got {text!r}"
        ) from None
