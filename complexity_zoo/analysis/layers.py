"""Per-layer tables: the per-layer values that measures record in ``extras["per_layer"]``,
as one tidy table over runs and steps (the table WeightWatcher users work from, along training),
and a figure of one measure's layers over training."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ..errors import InvalidSettingError
from .plot import MARKERS, STYLES, save_figure

LAYER_KEY = "per_layer"
COLUMNS = ["run", "step", "layer", "value"]


def layers_table(dataset: xr.Dataset, measure: str, key: str = LAYER_KEY) -> pd.DataFrame:
    """One row per (run, step, layer) with the layer's value, from a compare() Dataset.

    Cells that failed or recorded no ``key`` contribute no rows; a measure that never records
    per-layer values raises :class:`InvalidSettingError`.
    """
    var = f"{measure}_extras"
    if var not in dataset:
        measures = [k for k, v in dataset.data_vars.items() if v.attrs.get("role") == "measure"]
        raise InvalidSettingError(f"No measure {measure!r} here; the measures are {measures}.")
    rows = []
    for run in dataset["run"].values:
        for step in dataset["step"].values:
            text = str(dataset[var].sel(run=run, step=step).item())
            per = json.loads(text).get(key) if text else None
            if isinstance(per, dict):
                rows.extend({"run": str(run), "step": int(step), "layer": str(layer),
                             "value": np.nan if v is None else float(v)} for layer, v in per.items())
    if not rows and np.isfinite(dataset[measure].values.astype(float)).any():
        raise InvalidSettingError(f"Measure {measure!r} records no {key!r} values in its extras.")
    return pd.DataFrame(rows, columns=COLUMNS)


def plot_layers(table: pd.DataFrame, path: str | os.PathLike, measure: str = "", run: str | None = None) -> Path:
    """One line per layer over training (log step axis) for one run of a :func:`layers_table`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if table.empty:
        raise InvalidSettingError("The per-layer table is empty; nothing to plot.")
    run = run if run is not None else str(table["run"].iloc[0])
    sub = table[table["run"] == run]
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (layer, g) in enumerate(sub.groupby("layer", sort=False)):
        g = g.sort_values("step")
        ax.plot(g["step"], g["value"], linestyle=STYLES[i % len(STYLES)], marker=MARKERS[i % len(MARKERS)],
                markersize=3, label=layer)
    ax.set_xscale("symlog", linthresh=max(1.0, float(sub.loc[sub["step"] > 0, "step"].min())
                                         if (sub["step"] > 0).any() else 1.0))
    ax.set_xlabel("step")
    ax.set_ylabel(f"{measure} per layer" if measure else "per-layer value")
    ax.set_title(run)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)
