"""Checkpoint series: lazily loaded weights, a model factory, and the metrics training logged."""

from __future__ import annotations

import copy
import functools
import glob
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor, nn

from ._io import file_digest, load_state_dict_file, read_json
from ._params import ParameterPlan, parameter_plan
from ._run_writer import RUN_FORMAT, RunWriter
from ._steps import integer_step, read_metrics, step_from_filename
from ._stream import MappingReader, TensorReader, open_tensors
from ._trust import confine, factory_from_spec, identity_digest
from .errors import CheckpointError, CheckpointNotFoundError, ModelError, TrajectoryError

__all__ = ["Checkpoint", "RunWriter", "Trajectory", "factory_from_spec", "integer_step", "load_into",
           "spec_from_factory", "step_from_filename"]

ModelFactory = Callable[[], nn.Module]


@dataclass
class Checkpoint:
    """One step of a run: its weights (read only when asked for) and its logged metrics."""

    step: int
    load: Callable[[], dict[str, Tensor]] = field(repr=False)
    metrics: dict[str, float] = field(default_factory=dict)
    source: str | None = None  # the file it is read from, for messages and cache keys
    # What else decides the tensors read from ``source`` (e.g. "ema", a key prefix), for cache keys.
    variant: str = ""
    # The files whose bytes decide the weights (``source`` when None), e.g. a shard index's shards.
    files: Callable[[], list[str]] | None = field(default=None, repr=False)
    # Opens a reader of the same tensors one at a time (streaming); None: the whole state dict.
    reader: Callable[[], TensorReader] | None = field(default=None, repr=False)

    def state_dict(self) -> dict[str, Tensor]:
        return self.load()

    def open_tensors(self) -> TensorReader:
        """A reader of this checkpoint's tensors, each read when asked for (a context manager).

        Memory: one tensor at a time for files with a streaming reader (safetensors, sharded
        safetensors, torch zip files); the whole state dict otherwise (in-memory checkpoints).
        """
        return self.reader() if self.reader is not None else MappingReader(self.state_dict(), self.source or "<memory>")

    def tensors(self) -> Iterator[tuple[str, Tensor]]:
        """Every stored (name, tensor), one at a time, buffers included (see ``complexity_zoo._params``)."""
        with self.open_tensors() as reader:
            yield from reader

    def fingerprint(self) -> str:
        """Identity for caching: a content digest of the file(s), or of the tensors in memory.

        A file's digest is computed once per (path, size, mtime) in a process, so moving a run
        folder keeps its cache and editing a file in place invalidates it.
        """
        if self.source is not None:
            paths = self.files() if self.files is not None else [self.source]
            return ":".join([file_digest(p) for p in paths] + ([self.variant] if self.variant else []))
        h = hashlib.sha256()
        for k, v in sorted(self.state_dict().items()):
            h.update(k.encode())
            h.update(str((v.dtype, tuple(v.shape))).encode())
            h.update(v.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return h.hexdigest()


def spec_from_factory(factory: ModelFactory) -> dict:
    """The importable description of a factory, so a run folder can rebuild its model."""
    kwargs: dict = {}
    if isinstance(factory, functools.partial):
        if factory.args:
            raise TrajectoryError("Cannot record a model factory with positional arguments.")
        kwargs, factory = dict(factory.keywords), factory.func
    qualname = getattr(factory, "__qualname__", "")
    module = getattr(factory, "__module__", None)
    if not module or module == "__main__" or "<" in qualname:
        raise TrajectoryError(
            f"Cannot record the model factory {factory!r} in a run folder: it must be an "
            f"importable module-level callable (not a lambda, a local function or __main__). "
            f"Pass model_spec={{'factory': 'pkg.module:callable', 'kwargs': {{...}}}}."
        )
    try:
        json.dumps(kwargs)
    except TypeError as e:
        raise TrajectoryError(f"The model factory's kwargs must be JSON values: {e}") from e
    return {"factory": f"{module}:{qualname}", "kwargs": kwargs}


class Trajectory:
    """An ordered series of checkpoints of one run, loaded lazily, plus its metrics."""

    def __init__(
        self,
        checkpoints: Iterable[Checkpoint],
        model: ModelFactory,
        metrics: pd.DataFrame | str | os.PathLike | None = None,
        *,
        name: str = "run",
        model_spec: dict | None = None,
        task: dict | None = None,
        init: Mapping[str, Tensor] | nn.Module | None = None,
    ) -> None:
        if not callable(model):
            raise ModelError(f"model must be a callable that builds the nn.Module; got {model!r}.")
        by_step: dict[int, Checkpoint] = {}
        for ckpt in checkpoints:
            if ckpt.step in by_step:
                raise TrajectoryError(
                    f"Two checkpoints have step {ckpt.step}: {by_step[ckpt.step].source or '<memory>'}"
                    f" and {ckpt.source or '<memory>'}."
                )
            by_step[ckpt.step] = ckpt
        if not by_step:
            raise TrajectoryError(f"Trajectory {name!r} has no checkpoints.")
        self._checkpoints = dict(sorted(by_step.items()))
        self.model_factory = model
        self.model_spec = model_spec
        self.task = task
        self.name = name
        self.init = init  # the initial weights, for measures with needs_init; None: first checkpoint
        self._all_metrics = read_metrics(metrics)
        rows = self._all_metrics.set_index("step")
        for step, ckpt in self._checkpoints.items():
            if step in rows.index:
                ckpt.metrics = {**rows.loc[step].dropna().to_dict(), **ckpt.metrics}

    # -- the series -------------------------------------------------------------------------
    @property
    def steps(self) -> list[int]:
        return list(self._checkpoints)

    @property
    def metrics(self) -> pd.DataFrame:
        """One row per checkpoint step (``step`` column first), NaN where nothing was logged."""
        rows = [{"step": s, **c.metrics} for s, c in self._checkpoints.items()]
        return pd.DataFrame(rows)

    def __len__(self) -> int:
        return len(self._checkpoints)

    def __iter__(self) -> Iterator[Checkpoint]:
        return iter(self._checkpoints.values())

    def __repr__(self) -> str:
        return f"Trajectory(name={self.name!r}, steps={len(self)}, {self.steps[0]}..{self.steps[-1]})"

    def subset(self, steps: Iterable[int], *, metrics: bool = True) -> Trajectory:
        """The same run cut down to ``steps``, sharing its (lazily loaded) checkpoints: part of a
        series, or the one checkpoint a job ships to a worker. ``metrics=False`` leaves out the
        logged metrics table (each checkpoint keeps its own row)."""
        keep = {integer_step(s, "subset()"): None for s in steps}
        if not keep:
            raise TrajectoryError(f"subset() of {self.name!r} needs at least one step.")
        view = copy.copy(self)
        view._checkpoints = {s: self.checkpoint(s) for s in sorted(keep)}
        if not metrics:
            view._all_metrics = self._all_metrics.iloc[0:0]
        return view

    def model_id(self) -> str:
        """Identity of the model factory for cache keys: its code and its arguments."""
        return identity_digest(self.model_factory)

    def checkpoint(self, step: int) -> Checkpoint:
        if step not in self._checkpoints:
            raise TrajectoryError(
                f"Trajectory {self.name!r} has no step {step}; its steps run "
                f"{self.steps[0]}..{self.steps[-1]} ({len(self)} checkpoints)."
            )
        return self._checkpoints[step]

    def model_at(self, step: int, device: torch.device | str | None = None) -> nn.Module:
        """Build the model and load the weights of ``step`` (strictly: every key, every shape)."""
        ckpt = self.checkpoint(step)
        model = self.model_factory()
        if not isinstance(model, nn.Module):
            raise ModelError(f"The model factory returned {type(model).__name__}, not an nn.Module.")
        load_into(model, ckpt.state_dict(), where=ckpt.source or f"step {step} of {self.name!r}")
        model.eval()
        return model.to(device) if device is not None else model

    def parameter_plan(self) -> ParameterPlan | None:
        """Names, shapes and tied aliases of the model's parameters, from the factory on ``meta``
        (worked out once); None when the factory cannot build (see ``complexity_zoo._params``)."""
        if not hasattr(self, "_plan"):
            self._plan = parameter_plan(self.model_factory)
        return self._plan

    def init_state_dict(self) -> dict[str, Tensor]:
        """The run's initial weights: ``init`` if it was given, else the first checkpoint's."""
        if self.init is None:
            return self.checkpoint(self.steps[0]).state_dict()
        return dict(self.init.state_dict() if isinstance(self.init, nn.Module) else self.init)

    def init_fingerprint(self) -> str:
        """Identity of the initial weights, for cache keys of measures with needs_init."""
        if self.init is None:
            return self.checkpoint(self.steps[0]).fingerprint()
        return Checkpoint(0, self.init_state_dict).fingerprint()

    # -- constructors -----------------------------------------------------------------------
    @classmethod
    def from_state_dicts(
        cls,
        state_dicts: Mapping[int, Mapping[str, Tensor]],
        model: ModelFactory,
        metrics: pd.DataFrame | str | os.PathLike | None = None,
        **kwargs,
    ) -> Trajectory:
        """A trajectory from in-memory state dicts keyed by step."""
        ckpts = [
            Checkpoint(int(step), functools.partial(dict, sd)) for step, sd in state_dicts.items()
        ]
        return cls(ckpts, model, metrics, **kwargs)

    @classmethod
    def from_files(
        cls,
        pattern_or_paths: str | os.PathLike | Iterable[str | os.PathLike],
        model: ModelFactory,
        metrics: pd.DataFrame | str | os.PathLike | None = None,
        **kwargs,
    ) -> Trajectory:
        """Checkpoint files (``.safetensors`` or weights-only ``.pt``), step from each file name."""
        if isinstance(pattern_or_paths, (str, os.PathLike)):
            paths = sorted(glob.glob(os.fspath(pattern_or_paths)))
            if not paths:
                raise CheckpointNotFoundError(f"No checkpoint files match {os.fspath(pattern_or_paths)!r}.")
        else:
            paths = [os.fspath(p) for p in pattern_or_paths]
            if not paths:
                raise CheckpointNotFoundError("from_files was given an empty list of paths.")
        for p in paths:
            if not os.path.isfile(p):
                raise CheckpointNotFoundError(f"Checkpoint file {p!r} does not exist.")
        ckpts = [
            Checkpoint(step_from_filename(p), functools.partial(load_state_dict_file, p), source=p,
                       reader=functools.partial(open_tensors, p))
            for p in paths
        ]
        return cls(ckpts, model, metrics, **kwargs)

    @classmethod
    def from_dir(cls, path: str | os.PathLike, model: ModelFactory | None = None, *, trust: bool = False) -> Trajectory:
        """Read a run folder (``run.json``, ``metrics.csv``, ``checkpoints/step_*.safetensors``).

        The folder is data: the model factory that ``run.json`` names is imported only if it is
        on the allow-list (``complexity_zoo.allow_factory``; the library's own are) or
        ``trust=True``; ``model=`` builds the model instead and nothing named is imported.
        """
        root = Path(path)
        meta_path = root / "run.json"
        for p in (meta_path, root / "checkpoints", root / "metrics.csv"):  # none may lead outside
            if p.is_symlink() or p.exists():
                confine(root, p, "The run folder's")
        if not meta_path.is_file():
            raise CheckpointNotFoundError(
                f"{str(root)!r} is not a run folder: it has no run.json. Use Trajectory.from_files "
                f"for a folder of plain checkpoint files."
            )
        try:
            meta = read_json(meta_path)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise TrajectoryError(f"{str(meta_path)!r} is not valid JSON: {e}") from e
        if not isinstance(meta, dict):
            raise TrajectoryError(
                f"{str(meta_path)!r} holds a JSON {type(meta).__name__}, not an object with 'format' and 'model'."
            )
        if meta.get("format") != RUN_FORMAT:
            raise TrajectoryError(
                f"{str(meta_path)!r} has format {meta.get('format')!r}; this version reads {RUN_FORMAT}."
            )
        spec = meta.get("model")
        task = meta.get("task")
        if task is not None and not isinstance(task, dict):
            raise TrajectoryError(f"The 'task' of {str(meta_path)!r} must be a JSON object; got {task!r}.")
        if model is not None:
            factory = model
        else:
            factory = factory_from_spec(spec or {}, trust=trust, where=repr(str(meta_path)), root=root)
            # The spec as it reads from anywhere: declared paths resolved (a save copies their files).
            spec = {**spec, "kwargs": dict(factory.keywords)}
        files = sorted((root / "checkpoints").glob("step_*.safetensors"))
        if not files:
            raise CheckpointNotFoundError(f"Run folder {str(root)!r} has no checkpoints/step_*.safetensors.")
        for file in files:
            confine(root, file, "The checkpoint")
        metrics_path = root / "metrics.csv"
        return cls.from_files(
            files,
            model=factory,
            metrics=metrics_path if metrics_path.is_file() else None,
            name=root.resolve().name,
            model_spec=spec if model is None else None,
            task=task,
        )

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write this trajectory as a run folder that ``Trajectory.from_dir`` reads back."""
        spec = self.model_spec or spec_from_factory(self.model_factory)
        writer = RunWriter(path, model=spec, task=self.task, overwrite=overwrite)
        for ckpt in self:
            writer.write_checkpoint(ckpt.step, ckpt.state_dict(), ckpt.metrics)
        logged = self._all_metrics[~self._all_metrics["step"].isin(self.steps)]
        for row in logged.to_dict("records"):  # metrics logged between checkpoints are kept
            writer.write_metrics(int(row.pop("step")), row)
        return writer.root


def load_into(model: nn.Module, state_dict: Mapping[str, Tensor], where: str) -> None:
    """``load_state_dict(strict=True)`` with an error that names the keys and shapes at fault."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_short(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches {_short(shapes)}")
        raise CheckpointError(
            f"The checkpoint {where} does not fit the model: {'; '.join(parts)}. Check that the "
            f"model factory builds the architecture that was trained."
        )
    model.load_state_dict(state_dict, strict=True)


def _short(items: list[str], limit: int = 8) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return "[" + ", ".join(items[:limit]) + "]" + more
