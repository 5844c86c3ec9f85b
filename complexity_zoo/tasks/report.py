"""Train modular-arithmetic runs, compare every measure, and write the paper-style report.

What ``complexity-zoo demo`` and ``examples/paper_figure.py`` run: one function, so the demo
and the example cannot drift apart.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from .._threads import choose_threads, model_work
from ..compare import compare
from ..comparison import Comparison
from ..errors import InvalidSettingError
from ..trajectory import Trajectory, factory_from_spec
from . import task_data
from ._modular_train import MODELS
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
    workers: int = 1,
) -> tuple[Comparison, list[Path]]:
    """Train each preset (resuming what exists), compare ``measures`` on up to ``max_steps``
    checkpoints per run (log-spaced picks of the saved ones), and write the result
    (``comparison.nc``), the figure and the correlation, transition and bound tables.

    ``workers`` > 1 (CPU): that many spawned processes train the runs at once (only when each
    run trains on one torch thread anyway, so every run is bit-identical to one trained alone)
    and run compare's checkpoints (``executor="processes"``: the serial numbers). Spawned
    processes re-import the caller's ``__main__``: call from under ``if __name__ == "__main__"``.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InvalidSettingError(f"grokking_report: workers must be a positive integer; got {workers!r}.")
    out = Path(out)
    paths = _train_all(out / "runs", {preset: from_preset(preset) for preset in presets}, device, progress, workers)
    runs = [Trajectory.from_dir(path) for path in paths]
    steps = sorted({s for t in runs for s in _log_spaced(t.steps, max_steps)})
    data = {t.name: task_data(t.task) for t in runs}
    parallel = {"executor": "processes", "workers": workers} if workers > 1 and device == "cpu" else {}
    result = compare(runs, list(measures), data=data, steps=steps, device=device, cache=out / "cache",
                     progress=progress, **parallel)
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


def _train_all(root: Path, settings: dict[str, dict], device: str, progress: bool, workers: int) -> list[Path]:
    """Train each (name, train() settings) into root/name, at once on ``workers`` processes where
    that changes no result (each run on one torch thread either way)."""
    n = min(workers, len(settings))
    if n > 1 and device == "cpu" and all(choose_threads(_work(cfg)) == 1 for cfg in settings.values()):
        from .._executors import process_pool

        if progress:
            print(f"training {', '.join(settings)} at once in {n} processes into {root} (resumes if "
                  f"interrupted; no progress bars)", flush=True)
        with process_pool(n) as pool:
            futures = [pool.submit(train, root / name, **cfg, device=device, resume=True, progress=False)
                       for name, cfg in settings.items()]
            return [f.result() for f in futures]
    paths = []
    for name, cfg in settings.items():
        if progress:
            print(f"training {name} into {root / name} (resumes if interrupted)", flush=True)
        paths.append(train(root / name, **cfg, device=device, resume=True, progress=progress))
    return paths


def _work(cfg: dict) -> int:
    """The parameters of a preset's model (built once, off the global RNG), by train()'s own
    name-to-factory table."""
    kwargs = {"p": cfg["p"], **cfg.get("model_kwargs", {})}
    spec = {"factory": MODELS[cfg.get("model", "transformer")], "kwargs": kwargs}
    with torch.random.fork_rng(devices=[]):
        return model_work(factory_from_spec(spec)())


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
