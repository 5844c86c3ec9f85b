"""The trust model: what a run folder may name, and stable identities of code for cache keys.

A run folder is data. Loading one never imports or calls anything it names unless the caller
opts in: ``trust=True``, a ``model=`` of the caller's own, or a factory on the allow-list that
the user controls (:func:`allow_factory`; the library's own factories are on it by default).
Paths that a file names are resolved inside the folder that holds it (:func:`resolve_inside`).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import FactoryArgumentsError, OutsideFolderError, TrajectoryError, UntrustedCodeError

# Factories that build a model from JSON settings and run nothing else: the built-in tasks',
# the test helper's, and the adapters' (which never run code shipped with a checkpoint).
DEFAULT_ALLOWED = (
    "complexity_zoo.tasks.modular:transformer",
    "complexity_zoo.tasks.modular:mlp",
    "complexity_zoo.testing:mlp",
    "complexity_zoo.adapters.huggingface:model_from_config",
    "complexity_zoo.adapters.timm:model_from_arch",
)
_allowed: set[str] = set(DEFAULT_ALLOWED)


def allow_factory(target: str) -> None:
    """Let run folders name the model factory ``"pkg.module:callable"`` without ``trust=True``."""
    if not isinstance(target, str) or target.count(":") != 1 or not all(target.split(":")):
        raise TrajectoryError(f"allow_factory takes 'pkg.module:callable'; got {target!r}.")
    _allowed.add(target)


def disallow_factory(target: str) -> None:
    """Take ``target`` off the allow-list (the defaults included)."""
    _allowed.discard(target)


def allowed_factories() -> list[str]:
    """The factories a run folder may name without ``trust=True``."""
    return sorted(_allowed)


def import_target(target: str) -> Callable:
    """Import ``"pkg.module:callable"`` (the caller has decided that this is allowed)."""
    module_name, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise TrajectoryError(f"Cannot import the model factory {target!r}: {e}") from e
    if not callable(obj):
        raise TrajectoryError(f"The model factory {target!r} is not callable.")
    return obj


def factory_from_spec(spec: Mapping, *, trust: bool = False, where: str = "the model spec",
                      root: str | os.PathLike | None = None) -> Callable[[], nn.Module]:
    """``{"factory": "pkg.module:callable", "kwargs": {...}}`` as a factory, if it is allowed.

    The factory is imported only when it is on the allow-list or ``trust=True``; its kwargs must
    be a JSON object that the factory's signature takes. Without ``trust``, kwargs that could
    make the factory read a file or the network are refused (:func:`check_file_kwargs`), except
    the declared path arguments of the library's own factories (:data:`PATH_KWARGS`), which
    must name a file inside ``root`` (the folder the spec came from). Nothing is called here.
    """
    target = spec.get("factory") if isinstance(spec, Mapping) else None
    if not isinstance(target, str) or target.count(":") != 1 or not all(target.split(":")):
        raise TrajectoryError(f"{where} needs 'factory' as 'pkg.module:callable'; got {spec!r}.")
    kwargs = spec.get("kwargs") or {}
    if not isinstance(kwargs, Mapping):
        raise TrajectoryError(f"The 'kwargs' of {where} must be a JSON object; got {kwargs!r}.")
    if not trust and target not in _allowed:
        raise UntrustedCodeError(
            f"Refusing to import the model factory {target!r} named by {where}: a run folder may "
            f"name only allowed factories, and importing or calling another could run any code. "
            f"If you trust this folder, pass trust=True (CLI: --trust), or supply the model "
            f"yourself with model=factory (CLI: --model pkg.module:factory), or allow this one "
            f"factory with complexity_zoo.allow_factory({target!r})."
        )
    if not trust:
        kwargs = check_file_kwargs(kwargs, where, paths=tuple(PATH_KWARGS.get(target, ())), root=root)
    obj = import_target(target)
    try:
        inspect.signature(obj).bind(**kwargs)
    except TypeError as e:
        raise FactoryArgumentsError(f"The model factory {target!r} does not take the kwargs {dict(kwargs)!r} "
                              f"of {where}: {e}") from None
    except ValueError:  # no signature to check (some builtins): calling it will tell
        pass
    return functools.partial(obj, **dict(kwargs))


# Arguments of the library's allowed factories that name a local folder, with the files the
# factory reads there: taken from a file only as a relative path inside the folder that file is
# in (never absolute, never a hub id); a run folder that is written copies those files in.
PATH_KWARGS = {"complexity_zoo.adapters.huggingface:model_from_config": {"config": ("config.json",)}}


def localize_spec(spec: Mapping, root: str | os.PathLike) -> dict:
    """``spec`` with each declared path argument (:data:`PATH_KWARGS`) made a folder inside ``root``:
    the files the factory reads are copied to ``root/model_files/NAME/`` and the argument
    becomes ``model_files/NAME``, so the run folder is whole without reading outside itself."""
    declared = PATH_KWARGS.get(spec.get("factory"), {}) if isinstance(spec, Mapping) else {}
    kwargs = dict(spec.get("kwargs") or {}) if declared else {}
    for key, files in declared.items():
        source = kwargs.get(key)
        if not isinstance(source, str) or not Path(source).is_absolute() or not Path(source).is_dir():
            continue
        rel = f"model_files/{key}"
        target = Path(root) / rel
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            if (Path(source) / name).is_file():
                shutil.copyfile(Path(source) / name, target / name)
        kwargs[key] = rel
    return {**spec, "kwargs": kwargs} if declared else dict(spec)


# Words of argument names (split at '_') that commonly make a callee read a file, fetch a URL
# or download weights: checkpoint_path, cache_dir, pretrained_cfg, hf_hub_id, weights, revision.
_FILE_WORDS = {"path", "paths", "file", "files", "filename", "filepath", "url", "urls", "uri", "dir", "dirname",
               "folder", "hub", "pretrained", "revision", "repo", "download", "weights", "location"}


def names_a_file(key: str) -> bool:
    """Whether an argument's name says it names a file, a URL or a download (``checkpoint_path``,
    ``pretrained``, ``cache_dir``; not ``bidirectional`` or ``use_cache``)."""
    return any(part in _FILE_WORDS for part in key.lower().replace("-", "_").split("_"))


def _looks_like_a_location(value: object) -> bool:
    """A string that a callee could take for a path, a URL or a hub id (``/x``, ``a/b``, ``hf-hub:``)."""
    if not isinstance(value, str):
        return False
    return ("/" in value or "\\" in value or value.startswith(("~", ".")) or "://" in value
            or value.split(":", 1)[0] in ("hf-hub", "hf_hub", "local-dir", "file"))


def check_file_kwargs(kwargs: Mapping, where: str, *, paths: tuple[str, ...] = (),
                      root: str | os.PathLike | None = None) -> dict:
    """``kwargs`` read from a file, refused where they could make a factory read a file or the
    network: a name like ``checkpoint_path`` or ``pretrained``, or a value like a path, URL or
    hub id (nested values included). ``paths`` are the arguments that are paths by declaration:
    each must be a relative path inside ``root``, and is replaced by the resolved path."""
    out = dict(kwargs)
    for key, value in kwargs.items():
        if key in paths:
            if root is None:
                raise OutsideFolderError(f"{where} names the path {key}={value!r}, and there is no folder to "
                                         f"read it inside; pass trust=True (CLI: --trust) or model=factory.")
            out[key] = str(resolve_inside(root, value, f"{where} (its {key!r})"))
            if not Path(out[key]).exists():
                raise OutsideFolderError(
                    f"{where} names {key}={value!r}, which does not exist inside {str(root)!r}; a name that is not "
                    f"a local file could be read from the network, which a file is never allowed to cause.")
            continue
        bad = names_a_file(str(key)) and value not in (None, False)
        stack = [value]
        while stack and not bad:
            v = stack.pop()
            if isinstance(v, Mapping):
                bad = any(names_a_file(str(k)) and x not in (None, False) for k, x in v.items())
                stack.extend(v.values())
            elif isinstance(v, (list, tuple)):
                stack.extend(v)
            else:
                bad = _looks_like_a_location(v)
        if bad:
            raise UntrustedCodeError(
                f"Refusing the model argument {key}={value!r} of {where}: it could make the factory read a "
                f"file or the network, which a file is never allowed to cause. If you trust this folder, "
                f"pass trust=True (CLI: --trust), or build the model yourself with model=factory."
            )
    return out


def confine(root: str | os.PathLike, path: str | os.PathLike, what: str = "The file") -> Path:
    """``path``, found in the folder ``root``, resolved (symlinks followed); an error naming the
    link if it leads outside ``root`` (``root`` itself may be a link)."""
    base = Path(root).resolve()
    real = Path(path).resolve()
    if real != base and base not in real.parents:
        raise OutsideFolderError(
            f"{what} {str(path)!r} is a link to {str(real)!r}, outside the folder {str(base)!r}; nothing outside "
            f"the folder you named is read. Copy the file into the folder if you trust it."
        )
    return real


def resolve_inside(root: str | os.PathLike, name: object, where: str) -> Path:
    """``root / name`` for a relative ``name`` that stays inside ``root``, symlinks followed."""
    if not isinstance(name, str) or not name:
        raise UntrustedCodeError(f"{where} names the file {name!r}, which is not a relative path.")
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts or name.startswith(("/", "\\")) or ":" in rel.parts[0]:
        raise OutsideFolderError(
            f"{where} names the file {name!r}, outside its folder; only plain relative paths inside "
            f"{str(root)!r} are read."
        )
    return confine(root, Path(root) / rel, f"{where} names the file {name!r}:")


# -- identities of code and values, for cache keys -------------------------------------------
def _digest(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()[:32]


def _code_id(fn: Any) -> str:
    try:
        return _digest(inspect.getsource(fn).encode())
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        if code is None:
            return ""
        return _digest(code.co_code + repr(code.co_consts).encode())


def value_id(v: Any, depth: int = 0) -> Any:
    """A JSON-able identity of a value: numbers and strings as they are, tensors by content."""
    if depth > 6:
        return type(v).__qualname__
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, torch.Tensor):
        t = v.detach().cpu().contiguous()
        return ["tensor", str(t.dtype), list(t.shape), _digest(t.reshape(-1).view(torch.uint8).numpy().tobytes())]
    if isinstance(v, (list, tuple)):
        return [value_id(x, depth + 1) for x in v]
    if isinstance(v, Mapping):
        return {str(k): value_id(x, depth + 1) for k, x in sorted(v.items(), key=lambda kv: str(kv[0]))}
    if isinstance(v, nn.Module):
        return ["module", repr(v), value_id(v.state_dict(), depth + 1)]
    if callable(v):
        return callable_identity(v, depth + 1)
    state = getattr(v, "__dict__", None)
    if isinstance(state, dict):
        return [type(v).__module__, type(v).__qualname__, value_id(state, depth + 1)]
    return [type(v).__qualname__, repr(v)]


def callable_identity(obj: Any, depth: int = 0) -> Any:
    """What a callable computes, as far as can be seen: name, source, bound values.

    A partial contributes its arguments, a function its source (or bytecode), defaults, closure
    values and the plain global constants it reads; a callable object its class and attributes.
    ``loss`` scaled by 1 and by 100 therefore get different identities.
    """
    if isinstance(obj, nn.Module):
        return value_id(obj, depth)
    if isinstance(obj, functools.partial):
        return ["partial", callable_identity(obj.func, depth + 1), value_id(list(obj.args), depth + 1),
                value_id(dict(obj.keywords), depth + 1)]
    if inspect.ismethod(obj):
        return ["method", callable_identity(obj.__func__, depth + 1), value_id(obj.__self__, depth + 1)]
    if inspect.isfunction(obj):
        parts: list[Any] = [obj.__module__, obj.__qualname__, _code_id(obj)]
        parts.append(value_id(list(obj.__defaults__ or ()), depth + 1))
        parts.append(value_id(dict(obj.__kwdefaults__ or {}), depth + 1))
        cells = []
        for cell in obj.__closure__ or ():
            try:
                cells.append(value_id(cell.cell_contents, depth + 1))
            except ValueError:  # an empty cell
                cells.append(None)
        parts.append(cells)
        consts = {n: obj.__globals__[n] for n in obj.__code__.co_names
                  if isinstance(obj.__globals__.get(n), (bool, int, float, str, tuple))}
        parts.append(value_id(consts, depth + 1))
        return parts
    if isinstance(obj, type):  # a class used as a factory: its source decides what it builds
        return [obj.__module__, obj.__qualname__, _code_id(obj)]
    if inspect.isbuiltin(obj):
        return [getattr(obj, "__module__", ""), getattr(obj, "__qualname__", repr(obj))]
    cls = type(obj)
    state = value_id(getattr(obj, "__dict__", {}), depth + 1)
    return ["object", cls.__module__, cls.__qualname__, _code_id(cls), state]


def identity_digest(obj: Any) -> str:
    """A short digest of :func:`callable_identity` (or :func:`value_id` for a non-callable)."""
    ident = callable_identity(obj) if callable(obj) else value_id(obj)
    return _digest(json.dumps(ident, sort_keys=True, default=repr).encode())
