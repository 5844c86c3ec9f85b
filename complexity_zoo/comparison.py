"""Comparison: the result of compare(), an xarray Dataset with dims (run, step), and its errors."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from .errors import InvalidSettingError, ResultNotFoundError, UnknownMeasureError

ERROR_COLUMNS = ["run", "step", "measure", "error", "message"]


class Comparison:
    """Measures and metrics over checkpoints, with provenance, uncertainty and failures.

    Each measure is a variable of ``dataset`` (attrs: ``role="measure"``, unit, settings), with
    ``{measure}_stderr`` for stochastic ones, ``{measure}_{diagnostic}`` for sampler
    diagnostics, ``{measure}_extras`` (JSON text per cell) and ``{measure}_seconds``; the runs'
    logged metrics are variables with ``role="metric"``.
    """

    def __init__(self, dataset: xr.Dataset, errors: list[dict] | pd.DataFrame | None = None) -> None:
        self.dataset = dataset
        self.errors = pd.DataFrame(errors if errors is not None else [], columns=ERROR_COLUMNS)

    def __repr__(self) -> str:
        return (
            f"Comparison(runs={list(self.runs)}, steps={self.dataset.sizes['step']}, "
            f"measures={self.measures}, errors={len(self.errors)})"
        )

    def _names(self, role: str) -> list[str]:
        return [k for k, v in self.dataset.data_vars.items() if v.attrs.get("role") == role]

    @property
    def measures(self) -> list[str]:
        return self._names("measure")

    @property
    def metrics(self) -> list[str]:
        return self._names("metric")

    @property
    def runs(self) -> list[str]:
        return [str(r) for r in self.dataset["run"].values]

    def to_dataframe(self) -> pd.DataFrame:
        """Tidy table: one row per run, step and measure (value, stderr, unit), NaN kept."""
        frames = []
        for m in self.measures:
            da = self.dataset[m]
            df = da.to_dataframe(name="value").reset_index()[["run", "step", "value"]]
            err = f"{m}_stderr"
            df["stderr"] = (
                self.dataset[err].to_dataframe(name="s")["s"].to_numpy() if err in self.dataset else np.nan
            )
            df.insert(2, "measure", m)
            df["unit"] = da.attrs.get("unit", "")
            frames.append(df)
        columns = ["run", "step", "measure", "value", "stderr", "unit"]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)

    def extras(self, measure: str, step: int, run: str | None = None) -> dict[str, Any]:
        """The extras one cell recorded (per-layer values, traces, chosen settings)."""
        if measure not in self.measures:
            raise UnknownMeasureError(f"No measure {measure!r} here; the measures are {self.measures}.")
        run = run if run is not None else self.runs[0]
        text = str(self.dataset[f"{measure}_extras"].sel(run=run, step=step).item())
        return json.loads(text) if text else {}

    # -- analyses ---------------------------------------------------------------------------
    def bounds(self, n: int | dict[str, int] | None = None, delta: float = 0.05) -> pd.DataFrame:
        """Occam and PAC-Bayes compression bounds for every measure in bits, at every step.

        ``n`` is the number of training examples (default: what compare() recorded from the
        data). The 0-1 errors come from the ``train_acc`` and ``test_acc`` metrics.
        """
        from .analysis.bounds import bounds_table

        recorded = json.loads(self.dataset.attrs.get("n_train", "{}"))
        sizes = n if isinstance(n, dict) else {r: (n if n is not None else recorded.get(r)) for r in self.runs}
        missing = [r for r in self.runs if not sizes.get(r)]
        if missing:
            raise InvalidSettingError(
                f"bounds() needs the number of training examples for runs {missing}: pass n=..."
            )
        if "train_acc" not in self.metrics:
            raise InvalidSettingError(
                f"bounds() needs a 'train_acc' metric for the training error; the metrics are {self.metrics}."
            )
        bits_measures = [m for m in self.measures if self.dataset[m].attrs.get("unit") == "bits"]
        rows = []
        for m in bits_measures:
            for run in self.runs:
                for step in self.dataset["step"].values:
                    cell = self.dataset.sel(run=run, step=step)
                    test_acc = float(cell["test_acc"]) if "test_acc" in self.dataset else np.nan
                    rows.append({"run": run, "step": int(step), "measure": m, "bits": float(cell[m]),
                                 "n": sizes[run], "train_error": 1 - float(cell["train_acc"]),
                                 "test_error": 1 - test_acc})
        columns = ["run", "step", "measure", "bits", "n", "train_error", "test_error"]
        return bounds_table(pd.DataFrame(rows, columns=columns), delta=delta)

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the whole result (values, metrics, extras, errors, provenance) as netCDF."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        ds = self.dataset.copy()
        ds.attrs["errors"] = self.errors.to_json(orient="records")
        tmp = path.with_name(path.name + ".tmp")
        ds.to_netcdf(tmp, engine="netcdf4")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Comparison:
        path = Path(path)
        if not path.is_file():
            raise ResultNotFoundError(f"No saved comparison at {str(path)!r}.")
        with xr.open_dataset(path, engine="netcdf4") as ds:
            ds = ds.load()
        errors = json.loads(ds.attrs.pop("errors", "[]"))
        for name, var in ds.data_vars.items():  # netCDF gives text back as object arrays
            if var.attrs.get("role") == "extras":
                ds[name] = var.astype(str)
        ds["run"] = ds["run"].astype(str)
        return cls(ds, errors)
