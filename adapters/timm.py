"""timm: the output folder of timm's ``train.py`` (``checkpoint-<epoch>.pth.tar``, ``summary.csv``).

``timm.utils.CheckpointSaver`` writes, after each epoch, a dict with ``state_dict`` (and
``state_dict_ema`` with ``--model-ema``), ``epoch``, ``arch``, ``optimizer``, ``metric``, ``saver``
bookkeeping and the command-line ``args`` as an ``argparse.Namespace``. It keeps the best
``--checkpoint-hist`` epochs by the eval metric, so the epochs on disk need not be consecutive;
``last.pth.tar`` and ``model_best.pth.tar`` are copies of numbered ones and are not read.

Steps are epochs: step e holds the weights after timm's epoch e (0-based, so ``checkpoint-0``
is after one epoch of training), and the metrics carry the same number as an ``epoch`` column.
"""

from __future__ import annotations

import argparse
import csv
import functools
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor, nn

from complexity_zoo._io import state_dict_from_object, torch_load_weights_only
from complexity_zoo._steps import integer_step, unique_steps
from complexity_zoo._stream import open_tensors
from complexity_zoo._trust import confine, names_a_file
from complexity_zoo.errors import CheckpointError, CheckpointNotFoundError, ModelError, UntrustedCodeError
from complexity_zoo.trajectory import Checkpoint, Trajectory

from ._common import as_float, existing_dir, rename_metric, require, tensor_mapping

__all__ = ["load_checkpoint_file", "load_trajectory", "metrics_from_summary", "model_from_arch"]

# The only Python object a timm training checkpoint pickles besides containers and tensors.
SAFE_GLOBALS = (argparse.Namespace,)
# timm logs accuracies in percent; ours are fractions.
_PERCENT = {"eval_top1": "test_acc", "eval_top5": "test_top5_acc"}


def _inert_kwargs(kwargs: Mapping) -> dict:
    """Stored model kwargs without those that name files, URLs or downloads (``checkpoint_path``,
    ``pretrained_cfg_overlay``, ``cache_dir``, ...)."""
    return {k: v for k, v in kwargs.items() if isinstance(k, str) and not names_a_file(k)}


def model_from_arch(arch: str, num_classes: int, **kwargs) -> nn.Module:
    """``timm.create_model(arch, pretrained=False, num_classes=...)``: an untrained model, no download.

    Arguments that name files or downloads (``checkpoint_path``, ``pretrained_cfg_overlay``, ...)
    are dropped: the weights come from the checkpoints, never from a file a checkpoint names.
    """
    if not isinstance(arch, str) or ":" in arch or "/" in arch or "\\" in arch:
        raise UntrustedCodeError(
            f"Refusing the timm architecture {arch!r}: a name with a source prefix (hf-hub:, local-dir:) or a "
            f"path makes timm read the network or a file. Name a registered architecture (e.g. 'resnet18'), or "
            f"build the model yourself and pass model=factory."
        )
    timm = require("timm", "timm", "The timm adapter")
    kwargs = _inert_kwargs(kwargs)
    try:
        return timm.create_model(arch, pretrained=False, num_classes=num_classes, **kwargs)
    except RuntimeError as e:  # timm's "Unknown model"
        raise ModelError(f"timm cannot build the architecture {arch!r}: {e}") from e


def load_checkpoint_file(path: str | os.PathLike, ema: bool = False) -> dict[str, Tensor]:
    """The weights of one CheckpointSaver file (``state_dict_ema`` if ``ema``), loaded weights-only.

    Only ``argparse.Namespace`` (timm's ``args``) is let through besides tensors and containers;
    a file that asks for any other global is refused with ``UnsafeCheckpointError`` naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"Checkpoint file {str(path)!r} does not exist.")
    obj = torch_load_weights_only(path, safe_globals=list(SAFE_GLOBALS))
    if ema:
        return tensor_mapping(obj, "state_dict_ema", path)
    return state_dict_from_object(obj, path)


def _namespace_value(args: object, name: str) -> object:
    if isinstance(args, argparse.Namespace):
        return getattr(args, name, None)
    if isinstance(args, Mapping):
        return args.get(name)
    return None


def _model_kwargs(path: Path, header: Mapping, state: Mapping[str, Tensor], num_classes: int | None) -> dict:
    """What ``create_model`` needs to rebuild the trained architecture, as train.py passed it."""
    arch = header.get("arch")
    args = header.get("args")
    if not isinstance(arch, str):
        raise CheckpointError(f"{str(path)!r} names no architecture ('arch'); pass model=factory.")
    kwargs: dict = {"arch": arch}
    in_chans = _namespace_value(args, "in_chans")
    input_size = _namespace_value(args, "input_size")
    if in_chans is None and isinstance(input_size, (list, tuple)) and input_size:
        in_chans = input_size[0]
    if in_chans is not None:
        kwargs["in_chans"] = _size_arg(in_chans, "in_chans", path, 1 << 12)
    if _namespace_value(args, "gp") is not None:
        kwargs["global_pool"] = _namespace_value(args, "gp")
    extra = _namespace_value(args, "model_kwargs")
    if isinstance(extra, Mapping):
        kwargs.update(_inert_kwargs(extra))
    if num_classes is None:
        num_classes = _namespace_value(args, "num_classes")  # type: ignore[assignment]
    kwargs["num_classes"] = (_size_arg(num_classes, "num_classes", path, 1 << 22) if num_classes is not None
                             else _classes_from_weights(arch, state, path))
    return kwargs


def _size_arg(value: object, name: str, path: Path, limit: int) -> int:
    """A size stored in a checkpoint's args (``num_classes``, ``in_chans``), checked before it sizes a model."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise CheckpointError(f"{str(path)!r} stores {name}={value!r}; expected an integer in 1..{limit}. "
                              f"Pass model=factory (or num_classes=...) to build the model yourself.")
    return value


def _classes_from_weights(arch: str, state: Mapping[str, Tensor], path: Path) -> int:
    with torch.device("meta"):
        probe = model_from_arch(arch, num_classes=1)
    heads = probe.pretrained_cfg.get("classifier") or ()
    for head in [heads] if isinstance(heads, str) else list(heads):
        weight = state.get(f"{head}.weight")
        if isinstance(weight, Tensor) and weight.ndim >= 1:
            return int(weight.shape[0])
    raise CheckpointError(
        f"Cannot tell the number of classes of {str(path)!r}: its args have no num_classes and no "
        f"classifier weight ({heads!r}) is in its state dict. Pass num_classes=..."
    )


def metrics_from_summary(path: str | os.PathLike) -> pd.DataFrame:
    """timm's ``summary.csv`` with step = epoch: ``eval_loss`` -> ``test_loss``, ``eval_top1`` ->
    ``test_acc`` and ``eval_top5`` -> ``test_top5_acc`` (as fractions; timm logs percent), other
    ``eval_*`` -> ``test_*``; ``train_*`` and ``lr`` keep their names; an ``epoch`` column is added.
    """
    path = Path(path)
    try:
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"Cannot read the timm summary {str(path)!r}: {e}") from e
    records, header = [], None
    for row in rows:
        if row and row[0] == "epoch":  # the header (repeated when a resumed run wrote it again)
            header = row
            continue
        if header is None or not row:
            continue
        epoch = as_float(row[0])
        if epoch is None:
            raise CheckpointError(f"The timm summary {str(path)!r} has a row with no epoch: {row}.")
        step = integer_step(epoch, f"the timm summary {str(path)!r}")
        record = {"step": step, "epoch": step}
        for key, value in zip(header[1:], row[1:]):
            number = as_float(value)
            if number is None:
                continue
            if key in _PERCENT:
                record[_PERCENT[key]] = number / 100.0
            else:
                record[rename_metric(key, {}, ("eval_",))] = number
        records.append(record)
    if header is None:
        raise CheckpointError(f"The timm summary {str(path)!r} has no header row starting with 'epoch'.")
    return pd.DataFrame(records) if records else pd.DataFrame({"step": pd.Series([], dtype="int64")})


def load_trajectory(
    output_dir: str | os.PathLike,
    *,
    model: Callable[[], nn.Module] | None = None,
    num_classes: int | None = None,
    ema: bool = False,
    prefix: str = "checkpoint",
    name: str | None = None,
) -> Trajectory:
    """timm's ``train.py`` output folder as a Trajectory whose steps are epochs.

    The model is ``timm.create_model(arch, pretrained=False, num_classes=...)`` with ``arch``,
    ``num_classes``, ``in_chans``, ``gp`` and ``model_kwargs`` read from the newest checkpoint's
    ``args`` (``num_classes`` from the classifier's weight if the args lack it, or given here);
    ``model`` overrides it. ``ema=True`` reads the EMA weights (``--model-ema``). Metrics come
    from ``summary.csv`` (see ``metrics_from_summary``).
    """
    root = existing_dir(output_dir, "The timm output folder")
    pattern = re.compile(re.escape(prefix) + r"-(\d+)\.pth\.tar")
    files = unique_steps(((integer_step(m.group(1), f"the file name {str(p)!r}"), p) for p in root.iterdir()
                          if (m := pattern.fullmatch(p.name)) and p.is_file()), "The timm checkpoints")
    for p in [*files.values(), root / "summary.csv"]:
        if p.is_symlink() or p.exists():
            confine(root, p, "The timm output folder's")
    if not files:
        raise CheckpointNotFoundError(
            f"{str(root)!r} has no {prefix}-<epoch>.pth.tar files, so it is not a timm output folder "
            f"(last.pth.tar and model_best.pth.tar are copies and are not read)."
        )
    epochs = sorted(files)
    if model is None:
        newest = files[epochs[-1]]
        header = torch_load_weights_only(newest, safe_globals=list(SAFE_GLOBALS))
        if not isinstance(header, Mapping):
            raise CheckpointError(f"{str(newest)!r} is not a timm training checkpoint (no dict inside).")
        state = tensor_mapping(header, "state_dict_ema" if ema else "state_dict", newest)
        model = functools.partial(model_from_arch, **_model_kwargs(newest, header, state, num_classes))
    summary = root / "summary.csv"
    metrics = metrics_from_summary(summary) if summary.is_file() else None
    ckpts = [
        Checkpoint(e, functools.partial(load_checkpoint_file, str(files[e]), ema), {"epoch": float(e)}, str(files[e]),
                   variant="ema" if ema else "", reader=functools.partial(
                       open_tensors, str(files[e]), "state_dict_ema" if ema else None, None, SAFE_GLOBALS))
        for e in epochs
    ]
    return Trajectory(ckpts, model, metrics, name=name or root.resolve().name)
