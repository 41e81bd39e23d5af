"""The one interface every unlearning method implements, and the record it returns.

A method takes an :class:`UnlearnRequest` (the trained run with its history and
data, the ids to forget, ids forgotten by earlier requests, and the parameters of
the current model version) plus its own options, and returns an
:class:`UnlearnResult`: the new parameters and an :class:`UnlearnRecord` with wall
time, per-sample gradient evaluations, history bytes read and diagnostics.

Adding a method is adding one module to this package that defines a subclass of
:class:`UnlearningMethod` decorated with :func:`register`, its options declared with
:func:`.options.option` (checked once, when the method is built) and its history needs in
``needs_history`` (what ``bench`` records and ``check_run`` refuses follow from it; a history
read only when present goes in ``reads_history``, so that benchmarks charge its recording).
"""

from __future__ import annotations

import dataclasses
import inspect
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

import numpy as np
import torch

from ..errors import ConfigError, HistoryError, MiniUnlearnError
from ..ids import retained_ids, validate_forget_ids
from ..training.config import CONVEX_MODELS
from ..training.rundir import Run
from .options import check_options, option_types

_REGISTRY: dict[str, type[UnlearningMethod]] = {}


class MethodError(MiniUnlearnError):
    """An unlearning method misbehaved: e.g. it tried to end the process instead of returning."""


@dataclass
class UnlearnRequest:
    """What to forget, from which model.

    ``forget_ids``: the ids of this request. ``previously_forgotten``: ids removed by
    earlier requests (the retain set excludes both). ``base_params``: the current
    model's flat parameters (None = the run's original model). ``anchor_params`` and
    ``anchor_ids``: the last exact model of the run (a retraining) and every id it
    excluded, or None and empty when the run was never retrained; a method that predicts
    the retrained model from the original run may predict the change from that anchor
    instead, so its error counts from the last exact model. ``base_retain_state``: the
    retain objective's value and gradient at ``base_params`` before this request (every
    earlier id left out), exact in float64, when known (the certificate of the request
    that produced the base measured them); a method may start from it instead of a pass.
    """

    run: Run
    forget_ids: np.ndarray
    previously_forgotten: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    base_params: torch.Tensor | None = None
    anchor_params: torch.Tensor | None = None
    anchor_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    base_retain_state: tuple[torch.Tensor, torch.Tensor] | None = None

    def __post_init__(self) -> None:
        n = self.run.n_train
        self.previously_forgotten = validate_forget_ids(self.previously_forgotten, n, allow_empty=True)
        self.forget_ids = validate_forget_ids(self.forget_ids, n, allow_empty=True)
        if self.previously_forgotten.size:  # the union may cover the whole training set
            validate_forget_ids(self.all_forgotten, n, allow_empty=True)

    @cached_property
    def all_forgotten(self) -> np.ndarray:
        """Sorted union of this request's ids and all earlier ones (computed once)."""
        if not self.previously_forgotten.size:
            return self.forget_ids
        return np.union1d(self.forget_ids, self.previously_forgotten).astype(np.int64)

    @cached_property
    def retain_ids(self) -> np.ndarray:
        """Sorted ids of the samples that remain after this request (computed once)."""
        return retained_ids(self.run.n_train, self.all_forgotten)

    def start_params(self) -> torch.Tensor:
        """The parameters unlearning starts from (the current model version)."""
        return self.run.load_model_params() if self.base_params is None else self.base_params.clone()


@dataclass
class UnlearnRecord:
    """What a method did: cost, history read, and method-specific diagnostics."""

    method: str
    n_forget: int
    n_previously_forgotten: int
    time_s: float
    grad_evals: int
    history_bytes: int
    options: dict[str, Any]
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return dataclasses.asdict(self)


MEASURED_RETAIN_STATE = "measured_retain_state"
"""The diagnostics key under which a method hands over the retain state it measured at its result
(see :attr:`UnlearnResult.retain_state`); :meth:`UnlearningMethod.unlearn` moves it out of the record,
and drops it for a method defined outside this package (a plugin's certificate gets its own pass)."""


@dataclass
class UnlearnResult:
    """The unlearned parameters (flat) and the record of how they were obtained.

    ``retain_state``: (F_R, grad F_R) at exactly ``params`` over the request's retain set,
    computed in float64 by the run's objective, when the method measured them as its last
    step (a certificate then needs no pass of its own); None otherwise."""

    params: torch.Tensor
    record: UnlearnRecord
    retain_state: tuple[torch.Tensor, torch.Tensor] | None = None


class UnlearningMethod(ABC):
    """Base class: subclasses set ``name``, an ``Options`` dataclass, and implement ``_unlearn``.

    Declare each option with :func:`.options.option` (default, one-line help, constraints);
    values are checked once, when the method is built. Keep ``Options.__post_init__`` for
    rules across options that cannot be declared on one.
    """

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    # manifest roles of the recorded history the method cannot run without
    needs_history: ClassVar[tuple[str, ...]] = ()
    # what of the recorded history the method reads when the run has it (None: ``needs_history``),
    # as keys of the manifest's ``recording`` (file roles, and ``history-final``: the minimal
    # history's last checkpoint alone); benchmarks charge the method what recording them cost
    reads_history: ClassVar[tuple[str, ...] | None] = None
    # True when the result is the model retrained without the forgotten ids (no error
    # budget spent; a run's error budget resets after it)
    exact: ClassVar[bool] = False

    @dataclass(frozen=True)
    class Options:
        """Method options (subclasses replace this with their own dataclass)."""

    def __init__(self, **options: Any) -> None:
        """Build the method with ``options`` (names and values of its ``Options`` fields).

        Each value is converted to its option's annotated type and checked against the
        option's declared constraints (see :func:`.options.check_options`); ConfigError
        for an unknown name or a value of the wrong type or out of range.
        """
        self.options = check_options(self.name, self.Options, options)

    def history_read(self) -> tuple[str, ...]:
        """The manifest roles of the recorded history this method, with its options, reads
        when the run holds them: whose recording cost a fair comparison charges to it."""
        return self.needs_history if self.reads_history is None else self.reads_history

    def retraining_reason(self, run: Run, n_forget: int) -> str | None:
        """Why this method, with its options, would serve a request that leaves ``n_forget``
        samples of ``run`` out in all by retraining from scratch instead (say, retraining
        costs no more); None (the default) when it serves requests itself."""
        return None

    def check_run(self, run: Run) -> None:
        """Raise HistoryError when ``run`` lacks a history this method needs (``needs_history``),
        so that a request can be refused before anything is recorded or computed."""
        missing = [role for role in self.needs_history if not run.files(role)]
        if missing:
            mode = "full" if "history-full" in missing else "mini"
            raise HistoryError(
                f"method {self.name!r} needs the {', '.join(missing)} history, which run {run.path} was "
                f"trained without; retrain it with `miniunlearn train ... --history {mode}` (or `both`), "
                "or choose another method"
            )

    def unlearn(self, request: UnlearnRequest) -> UnlearnResult:
        """Forget ``request.forget_ids``; return the new parameters and a record.

        Refuses a run the method cannot serve (:meth:`check_run`) before anything is computed,
        then times the call and counts per-sample gradient evaluations on the run's
        objective. An empty forget set returns the starting parameters unchanged.
        """
        self.check_run(request.run)  # the one place a method refuses a run it cannot serve
        objective = request.run.objective
        start_evals = objective.grad_evals
        started = time.perf_counter()
        if request.forget_ids.size == 0:
            params, history_bytes, diagnostics = request.start_params(), 0, {"empty_request": True}
        else:
            params, history_bytes, diagnostics = self._guarded_unlearn(request)
        retain_state = diagnostics.pop(MEASURED_RETAIN_STATE, None)
        if not type(self).__module__.startswith(f"{__package__}."):
            retain_state = None  # a certificate rests on it: only this package's methods are trusted
        return UnlearnResult(
            params=params,
            record=UnlearnRecord(
                method=self.name,
                n_forget=int(request.forget_ids.size),
                n_previously_forgotten=int(request.previously_forgotten.size),
                time_s=time.perf_counter() - started,
                grad_evals=int(objective.grad_evals - start_evals),
                history_bytes=int(history_bytes),
                options=dataclasses.asdict(self.options),
                diagnostics=diagnostics,
            ),
            retain_state=retain_state,
        )

    def _guarded_unlearn(self, request: UnlearnRequest) -> tuple[torch.Tensor, int, dict[str, Any]]:
        """``_unlearn``, with a SystemExit escaping the method (e.g. a plugin's ``sys.exit``) turned
        into a MethodError: it must fail the request, not end the program with its exit code."""
        try:
            return self._unlearn(request)
        except SystemExit as exc:
            raise MethodError(
                f"method {self.name!r} tried to end the program (SystemExit({exc.code!r})) instead of "
                "returning the unlearned parameters; the model is unchanged. Choose another method, or "
                "report this to the method's author"
            ) from exc

    @abstractmethod
    def _unlearn(self, request: UnlearnRequest) -> tuple[torch.Tensor, int, dict[str, Any]]:
        """Return (parameters, history bytes read, diagnostics) for a non-empty request; the
        diagnostics may carry the measured retain state under ``MEASURED_RETAIN_STATE``."""


def check_method_class(cls: Any) -> None:
    """Raise ConfigError saying why ``cls`` cannot serve as an unlearning method: not an
    UnlearningMethod subclass, abstract, ``name`` not a non-empty string, ``Options`` not a
    dataclass, ``summary`` not a string, or an option annotation that cannot be resolved."""
    if not (isinstance(cls, type) and issubclass(cls, UnlearningMethod)):
        raise ConfigError(f"{cls!r} is not a subclass of UnlearningMethod")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{cls.__qualname__}.name must be a non-empty string, got {name!r}")
    if inspect.isabstract(cls):
        raise ConfigError(f"{cls.__qualname__} does not implement {sorted(cls.__abstractmethods__)}")
    if not (isinstance(cls.Options, type) and dataclasses.is_dataclass(cls.Options)):
        raise ConfigError(f"{cls.__qualname__}.Options must be a dataclass, got {cls.Options!r}")
    if not isinstance(cls.summary, str):
        raise ConfigError(f"{cls.__qualname__}.summary must be a string, got {cls.summary!r}")
    option_types(cls.Options)  # ConfigError when an option's annotation cannot be resolved


def register(cls: type[UnlearningMethod]) -> type[UnlearningMethod]:
    """Class decorator adding a method to the registry under ``cls.name``; ConfigError when the
    class is not a usable method (see :func:`check_method_class`) or the name is taken."""
    check_method_class(cls)
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ConfigError(f"two unlearning methods are named {cls.name!r}")
    _REGISTRY[cls.name] = cls
    return cls


def registry() -> dict[str, type[UnlearningMethod]]:
    """Return {name: method class} of all registered methods."""
    return dict(_REGISTRY)


def method_class(name: str) -> type[UnlearningMethod]:
    """Return the class of the method ``name``; ConfigError when unknown."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown method {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def get_method(name: str, **options: Any) -> UnlearningMethod:
    """Return an instance of the method ``name`` with ``options``; ConfigError when unknown."""
    return method_class(name)(**options)


def require_convex_model(method: str, run: Run, needs: str) -> None:
    """Raise ConfigError unless ``run`` trains a convex model; ``needs`` says why ``method``
    needs one (e.g. "sketches the Hessian by Nystrom")."""
    if run.config.model not in CONVEX_MODELS:
        raise ConfigError(
            f"method {method!r} {needs}, which needs a convex model ({', '.join(CONVEX_MODELS)}); run "
            f"{run.path} trains a {run.config.model!r}. Choose another method (e.g. mini, finetune or "
            "retrain)"
        )
