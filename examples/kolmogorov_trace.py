"""Side by side, each probe of ``kolmogorov.paper`` and of the authors' search on one checkpoint.

Run: ``COMPLEXITY_ZOO_GROKKING_REF=/path/to/GrokkingComplexity python examples/kolmogorov_trace.py
RUN_DIR STEP [SEED]``: prints both final sizes, then per probe Δ, τ and score (bytes; -3e5 =
infeasible) of theirs (T) and ours (O). Needs ``pip install 'complexity-zoo[paper-reference]'``.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import bayes_opt

import complexity_zoo as cz
from complexity_zoo.tasks import task_data

_HARNESS = Path(__file__).with_name("kolmogorov_reference.py")
_spec = importlib.util.spec_from_file_location("kolmogorov_reference", _HARNESS)
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)


def main() -> None:
    run, step = sys.argv[1], int(sys.argv[2])
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    instances = []

    class Recorded(bayes_opt.BayesianOptimization):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            instances.append(self)

    bayes_opt.BayesianOptimization = Recorded  # both searches construct theirs from this module
    ref = reference.Reference()
    traj = cz.Trajectory.from_dir(run)
    data, model = task_data(traj.task), traj.model_at(step)
    paper = cz.get_measure("kolmogorov.paper", seed=seed)
    theirs = reference.authors_bits(ref, model, data, paper._data(data), seed=seed)
    ours = paper(model, data)
    print(f"theirs {theirs['bits']} bits, ours {ours.value:.0f} bits ({ours.value / theirs['bits'] - 1:+.4f})")
    lo = math.log(1e-3)
    for i, (t, o) in enumerate(zip(instances[0].res, instances[1].res)):
        def show(r: dict) -> str:
            p = r["params"]
            delta = math.exp(lo * (1 - p["bin_size_normalized"]))
            return f"d={delta:.5f} t={p['threshold_normalized']:.4f} {r['target']:9.0f}"
        print(f"{i:2d} T {show(t)} | O {show(o)}")


if __name__ == "__main__":
    main()
