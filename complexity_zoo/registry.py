"""The measure registry: a decorator, lookup by ``name`` or ``name.preset``, and plugins.

The built-in families are the public modules of ``complexity_zoo.measures``: they are found
with ``pkgutil`` and imported on the first lookup (not on ``import complexity_zoo``), so a new
family module needs no edit anywhere else.

Third-party packages register measures through the entry-point group
``complexity_zoo.measures``; an entry point names a ``Measure`` subclass (registered under the
entry point's name) or a module that registers its measures on import. Plugins load lazily,
on the first lookup that needs them, and one that fails to load gives a warning.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import importlib
import pkgutil
import warnings
from importlib import metadata
from typing import Any, TypeVar

import pandas as pd

from .errors import DuplicateMeasureError, PluginWarning, UnknownMeasureError, UnknownSettingError
from .measure import NO_REFERENCE_RUN, UNITS, Measure

ENTRY_POINT_GROUP = "complexity_zoo.measures"
M = TypeVar("M", bound=type[Measure])

_REGISTRY: dict[str, type[Measure]] = {}
_loaded_plugins: set[str] = set()
_builtins_loaded = False


def builtin_modules() -> list[str]:
    """The public family modules of ``complexity_zoo.measures`` (names not starting with ``_``)."""
    from . import measures

    return sorted(m.name for m in pkgutil.iter_modules(measures.__path__) if not m.name.startswith("_"))


def _load_builtins() -> None:
    """Import every built-in family module once; each registers its measures on import."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    for name in builtin_modules():
        importlib.import_module(f"{__package__}.measures.{name}")


def register_measure(name: str):
    """Class decorator: register a :class:`Measure` subclass under ``name``; returns it unchanged."""
    if not isinstance(name, str) or not name or "." in name or "," in name:
        raise ValueError(f"A measure name must be a non-empty string without '.' or ','; got {name!r}.")

    def decorator(cls: M) -> M:
        if not (isinstance(cls, type) and issubclass(cls, Measure)):
            raise TypeError(f"register_measure({name!r}) decorates Measure subclasses; got {cls!r}.")
        if cls.unit not in UNITS:
            raise ValueError(f"Measure {name!r} has unit {cls.unit!r}; the units are {UNITS}.")
        existing = _REGISTRY.get(name)
        if existing is not None and not _same_class(existing, cls):
            raise DuplicateMeasureError(
                f"A measure named {name!r} is already registered ({existing.__module__}."
                f"{existing.__qualname__}); choose another name for {cls.__module__}.{cls.__qualname__}."
            )
        if "name" in cls.__dict__ and cls.__dict__["name"] not in ("", name):
            raise ValueError(f"{cls.__qualname__}.name is {cls.name!r} but it is registered as {name!r}.")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def _same_class(a: type, b: type) -> bool:
    # A module imported twice (reload, importlib test mode) re-registers the same class.
    return (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def _entry_points() -> list[metadata.EntryPoint]:
    return list(metadata.entry_points(group=ENTRY_POINT_GROUP))


def _load_plugins(only: str | None = None) -> None:
    """Import plugin entry points (all, or those named ``only``) not loaded yet."""
    for ep in _entry_points():
        if ep.name in _loaded_plugins or (only is not None and ep.name != only):
            continue
        _loaded_plugins.add(ep.name)
        try:
            obj = ep.load()
            if isinstance(obj, type) and issubclass(obj, Measure) and ep.name not in _REGISTRY:
                register_measure(ep.name)(obj)
        except Exception as e:  # a broken plugin must not break the library
            warnings.warn(
                f"The complexity_zoo measure plugin {ep.name!r} ({ep.value}) failed to load and "
                f"is skipped: {type(e).__name__}: {e}",
                PluginWarning,
                stacklevel=3,
            )


def measure_class(name: str) -> tuple[type[Measure], str | None]:
    """The class registered as ``name`` (or the base of ``name.tag``) and the tag, if any."""
    if not isinstance(name, str):
        raise UnknownMeasureError(f"A measure is named by a string; got {name!r}.")
    base, _, tag = name.partition(".")
    _load_builtins()
    if base not in _REGISTRY:
        _load_plugins(only=base)
    if base not in _REGISTRY:
        _load_plugins()
        known = sorted(_REGISTRY)
        close = difflib.get_close_matches(base, known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UnknownMeasureError(
            f"Unknown measure {base!r}.{hint} The registered measures are: {', '.join(known)}."
        )
    cls = _REGISTRY[base]
    if tag and tag not in cls.presets:
        presets = ", ".join(f"{base}.{t}" for t in sorted(cls.presets)) or "none"
        raise UnknownMeasureError(f"Measure {base!r} has no preset {tag!r}. Its presets: {presets}.")
    return cls, (tag or None)


def get_measure(name: str, **settings: Any) -> Measure:
    """An instance of the measure ``name`` (``name.tag`` applies a preset first) with ``settings``."""
    cls, tag = measure_class(name)
    valid = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(settings) - set(valid))
    if unknown:
        raise UnknownSettingError(
            f"Measure {cls.name!r} has no setting {', '.join(map(repr, unknown))}. "
            f"Its settings are: {', '.join(valid) or 'none'}."
        )
    merged = {**(cls.presets[tag] if tag else {}), **settings}
    return cls(**merged)


def list_measures(pattern: str = "*") -> pd.DataFrame:
    """The registry as a table: name, family, unit, needs_data, needs_init, tensors_only, causal_lm
    (it applies to causal language models), stochastic, available, presets, summary."""
    _load_builtins()
    _load_plugins()
    rows = [
        {
            "name": name,
            "family": cls.family(),
            "unit": cls.unit,
            "needs_data": cls.needs_data,
            "needs_init": cls.needs_init,
            "tensors_only": cls.tensors_only,
            "causal_lm": cls.causal_lm,
            "stochastic": cls.stochastic,
            "available": cls.available(),
            "presets": ", ".join(sorted(cls.presets)),
            "summary": cls.summary(),
        }
        for name, cls in sorted(_REGISTRY.items())
        if fnmatch.fnmatch(name, pattern)
    ]
    columns = ["name", "family", "unit", "needs_data", "needs_init", "tensors_only", "causal_lm", "stochastic",
               "available",
               "presets", "summary"]
    return pd.DataFrame(rows, columns=columns)


CONVENTION_COLUMNS = ["name", "family", "paper", "code", "default", "switch", "agreement", "tests"]


def conventions_table(pattern: str = "*") -> pd.DataFrame:
    """The measures' declared reference facts (``Measure.convention``), one row per measure: the
    reference (paper and equation; code), the default convention, the settings that reproduce the
    reference code, the agreement measured and the tests that measure it. A measure that declares
    none reads "no reference run"."""
    _load_builtins()
    _load_plugins()
    rows = []
    for name, cls in sorted(_REGISTRY.items()):
        if not fnmatch.fnmatch(name, pattern):
            continue
        c = cls.convention
        facts = dataclasses.asdict(c) if c is not None else {"agreement": NO_REFERENCE_RUN}
        facts["tests"] = ", ".join(facts.get("tests", ()))
        rows.append({"name": name, "family": cls.family(), **facts})
    return pd.DataFrame(rows, columns=CONVENTION_COLUMNS).fillna("")
