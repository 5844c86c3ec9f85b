"""Shared by the benchmarks: a cpu-small grokking run, trained once and reused."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch

RUN = Path("runs/bench-cpu-small")


def grokking_run(path: Path = RUN) -> Path:
    """Train the ``cpu-small`` preset (about a minute on 2 cores) unless it is already there."""
    from complexity_zoo.tasks.modular import from_preset, train

    if not (path / "run.json").exists():
        train(path, **from_preset("cpu-small"), progress=False)
    return path


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    """Best wall time over ``repeat`` calls, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def machine() -> str:
    threads = torch.get_num_threads()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{platform.processor() or platform.machine()}, {threads} torch threads, {gpu}, torch {torch.__version__}"


def load() -> str:
    """The machine's load average, printed beside every timing (a shared machine slows them)."""
    one, five, fifteen = os.getloadavg()
    return f"{time.strftime('%H:%M:%S')} load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} cores"
