"""Steps: integers in [0, 2**63), read from file names and metrics files, or refused."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

import pandas as pd

from ._io import SAFETENSORS_SUFFIXES, TORCH_SUFFIXES
from .errors import TrajectoryError

T = TypeVar("T")


def read_metrics(metrics: pd.DataFrame | str | os.PathLike | None) -> pd.DataFrame:
    """Metrics as a DataFrame with an int64 ``step`` column, one row per step (the last logged)."""
    if metrics is None:
        return pd.DataFrame({"step": pd.Series([], dtype="int64")})
    if isinstance(metrics, (str, os.PathLike)):
        path = Path(metrics)
        if not path.is_file():
            raise TrajectoryError(f"Metrics file {str(path)!r} does not exist.")
        try:
            df = pd.read_json(path) if path.suffix == ".json" else pd.read_csv(path)
        except (ValueError, OSError) as e:
            raise TrajectoryError(f"Cannot read metrics from {str(path)!r}: {e}") from e
    elif isinstance(metrics, pd.DataFrame):
        df = metrics.copy()
    else:
        raise TrajectoryError(f"metrics must be a DataFrame or a CSV/JSON path; got {metrics!r}.")
    where = f"the metrics {str(metrics)!r}" if isinstance(metrics, (str, os.PathLike)) else "the metrics"
    if "step" not in df.columns:
        raise TrajectoryError(f"Metrics need a 'step' column; the columns are {list(df.columns)[:20]}.")
    if len(df.columns) > MAX_METRICS + 1:
        raise TrajectoryError(
            f"{where[0].upper()}{where[1:]} have {len(df.columns) - 1} columns besides 'step', over the bound of "
            f"{MAX_METRICS}: a result stores one netCDF variable per metric, and writing them takes time that grows "
            f"about 3x per doubling (measured: 7 s for 2,000, 22 s for 4,000, over 400 s for 20,000). Keep the metrics "
            f"you need, e.g. metrics=df[['step', 'train_loss', 'test_loss']]."
        )
    df["step"] = [integer_step(v, where) for v in df["step"]]
    df["step"] = df["step"].astype("int64")
    # A step logged twice (e.g. a resumed run) keeps its last row.
    return df.drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True)


INT64_MAX = 2**63 - 1
# Metric columns a run may carry (each is one variable of the saved result; see read_metrics).
MAX_METRICS = 1000


def integer_step(value: object, where: str) -> int:
    """A step as a Python int: an integer (or an integral number) in [0, 2**63), else an error."""
    if isinstance(value, bool):
        raise TrajectoryError(f"A step in {where} is {value!r}, not an integer.")
    if isinstance(value, str):
        value = value.strip()
        if not re.fullmatch(r"[+-]?\d+", value):
            raise TrajectoryError(f"A step in {where} is {value!r}, not an integer.")
        out = int(value)
    else:
        try:
            f = float(value)  # type: ignore[arg-type]
            out = int(value) if not isinstance(value, float) else int(f)
        except (TypeError, ValueError, OverflowError):
            raise TrajectoryError(f"A step in {where} is {value!r}, not an integer.") from None
        if not math.isfinite(f) or f != out:
            raise TrajectoryError(f"A step in {where} is {value!r}, not an integer.")
    if not 0 <= out <= INT64_MAX:
        raise TrajectoryError(f"A step in {where} is {out}, outside 0..2**63-1.")
    return out


def step_from_filename(path: str | os.PathLike) -> int:
    """The last number in a file's name: ``step000100.pt`` -> 100."""
    name = Path(path).name
    for suffix in SAFETENSORS_SUFFIXES + TORCH_SUFFIXES:
        name = name.removesuffix(suffix)
    # A '-' right before the digits is a minus sign unless it follows a letter or digit
    # (``step_-5`` is -5 and refused; ``checkpoint-5`` is 5).
    numbers = re.findall(r"(?:(?<![A-Za-z0-9])-)?\d+", name)
    if not numbers:
        raise TrajectoryError(f"No step number in the file name {str(path)!r}.")
    return integer_step(numbers[-1], f"the file name {str(path)!r}")


def log_spaced(steps: list[int], n: int) -> list[int]:
    """``n`` of ``steps`` spread evenly in log(step + 1), first and last included (all if fewer;
    the last alone for n = 1).

    Each target of ``geomspace(first + 1, last + 1, n)`` takes the nearest step not yet taken
    (in log(step + 1)), so the subset has exactly ``min(n, len(steps))`` distinct steps.
    """
    pool = sorted(set(int(s) for s in steps))
    if n < 1:
        raise TrajectoryError(f"A log-spaced subset needs at least one step; got n={n}.")
    if n >= len(pool):
        return pool
    logs = {s: math.log(s + 1) for s in pool}
    lo, hi = logs[pool[0]], logs[pool[-1]]
    chosen: list[int] = []
    for i in range(n):
        target = lo + (hi - lo) * i / (n - 1) if n > 1 else hi
        chosen.append(min((s for s in pool if s not in chosen), key=lambda s: abs(logs[s] - target)))
    return sorted(chosen)


def unique_steps(pairs: Iterable[tuple[int, T]], what: str) -> dict[int, T]:
    """``{step: item}`` sorted by step, refusing two items of one step (``checkpoint-40`` and
    ``checkpoint-040``) with an error that names both: which one is meant cannot be told."""
    out: dict[int, T] = {}
    for step, item in pairs:
        if step in out:
            raise TrajectoryError(
                f"{what} {str(out[step])!r} and {str(item)!r} are both step {step}; one step must be one "
                f"checkpoint: remove or rename one of them."
            )
        out[step] = item
    return dict(sorted(out.items()))
