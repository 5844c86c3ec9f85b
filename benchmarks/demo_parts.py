"""The parts of ``complexity-zoo demo``, each one way and the other, in one process.

Run: ``python benchmarks/demo_parts.py [--out /tmp/demo-parts] [--workers 2] [--compare-only]`` (about 10 minutes on
2 idle cores; the install is not timed here). Times, with the machine's load beside each:

- training the demo's two runs (cpu-small, cpu-small-noreg) one after the other, then at once in
  ``--workers`` spawned processes (as ``demo`` does); checks that the runs are bit-identical;
- compare of the demo's measures on the demo's checkpoints (no cache), serial in this process,
  then on ``executor="processes"`` with ``--workers`` workers; checks that every value is equal,
  and prints each measure's share of the serial time.

The two ways alternate within one run, so a change in the machine's load hits both; ratios are
parallel/serial.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from _common import load, machine
from safetensors.torch import load_file

import complexity_zoo as cz
from complexity_zoo.tasks import task_data
from complexity_zoo.tasks.modular import from_preset
from complexity_zoo.tasks.report import MEASURES, _log_spaced, _train_all

PRESETS = ("cpu-small", "cpu-small-noreg")


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def same_runs(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in (a / "checkpoints").rglob("*.safetensors"))
    return bool(files) and all(
        all(torch.equal(x, load_file(b / f)[k]) for k, x in load_file(a / f).items()) for f in files)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/demo-parts")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--compare-only", action="store_true", help="reuse the runs an earlier call trained in --out")
    args = ap.parse_args()
    out = Path(args.out)
    print(machine())
    settings = {p: from_preset(p) for p in PRESETS}
    t_seq = t_par = 0.0
    if args.compare_only:
        seq = [out / "apart" / p for p in PRESETS]
    else:
        shutil.rmtree(out, ignore_errors=True)
        print(f"[{load()}] training {', '.join(PRESETS)}")
        t_seq, seq = timed(lambda: _train_all(out / "apart", settings, "cpu", False, 1))
        print(f"[{load()}] one after the other: {t_seq:.1f} s")
        t_par, par = timed(lambda: _train_all(out / "together", settings, "cpu", False, args.workers))
        same = all(same_runs(a, b) for a, b in zip(seq, par))
        print(f"[{load()}] at once in {args.workers} processes: {t_par:.1f} s (ratio {t_par / t_seq:.2f}); "
              f"runs bit-identical: {same}")

    runs = [cz.Trajectory.from_dir(p) for p in seq]
    steps = sorted({s for t in runs for s in _log_spaced(t.steps, 25)})
    data = {t.name: task_data(t.task) for t in runs}
    t_serial, serial = timed(lambda: cz.compare(runs, list(MEASURES), data=data, steps=steps, progress=False))
    print(f"[{load()}] compare, {len(serial.measures)} measures x {serial.dataset.sizes['step']} steps x "
          f"{len(runs)} runs, serial: {t_serial:.1f} s")
    ds = serial.dataset
    spent = {m: float(np.nansum(ds[f"{m}_seconds"].values)) for m in serial.measures if f"{m}_seconds" in ds}
    total = sum(spent.values())
    print("  share of the serial cells' time: " + ", ".join(
        f"{m} {t / total:.0%} ({t:.0f} s)" for m, t in sorted(spent.items(), key=lambda kv: -kv[1])))
    t_proc, proc = timed(lambda: cz.compare(runs, list(MEASURES), data=data, steps=steps, progress=False,
                                            executor="processes", workers=args.workers))
    equal = all(np.array_equal(ds[m].values, proc.dataset[m].values, equal_nan=True) for m in serial.measures)
    print(f"[{load()}] compare on {args.workers} processes: {t_proc:.1f} s (ratio {t_proc / t_serial:.2f}); "
          f"values equal: {equal}")
    print(f"[{load()}] parts, serial {t_seq + t_serial:.0f} s; with {args.workers} workers {t_par + t_proc:.0f} s")


if __name__ == "__main__":
    main()
