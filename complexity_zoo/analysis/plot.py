"""The figure researchers draw by hand: accuracy on top, every measure normalized below.

One column per run, a log step axis, detected transitions marked. Lines differ by style and
marker as well as color, so the figure reads in grayscale print.
"""

from __future__ import annotations

import os
from itertools import cycle
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

STYLES = ["-", "--", "-.", ":"]
MARKERS = ["o", "s", "^", "v", "D", "x", "+", "*"]


def plot_comparison(dataset: xr.Dataset, measures: list[str], transitions: pd.DataFrame,
                    path: str | os.PathLike, title: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [str(r) for r in dataset["run"].values]
    steps = dataset["step"].values.astype(float)
    fig, axes = plt.subplots(2, len(runs), figsize=(4.2 * len(runs) + 1.5, 6), sharex=True, squeeze=False,
                             gridspec_kw={"height_ratios": [1, 1.4]})
    for col, run in enumerate(runs):
        top, bottom = axes[0, col], axes[1, col]
        for metric, style in (("train_acc", "-"), ("test_acc", "--")):
            if metric in dataset:
                top.plot(steps, dataset[metric].sel(run=run).values, style, color="black", label=metric)
        top.set_ylim(-0.02, 1.02)
        top.set_title(run)
        styles = zip(cycle(STYLES), cycle(MARKERS), cycle(plt.get_cmap("tab10").colors))
        for m, (ls, mk, color) in zip(measures, styles):
            v = dataset[m].sel(run=run).values.astype(float)
            span = np.nanmax(v) - np.nanmin(v) if np.isfinite(v).any() else 0
            norm = (v - np.nanmin(v)) / span if span > 0 else np.zeros_like(v)
            bottom.plot(steps, norm, linestyle=ls, marker=mk, markersize=3, color=color, label=m)
        marks = transitions[(transitions["run"] == run) & transitions["kind"].isin(["memorization", "generalization"])]
        for rec in marks.itertuples(index=False):
            for ax in (top, bottom):
                ax.axvline(rec.step, color="gray", linestyle=":" if rec.kind == "memorization" else "-", lw=1)
            top.annotate(rec.kind, (rec.step, 0.5), rotation=90, fontsize=7, ha="right", va="center")
        for ax in (top, bottom):
            ax.set_xscale("symlog", linthresh=max(1.0, float(steps[steps > 0].min()) if (steps > 0).any() else 1.0))
            ax.set_xlim(float(steps.min()), float(steps.max()))
            ax.grid(alpha=0.3)
        bottom.set_xlabel("step")
        bottom.set_ylim(-0.05, 1.05)
    axes[0, 0].set_ylabel("accuracy")
    axes[1, 0].set_ylabel("measure (normalized to its range)")
    axes[0, -1].legend(fontsize=8, loc="lower right")
    axes[1, -1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Lay out, write (150 dpi, folders made) and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path
