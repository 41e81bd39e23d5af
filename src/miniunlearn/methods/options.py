"""Declared method options: one :func:`option` per field, checked once when a method is built.

A method's ``Options`` dataclass declares each option with its default, a one-line help and
its constraints::

    @dataclass(frozen=True)
    class Options:
        steps: int | None = option(None, "absolute step budget", ge=1)
        b0: str = option("sy/ss", "initial Hessian scale rule", choices=("sy/ss", "yy/sy"))

:func:`check_options` (called by ``UnlearningMethod.__init__``) converts and checks the
values given against the annotations, read with :func:`typing.get_type_hints` (so they work
with and without ``from __future__ import annotations``), then against the declared
constraints; :func:`describe_options` and :func:`format_method_help` describe them for
``miniunlearn methods``. Plain dataclass fields (no :func:`option`) are type-checked too; a
``metadata={"help": ...}`` on them is shown as their help.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import numbers
import operator
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union

from ..errors import ConfigError

SPEC_KEY = "miniunlearn.option"
"""The key of a field's metadata under which :func:`option` stores its :class:`OptionSpec`."""


@dataclass(frozen=True)
class OptionSpec:
    """What :func:`option` declares about one option: a one-line help and its constraints
    (bounds for numbers; ``choices``: the only values allowed). None = no such constraint."""

    help: str = ""
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[Any, ...] | None = None

    def text(self) -> str:
        """Return the constraints as text, e.g. ``"> 0"``, ``"in (0, 1]"``, ``"one of 'a', 'b'"``
        (empty when there are none)."""
        parts = []
        low = ("[", self.ge) if self.ge is not None else ("(", self.gt) if self.gt is not None else None
        high = ("]", self.le) if self.le is not None else (")", self.lt) if self.lt is not None else None
        if low and high:
            parts.append(f"in {low[0]}{_number(low[1])}, {_number(high[1])}{high[0]}")
        elif low:
            parts.append(f"{'>=' if low[0] == '[' else '>'} {_number(low[1])}")
        elif high:
            parts.append(f"{'<=' if high[0] == ']' else '<'} {_number(high[1])}")
        if self.choices is not None:
            parts.append("one of " + ", ".join(repr(c) for c in self.choices))
        return ", ".join(parts)

    def allows(self, value: Any) -> bool:
        """Whether ``value`` (already of the option's type; None is always allowed here, the
        type decides) meets every constraint."""
        if value is None:
            return True
        if self.choices is not None and not any(_same(value, c) for c in self.choices):
            return False
        bounds = (
            (self.ge, operator.ge),
            (self.gt, operator.gt),
            (self.le, operator.le),
            (self.lt, operator.lt),
        )
        try:
            return all(bound is None or bool(test(value, bound)) for bound, test in bounds)
        except TypeError:  # a value that does not compare with numbers
            return False


def option(
    default: Any,
    help: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: Iterable[Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Any:
    """Declare one option of an ``Options`` dataclass.

    Takes the default, a one-line help, bounds (``ge``: >=, ``gt``: >, ``le``: <=, ``lt``: <;
    ``lt=math.inf`` asks for a finite number), ``choices`` (the only values allowed) and any
    other field ``metadata`` the method keeps for itself (e.g. ``{"modes": ...}``).
    Returns a :func:`dataclasses.field` carrying an :class:`OptionSpec` in its metadata
    (a mutable default becomes a ``default_factory`` returning a fresh copy).
    """
    spec = OptionSpec(help, ge, gt, le, lt, None if choices is None else tuple(choices))
    metadata = {**(metadata or {}), SPEC_KEY: spec}
    if type(default).__hash__ is None:  # list, dict, set...: dataclasses refuse them as defaults
        return dataclasses.field(default_factory=functools.partial(copy.deepcopy, default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def option_spec(f: dataclasses.Field) -> OptionSpec:
    """Return the :class:`OptionSpec` of dataclass field ``f``: the declared one, or for a plain
    field one with its ``metadata["help"]`` (empty when absent) and no constraints."""
    spec = f.metadata.get(SPEC_KEY)
    if isinstance(spec, OptionSpec):
        return spec
    help_ = f.metadata.get("help", "")
    return OptionSpec(help=help_ if isinstance(help_, str) else "")


@functools.cache
def option_types(options_cls: type) -> dict[str, Any]:
    """Return {option name: resolved annotation} of an ``Options`` dataclass (cached per class).

    Raises ConfigError when an annotation cannot be resolved (e.g. it names something the
    class's module does not define).
    """
    try:
        hints = typing.get_type_hints(options_cls)
    except Exception as exc:  # NameError, TypeError, SyntaxError from a string annotation
        raise ConfigError(
            f"{options_cls.__qualname__}: an option's type annotation cannot be resolved "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(options_cls)}


def check_options(method: str, options_cls: type, given: Mapping[str, Any]) -> Any:
    """Build ``options_cls`` from the ``given`` values of method ``method``, checked.

    Each value is converted to its option's annotated type (bool, int, float -- an int is
    accepted and converted --, str, ``X | None``, ``Literal[...]``; a bool is neither an int nor
    a float, NaN is no float; other annotations are left to the class), then checked against
    the declared constraints. Returns the ``options_cls`` instance (its ``__post_init__`` runs
    the cross-field rules). Raises ConfigError naming the method, the option, what it must be,
    its default and the value given; or the unknown option names.
    """
    fields = {f.name: f for f in dataclasses.fields(options_cls) if f.init}
    unknown = set(given) - set(fields)
    if unknown:
        raise ConfigError(
            f"method {method!r} has no option(s) {sorted(unknown)}; its options are {sorted(fields)}"
        )
    hints = option_types(options_cls)
    checked = {}
    for name, value in given.items():
        hint, spec = hints[name], option_spec(fields[name])
        try:
            converted = _convert(value, hint)
        except _Mismatch:
            raise ConfigError(_refusal(method, fields[name], hint, spec, value)) from None
        if not spec.allows(converted):
            raise ConfigError(_refusal(method, fields[name], hint, spec, value))
        checked[name] = converted
    return options_cls(**checked)


def type_text(hint: Any) -> str:
    """Return an annotation as text: ``int``, ``float | None``, ``'a' | 'b'`` for a Literal."""
    if hint is type(None):
        return "None"
    if typing.get_origin(hint) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(hint))
    if _is_union(hint):
        return " | ".join(type_text(a) for a in typing.get_args(hint))
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    return str(hint).replace("typing.", "")


def describe_options(cls: Any) -> list[dict[str, Any]]:
    """Describe the options of method class ``cls`` (anything with an ``Options`` dataclass).

    Returns one dict per option, in declaration order: ``name``, ``type`` (text),
    ``default`` (the value; None when ``required``), ``required`` (no default), ``help``
    ('' when none is declared), ``constraints`` (text, '' when none) and ``modes`` (the
    modes of a multi-mode method it applies to; empty when it applies always).
    """
    hints = option_types(cls.Options)
    described = []
    for f in dataclasses.fields(cls.Options):
        if not f.init:
            continue
        spec = option_spec(f)
        if f.default is not dataclasses.MISSING:
            default, required = f.default, False
        elif f.default_factory is not dataclasses.MISSING:
            default, required = f.default_factory(), False
        else:
            default, required = None, True
        described.append(
            {
                "name": f.name,
                "type": type_text(hints[f.name]),
                "default": default,
                "required": required,
                "help": spec.help,
                "modes": tuple(f.metadata.get("modes", ())),
                "constraints": spec.text(),
            }
        )
    return described


def format_method_help(cls: Any) -> str:
    """Return the help of method class ``cls`` for ``miniunlearn methods``: ``name: summary``,
    then one indented line per option, ``name (type, default X, constraints): help``
    (``(no options)`` when it has none). No trailing newline."""
    lines = [f"{cls.name}: {cls.summary}"]
    for item in describe_options(cls):
        default = "required" if item["required"] else f"default {item['default']!r}"
        inside = ", ".join(p for p in (item["type"], default, item["constraints"]) if p)
        modes = f" [modes: {', '.join(item['modes'])}]" if item["modes"] else ""
        lines.append(f"    {item['name']} ({inside})" + (f": {item['help']}" if item["help"] else "") + modes)
    if len(lines) == 1:
        lines.append("    (no options)")
    return "\n".join(lines)


# -- conversion ------------------------------------------------------------------------------
class _Mismatch(Exception):
    """A value is not of (and cannot be converted to) an option's type."""


_UNCHECKED = object()  # marks an annotation this module does not check


def _convert(value: Any, hint: Any) -> Any:
    """Return ``value`` as of type ``hint``; raise _Mismatch when it is not."""
    if hint is Any:
        return value
    if hint is None or hint is type(None):
        if value is None:
            return None
        raise _Mismatch
    if typing.get_origin(hint) is Literal:
        for allowed in typing.get_args(hint):
            if _same(value, allowed):
                return allowed
        raise _Mismatch
    if _is_union(hint):
        members = typing.get_args(hint)
        for member in members:  # an exact match first: 3 stays an int for ``int | float``
            if _exact(value, member):
                return value
        for member in members:
            try:
                return _convert(value, member)
            except _Mismatch:
                pass
        raise _Mismatch
    converted = _scalar(value, hint)
    if converted is _UNCHECKED:
        return value  # a type this check does not know: the Options class validates it
    return converted


def _scalar(value: Any, hint: Any) -> Any:
    """Convert ``value`` to one of bool, int, float or str; _UNCHECKED for any other ``hint``."""
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        raise _Mismatch
    if hint is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                raise _Mismatch from None
            if math.isnan(number):
                raise _Mismatch
            return number
        raise _Mismatch
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    return _UNCHECKED


def _exact(value: Any, hint: Any) -> bool:
    """Whether ``value`` already is of type ``hint`` without conversion (bool, int, float, str, None)."""
    if hint is type(None):
        return value is None
    if hint in (bool, int, float, str):
        return type(value) is hint and not (hint is float and math.isnan(value))
    return False


def _is_union(hint: Any) -> bool:
    """Whether ``hint`` is ``X | Y`` or ``Union[X, Y]`` (``Optional[X]`` included)."""
    return typing.get_origin(hint) in (Union, types.UnionType)


def _same(value: Any, allowed: Any) -> bool:
    """Equal and of the same type (so that True is not taken for 1)."""
    return type(value) is type(allowed) and value == allowed


def _number(x: float) -> str:
    """A bound as text: ``1`` rather than ``1.0``, ``inf`` for infinity."""
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


def _refusal(method: str, f: dataclasses.Field, hint: Any, spec: OptionSpec, value: Any) -> str:
    """The message refusing ``value`` for option ``f`` of ``method``: its type and range, its
    default and the value given."""
    expected = f"of type {type_text(hint)}" + (f" and {spec.text()}" if spec.text() else "")
    if f.default is not dataclasses.MISSING:
        default = f"default {f.default!r}"
    elif f.default_factory is not dataclasses.MISSING:
        default = f"default {f.default_factory()!r}"
    else:
        default = "no default: it is required"
    return f"method {method!r}: option {f.name!r} must be {expected} ({default}), got {value!r}"
