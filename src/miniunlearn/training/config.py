"""Training configuration: everything needed to reproduce a training run exactly."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError

HISTORY_MODES = ("none", "mini", "full", "both")
MINI_HISTORY_MODES = ("mini", "both")  # the modes that keep the minimal history
CONVEX_MODELS = ("logreg",)  # models whose training objective is convex
LR_SCHEDULES = ("constant", "step", "cosine")
RETRAIN_BATCHES = ("keep", "refill")
"""How retraining without some samples forms its mini-batches (``TrainConfig.retrain_batches``)."""
DTYPES = {"float32": torch.float32, "float64": torch.float64}
SEED_MAX = 2**32 - 1
"""The largest seed: training seeds also seed scikit-learn's draws (``random_state``), which
take 0 .. 2**32 - 1; the command line holds every ``--seed`` to the same range."""
MAX_EPOCHS = 1_000_000
"""Far more epochs than any recipe uses (the presets use at most 1,000); a count like 10**11 would
spend hours building the step plan before the first step."""
MAX_CHECKPOINTS = 64
"""The minimal history's k+1 checkpoints reach back 2**(k-1) steps: 64 covers any run."""
DEFAULT_CURVATURE_ROWS = 2048
"""Rows the curvature sketch averages the Hessian over (measured: docs/results/request-passes.md)."""
EXACT_CURVATURE_DIM = 1024
"""Logistic regressions with at most this many parameters record their exact data Hessian (d² numbers,
4 MB in float32 at the cap) instead of a sketch: a single-sample request then needs a pass or two."""
DEFAULT_CURVATURE_BASIS = 160
"""The most principal input directions per class a larger logistic regression resolves its Hessian
on (``training/input_subspace.py``); the history budget sets fewer where it binds (MNIST: 139,
1,390 directions, 2.4 MB and 4.9 % of training's passes to record, within the 5 % budget)."""
DEFAULT_HISTORY_BUDGET = 0.05
"""The minimal history's bytes (checkpoints plus curvature), as a share of a full per-step
history (2 T d numbers: DeltaGrad's), and recording an input-subspace curvature's passes, as
a share of training's: what a run records by default."""
SKETCH_OVERRIDES = {"curvature_basis": 0}
"""Training overrides that record a Nyström sketch instead, as logistic regressions did before the
input-subspace Hessian became their default (the benchmarks whose committed tables used it)."""


@dataclass(frozen=True)
class TrainConfig:
    """A reproducible training recipe.

    ``hidden``: MLP hidden sizes; ``channels``: the CNN's two convolution widths; ``head``:
    hidden widths of the CNN's fully connected head (empty = one linear layer).
    ``batch_size`` 0 means full-batch gradient descent (one step per epoch).
    ``checkpoints`` is k: the minimal history keeps k+1 geometrically spaced steps.
    ``n_train`` optionally trains on a seeded subset of the training split;
    ``subset_ids`` on exactly those rows (renumbered 0..len-1), e.g. for shadow models.
    ``curvature_rank``: eigenpairs of the data Hessian sketched at the end of training
    (None = for logistic regression with the minimal history, up to 128 within a 5 %
    history budget; 0 = no sketch);
    ``curvature_iters``: blocks of Hessian-vector products the sketch may use;
    ``curvature_rows``: the seeded random subsample of training rows the sketch averages
    the Hessian over (default 2048, a few per cent of training's passes on MNIST; None = every
    row, as runs recorded before this option).
    ``exact_curvature_dim``: with ``curvature_rank`` unset, a logistic regression with at most
    this many parameters records its exact data Hessian over every row instead of a sketch
    (0: always a sketch, as runs recorded before this option).
    ``curvature_basis``: with ``curvature_rank`` unset, a larger logistic regression records its
    data Hessian projected onto at most this many principal input directions per class,
    exactly, over every row (fewer when the history budget needs it; ``training/input_subspace.py``);
    0 = a Nyström sketch, as runs recorded before this option.
    ``history_budget``: the share of a full per-step history (DeltaGrad's 2 T d numbers) the
    minimal history may take, checkpoints and curvature together (default 0.05), and the share
    of training's passes recording an input-subspace curvature may take; a larger one
    lets a larger logistic regression resolve more input directions (up to ``curvature_basis``)
    or keep a larger sketch, so each request's quasi-Newton step leaves less, at the price of
    its bytes and the passes recording it takes (docs/results.md, streams). The exact Hessian
    of a small model is exempt.
    ``momentum``: heavy-ball momentum of the training steps (v <- momentum v + g, w <- w - lr v;
    0 = plain gradient steps); networks only, since DeltaGrad and the convex modes replay
    plain steps.
    ``retrain_batches``: how retraining without some samples forms its mini-batches. ``keep``
    (default): each of the original batches loses its forgotten ids and keeps its place, the
    reference DeltaGrad replays (a batch shrinks with the share forgotten: at 90 %, a batch of
    64 keeps about 6 rows). ``refill``: the recipe run afresh on the retain set, in batches of
    the recipe's size drawn with the same seed, for the same epochs and schedule, as a
    practitioner retrains. Both never see a forgotten sample and both give the original model
    back when nothing is forgotten; they differ only for mini-batch runs.
    ``certify``: (epsilon, delta, noise) trains for certified removal (Guo et al. 2020): the
    loss is perturbed by b.w with b ~ N(0, noise^2 I) drawn from the seed, training ends at
    the perturbed optimum, and every served model's gradient residual is held to the budget
    noise * epsilon / sqrt(2 log(1.5 / delta)) (see :mod:`.certified`); None: an ordinary run.
    """

    dataset: str
    model: str = "logreg"
    hidden: tuple[int, ...] = (128,)
    channels: tuple[int, int] = (8, 16)
    head: tuple[int, ...] = ()
    activation: str = "relu"
    epochs: int = 100
    batch_size: int = 0
    lr: float = 0.1
    lr_schedule: str = "constant"
    momentum: float = 0.0
    retrain_batches: str = "keep"
    lam: float = 1e-3
    seed: int = 0
    dtype: str = "float32"
    history: str = "mini"
    checkpoints: int = 10
    curvature_rank: int | None = None
    curvature_iters: int = 2
    curvature_rows: int | None = DEFAULT_CURVATURE_ROWS
    exact_curvature_dim: int = EXACT_CURVATURE_DIM
    curvature_basis: int = DEFAULT_CURVATURE_BASIS
    history_budget: float = DEFAULT_HISTORY_BUDGET
    n_train: int | None = None
    subset_ids: tuple[int, ...] | None = None
    data_path: str | None = None
    data_options: dict[str, Any] = field(default_factory=dict)
    certify: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.epochs <= MAX_EPOCHS:
            raise ConfigError(f"epochs (--epochs) must be in 1..{MAX_EPOCHS:,d}, got {self.epochs}")
        check_seed(self.seed)
        if self.batch_size < 0:
            raise ConfigError(f"batch size must be >= 0 (0 = full batch), got {self.batch_size}")
        if not 0 < self.lr < float("inf"):  # also refuses NaN
            raise ConfigError(f"learning rate (--lr) must be a positive finite number, got {self.lr}")
        if not 0 <= self.lam < float("inf"):
            raise ConfigError(f"L2 strength (--lam) must be a finite number >= 0, got {self.lam}")
        if not 0 <= self.momentum < 1:  # also refuses NaN
            raise ConfigError(f"momentum (--momentum) must be in [0, 1), got {self.momentum}")
        if self.momentum and self.model in CONVEX_MODELS:
            raise ConfigError(
                f"momentum is for networks: DeltaGrad and mini's convex modes replay plain gradient steps "
                f"of a {self.model!r}; train it with --momentum 0"
            )
        if self.retrain_batches not in RETRAIN_BATCHES:
            raise ConfigError(
                f"unknown retraining batches {self.retrain_batches!r} (--retrain-batches); choose one of "
                f"{RETRAIN_BATCHES}"
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"unknown lr schedule {self.lr_schedule!r}; choose one of {LR_SCHEDULES}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"unknown dtype {self.dtype!r}; choose one of {tuple(DTYPES)}")
        if self.history not in HISTORY_MODES:
            raise ConfigError(f"unknown history mode {self.history!r}; choose one of {HISTORY_MODES}")
        if not 1 <= self.checkpoints <= MAX_CHECKPOINTS:
            raise ConfigError(
                f"checkpoints (--checkpoints, k) must be in 1..{MAX_CHECKPOINTS}: the minimal history's "
                f"k+1 checkpoints reach back 2**(k-1) steps; got {self.checkpoints}"
            )
        if self.curvature_rank is not None and self.curvature_rank < 0:
            raise ConfigError(f"curvature rank must be >= 0 (0 = no sketch), got {self.curvature_rank}")
        if self.curvature_rank and self.history not in MINI_HISTORY_MODES:
            raise ConfigError(
                "the curvature sketch is part of the minimal history: use --history mini or both, "
                "or --curvature-rank 0"
            )
        if self.curvature_rank and self.model not in CONVEX_MODELS:
            raise ConfigError(
                f"a curvature sketch needs a convex model (logreg); {self.model} has an indefinite Hessian"
            )
        if self.curvature_iters < 1:
            raise ConfigError(f"curvature iters must be at least 1, got {self.curvature_iters}")
        if self.curvature_rows is not None and self.curvature_rows < 1:
            raise ConfigError(
                f"--curvature-rows must be a positive number of rows, got {self.curvature_rows}"
            )
        if self.exact_curvature_dim < 0:
            raise ConfigError(
                f"--exact-curvature-dim must be >= 0 (0 = always a sketch), got {self.exact_curvature_dim}"
            )
        if self.curvature_basis < 0:
            raise ConfigError(
                f"--curvature-basis must be >= 0 (0 = a Nyström sketch), got {self.curvature_basis}"
            )
        if not 0 < self.history_budget <= 1:  # also refuses NaN
            raise ConfigError(
                "--history-budget is the minimal history's share of a full per-step history: a number "
                f"in (0, 1] like 0.05, got {self.history_budget}"
            )
        if self.history_budget != DEFAULT_HISTORY_BUDGET and (
            self.model not in CONVEX_MODELS or self.history not in MINI_HISTORY_MODES
        ):
            raise ConfigError(
                "--history-budget sizes a logistic regression's recorded curvature: give it with "
                "--model logreg and --history mini or both"
            )
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "head", tuple(int(h) for h in self.head))
        if any(h < 1 for h in self.hidden):
            raise ConfigError(
                f"hidden sizes (--hidden) must be positive integers like 128,64, got {self.hidden}"
            )
        if any(h < 1 for h in self.head):
            raise ConfigError(f"head widths must be positive, got {self.head}")
        if len(self.channels) != 2 or min(self.channels) < 1:
            raise ConfigError(f"channels must be two positive conv widths like 8,16, got {self.channels}")
        if self.subset_ids is not None:
            object.__setattr__(self, "subset_ids", tuple(int(i) for i in self.subset_ids))
        if self.certify is not None:
            self._check_certify()
        if "path" in self.data_options:
            raise ConfigError(
                "the data file is not a data option: give it with --data-path FILE "
                "(TrainConfig.data_path), not --data-option path=..."
            )

    def _check_certify(self) -> None:
        """Refuse a certified-removal setting that cannot hold (ConfigError saying why)."""
        try:
            epsilon, delta, noise = (float(v) for v in self.certify)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise ConfigError(
                f"certify must be (epsilon, delta, noise), three numbers, got {self.certify!r}"
            ) from None
        object.__setattr__(self, "certify", (epsilon, delta, noise))
        if not 0 < epsilon < float("inf") or not 0 < delta < 1 or not 0 < noise < float("inf"):
            raise ConfigError(
                f"certified removal needs epsilon > 0, 0 < delta < 1 and noise > 0 (--certify EPS,DELTA, "
                f"--certify-noise), got epsilon={epsilon}, delta={delta}, noise={noise}"
            )
        if self.model not in CONVEX_MODELS or self.lam <= 0:
            raise ConfigError(
                "certified removal needs a strongly convex objective: --model logreg with --lam > 0, "
                f"got model {self.model!r} and lam {self.lam}"
            )
        if self.dtype != "float64":
            raise ConfigError(
                "certified removal measures gradient residuals far below float32 rounding: train it with "
                "--dtype float64"
            )

    @property
    def torch_dtype(self) -> torch.dtype:
        """The torch dtype of parameters and data."""
        return DTYPES[self.dtype]

    @property
    def full_batch(self) -> bool:
        """True when every step uses the whole training set."""
        return self.batch_size == 0

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict of all fields."""
        out = dataclasses.asdict(self)
        out["hidden"] = list(self.hidden)
        out["channels"] = list(self.channels)
        out["head"] = list(self.head)
        if self.subset_ids is not None:
            out["subset_ids"] = list(self.subset_ids)
        if not self.momentum:  # left out, so every earlier run's config (and its key) is unchanged
            del out["momentum"]
        if self.retrain_batches == "keep":  # left out, so every earlier run's key is unchanged
            del out["retrain_batches"]
        if self.model not in CONVEX_MODELS:  # never recorded for a network: its key is unchanged
            del out["curvature_basis"]
        if self.history_budget == DEFAULT_HISTORY_BUDGET:  # left out, so every earlier run's key is unchanged
            del out["history_budget"]
        if self.certify is None:  # left out, so every earlier run's config (and its key) is unchanged
            del out["certify"]
        else:
            out["certify"] = list(self.certify)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build a config from ``to_dict`` output; unknown keys raise ConfigError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ConfigError(f"unknown training config keys: {sorted(unknown)}")
        data = dict(data)
        # runs recorded before the option sketched the curvature over every row
        data.setdefault("curvature_rows", None)
        data.setdefault("exact_curvature_dim", 0)  # and never recorded an exact Hessian
        if data.get("model", cls.model) in CONVEX_MODELS:  # nor an input-subspace curvature
            data.setdefault("curvature_basis", 0)
        for name in ("hidden", "channels", "head"):
            if name in data:
                data[name] = tuple(data[name])
        if data.get("subset_ids") is not None:
            data["subset_ids"] = tuple(data["subset_ids"])
        if data.get("certify") is not None:
            data["certify"] = tuple(data["certify"])
        return cls(**data)

    def to_json(self) -> str:
        """Return the config as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def check_seed(seed: int, flag: str = "--seed") -> None:
    """Raise ConfigError unless ``seed`` is an integer in 0 .. SEED_MAX (``flag`` names it)."""
    integral = isinstance(seed, int | np.integer) and not isinstance(seed, bool)
    if not integral or not 0 <= seed <= SEED_MAX:
        raise ConfigError(f"{flag} must be an integer in 0..{SEED_MAX} (2**32 - 1), got {seed!r}")
