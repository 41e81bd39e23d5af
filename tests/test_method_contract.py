"""The contract every registered unlearning method keeps, checked on each of them and on a
plugin written without ``from __future__ import annotations``; and the option-declaration API
(``methods/options.py``) that carries it."""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch

from miniunlearn.errors import ConfigError, HistoryError
from miniunlearn.experiment.bench import recorded_history
from miniunlearn.methods import UnlearnRequest, UnlearnResult, base, get_method, method_class, registry
from miniunlearn.methods.base import UnlearningMethod, register
from miniunlearn.methods.options import (
    check_options,
    describe_options,
    format_method_help,
    option,
    option_types,
)
from miniunlearn.training import Run, TrainConfig, train_run
from plugin_without_future import GradientStepsPlugin

PLUGIN = GradientStepsPlugin.name
BUILT_IN = sorted(name for name, cls in registry().items() if cls.__module__.startswith("miniunlearn."))
METHODS = [*sorted(registry()), PLUGIN]
TINY = TrainConfig(
    dataset="digits",
    model="logreg",
    epochs=30,
    lr=1.0,
    lam=0.02,
    history="both",
    checkpoints=4,
    dtype="float64",
    seed=0,
)


@pytest.fixture(autouse=True)
def plugin_registered(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Register the test plugin in a private copy of the registry (put back after each test)."""
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    register(GradientStepsPlugin)
    yield


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A 30-step float64 logistic regression on digits with both histories."""
    return train_run(TINY, tmp_path_factory.mktemp("contract") / "run", progress=False)


@pytest.fixture(scope="module")
def forget(tiny_run: Run) -> np.ndarray:
    """Every 20th sample of the tiny run (5 %)."""
    return np.arange(3, tiny_run.n_train, 20)


@pytest.fixture(scope="module")
def unlearned(tiny_run: Run, forget: np.ndarray) -> Callable[[str], tuple[UnlearningMethod, UnlearnResult]]:
    """Return a function running method ``name`` (default options) once on the tiny run, cached;
    it skips methods whose needs the tiny run cannot meet."""
    cache: dict[str, tuple[UnlearningMethod, UnlearnResult]] = {}

    def run_once(name: str) -> tuple[UnlearningMethod, UnlearnResult]:
        if name not in cache:
            method = get_method(name)
            try:
                method.check_run(tiny_run)
            except HistoryError as exc:
                pytest.skip(f"{name} needs a history the tiny logreg run lacks: {exc}")
            try:
                cache[name] = method, method.unlearn(UnlearnRequest(tiny_run, forget))
            except ConfigError as exc:  # e.g. a method for networks only
                pytest.skip(f"{name} refuses the tiny digits logreg run (network-only?): {exc}")
        return cache[name]

    return run_once


def _bad_values(hint: Any) -> list[Any]:
    """Values of the wrong type for an option annotated ``hint`` (empty for unchecked types)."""
    members = [a for a in typing.get_args(hint) if a is not type(None)] if typing.get_args(hint) else [hint]
    if float in members:
        return ["fast", True, float("nan")]
    if int in members:
        return [2.5, True, "3"]
    if bool in members:
        return [1, "yes"]
    if str in members:
        return [3]
    return []


# -- the contract, on every registered method and the plugin --------------------------------------
@pytest.mark.parametrize("name", METHODS)
def test_an_empty_request_returns_the_start_params_unchanged(name: str, tiny_run: Run) -> None:
    start = tiny_run.load_model_params() + 1e-3
    result = get_method(name).unlearn(UnlearnRequest(tiny_run, np.zeros(0, np.int64), base_params=start))
    assert torch.equal(result.params, start)
    assert result.record.n_forget == 0 and result.record.grad_evals == 0


@pytest.mark.parametrize("name", METHODS)
def test_options_of_the_wrong_type_are_refused(name: str) -> None:
    cls = method_class(name)
    hints = option_types(cls.Options)
    cases = [(key, bad) for key, hint in hints.items() for bad in _bad_values(hint)]
    if not cases:
        pytest.skip(f"{name} has no bool, int, float or str option")
    for key, bad in cases:
        with pytest.raises(ConfigError) as caught:
            get_method(name, **{key: bad})
        message = str(caught.value)
        assert name in message and key in message and repr(bad) in message and "default" in message


@pytest.mark.parametrize("name", METHODS)
def test_an_unknown_option_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="no option"):
        get_method(name, no_such_option=1)


@pytest.mark.parametrize("name", METHODS)
def test_the_same_seed_gives_the_same_result_twice(name: str, unlearned, tiny_run: Run, forget) -> None:
    _, first = unlearned(name)
    again = get_method(name).unlearn(UnlearnRequest(tiny_run, forget))
    assert torch.equal(first.params, again.params)
    assert first.params.shape == (tiny_run.objective.dim,) and first.params.dtype == torch.float64


@pytest.mark.parametrize("name", METHODS)
def test_every_record_field_is_filled(name: str, unlearned, forget) -> None:
    method, result = unlearned(name)
    record = result.record
    assert record.method == name
    assert record.n_forget == forget.size and record.n_previously_forgotten == 0
    assert record.time_s >= 0 and record.grad_evals >= 0 and record.history_bytes >= 0
    assert record.options == dataclasses.asdict(method.options)
    assert isinstance(record.diagnostics, dict)
    assert set(record.to_dict()) == {f.name for f in dataclasses.fields(record)}


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_built_in_option_has_a_help_string(name: str) -> None:
    described = describe_options(method_class(name))
    assert [d["name"] for d in described if not d["help"]] == []


@pytest.mark.parametrize("name", METHODS)
def test_declared_defaults_pass_their_own_checks(name: str) -> None:
    cls = method_class(name)
    defaults = {d["name"]: d["default"] for d in describe_options(cls) if not d["required"]}
    assert dataclasses.asdict(check_options(name, cls.Options, defaults)) == dataclasses.asdict(cls.Options())


@pytest.mark.parametrize("name", METHODS)
def test_the_help_names_every_option(name: str) -> None:
    cls = method_class(name)
    text = format_method_help(cls)
    assert text.splitlines()[0] == f"{name}: {cls.summary}"
    for f in dataclasses.fields(cls.Options):
        assert f"    {f.name} (" in text


# -- the plugin written without ``from __future__ import annotations`` --------------------------
def test_the_plugins_annotations_are_types_not_strings() -> None:
    assert GradientStepsPlugin.Options.__annotations__["rate"] is float


@pytest.mark.parametrize(
    "options",
    [
        {"rate": "fast"},
        {"steps": 2.5},
        {"steps": True},
        {"rate": True},
        {"rate": float("nan")},
        {"rate": 0.0},
        {"limit": -1},
        {"limit": 1.5},
        {"verbose": 1},
        {"kind": "other"},
        {"level": "medium"},
        {"tag": 3},
    ],
)
def test_the_plugins_options_are_checked(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=PLUGIN):
        get_method(PLUGIN, **options)


def test_the_plugins_good_options_are_converted() -> None:
    opts = get_method(PLUGIN, rate=1, steps=3, limit=None, verbose=True, kind="fancy", level="high").options
    assert opts.rate == 1.0 and type(opts.rate) is float and opts.steps == 3 and opts.limit is None
    assert get_method(PLUGIN, limit=np.int64(4)).options.limit == 4


def test_the_plugins_options_are_described() -> None:
    described = {d["name"]: d for d in describe_options(GradientStepsPlugin)}
    assert described["rate"] == {
        "name": "rate",
        "type": "float",
        "default": 0.1,
        "required": False,
        "help": "step size of each gradient step",
        "constraints": "> 0",
        "modes": (),
    }
    assert described["limit"]["type"] == "int | None" and described["limit"]["constraints"] == ">= 0"
    assert described["level"]["type"] == "'low' | 'high'"
    assert described["kind"]["constraints"] == "one of 'plain', 'fancy'"
    assert described["tag"]["help"] == ""
    help_text = format_method_help(GradientStepsPlugin)
    assert "    rate (float, default 0.1, > 0): step size of each gradient step" in help_text
    assert "    tag (str, default 't')" in help_text.splitlines()


# -- the declaration API ----------------------------------------------------------------------------
def test_option_gives_a_mutable_default_a_fresh_copy_each_time() -> None:
    @dataclasses.dataclass(frozen=True)
    class Options:
        sizes: list = option([1, 2], "a list option")

    first, second = Options(), Options()
    assert first.sizes == [1, 2] and first.sizes is not second.sizes


def test_option_keeps_the_methods_own_metadata() -> None:
    @dataclasses.dataclass(frozen=True)
    class Options:
        steps: int = option(5, "a budget", ge=0, metadata={"modes": ("rewind",)})

    (f,) = dataclasses.fields(Options)
    assert f.metadata["modes"] == ("rewind",) and f.default == 5


def test_constraints_read_as_text() -> None:
    @dataclasses.dataclass(frozen=True)
    class Options:
        a: float = option(0.5, "open-closed", gt=0, le=1)
        b: float = option(1.0, "finite", ge=0, lt=math.inf)
        c: int = option(1, "upper bound only", lt=10)

    class Holder:
        pass

    Holder.Options = Options  # type: ignore[attr-defined]
    text = {d["name"]: d["constraints"] for d in describe_options(Holder)}
    assert text == {"a": "in (0, 1]", "b": "in [0, inf)", "c": "< 10"}


def test_an_annotation_that_cannot_be_resolved_is_refused_at_registration() -> None:
    class Unresolvable(GradientStepsPlugin):
        name = "unresolvable-plugin"

        @dataclasses.dataclass(frozen=True)
        class Options:
            rate: NoSuchType = 1.0  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(ConfigError, match="cannot be resolved"):
        register(Unresolvable)


def test_a_range_error_names_method_option_range_default_and_value() -> None:
    with pytest.raises(ConfigError) as caught:
        get_method("newton", hessian_fraction=1.5)
    assert str(caught.value) == (
        "method 'newton': option 'hessian_fraction' must be of type float and in (0, 1] "
        "(default 1.0), got 1.5"
    )


# -- bench: the history a sweep records follows the methods' needs -------------------------------
def test_bench_records_the_history_the_swept_methods_need() -> None:
    assert recorded_history(["retrain", "finetune", "mini"]) == "mini"
    assert recorded_history(["retrain", "deltagrad"]) == "both"

    class NeedsFull(GradientStepsPlugin):
        name = "needs-full-plugin"
        needs_history = ("history-full",)

    register(NeedsFull)
    assert recorded_history(["retrain", "needs-full-plugin"]) == "both"


def test_mini_lists_the_modes_each_option_applies_to() -> None:
    text = format_method_help(registry()["mini"])
    line = "krylov_steps (int, default 20, >= 1): Lanczos steps of the trajectory mode [modes: trajectory]"
    assert line in text
    assert "replay_fraction" in text and "[modes: rewind]" in text
