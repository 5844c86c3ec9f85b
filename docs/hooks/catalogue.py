"""mkdocs hook: the measures catalogue, generated from the registry when the site is built.

``docs/measures/index.md`` holds the marker ``<!-- catalogue -->``; this hook replaces it with a
table of every registered measure (built-ins and installed plugins, through
``complexity_zoo.list_measures()``) and one section per measure with its declared facts, its
settings and their defaults, and its docstring. Declared facts are read from the class: every
``ClassVar`` the ``Measure`` base declares, a few optional attributes a measure may declare
(``reference``, ``conventions``, ``caveats``, ...) looked up with ``getattr``, and any other
public, non-callable class attribute a measure class (or a base between it and ``Measure``)
defines, so a fact added later shows up without an edit here. A new measure appears without an
edit anywhere.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Mapping
from typing import Any

MARKER = "<!-- catalogue -->"
# The conventions table (``registry.conventions_table()``), filled on the catalogue page too.
CONVENTIONS_MARKER = "<!-- conventions -->"
# Docstrings are rendered as Markdown: Sphinx roles (:func:`name`) become code.
_ROLE = re.compile(r":(?:func|meth|class|mod|attr|data|exc|obj):`~?([^`]+)`")
CATALOGUE_PAGE = "measures/index.md"

# Facts shown in the overview table, or used for the section heading; not repeated in the list.
_SHOWN = ("name", "unit", "needs_data", "needs_init", "tensors_only", "stochastic", "presets")
# Validation internals: part of the class, not facts a reader needs.
_INTERNAL = ("limits", "rules")
# Facts a measure may declare that the base class does not (yet) have; shown when present.
_OPTIONAL = (
    "reference", "references", "source", "equation", "reference_code", "conventions", "convention",
    "default_convention", "agreement", "caveats", "applies_to", "causal_lm", "applies_to_causal_lm",
    "cost", "cost_class",
)


def _base_facts() -> list[str]:
    """The declared facts of ``Measure``: its ``ClassVar`` annotations, base classes first."""
    from complexity_zoo import Measure

    names: list[str] = []
    for klass in reversed(Measure.__mro__):
        for key, annotation in getattr(klass, "__annotations__", {}).items():
            if "ClassVar" in str(annotation) and key not in names:
                names.append(key)
    return names


def fact_names() -> list[str]:
    """Every fact the catalogue lists per measure, beyond the overview table's columns."""
    facts = [f for f in _base_facts() if f not in _SHOWN and f not in _INTERNAL]
    return facts + [f for f in _OPTIONAL if f not in facts]


def _own_facts(cls: type) -> list[str]:
    """Public, non-callable class attributes defined below ``Measure`` that are not settings."""
    from complexity_zoo import Measure

    settings = {f.name for f in dataclasses.fields(cls)}
    names: list[str] = []
    for klass in reversed(cls.__mro__):
        if klass is Measure or not issubclass(klass, Measure):
            continue
        for key, value in vars(klass).items():
            if key.startswith("_") or key in settings or key in names or callable(value):
                continue
            if isinstance(value, classmethod | staticmethod | property):
                continue
            names.append(key)
    return names


def _empty(value: Any) -> bool:
    return value is None or (not isinstance(value, bool | int | float) and not value)


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _render(value: Any) -> str:
    """A fact's value as inline markdown (mappings and dataclasses as ``key: value`` pairs)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return "; ".join(f"`{k}`: {_render(v)}" for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(_render(v) for v in value)
    return f"`{value!r}`"


def _plain(text: str) -> str:
    """Plain text (a convention's fields) safe in markdown: ``in*k*k`` is not emphasis."""
    return text.replace("*", "\\*")


def _convention_lines(value: Any) -> list[str]:
    """A ``Convention`` (or any dataclass fact) as an indented sub-list, one field a line."""
    labels = {"paper": "paper", "code": "reference code", "default": "default here",
              "switch": "switch to the reference code's convention", "agreement": "agreement measured",
              "tests": "tests"}
    lines = []
    for key, field_value in dataclasses.asdict(value).items():
        if _empty(field_value):
            continue
        if key == "tests":
            text = ", ".join(f"`{t}`" for t in field_value)
        else:
            text = _plain(_render(field_value))
        lines.append(f"    - *{labels.get(key, key.replace('_', ' '))}*: {text}")
    return lines


def _needs(row: Mapping[str, Any]) -> str:
    return ", ".join(k for k in ("data", "init") if row[f"needs_{k}"])


def _doc(cls: type) -> str:
    return _ROLE.sub(r"`\1`", inspect.getdoc(cls) or "")


def _first_paragraph(cls: type) -> str:
    return " ".join(_doc(cls).split("\n\n", 1)[0].split())


def _settings(cls: type) -> list[str]:
    rows = ["| setting | default |", "| --- | --- |"]
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = repr(f.default_factory())
        else:
            default = "(required)"
        rows.append(f"| `{f.name}` | `{_escape(default)}` |")
    return rows if len(rows) > 2 else ["No settings."]


def _section(row: Mapping[str, Any], cls: type) -> list[str]:
    name = row["name"]
    lines = [f"### `{name}` {{#{name}}}", ""]
    facts = [
        f"- **family**: `{row['family']}`",
        f"- **unit**: {row['unit'] or '(none)'}",
        f"- **needs**: {_needs(row) or 'the model alone'}",
        f"- **tensors only**: {_render(bool(row['tensors_only']))}",
        f"- **stochastic**: {_render(bool(row['stochastic']))}",
    ]
    for tag, settings in sorted(getattr(cls, "presets", {}).items()):
        facts.append(f"- **preset** `{name}.{tag}`: {_render(settings) if settings else 'the defaults'}")
    listed = fact_names()
    extra = [f for f in _own_facts(cls) if f not in listed and f not in _SHOWN and f not in _INTERNAL]
    for fact in listed + extra:
        value = getattr(cls, fact, None)
        if _empty(value):
            continue
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            facts += [f"- **{fact.replace('_', ' ')}**:", *_convention_lines(value)]
        else:
            facts.append(f"- **{fact.replace('_', ' ')}**: {_render(value)}")
    lines += facts + ["", *_settings(cls), ""]
    doc = _doc(cls)
    if doc:
        lines += ['??? note "Docstring"', ""]
        lines += [("    " + line).rstrip() for line in doc.splitlines()] + [""]
    return lines


def catalogue_markdown() -> str:
    """The generated part of the catalogue page: an overview table and one section per measure."""
    from complexity_zoo import list_measures
    from complexity_zoo.registry import measure_class

    table = list_measures()
    lines = [
        f"{len(table)} measures are registered in this build.",
        "",
        "| measure | family | unit | needs | tensors only | causal LM | stochastic | presets | summary |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in table.to_dict("records"):
        presets = ", ".join(f"`{row['name']}.{t}`" for t in row["presets"].split(", ") if t)
        lines.append(
            f"| [`{row['name']}`](#{row['name']}) | {row['family']} | {row['unit']} | {_needs(row)} | "
            f"{'yes' if row['tensors_only'] else ''} | {'yes' if row['causal_lm'] else 'no'} | "
            f"{'yes' if row['stochastic'] else ''} | {presets} | "
            f"{_escape(_first_paragraph(measure_class(row['name'])[0]))} |"
        )
    lines.append("")
    for family in sorted(set(table["family"])):
        lines += [f"## Family `{family}`", ""]
        for row in table[table["family"] == family].to_dict("records"):
            lines += _section(row, measure_class(row["name"])[0])
    return "\n".join(lines)


def conventions_markdown() -> str:
    """The conventions table (``complexity-zoo measures --conventions``) as markdown, one row per
    measure that declares a reference; the others are counted."""
    from complexity_zoo.registry import NO_REFERENCE_RUN, conventions_table

    table = conventions_table()
    declared = table[table["paper"] != ""]
    lines = [
        "| measure | paper | reference code | default here | switch | agreement measured | tests |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in declared.to_dict("records"):
        tests = ", ".join(f"`{t.strip()}`" for t in row["tests"].split(",") if t.strip())
        cells = [f"[`{row['name']}`](#{row['name']})", row["paper"], row["code"], row["default"],
                 row["switch"], row["agreement"], tests]
        cells = cells[:1] + [_plain(str(c)) for c in cells[1:-1]] + cells[-1:]
        lines.append("| " + " | ".join(_escape(str(c)) for c in cells) + " |")
    rest = len(table) - len(declared)
    lines += ["", f"{len(declared)} measures declare a reference; the other {rest} read "
              f"\"{NO_REFERENCE_RUN}\"."]
    return "\n".join(lines)


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    """mkdocs event: fill the catalogue page's markers (the catalogue, the conventions table)."""
    if page.file.src_uri == CATALOGUE_PAGE:
        if MARKER in markdown:
            markdown = markdown.replace(MARKER, catalogue_markdown())
        if CONVENTIONS_MARKER in markdown:
            markdown = markdown.replace(CONVENTIONS_MARKER, conventions_markdown())
    return markdown
