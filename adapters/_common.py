"""What the adapters share: lazy imports of their ecosystems, metric renaming, folder checks."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor, nn

from complexity_zoo.errors import CheckpointError, CheckpointNotFoundError, MissingDependencyError


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import an ecosystem's library, or say which extra of complexity-zoo installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(
            f"{what} needs the {module!r} package, which is not installed: "
            f"pip install 'complexity-zoo[{extra}]'"
        ) from e


def existing_dir(path: str | os.PathLike, what: str) -> Path:
    """The folder ``path``, or an error that names it."""
    root = Path(path)
    if not root.exists():
        raise CheckpointNotFoundError(f"{what} {str(root)!r} does not exist.")
    if not root.is_dir():
        raise CheckpointNotFoundError(f"{what} {str(root)!r} is not a folder.")
    return root


def tensor_mapping(obj: object, key: str, path: str | os.PathLike) -> dict[str, Tensor]:
    """``obj[key]`` as a state dict, or an error that names the file and the keys it has."""
    inner = obj.get(key) if isinstance(obj, Mapping) else None
    if not isinstance(inner, Mapping) or not all(isinstance(v, Tensor) for v in inner.values()):
        have = sorted(map(str, obj)) if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"{str(path)!r} has no state dict under {key!r}; it holds {have}.")
    return dict(inner)


def aliased_keys(factory: Callable[[], nn.Module]) -> tuple[list[list[str]], set[str], type]:
    """Groups of state-dict keys that name one tensor (tied weights), all the model's keys, its class.

    The model is built on the meta device where it can be, so this costs no memory.
    """
    try:
        with torch.device("meta"):
            model = factory()
    except Exception:  # some constructors cannot run on meta; build it for real then
        model = factory()
    keys = set(model.state_dict())
    by_tensor: dict[int, list[str]] = {}
    named = list(model.named_parameters(remove_duplicate=False)) + list(
        model.named_buffers(remove_duplicate=False)
    )
    for name, tensor in named:
        if name in keys:
            by_tensor.setdefault(id(tensor), []).append(name)
    return [names for names in by_tensor.values() if len(names) > 1], keys, type(model)


def rename_metric(name: str, renames: Mapping[str, str], eval_prefixes: tuple[str, ...]) -> str:
    """``{split}_{metric}`` names: explicit renames first, then an eval prefix becomes ``test_``."""
    name = name.replace("/", "_")
    if name in renames:
        return renames[name]
    for prefix in eval_prefixes:
        if name.startswith(prefix):
            return "test_" + name[len(prefix):]
    return name


def as_float(value: object) -> float | None:
    """A logged value as a float, or None for what is not a number (text, bools, blanks)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
