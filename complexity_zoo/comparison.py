"""Comparison: the result of compare(), an xarray Dataset with dims (run, step), and its errors."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from .errors import ResultNotFoundError, UnknownMeasureError

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
