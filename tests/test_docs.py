"""The documentation: the generated catalogue names every measure, the API page every public name,
and the README stays short. (``make docs`` builds the site itself, with ``--strict``.)"""

import importlib.util
import inspect
import re
from pathlib import Path

import complexity_zoo as cz
from complexity_zoo import analysis

ROOT = Path(__file__).resolve().parent.parent


def _catalogue():
    spec = importlib.util.spec_from_file_location("catalogue_hook", ROOT / "docs" / "hooks" / "catalogue.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sections(markdown: str) -> list[str]:
    return re.findall(r"^### `([^`]+)` \{#", markdown, flags=re.M)


def test_catalogue_names_every_registered_measure():
    markdown = _catalogue().catalogue_markdown()
    names = list(cz.list_measures()["name"])
    assert len(names) > 40
    assert _sections(markdown) == sorted(names, key=lambda n: (cz.get_measure(n).family(), n))
    for name in names:
        assert f"[`{name}`](#{name})" in markdown


def test_a_new_measure_and_its_declared_facts_appear_without_an_edit(scratch_registry):
    @cz.register_measure("docs_probe_measure")
    class DocsProbe(cz.Measure):
        """A measure only this test registers."""

        unit = "bits"
        caveats = "only ever seen by test_docs"
        a_fact_nobody_declared_yet = ("one", "two")
        scale: float = 2.5

        def compute(self, model, data=None):
            return 0.0

    markdown = _catalogue().catalogue_markdown()
    assert "docs_probe_measure" in _sections(markdown)
    section = markdown.split("### `docs_probe_measure`", 1)[1].split("\n### ", 1)[0]
    assert "**caveats**: only ever seen by test_docs" in section
    assert "**a fact nobody declared yet**: one, two" in section
    assert "| `scale` | `2.5` |" in section
    assert "**unit**: bits" in section


def test_catalogue_lists_every_declared_fact_of_the_base_class():
    hook = _catalogue()
    declared = [k for k, v in inspect.get_annotations(cz.Measure).items() if "ClassVar" in str(v)]
    shown = set(hook.fact_names()) | set(hook._SHOWN) | set(hook._INTERNAL)
    assert set(declared) <= shown


def test_the_page_hook_fills_only_the_catalogue_page():
    hook = _catalogue()

    class Page:
        def __init__(self, uri):
            self.file = type("F", (), {"src_uri": uri})()

    assert hook.on_page_markdown(f"x {hook.MARKER} y", page=Page("index.md")) == f"x {hook.MARKER} y"
    filled = hook.on_page_markdown(f"x {hook.MARKER} y", page=Page(hook.CATALOGUE_PAGE))
    assert hook.MARKER not in filled and "### `l2` {#l2}" in filled


def _resolve(path: str) -> object:
    """The object a ``::: path`` directive documents (the longest importable module, then attributes)."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(path)


def test_api_reference_covers_the_public_names():
    page = (ROOT / "docs" / "api.md").read_text()
    documented = {id(_resolve(p)) for p in re.findall(r"^::: (\S+)$", page, flags=re.M)}
    public = {f"cz.{n}": getattr(cz, n) for n in cz.__all__ if not inspect.ismodule(getattr(cz, n))}
    public |= {f"analysis.{n}": getattr(analysis, n) for n in analysis.__all__}
    for name in ("huggingface", "timm", "lightning"):
        module = importlib.import_module(f"complexity_zoo.adapters.{name}")
        public[f"adapters.{name}.load_trajectory"] = module.load_trajectory
    missing = sorted(name for name, obj in public.items() if id(obj) not in documented)
    assert not missing, f"public names missing from docs/api.md: {missing}"


def test_readme_is_short_and_shows_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    assert "make demo" in text and "make test" in text


def test_every_docs_page_is_in_the_nav():
    config = (ROOT / "mkdocs.yml").read_text()
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    listed = set(re.findall(r"([\w/-]+\.md)\s*$", config, flags=re.M))
    assert pages == listed
