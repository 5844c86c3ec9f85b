"""Assembling a comparison: names checked before computing, finished cells into one dataset."""

from __future__ import annotations

import json
import platform
import re

import numpy as np
import pandas as pd
import torch
import xarray as xr

from ._cache import to_jsonable
from .errors import TrajectoryError

# What a netCDF variable name may not hold: '/' (the group separator) and control characters.
_BAD_NAME = re.compile(r"[/\x00-\x1f\x7f]")


def _name_problem(name: object) -> str | None:
    if not isinstance(name, str) or not name:
        return "it is not a non-empty string"
    if _BAD_NAME.search(name):
        return "it holds '/' or a control character"
    if name != name.strip():
        return "it starts or ends with white space"
    return None


def check_names(runs, labeled) -> None:
    """Refuse, before anything is computed, names that the saved result could not store."""
    for label in labeled:
        problem = _name_problem(label)
        if problem:
            raise TrajectoryError(f"The measure label {label!r} cannot be saved to netCDF: {problem}.")
    for traj in runs:
        problem = _name_problem(traj.name)
        if problem:
            raise TrajectoryError(f"The run name {traj.name!r} cannot be saved to netCDF: {problem}; set .name.")
        metrics = traj.metrics.set_index("step").apply(pd.to_numeric, errors="coerce")
        for col in metrics.columns[metrics.notna().any()]:
            problem = _name_problem(col)
            if problem:
                raise TrajectoryError(
                    f"Run {traj.name!r} logs a metric named {col!r}, which netCDF cannot store ({problem}); "
                    f"rename it (e.g. {re.sub(_BAD_NAME, '_', str(col)).strip()!r}) before comparing."
                )
            if col in labeled:
                raise TrajectoryError(
                    f"Run {traj.name!r} logs a metric named {col!r}, the same as a measure; rename it."
                )


def build_dataset(runs, wanted, labeled, cells, device, seed) -> xr.Dataset:
    """The comparison's dataset (run x step) from finished cells, NaN where a cell is missing."""
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
