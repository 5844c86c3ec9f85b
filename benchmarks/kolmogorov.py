"""Seconds and bits per checkpoint: the paper's Bayesian search vs the default frontier search.

Run: ``python benchmarks/kolmogorov.py`` (trains the cpu-small run once into runs/). The
paper's recipe (``kolmogorov.paper``: Bayesian optimization, 62 loss evaluations, bzip2 of
pickled floats, loss on 512 examples) is compared with the default (frontier search, LZMA of
integer codes, loss on the whole training set) and with the two mixed variants, so the
effect of the search and of the coder can be told apart. Target: the default >= 10x faster
than the paper's search and no larger.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import pandas as pd
from _common import grokking_run, machine, timed

import complexity_zoo as cz
from complexity_zoo.tasks import task_data

VARIANTS = {
    "paper (bayes, bz2-pickle, 512 ex.)": ("kolmogorov.paper", {}),
    "bayes, bz2-pickle, all ex.": ("kolmogorov", {"search": "bayes", "coder": "bz2-pickle"}),
    "frontier, bz2-pickle, all ex.": ("kolmogorov", {"coder": "bz2-pickle"}),
    "default (frontier, lzma-codes)": ("kolmogorov", {}),
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
            seconds, r = timed(lambda measure=measure, model=model: measure(model, data))
            rows.append({"step": step, "variant": label, "seconds": seconds, "bits": r.value,
                         "loss_evals": r.extras["loss_evaluations"], "naive/bits": naive / r.value,
                         "distortion": r.extras["distortion"]})
            print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    paper = df[df["variant"].str.startswith("paper")].set_index("step")
    default = df[df["variant"].str.startswith("default")].set_index("step")
    summary = pd.DataFrame({
        "paper s": paper["seconds"], "default s": default["seconds"],
        "speedup (paper s / default s)": paper["seconds"] / default["seconds"],
        "paper bits": paper["bits"], "default bits": default["bits"],
        "default bits / paper bits": default["bits"] / paper["bits"],
    })
    print(f"\n{machine()}\n")
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print()
    print(summary.to_string(float_format=lambda v: f"{v:.3g}"))


if __name__ == "__main__":
    main()
