"""Hugging Face: ``transformers.Trainer`` output folders, hub revisions, and language-model Data.

``load_trajectory("out")`` reads what ``Trainer`` writes: ``out/checkpoint-N/`` folders, each
with ``config.json``, ``trainer_state.json`` and the weights (``model.safetensors``, its sharded
``model.safetensors.index.json``, or the legacy ``pytorch_model.bin`` read with
``torch.load(weights_only=True)``). N, the Trainer's ``global_step``, is the step.
``load_trajectory("EleutherAI/pythia-70m", revisions=["step1000", "step2000"])`` reads hub
revisions instead, e.g. ``revisions="step*"`` (see :func:`load_trajectory`).
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor, nn

from complexity_zoo._io import load_state_dict_file, read_json
from complexity_zoo._steps import integer_step, unique_steps
from complexity_zoo._stream import open_tensors
from complexity_zoo._trust import confine, resolve_inside
from complexity_zoo.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    ModelError,
    UntrustedCodeError,
)
from complexity_zoo.trajectory import Checkpoint, Trajectory

from . import _hub
from ._common import aliased_keys, as_float, existing_dir, rename_metric, require
from ._lm_data import lm_data

__all__ = [
    "lm_data",
    "load_trajectory",
    "load_weights",
    "metrics_from_log_history",
    "model_from_config",
]

# In the order they are preferred: safetensors first, the legacy pickle-based format last.
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_CHECKPOINT_DIR = re.compile(r"checkpoint-(\d+)")
# Trainer's log_history names -> ours; bookkeeping that is not a metric is dropped.
_RENAMES = {"loss": "train_loss", "eval_accuracy": "test_acc"}
_DROPPED = {"step", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second"}


def _transformers():
    return require("transformers", "hf", "The Hugging Face adapter")


def _refuse_remote_code(config: str) -> None:
    """A local config.json with an ``auto_map`` asks for Python shipped beside it: refused."""
    path = Path(config)
    path = path / "config.json" if path.is_dir() else path
    if not path.is_file():
        return  # a hub id: transformers checks auto_map itself, and trust_remote_code=False refuses
    raw = _read_json(path)
    if raw.get("auto_map"):
        raise UntrustedCodeError(
            f"{str(path)!r} has an 'auto_map' ({raw['auto_map']!r}): it asks to run Python code shipped "
            f"with the checkpoint, which this library never does. Build the model yourself and pass "
            f"model=factory."
        )


@functools.lru_cache(maxsize=16)
def _config(config: str, revision: str | None):
    _refuse_remote_code(config)
    try:
        return _transformers().AutoConfig.from_pretrained(config, revision=revision, trust_remote_code=False)
    except ValueError as e:  # transformers' refusal of remote code, or a config it cannot read
        raise ModelError(f"transformers cannot read the config of {config!r} without running its code: {e}") from e


def _architecture(config: str, revision: str | None = None) -> tuple[type, object]:
    transformers = _transformers()
    cfg = _config(config, revision)
    names = list(getattr(cfg, "architectures", None) or [])
    if not names:
        raise ModelError(
            f"The config of {config!r} names no architecture ('architectures' is empty): pass "
            f"model=factory to build the model yourself."
        )
    cls = getattr(transformers, names[0], None)
    if cls is None:
        raise ModelError(
            f"The config of {config!r} names the architecture {names[0]!r}, which transformers "
            f"{transformers.__version__} does not provide (custom code is never run): pass "
            f"model=factory to build the model yourself."
        )
    return cls, cfg


def model_from_config(config: str, revision: str | None = None) -> nn.Module:
    """An untrained model of the architecture ``config.json`` names (its ``architectures`` entry).

    ``config`` is a folder holding ``config.json`` (nothing is downloaded) or a hub repository id.
    A module-level function, so a trajectory that uses it can be saved as a run folder.
    """
    cls, cfg = _architecture(config, revision)
    return cls(cfg)


# -- weights ---------------------------------------------------------------------------------
def _weights_file(folder: Path) -> Path:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise CheckpointNotFoundError(
        f"The checkpoint folder {str(folder)!r} holds no model weights: expected one of {list(WEIGHT_FILES)}."
    )


def weight_files(path: str | os.PathLike) -> list[str]:
    """The files whose bytes make one checkpoint: the file, or an index and every shard it lists."""
    path = Path(path)
    if not path.name.endswith(".index.json"):
        return [str(path)]
    try:
        shards = sorted(set(read_json(path)["weight_map"].values()))
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{str(path)!r} is not a shard index with a 'weight_map': {e!r}") from e
    where = f"The shard index {str(path)!r}"
    return [str(path)] + [str(resolve_inside(path.parent, shard, where)) for shard in shards]


def load_weights(path: str | os.PathLike) -> dict[str, Tensor]:
    """The tensors of one weights file, or of every shard a ``*.index.json`` lists."""
    path = Path(path)
    if not path.name.endswith(".index.json"):
        return load_state_dict_file(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"Checkpoint index {str(path)!r} does not exist.")
    try:
        weight_map = read_json(path)["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{str(path)!r} is not a shard index with a 'weight_map': {e!r}") from e
    state: dict[str, Tensor] = {}
    for shard in shards:
        state.update(load_state_dict_file(resolve_inside(path.parent, shard, f"The shard index {str(path)!r}")))
    missing = sorted(set(weight_map) - set(state))
    if missing:
        raise CheckpointError(f"The shards of {str(path)!r} lack keys its weight_map lists: {missing[:8]}.")
    return state


class _TiedWeights:
    """Fills the keys a checkpoint leaves out because the model ties them to another tensor.

    HF safetensors files store a tied tensor once (GPT-2 keeps ``transformer.wte.weight`` and
    omits ``lm_head.weight``); strict loading needs both names. Keys stored under the names
    transformers renames when it loads (its ``WeightRenaming`` rules: GPT-NeoX's ``embed_out``
    is ``lm_head``, old ``LayerNorm.gamma`` is ``.weight``) are renamed the same way. Keys the model declares safe to
    ignore (``_keys_to_ignore_on_load_unexpected``, e.g. old attention-mask buffers) are dropped.
    Anything else that is missing stays missing, and ``load_into`` names it.
    """

    def __init__(self, factory: Callable[[], nn.Module]) -> None:
        self.factory = factory
        self._groups: list[list[str]] | None = None
        self._keys: set[str] = set()
        self._ignore: list[str] = []
        self._renames: list[tuple[re.Pattern, str]] = []

    def __call__(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        if self._groups is None:
            self._groups, self._keys, model_cls = aliased_keys(self.factory)
            self._ignore = list(getattr(model_cls, "_keys_to_ignore_on_load_unexpected", None) or [])
            self._renames = _renames(self.factory)
        for key in [k for k in state if k not in self._keys]:
            for pattern, target in self._renames:
                new = pattern.sub(target, key)
                if new != key and new in self._keys and new not in state:
                    state[new] = state.pop(key)
                    break
        for group in self._groups:
            present = [k for k in group if k in state]
            for key in group:
                if present and key not in state:
                    state[key] = state[present[0]]
        for key in [k for k in state if k not in self._keys]:
            if any(re.search(pattern, key) for pattern in self._ignore):
                del state[key]
        return state


def _renames(factory: Callable[[], nn.Module]) -> list[tuple[re.Pattern, str]]:
    """The plain key renames transformers applies when it loads this model (none for other models)."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightRenaming
    except ImportError:  # transformers < 5 renames nothing this way
        return []
    with torch.device("meta"):
        model = factory()
    try:
        rules = get_model_conversion_mapping(model)
    except Exception:  # not a transformers model
        return []
    return [(re.compile(src), rule.target_patterns[0]) for rule in rules if type(rule) is WeightRenaming
            for src in rule.source_patterns if len(rule.target_patterns) == 1]


def _load_checkpoint(path: str, fix: _TiedWeights) -> dict[str, Tensor]:
    return fix(load_weights(path))


# -- metrics ---------------------------------------------------------------------------------
def _metric_name(key: str) -> str | None:
    if key in _DROPPED:
        return None
    return rename_metric(key, _RENAMES, ("eval_",))


def metrics_from_log_history(log_history: Iterable[Mapping]) -> pd.DataFrame:
    """Trainer's ``log_history`` as one row per step: ``loss`` -> ``train_loss``, ``eval_*`` -> ``test_*``.

    Rows logged at one step (a training log and an evaluation) merge. The end-of-training
    summary (``train_runtime``, and a ``train_loss`` averaged over the whole run) is skipped.
    """
    rows: dict[int, dict[str, float]] = {}
    for entry in log_history:
        if not isinstance(entry, Mapping) or "step" not in entry or "train_runtime" in entry:
            continue
        step = integer_step(entry["step"], "Trainer's log_history")
        row = rows.setdefault(step, {})
        for key, value in entry.items():
            name, number = _metric_name(str(key)), as_float(value)
            if name is not None and number is not None:
                row[name] = number
    frame = pd.DataFrame([{"step": s, **r} for s, r in sorted(rows.items())])
    return frame if len(frame) else pd.DataFrame({"step": pd.Series([], dtype="int64")})


def _trainer_state(root: Path, folders: list[Path]) -> Path | None:
    """The newest ``trainer_state.json``: the root's (written by save_state) or the last checkpoint's."""
    candidates = [root / "trainer_state.json"] + [f / "trainer_state.json" for f in reversed(folders)]
    best, best_step = None, -1
    for path in candidates:
        if not path.is_file():
            continue
        step = _read_json(path).get("global_step")
        step = -1 if step is None else integer_step(step, f"the global_step of {str(path)!r}")
        if step > best_step:
            best, best_step = path, step
        if path.parent != root:  # the newest checkpoint's state holds all that came before it
            break
    return best


def _read_json(path: Path) -> dict:
    try:
        value = read_json(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{str(path)!r} is not readable JSON: {e}") from e
    if not isinstance(value, dict):
        raise CheckpointError(f"{str(path)!r} holds {type(value).__name__}, not a JSON object.")
    return value


# -- trajectories ----------------------------------------------------------------------------
def load_trajectory(
    path_or_repo: str | os.PathLike,
    revisions: _hub.Revisions | None = None,
    *,
    model: Callable[[], nn.Module] | None = None,
    metrics: pd.DataFrame | str | os.PathLike | None = None,
    name: str | None = None,
    keep: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> Trajectory:
    """A Trainer output folder, or hub revisions of one repository, as a Trajectory.

    Without ``revisions``: ``path_or_repo`` is a Trainer ``output_dir``; each ``checkpoint-N/`` is
    step N, the metrics come from the newest ``trainer_state.json`` (every logged row is kept,
    also those between checkpoints), and the model is built from ``config.json`` with no download.

    With ``revisions``, each revision of a Hub repository is a checkpoint: a glob pattern
    (``"step*"``, every Pythia checkpoint; a string is always a pattern), a callable filter on
    revision names, a list (``["step1000", "step2000"]``) or a mapping ``{1000: "step1000"}``.
    The revisions that exist are the repository's branches and tags (``list_repo_refs``), or
    offline (``HF_HUB_OFFLINE=1``) those the cache's ``refs/`` records; the step is the last
    number in a name unless given as a mapping. Nothing is fetched until a checkpoint is
    loaded: then its weights alone, through huggingface_hub's cache (``cache_dir``, default
    the usual one), read with safetensors or ``torch.load(weights_only=True)``. ``keep=False``
    deletes the weight files a load fetched once they are read (never files that were already
    cached), so one revision is on disk at a time. The model is built from the last revision's
    ``config.json`` (fetched at once; transformers' classes only, no remote code). If
    ``path_or_repo`` is a local folder, each revision is one of its subfolders instead (a local
    mirror, e.g. made with ``huggingface_hub.snapshot_download(local_dir=...)``).
    Hub metrics are not known: pass ``metrics`` (a DataFrame or CSV with a ``step`` column).

    ``model`` overrides the factory built from the config.
    """
    if revisions is not None:
        return _revisions_trajectory(str(path_or_repo), revisions, model, metrics, name, keep, cache_dir)
    root = existing_dir(path_or_repo, "The Trainer output folder")
    found = unique_steps(((integer_step(m.group(1), f"the folder name {str(p)!r}"), p) for p in root.iterdir()
                          if (m := _CHECKPOINT_DIR.fullmatch(p.name)) and p.is_dir()), "The checkpoint folders")
    folders = list(found.values())
    weights = {step: _weights_file(p) for step, p in found.items()}
    for p in [*folders, *weights.values(), root / "trainer_state.json",
              *(f / n for f in folders for n in ("config.json", "trainer_state.json"))]:
        if p.is_symlink() or p.exists():
            confine(root, p, "The Trainer output folder's")
    if not folders:
        raise CheckpointNotFoundError(
            f"{str(root)!r} has no checkpoint-N folders, so it is not a Trainer output folder. For "
            f"hub revisions pass revisions=[...]."
        )
    if model is None:
        config = next((p for p in reversed(folders) if (p / "config.json").is_file()), None)
        if config is None:
            raise CheckpointNotFoundError(
                f"No checkpoint folder of {str(root)!r} has a config.json (looked in {str(folders[-1])!r} "
                f"and the others); pass model=factory to build the model yourself."
            )
        model = functools.partial(model_from_config, config=str(config.resolve()))
    if metrics is None:
        state = _trainer_state(root, folders)
        if state is not None:
            metrics = metrics_from_log_history(_read_json(state).get("log_history") or [])
    fix = _TiedWeights(model)
    ckpts = [
        Checkpoint(step, functools.partial(_load_checkpoint, str(path), fix), source=str(path),
                   files=functools.partial(weight_files, str(path)), reader=functools.partial(open_tensors, str(path)))
        for step, path in weights.items()
    ]
    return Trajectory(ckpts, model, metrics, name=name or root.resolve().name)


def _revisions_trajectory(
    repo: str,
    revisions: _hub.Revisions,
    model: Callable[[], nn.Module] | None,
    metrics: pd.DataFrame | str | os.PathLike | None,
    name: str | None,
    keep: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> Trajectory:
    if Path(repo).is_dir():  # a local mirror: one subfolder per revision
        root = Path(repo)
        by_step = _hub.steps_of(_hub.choose(revisions, [p.name for p in root.iterdir() if p.is_dir()]))
        for rev in by_step.values():
            existing_dir(root / rev, "The revision folder")
        folders = {step: confine(root, root / rev, "The revision folder") for step, rev in by_step.items()}
        if model is None:
            config = folders[max(folders)]
            confine(root, config / "config.json", "The mirror's")
            model = functools.partial(model_from_config, config=str(config))
        fix = _TiedWeights(model)
        ckpts = []
        for step, folder in sorted(folders.items()):
            file = str(confine(root, _weights_file(folder), "The mirror's weights file"))
            ckpts.append(Checkpoint(step, functools.partial(_load_checkpoint, file, fix), source=file,
                                    files=functools.partial(weight_files, file),
                                    reader=functools.partial(open_tensors, file)))
        return Trajectory(ckpts, model, metrics, name=name or root.resolve().name)
    source = _hub.Source(repo, None if cache_dir is None else str(cache_dir))
    available = _hub.available_revisions(repo, cache_dir)
    by_step = _hub.steps_of(_hub.choose(revisions, available))
    commits = _hub.resolve(repo, by_step.values(), available)
    if model is None:  # the config of the last revision: one small file, fetched now
        last = by_step[max(by_step)]
        config, _ = source.need("config.json", commits[last], last)
        model = functools.partial(model_from_config, config=str(config.parent))
    ckpts = _hub.hub_checkpoints(source, by_step, commits, keep, WEIGHT_FILES, _TiedWeights(model))
    return Trajectory(ckpts, model, metrics, name=name or repo.rsplit("/", 1)[-1])
