"""PyTorch Lightning: ``.ckpt`` files written by ``Trainer`` (``ModelCheckpoint``), CSVLogger metrics.

A Lightning checkpoint is a pickled dict: ``state_dict`` (keys prefixed by the LightningModule's
attribute names, e.g. ``model.0.weight``), ``global_step``, ``epoch``, ``hyper_parameters``, the
loops', callbacks' and optimizers' states. Measured on Lightning 2.6: a ``Trainer(max_steps=...)``
checkpoint (with ModelCheckpoint, EarlyStopping, LearningRateMonitor, Adam, StepLR, and plain
hyper-parameters) needs no global beyond what ``torch.load(weights_only=True)`` allows by default
(``collections.OrderedDict`` and torch's tensor rebuilders), so none is let through here. Hyper-
parameters holding other objects (a ``pathlib.Path``, an ``argparse.Namespace``, omegaconf
containers) are refused with the global named; pass ``safe_globals=[...]`` for types you trust.
Reading needs only torch: this adapter never imports lightning (your model factory may).
"""

from __future__ import annotations

import functools
import glob
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd
from torch import Tensor, nn

from complexity_zoo._io import torch_load_weights_only
from complexity_zoo._steps import integer_step
from complexity_zoo._stream import open_tensors
from complexity_zoo._trust import confine
from complexity_zoo.errors import CheckpointError, CheckpointNotFoundError, TrajectoryError
from complexity_zoo.trajectory import Checkpoint, Trajectory

from ._common import as_float, rename_metric, tensor_mapping

__all__ = ["load_checkpoint_file", "load_trajectory", "metrics_from_csv", "resolve_run_folder"]

_EVAL_PREFIXES = ("val_", "valid_", "validation_")


def _read(path: Path, safe_globals: Sequence[type], *, mmap: bool = False) -> Mapping:
    if not path.is_file():
        raise CheckpointNotFoundError(f"Checkpoint file {str(path)!r} does not exist.")
    obj = torch_load_weights_only(path, safe_globals=list(safe_globals), mmap=mmap)
    if not isinstance(obj, Mapping) or "state_dict" not in obj:
        have = sorted(map(str, obj)) if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"{str(path)!r} is not a Lightning checkpoint: no 'state_dict' (it holds {have}).")
    return obj


def load_checkpoint_file(
    path: str | os.PathLike, prefix: str | None = None, safe_globals: Sequence[type] = ()
) -> dict[str, Tensor]:
    """The ``state_dict`` of one ``.ckpt``, with ``prefix`` stripped (keys outside it dropped)."""
    path = Path(path)
    state = tensor_mapping(_read(path, safe_globals), "state_dict", path)
    if not prefix:
        return state
    inner = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not inner:
        tops = sorted({k.split(".", 1)[0] + "." for k in state})
        raise CheckpointError(
            f"No key of {str(path)!r} starts with the prefix {prefix!r}; its keys start with {tops}."
        )
    return inner


def metrics_from_csv(path: str | os.PathLike) -> pd.DataFrame:
    """A CSVLogger ``metrics.csv`` aligned to ``global_step``, with ``val_*`` renamed ``test_*``.

    Lightning logs validation metrics and epoch-end aggregates (``*_epoch``) at ``global_step - 1``
    (its logging counter has not yet counted the batch just trained), while they describe the
    weights after ``global_step`` optimizer steps, which is what a checkpoint saved then holds.
    Those columns are moved one step later; training-step metrics keep their step (the loss of
    the batch seen by the weights of that step). ``path`` is the file or the folder holding it.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.csv"
    if not path.is_file():
        raise CheckpointNotFoundError(f"Metrics file {str(path)!r} does not exist.")
    try:
        raw = pd.read_csv(path)
    except (ValueError, OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"Cannot read the Lightning metrics {str(path)!r}: {e}") from e
    if "step" not in raw.columns:
        raise CheckpointError(f"{str(path)!r} has no 'step' column; its columns are {list(raw.columns)}.")
    cells: dict[int, dict[str, float]] = {}
    for record in raw.to_dict("records"):
        step = as_float(record.pop("step"))
        if step is None or step != step:
            continue
        for column, value in record.items():
            number = as_float(value)
            if number is None or number != number:  # blank cells are NaN
                continue
            name = rename_metric(str(column), {}, _EVAL_PREFIXES)
            shift = 1 if str(column).startswith(_EVAL_PREFIXES) or str(column).endswith("_epoch") else 0
            cells.setdefault(integer_step(step, f"the Lightning metrics {str(path)!r}") + shift, {})[name] = number
    frame = pd.DataFrame([{"step": s, **row} for s, row in sorted(cells.items())])
    return frame if len(frame) else pd.DataFrame({"step": pd.Series([], dtype="int64")})


def _ckpt_files(source: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.glob("*.ckpt") if not p.name.startswith("last"))
            if not files:
                raise CheckpointNotFoundError(f"The folder {str(path)!r} has no .ckpt files (last*.ckpt aside).")
            for p in files:
                confine(path, p, "The Lightning checkpoint")
            return files
        if path.is_file():
            return [path]
        files = sorted(Path(p) for p in glob.glob(os.fspath(source)))
        if not files:
            raise CheckpointNotFoundError(f"No checkpoint files match {os.fspath(source)!r}.")
        return files
    files = [Path(p) for p in source]
    if not files:
        raise CheckpointNotFoundError("load_trajectory was given an empty list of checkpoint files.")
    return files


def _version_dirs(root: Path) -> list[Path]:
    found = [p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"version_\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def resolve_run_folder(path: str | os.PathLike, version: int | None = None) -> tuple[Path, Path | None, str]:
    """The checkpoints folder, the ``metrics.csv`` beside it (or None) and a run name for a folder
    as Lightning writes it: ``lightning_logs/`` (one ``version_N`` inside, or ``version`` given),
    ``lightning_logs/version_N/`` (``checkpoints/`` and ``metrics.csv``), or a folder of ``.ckpt``
    files (with ``metrics.csv`` taken from its parent when it is a version's ``checkpoints/``)."""
    named = root = Path(path)
    if not root.is_dir():
        raise CheckpointNotFoundError(f"The Lightning folder {str(root)!r} does not exist or is not a folder.")
    folder, metrics, name = _run_folder(root, version)
    confine(named, folder, "The Lightning checkpoints folder")
    if metrics is not None:  # beside the folder named when that is a version's checkpoints/
        confine(named.parent if metrics.parent == named.parent else named, metrics, "The Lightning metrics")
    return folder, metrics, name


def _run_folder(root: Path, version: int | None) -> tuple[Path, Path | None, str]:
    versions = _version_dirs(root)
    if version is not None:
        chosen = root / f"version_{int(version)}"
        if not chosen.is_dir():
            raise CheckpointNotFoundError(
                f"{str(root)!r} has no version_{version}; its versions are {[p.name for p in versions]}."
            )
        root, versions = chosen, []
    elif not any(root.glob("*.ckpt")) and not (root / "checkpoints").is_dir() and versions:
        if len(versions) > 1:
            raise TrajectoryError(
                f"{str(root)!r} holds {len(versions)} Lightning runs ({', '.join(p.name for p in versions)}), "
                f"each a separate training: pass one of them (e.g. {str(versions[-1])!r}) or version=N."
            )
        root = versions[0]
    if (root / "checkpoints").is_dir() and not any(root.glob("*.ckpt")):
        metrics = root / "metrics.csv"
        return root / "checkpoints", metrics if metrics.is_file() else None, root.resolve().name
    beside = root / "metrics.csv" if (root / "metrics.csv").is_file() else root.parent / "metrics.csv"
    found = beside if beside.is_file() and (beside.parent == root or root.name == "checkpoints") else None
    name = root.parent.resolve().name if root.name == "checkpoints" else root.resolve().name
    return root, found, name


def load_trajectory(
    ckpt_dir_or_files: str | os.PathLike | Iterable[str | os.PathLike],
    model: Callable[[], nn.Module],
    *,
    prefix: str | None = None,
    metrics: pd.DataFrame | str | os.PathLike | None = None,
    safe_globals: Sequence[type] = (),
    name: str | None = None,
    version: int | None = None,
) -> Trajectory:
    """Lightning ``.ckpt`` files as a Trajectory; each step is the ``global_step`` stored in its file.

    ``ckpt_dir_or_files``: a folder (every ``*.ckpt`` but ``last*.ckpt``, which repeats a step),
    a glob pattern, or a list of files. A folder may also be the logger's:
    ``lightning_logs/version_N`` (its ``checkpoints/`` and ``metrics.csv`` are read), or
    ``lightning_logs/`` itself when it holds one version (several are refused, listing them,
    unless ``version=N`` picks one). ``model`` builds what the weights load into: either
    the LightningModule itself (``prefix=None``: keys as saved), or the inner ``nn.Module``
    with ``prefix`` the attribute holding it (``model=Net, prefix="model."`` strips
    ``model.`` and ignores keys of other attributes, such as a loss module's buffers).
    ``metrics``: a CSVLogger ``metrics.csv`` (or its folder; see ``metrics_from_csv``), or a
    DataFrame with a ``step`` column; by default the ``metrics.csv`` of the version folder.
    Each checkpoint's ``epoch`` is added as a metric.
    ``safe_globals``: classes to allow while unpickling, for hyper-parameters that hold them.
    """
    found = None
    if isinstance(ckpt_dir_or_files, (str, os.PathLike)) and (Path(ckpt_dir_or_files).is_dir() or version is not None):
        ckpt_dir_or_files, found, folder_name = resolve_run_folder(ckpt_dir_or_files, version)
        name = name or folder_name
    if metrics is None:
        metrics = found
    files = _ckpt_files(ckpt_dir_or_files)
    ckpts = []
    for path in files:
        header = _read(path, safe_globals, mmap=True)  # tensors mapped, not read: cheap
        step = header.get("global_step")
        if isinstance(step, bool) or not isinstance(step, int):
            raise CheckpointError(f"{str(path)!r} has no integer 'global_step' (got {step!r}).")
        step = integer_step(step, f"the global_step of {str(path)!r}")
        extra = {"epoch": float(header["epoch"])} if isinstance(header.get("epoch"), int) else {}
        load = functools.partial(load_checkpoint_file, str(path), prefix, tuple(safe_globals))
        reader = functools.partial(open_tensors, str(path), "state_dict", prefix, tuple(safe_globals))
        ckpts.append(Checkpoint(step, load, extra, str(path), variant=f"prefix={prefix!r}" if prefix else "",
                                reader=reader))
    if isinstance(metrics, (str, os.PathLike)) and not str(metrics).endswith(".json"):
        metrics = metrics_from_csv(metrics)
    if name is None:
        name = files[0].parent.resolve().name
    try:
        return Trajectory(ckpts, model, metrics, name=name)
    except TrajectoryError as e:
        raise TrajectoryError(f"{e} Lightning checkpoints of one step must be one file: pass the files to use.") from e
