"""change_points beyond the issue's cells: power for a 4σ level jump (σ = 0.05, jump 0.2, at a
random place in the middle half) on several shape × schedule pairs, false alarms with 1% noise,
and noise-free smooth curves over five schedules and n = 12 to 150.

    OMP_NUM_THREADS=1 python benchmarks/change_point_simulation.py --draws 20
"""

from __future__ import annotations

import argparse

import numpy as np

from complexity_zoo.analysis.simulation import schedule, shape
from complexity_zoo.analysis.transitions import change_points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(11)
    for sch, sh in (("geometric", "exponential"), ("even", "logistic"), ("pythia", "power_law"), ("random", "linear")):
        for n in (20, 50):
            hits = 0
            for _ in range(args.draws):
                s = schedule(sch, n, rng)
                v = shape(sh, s) + 0.05 * rng.standard_normal(n)
                at = int(rng.integers(n // 4, 3 * n // 4))
                v[at:] += 0.2
                hits += any(abs(np.searchsorted(s, c) - at) <= 2 for c in change_points(s, v))
            print(f"power (4σ jump within two checkpoints) {sch} {sh} n={n}: {hits / args.draws:.2f}", flush=True)
    for sch in ("even", "geometric", "pythia", "dense_sparse"):
        rates = []
        for sh in ("flat", "linear", "logistic", "power_law", "exponential"):
            s = schedule(sch, 50)
            c = shape(sh, s)
            rates.append(np.mean([len(change_points(s, c + 0.01 * rng.standard_normal(50))) > 0
                                  for _ in range(args.draws)]))
        print(f"1% noise, share with a change point, {sch} n=50 (flat linear logistic power_law exponential): "
              f"{np.round(rates, 2).tolist()}", flush=True)
    bad = [(sch, sh, n) for sch in ("even", "geometric", "pythia", "dense_sparse", "random")
           for sh in ("linear", "logistic", "power_law", "exponential") for n in (12, 20, 50, 150)
           if change_points(schedule(sch, n), shape(sh, schedule(sch, n)))]
    print(f"noise-free smooth curves with a change point ({len(bad)} of 80 cells): {bad}")


if __name__ == "__main__":
    main()
