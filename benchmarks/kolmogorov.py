"""Seconds and bits per checkpoint: the paper's Bayesian search vs the default frontier search.

Run: ``python benchmarks/kolmogorov.py`` (trains the cpu-small run once into runs/). The
paper's recipe (``kolmogorov.paper``: Bayesian optimization, 62 loss evaluations, bzip2 of
the pickled float32 arrays of their Flax tree, loss on a subset the size of their last
minibatch) is compared with the default (frontier search, side of S chosen per matrix, LZMA of
integer codes, loss on the whole training set) and with mixed variants, so the effect of the
search, the coder and the side of S can be told apart. Seconds are wall time and CPU time of
this process (the latter is what to compare on a shared machine). Target: the default >= 10x
faster than the paper's search and no larger.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

import pandas as pd
from _common import grokking_run, machine, timed

import complexity_zoo as cz
from complexity_zoo.tasks import task_data

VARIANTS = {
    "paper (bayes, bz2-pickle, last batch)": ("kolmogorov.paper", {}),
    "paper, all ex.": ("kolmogorov.paper", {"max_examples": None}),
    "frontier, bz2-pickle, S as paper": ("kolmogorov", {"coder": "bz2-pickle", "s_side": "paper"}),
    "frontier, lzma-codes, S left": ("kolmogorov", {"s_side": "left"}),
    "default (frontier, lzma-codes, S chosen)": ("kolmogorov", {}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", default=None, help="a run folder (default: train cpu-small)")
    parser.add_argument("--steps", default=None, help="comma-separated steps (default: first, middle, last)")
    args = parser.parse_args()
    traj = cz.Trajectory.from_dir(args.run or grokking_run())
    data = task_data(traj.task)
    steps = [int(s) for s in args.steps.split(",")] if args.steps else [
        traj.steps[1], traj.steps[len(traj) // 4], traj.steps[-1]]
    rows = []
    for step in steps:
        model = traj.model_at(step)
        naive = cz.get_measure("naive_compression")(model).value
        for label, (name, settings) in VARIANTS.items():
            measure = cz.get_measure(name, **settings)
            cpu = time.process_time()
            seconds, r = timed(lambda measure=measure, model=model: measure(model, data))
            cpu = time.process_time() - cpu
            rows.append({"step": step, "variant": label, "seconds": seconds, "cpu_s": cpu, "bits": r.value,
                         "loss_evals": r.extras["loss_evaluations"], "naive/bits": naive / r.value,
                         "distortion": r.extras["distortion"]})
            print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    paper = df[df["variant"].str.startswith("paper")].set_index("step")
    default = df[df["variant"].str.startswith("default")].set_index("step")
    summary = pd.DataFrame({
        "paper s": paper["seconds"], "default s": default["seconds"],
        "speedup (paper s / default s)": paper["seconds"] / default["seconds"],
        "cpu speedup": paper["cpu_s"] / default["cpu_s"],
        "paper bits": paper["bits"], "default bits": default["bits"],
        "default bits / paper bits": default["bits"] / paper["bits"],
    })
    print(f"\n{machine()}\n")
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print()
    print(summary.to_string(float_format=lambda v: f"{v:.3g}"))


if __name__ == "__main__":
    main()
