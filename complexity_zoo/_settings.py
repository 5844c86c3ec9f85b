"""Settings checked when a measure is made: types from the annotations, declared limits and rules.

A measure declares, besides its annotated settings, ``limits`` (setting -> :class:`Limit`, or a
tuple of them) and ``rules`` (:class:`Rule` over several settings). Every check runs in the
generated ``__post_init__`` before the measure's own, with the library's error template:
"The 'x' setting of measure 'm' must be <expected>. Got <value> instead."
"""

from __future__ import annotations

import math
import numbers
import sys
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from .errors import InvalidSettingError


@dataclass(frozen=True)
class Limit:
    """What one setting's value must satisfy (checked when it is not None), and how to say it."""

    test: Callable[[Any], bool]
    expected: str


@dataclass(frozen=True)
class Rule:
    """A condition across settings, reported against ``settings[0]``."""

    settings: tuple[str, ...]
    test: Callable[..., bool]
    expected: str


def at_least(x: float) -> Limit:
    return Limit(lambda v: v >= x, f">= {x}")


def above(x: float) -> Limit:
    return Limit(lambda v: v > x, f"> {x}")


def at_most(x: float) -> Limit:
    return Limit(lambda v: v <= x, f"<= {x}")


def one_of(*values: Any) -> Limit:
    return Limit(lambda v: v in values, f"one of {list(values)}")


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def conforms(value: Any, tp: Any) -> bool:
    """Whether ``value`` is of the annotated type ``tp`` (bools are not numbers; floats finite)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        return True
    if tp is None or tp is type(None):
        return value is None
    if origin is typing.Union or (sys.version_info >= (3, 10) and origin is types.UnionType):
        return any(conforms(value, a) for a in args)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return _is_int(value)
    if tp is float:
        return _is_number(value)
    if origin in (tuple, list):
        if not isinstance(value, (tuple, list)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(conforms(v, a) for v, a in zip(value, args))
        return all(conforms(v, args[0]) for v in value) if args else True
    if origin is dict or tp is dict:
        return isinstance(value, Mapping)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True  # an annotation this checker does not know: accepted


def describe(tp: Any) -> str:
    """The words for a type in an error message."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is None or tp is type(None):
        return "None"
    if origin is typing.Union or (sys.version_info >= (3, 10) and origin is types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin is typing.Literal:
        return f"one of {list(args)}"
    names = {bool: "True or False", int: "an integer", float: "a finite number", str: "a string"}
    if tp in names:
        return names[tp]
    if origin is tuple and args and args[-1] is not Ellipsis:
        return f"a list of {len(args)} values ({', '.join(describe(a) for a in args)})"
    if origin in (tuple, list):
        return f"a list of {describe(args[0]) if args else 'values'}"
    return getattr(tp, "__name__", str(tp))


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        try:
            _HINTS[cls] = typing.get_type_hints(cls)
        except Exception:  # a name only the defining function knew: check what can be resolved
            hints = {}
            for klass in reversed(cls.__mro__):
                module = sys.modules.get(klass.__module__)
                for name, ann in getattr(klass, "__annotations__", {}).items():
                    try:
                        hints[name] = eval(ann, vars(module) if module else {}) if isinstance(ann, str) else ann
                    except Exception:
                        hints[name] = Any
            _HINTS[cls] = hints
    return _HINTS[cls]


def validate_settings(measure: Any) -> None:
    """Check every setting of a measure: its annotated type, then declared limits and rules."""
    cls = type(measure)
    label = measure.name or cls.__qualname__
    hints = _hints(cls)

    def error(setting: str, expected: str, got: Any) -> InvalidSettingError:
        return InvalidSettingError(
            f"The {setting!r} setting of measure {label!r} must be {expected}. Got {got!r} instead."
        )

    for f in fields(measure):
        value = getattr(measure, f.name)
        tp = hints.get(f.name, Any)
        if not conforms(value, tp):
            raise error(f.name, describe(tp), value)
        limits = getattr(cls, "limits", {}).get(f.name, ())
        for limit in limits if isinstance(limits, tuple) else (limits,):
            if value is not None and not limit.test(value):
                raise error(f.name, limit.expected, value)
    seed = getattr(measure, "seed", None)
    if seed is not None and not 0 <= seed < 2**32:  # what every generator in use accepts (numpy's too)
        raise error("seed", "None or an integer in [0, 2**32)", seed)
    for rule in getattr(cls, "rules", ()):
        values = [getattr(measure, s) for s in rule.settings]
        if all(v is not None for v in values) and not rule.test(*values):
            raise error(rule.settings[0], rule.expected, values[0])
