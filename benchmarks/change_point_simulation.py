"""change_points by simulation over a grid nobody tuned it to: power, false alarms, noise-free curves.

* power: a jump of ``--jumps`` σ (σ = 0.05 on a curve of range 1) at a random checkpoint in
  the middle half, found when a reported point is within two checkpoints of it (issue 22's
  criterion), per noise family × schedule × shape × n;
* false alarms: the share of draws with any change point on a smooth curve plus noise of sd
  ``--noise`` (1% of the range: issue 22's criterion; 5%: the power runs' noise), per noise
  family × schedule × shape × n;
* noise-free: smooth curves with no noise at all, every schedule × shape × n;
* kink: a change in slope that moves the curve ``--jumps`` σ by the end of the run, found as a
  slope change within two checkpoints with ``changes=("level", "slope")`` (``--changes`` sets
  what the other parts test; default: level only, change_points' default).

Noise families (complexity_zoo.analysis.simulation.noise, unit sd): ``white`` is the model
change_points assumes; ``t3`` (heavy tails) and ``ar1`` (φ = 0.7 in checkpoint index) show how
it behaves misspecified. The issue's cells:

    OMP_NUM_THREADS=1 python benchmarks/change_point_simulation.py --draws 20

Wider (each flag takes a list; the grid is the product):

    OMP_NUM_THREADS=1 python benchmarks/change_point_simulation.py --part power --shapes power_law \\
        --jumps 2 3 4 6 --n 20 50 --draws 20
    OMP_NUM_THREADS=1 python benchmarks/change_point_simulation.py --part false --families white t3 ar1 \\
        --n 12 20 50 --draws 20
    OMP_NUM_THREADS=1 python benchmarks/change_point_simulation.py --part kink --n 50 --jumps 4 8 16 --draws 20
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from complexity_zoo.analysis.simulation import SCHEDULES, noise, schedule, shape
from complexity_zoo.analysis.smooth import coordinate
from complexity_zoo.analysis.transitions import fit_change_points

SMOOTH = ("linear", "logistic", "power_law", "exponential")
ISSUE_CELLS = (("geometric", "exponential"), ("even", "logistic"), ("pythia", "power_law"), ("random", "linear"))


CHANGES: tuple[str, ...] = ("level",)


def change_points(steps: np.ndarray, values: np.ndarray) -> list[float]:
    return [row["step"] for row in fit_change_points(steps, values, changes=CHANGES)["points"]]


def draw(family: str, sch: str, sh: str, n: int, sd: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    s = schedule(sch, n, rng)
    return s, shape(sh, s) + sd * noise(family, s, rng.standard_normal((1, n)), rng)[0]


def power(family: str, sch: str, sh: str, n: int, jump: float, draws: int, rng: np.random.Generator) -> float:
    hits = 0
    for _ in range(draws):
        s, v = draw(family, sch, sh, n, 0.05, rng)
        at = int(rng.integers(n // 4, 3 * n // 4))
        v[at:] += jump * 0.05
        hits += any(abs(np.searchsorted(s, c) - at) <= 2 for c in change_points(s, v))
    return hits / draws


def kink(sch: str, sh: str, n: int, departure: float, draws: int, rng: np.random.Generator) -> float:
    hits = 0
    for _ in range(draws):
        s, v = draw("white", sch, sh, n, 0.05, rng)
        u = coordinate(s)
        at = int(rng.integers(n // 4, 3 * n // 4))
        v += departure * 0.05 * np.maximum(u - u[at], 0) / (1 - u[at])
        rows = fit_change_points(s, v, changes=("level", "slope"))["points"]
        hits += any(r["change"] == "slope" and abs(np.searchsorted(s, r["step"]) - at) <= 2 for r in rows)
    return hits / draws


def false_alarms(family: str, sch: str, sh: str, n: int, sd: float, draws: int, rng: np.random.Generator) -> float:
    return float(np.mean([len(change_points(*draw(family, sch, sh, n, sd, rng))) > 0 for _ in range(draws)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--part", choices=["power", "false", "clean", "kink", "time", "all"], default="all")
    parser.add_argument("--families", nargs="+", default=["white"])
    parser.add_argument("--schedules", nargs="+", default=None, help="default: the issue's four cells for power")
    parser.add_argument("--shapes", nargs="+", default=None)
    parser.add_argument("--n", nargs="+", type=int, default=None, help="default 20 50 (power), 50 (false)")
    parser.add_argument("--jumps", nargs="+", type=float, default=[4.0], help="in noise sd")
    parser.add_argument("--noise", nargs="+", type=float, default=[0.01], help="false alarms: noise sd")
    parser.add_argument("--changes", nargs="+", default=["level"], choices=["level", "slope"])
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    global CHANGES
    CHANGES = tuple(args.changes)
    rng = np.random.default_rng(args.seed)
    start = time.time()
    if args.part in ("power", "all"):
        cells = ISSUE_CELLS if args.schedules is None and args.shapes is None else [
            (sch, sh) for sch in (args.schedules or SCHEDULES) for sh in (args.shapes or SMOOTH)]
        print("power: a jump within two checkpoints | family schedule shape n jump(σ) share", flush=True)
        for fam in args.families:
            for sch, sh in cells:
                for n in args.n or (20, 50):
                    for j in args.jumps:
                        print(f"power {fam} {sch} {sh} n={n} {j:g}σ: "
                              f"{power(fam, sch, sh, n, j, args.draws, rng):.2f}", flush=True)
    if args.part in ("false", "all"):
        print("false alarms: share of draws with a change point | family schedule n noise (shapes in order)")
        shapes = args.shapes or ("flat", *SMOOTH)
        for fam in args.families:
            for sch in args.schedules or ("even", "geometric", "pythia", "dense_sparse", "random"):
                for n in args.n or (50,):
                    for sd in args.noise:
                        rates = [false_alarms(fam, sch, sh, n, sd, args.draws, rng) for sh in shapes]
                        print(f"false {fam} {sch} n={n} sd={sd:g} {shapes}: {np.round(rates, 2).tolist()}", flush=True)
    if args.part in ("clean", "all"):
        bad = [(sch, sh, n) for sch in SCHEDULES for sh in SMOOTH for n in (12, 20, 50, 150)
               if change_points(schedule(sch, n), shape(sh, schedule(sch, n)))]
        print(f"noise-free smooth curves with a change point ({len(bad)} of 80 cells): {bad}")
    if args.part in ("kink", "all"):
        print("kink: a slope change found within two checkpoints | schedule shape n departure(σ) share")
        for sch, sh in (("even", "linear"), ("random", "linear"), ("geometric", "exponential"), ("even", "logistic")):
            for n in args.n or (50,):
                for j in args.jumps:
                    print(f"kink {sch} {sh} n={n} {j:g}σ: {kink(sch, sh, n, j, args.draws, rng):.2f}", flush=True)
    if args.part in ("time", "all"):
        for n in (50, 150):
            s = schedule("geometric", n)
            for label, jump in (("smooth", 0.0), ("4σ jump", 0.2)):
                v = shape("power_law", s) + 0.05 * np.random.default_rng(3).standard_normal(n)
                v[n // 2:] += jump
                for changes in (("level",), ("level", "slope")):
                    t0 = time.perf_counter()
                    for _ in range(3):
                        fit_change_points(s, v, changes=changes)
                    print(f"time per call, n={n}, {label}, changes={'+'.join(changes)}: "
                          f"{(time.perf_counter() - t0) / 3:.3f} s", flush=True)
    print(f"{time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
