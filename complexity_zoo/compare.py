"""compare(): every measure on every checkpoint, cached, resumable, with progress."""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import platform
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr

from ._cache import ResultCache, to_jsonable
from .comparison import Comparison
from .data import Data
from .errors import (
    MeasureFailedWarning,
    MissingDataError,
    TrajectoryError,
    UnknownMeasureError,
)
from .measure import Measure, MeasureResult
from .registry import get_measure
from .trajectory import Trajectory

MeasureSpec = str | tuple[str, Mapping[str, Any]] | Measure


def resolve_measures(measures: Sequence[MeasureSpec], seed: int | None = 0) -> dict[str, Measure]:
    """Instances keyed by a unique label (the name; settings appended when a name repeats).

    ``seed`` fills the seed of every stochastic measure whose seed was left unset.
    """
    if isinstance(measures, (str, Measure)):
        measures = [measures]
    instances: list[Measure] = []
    for spec in measures:
        if isinstance(spec, Measure):
            m = spec
        elif isinstance(spec, str):
            m = get_measure(spec)
        elif isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], Mapping):
            m = get_measure(spec[0], **spec[1])
        else:
            raise UnknownMeasureError(
                f"A measure is given as a name, a (name, settings) pair or a Measure; got {spec!r}."
            )
        if m.stochastic and getattr(m, "seed", None) is None:
            m = dataclasses.replace(m, seed=seed)
        instances.append(m)
    if not instances:
        raise UnknownMeasureError("compare() needs at least one measure.")
    names = [m.name for m in instances]
    labels: dict[str, Measure] = {}
    for m in instances:
        label = m.name
        if names.count(m.name) > 1:
            default = type(m)()
            diff = {k: v for k, v in m.settings().items() if getattr(default, k) != v}
            label = m.name + "[" + ",".join(f"{k}={v}" for k, v in sorted(diff.items())) + "]"
        if label in labels:
            raise UnknownMeasureError(f"The measure {label!r} is given twice with the same settings.")
        labels[label] = m
    return labels


def _as_trajectories(obj: Trajectory | Iterable[Trajectory]) -> list[Trajectory]:
    runs = [obj] if isinstance(obj, Trajectory) else list(obj)
    if not runs or not all(isinstance(t, Trajectory) for t in runs):
        raise TrajectoryError("compare() takes a Trajectory or a list of Trajectory objects.")
    names = [t.name for t in runs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise TrajectoryError(f"Runs must have distinct names; repeated: {dupes}. Set trajectory.name.")
    return runs


def _evaluate_checkpoint(
    trajectory: Trajectory,
    step: int,
    measures: dict[str, Measure],
    data: Data | None,
    device: str | None,
    strict: bool,
) -> list[tuple[str, MeasureResult | BaseException, float]]:
    """Load one checkpoint once and run each measure on it; failures are returned, not raised."""
    try:
        model = trajectory.model_at(step, device=device)
    except Exception as e:
        if strict:
            raise
        return [(label, e, 0.0) for label in measures]
    try:  # measures with needs_init get the run's initial weights
        init = trajectory.init_state_dict() if any(m.needs_init for m in measures.values()) else None
    except Exception as e:
        if strict:
            raise
        init = e
    out: list[tuple[str, MeasureResult | BaseException, float]] = []
    for label, measure in measures.items():
        start = time.perf_counter()
        try:
            if measure.needs_init and isinstance(init, BaseException):
                raise init
            extra = {"init": init} if measure.needs_init else {}
            result: MeasureResult | BaseException = measure(model, data if measure.needs_data else None, **extra)
        except Exception as e:
            if strict:
                raise
            result = e
        out.append((label, result, time.perf_counter() - start))
    return out


def compare(
    trajectory_or_list: Trajectory | Iterable[Trajectory],
    measures: Sequence[MeasureSpec],
    *,
    data: Data | Mapping[str, Data] | None = None,
    steps: Iterable[int] | None = None,
    device: str | torch.device | None = None,
    executor: cf.Executor | Any | None = None,
    cache: str | None = None,
    progress: bool = True,
    seed: int = 0,
    strict: bool = False,
) -> Comparison:
    """Run ``measures`` on every checkpoint of one or more trajectories.

    ``data`` is one Data for all runs or a mapping run name -> Data. ``executor`` is any
    ``concurrent.futures.Executor`` (or a Dask client); each job is one checkpoint with its
    pending measures. ``cache`` is a folder: each finished cell is stored at once, so an
    interrupted comparison loses nothing and a re-run computes only what is missing.
    With ``strict=False`` a failing cell is NaN, warned about and listed in ``.errors``.
    """
    from tqdm.auto import tqdm

    runs = _as_trajectories(trajectory_or_list)
    labeled = resolve_measures(measures, seed)
    device = str(device) if device is not None else None
    data_for = _data_per_run(runs, data, labeled)
    wanted = None if steps is None else sorted({int(s) for s in steps})
    if wanted is not None:
        unknown = [s for s in wanted if not any(s in t.steps for t in runs)]
        if unknown:
            raise TrajectoryError(f"No run has steps {unknown}.")
    store = ResultCache(cache) if cache is not None else None

    cells: dict[tuple[str, int, str], dict] = {}
    errors: list[dict] = []
    jobs = []
    for traj in runs:
        traj_steps = [s for s in traj.steps if wanted is None or s in wanted]
        for step in traj_steps:
            keys = {}
            ckpt_id = traj.checkpoint(step).fingerprint() if store else ""
            d = data_for[traj.name]
            init_id = traj.init_fingerprint() if store and any(m.needs_init for m in labeled.values()) else ""
            for label, m in labeled.items():
                ckpt = ckpt_id + (f"|init={init_id}" if m.needs_init else "")
                keys[label] = ResultCache.key(ckpt, m.key(), d.fingerprint() if (d and m.needs_data) else None)
            pending = {}
            for label, m in labeled.items():
                hit = store.get(m.name, keys[label]) if store else None
                if hit is not None:
                    cells[(traj.name, step, label)] = hit
                else:
                    pending[label] = m
            if pending:
                jobs.append((traj, step, pending, keys))
    total = sum(len(j[2]) for j in jobs)
    bar = tqdm(total=total, desc="compare", unit="cell", disable=not progress)

    def record(traj: Trajectory, step: int, keys: dict, results) -> None:
        for label, result, seconds in results:
            m = labeled[label]
            if isinstance(result, BaseException):
                cells[(traj.name, step, label)] = {"value": None, "seconds": seconds}
                errors.append(
                    {"run": traj.name, "step": step, "measure": label,
                     "error": type(result).__name__, "message": str(result)}
                )
                warnings.warn(
                    f"Measure {label!r} failed at step {step} of run {traj.name!r} and is NaN there: "
                    f"{type(result).__name__}: {result}",
                    MeasureFailedWarning,
                    stacklevel=3,
                )
            else:
                cell = {
                    "value": result.value, "stderr": result.stderr, "diagnostics": result.diagnostics,
                    "extras": result.extras, "seconds": seconds, "run": traj.name, "step": step,
                    "measure": m.name, "settings": m.settings(), "device": device or "cpu",
                }
                cell = to_jsonable(cell)
                cells[(traj.name, step, label)] = cell
                if store is not None:
                    store.put(m.name, keys[label], cell)
            bar.update(1)

    try:
        if executor is None:
            for traj, step, pending, keys in jobs:
                bar.set_postfix_str(f"{traj.name} step {step}", refresh=False)
                record(traj, step, keys, _evaluate_checkpoint(
                    traj, step, pending, data_for[traj.name], device, strict))
        else:
            futures = {
                executor.submit(_evaluate_checkpoint, traj, step, pending, data_for[traj.name], device, strict):
                (traj, step, keys)
                for traj, step, pending, keys in jobs
            }
            done = cf.as_completed(futures) if all(isinstance(f, cf.Future) for f in futures) else futures
            for fut in done:
                traj, step, keys = futures[fut]
                record(traj, step, keys, fut.result())
    finally:
        bar.close()
    dataset = _build_dataset(runs, wanted, labeled, cells, device, seed)
    dataset.attrs["n_train"] = json.dumps({name: d.n("train") for name, d in data_for.items() if d is not None})
    classes = {d.num_classes() for d in data_for.values() if d is not None} - {None}
    if len(classes) == 1:
        dataset.attrs["num_classes"] = classes.pop()
    return Comparison(dataset, errors)


def _data_per_run(runs: list[Trajectory], data, labeled: dict[str, Measure]) -> dict[str, Data | None]:
    if isinstance(data, Mapping):
        per = {t.name: data.get(t.name) for t in runs}
    else:
        per = {t.name: data for t in runs}
    needing = [label for label, m in labeled.items() if m.needs_data]
    lacking = [name for name, d in per.items() if d is None]
    if needing and lacking:
        raise MissingDataError(
            f"The measures {needing} need data, and none was given for run(s) {lacking}: pass "
            f"compare(..., data=Data) or a mapping from run name to Data."
        )
    return per


def _build_dataset(runs, wanted, labeled, cells, device, seed) -> xr.Dataset:
    import complexity_zoo

    steps = sorted({s for t in runs for s in t.steps if wanted is None or s in wanted})
    names = [t.name for t in runs]
    shape = (len(names), len(steps))
    pos = {(r, s): (i, j) for i, r in enumerate(names) for j, s in enumerate(steps)}
    variables: dict[str, tuple] = {}

    def array(fill=np.nan, dtype=float) -> np.ndarray:
        return np.full(shape, fill, dtype=dtype)

    for label, m in labeled.items():
        base = {"measure": label, "name": m.name, "unit": m.unit}
        value, stderr, seconds = array(), array(), array()
        extras = array("", object)
        diagnostics: dict[str, np.ndarray] = {}
        for (run, step, lab), cell in cells.items():
            if lab != label:
                continue
            i, j = pos[(run, step)]
            value[i, j] = np.nan if cell.get("value") is None else cell["value"]
            seconds[i, j] = cell.get("seconds", np.nan)
            if cell.get("stderr") is not None:
                stderr[i, j] = cell["stderr"]
            if cell.get("extras"):
                extras[i, j] = json.dumps(cell["extras"])
            for k, v in (cell.get("diagnostics") or {}).items():
                diagnostics.setdefault(k, array())[i, j] = np.nan if v is None else v
        variables[label] = (value, {**base, "role": "measure", "settings": json.dumps(to_jsonable(m.settings()))})
        if m.stochastic or not np.isnan(stderr).all():
            variables[f"{label}_stderr"] = (stderr, {**base, "role": "stderr"})
        for k, arr in diagnostics.items():
            variables[f"{label}_{k}"] = (arr, {**base, "role": "diagnostic", "diagnostic": k})
        variables[f"{label}_extras"] = (extras.astype(str), {**base, "role": "extras"})
        variables[f"{label}_seconds"] = (seconds, {**base, "role": "seconds", "unit": "s"})

    for i, traj in enumerate(runs):
        metrics = traj.metrics.set_index("step").apply(pd.to_numeric, errors="coerce")
        for col in metrics.columns[metrics.notna().any()]:  # numeric columns only
            if col in variables and variables[col][1]["role"] != "metric":
                raise TrajectoryError(
                    f"Run {traj.name!r} logs a metric named {col!r}, the same as a measure; rename it."
                )
            arr = variables.setdefault(col, (array(), {"role": "metric"}))[0]
            for j, step in enumerate(steps):
                if step in metrics.index:
                    arr[i, j] = metrics.at[step, col]

    attrs = {
        "complexity_zoo_version": complexity_zoo.__version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": device or "cpu",
        "seed": seed,
        "measures": json.dumps(
            {label: {"name": m.name, "version": m.version, "unit": m.unit,
                     "settings": to_jsonable(m.settings())} for label, m in labeled.items()}
        ),
        "tasks": json.dumps({t.name: t.task for t in runs}),
    }
    return xr.Dataset(
        {k: (("run", "step"), v, a) for k, (v, a) in variables.items()},
        coords={"run": np.array(names, dtype=str), "step": np.array(steps, dtype=np.int64)},
        attrs=attrs,
    )
