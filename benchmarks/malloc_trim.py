"""What Dask's default worker environment costs torch: the same LLC cells with and without
``MALLOC_TRIM_THRESHOLD_=65536`` (which Dask's nanny sets in every worker it starts).

Run: ``python benchmarks/malloc_trim.py [--pairs 2]`` (about 30 s a pair on 2 idle cores; trains the
executors benchmark's cpu-small run once). glibc reads the variable when a process starts, so each
side is a fresh process: 1 torch thread, a warm-up cell with another seed, then 3 checkpoints x LLC
(2 chains x 50 draws, batch 256), as in ``benchmarks/executors.py``. The two sides alternate, pair
by pair; the ratio is with / without, per pair.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

CHILD = "--child"


def child() -> None:
    import torch

    torch.set_num_threads(1)
    from executors import LLC, executors_run

    import complexity_zoo as cz
    from complexity_zoo.tasks import task_data

    traj = cz.Trajectory.from_dir(executors_run())
    data, steps = task_data(traj.task), traj.steps[-3:]
    cz.compare(traj, [("llc", LLC)], data=data, steps=steps[:1], seed=1, progress=False)  # warm-up
    start = time.perf_counter()
    cz.compare(traj, [("llc", LLC)], data=data, steps=steps, progress=False)
    print(time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=2)
    args = parser.parse_args()
    from _common import load
    from executors import executors_run

    executors_run()  # trained once, outside the timings
    print(load())
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_TRIM_THRESHOLD_"}
    for pair in range(args.pairs):
        seconds = {}
        for name, extra in (("without", {}), ("with", {"MALLOC_TRIM_THRESHOLD_": "65536"})):
            out = subprocess.run([sys.executable, __file__, CHILD], env={**env, **extra}, check=True,
                                 capture_output=True, text=True).stdout
            seconds[name] = float(out.strip().splitlines()[-1])
        print(f"pair {pair + 1}: 3 LLC cells {seconds['without']:.2f} s without, {seconds['with']:.2f} s with "
              f"MALLOC_TRIM_THRESHOLD_=65536: {seconds['with'] / seconds['without']:.2f}x", flush=True)
    print(load())


if __name__ == "__main__":
    child() if CHILD in sys.argv else main()
