"""Train modular-arithmetic runs, compare every measure, and write the paper-style report.

What ``complexity-zoo demo`` and ``examples/paper_figure.py`` run: one function, so the demo
and the example cannot drift apart.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..compare import compare
from ..comparison import Comparison
from ..trajectory import Trajectory
from . import task_data
from .modular import from_preset, train

# The LLC's lr and localization come from calibrate_llc on cpu-small checkpoints (steps 800
# and 8000): the default lr 1e-4 had not settled in 300 draws (split-R̂ 1.7); lr 1e-3 with
# localization 100 gave split-R̂ <= 1.02 at both.
MEASURES = ("l2", "effective_rank", "stable_rank", "naive_compression", "kolmogorov", "lmn",
            ("llc", {"lr": 1e-3, "localization": 100.0}))


def grokking_report(
    out: str | os.PathLike,
    presets: Sequence[str] = ("cpu-small", "cpu-small-noreg"),
    measures: Sequence = MEASURES,
    *,
    device: str = "cpu",
    max_steps: int = 25,
    progress: bool = True,
) -> tuple[Comparison, list[Path]]:
    """Train each preset (resuming what exists), compare ``measures`` on up to ``max_steps``
    checkpoints per run (log-spaced picks of the saved ones), and write the result
    (``comparison.nc``), the figure and the correlation, transition and bound tables."""
    out = Path(out)
    runs = []
    for preset in presets:
        if progress:
            print(f"training {preset} into {out / 'runs' / preset} (resumes if interrupted)", flush=True)
        path = train(out / "runs" / preset, **from_preset(preset), device=device, resume=True, progress=progress)
        runs.append(Trajectory.from_dir(path))
    steps = sorted({s for t in runs for s in _log_spaced(t.steps, max_steps)})
    data = {t.name: task_data(t.task) for t in runs}
    result = compare(runs, list(measures), data=data, steps=steps, device=device, cache=out / "cache",
                     progress=progress)
    written = [
        result.save(out / "comparison.nc"),
        result.plot(out / "figure.png", title=" vs ".join(presets)),
        result.export(out / "correlations.md"),
        result.export(out / "correlations.tex", caption="Measures against test loss.",
                      label="tab:correlations"),
        result.export(out / "transitions.md", kind="transitions"),
        # A reader may pick the best checkpoint, so each bound pays a union over all of them.
        result.export(out / "bounds.md", kind="bounds", union_size=len(steps)),
    ]
    return result, written


def _log_spaced(steps: list[int], count: int) -> list[int]:
    """About ``count`` of ``steps``, evenly spaced in log step (always the first and last)."""
    if len(steps) <= count:
        return list(steps)
    import numpy as np

    positive = [s for s in steps if s > 0]
    targets = np.geomspace(positive[0], positive[-1], count - 1)
    picked = {steps[0], steps[-1]}
    for t in targets:
        picked.add(min(positive, key=lambda s: abs(np.log(s) - np.log(t))))
    return sorted(picked)
