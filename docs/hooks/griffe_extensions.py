"""Griffe extensions for the API reference.

``AdaptersAsSubpackage`` documents ``adapters/`` under its installed name, ``complexity_zoo.adapters``:
the repository keeps the adapters at its top level and setuptools maps them into the package
(``package-dir``), which Python's import system follows but griffe's static finder does not. When
griffe loads ``complexity_zoo``, it visits each ``adapters/*.py`` file as a submodule of it.

``SphinxRoles`` renders the docstrings' Sphinx roles (``:func:`name```) as code, since the
docstrings are read as Markdown.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import griffe


class AdaptersAsSubpackage(griffe.Extension):
    """Attach ``adapters/`` to ``complexity_zoo`` as ``complexity_zoo.adapters``."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if pkg.name != "complexity_zoo" or "adapters" in pkg.members:
            return
        folder = Path(pkg.filepath).parent.parent / "adapters"
        if not (folder / "__init__.py").is_file():
            return
        parent = self._visit("adapters", folder / "__init__.py", pkg, loader)
        for path in sorted(folder.glob("*.py")):
            if path.name != "__init__.py":
                self._visit(path.stem, path, parent, loader)

    @staticmethod
    def _visit(name: str, path: Path, parent: griffe.Module, loader: griffe.GriffeLoader) -> griffe.Module:
        code = path.read_text(encoding="utf-8-sig")
        loader.lines_collection[path] = code.splitlines(keepends=False)
        module = griffe.visit(
            name,
            filepath=path,
            code=code,
            extensions=loader.extensions,
            parent=parent,
            docstring_parser=loader.docstring_parser,
            docstring_options=loader.docstring_options,
            lines_collection=loader.lines_collection,
            modules_collection=loader.modules_collection,
        )
        parent.set_member(name, module)
        return module


_ROLE = re.compile(r":(?:func|meth|class|mod|attr|data|exc|obj):`~?([^`]+)`")


class SphinxRoles(griffe.Extension):
    """``:func:`name``` -> ```name```, in every docstring griffe reads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(r"`\1`", obj.docstring.value)
